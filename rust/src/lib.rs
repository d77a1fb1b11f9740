//! mmproxy's native core.
//!
//! The modules declared here are plain Rust, free of pyo3, so `cargo test` covers them without linking
//! Python. The binding layer is `py.rs` alone, compiled only with the `python` feature that maturin
//! turns on: conversions stay out of the logic, and the logic can be read and tested on its own.

pub mod canonical;
pub mod chat;
pub mod features;
pub mod hashing;
pub mod json;
pub mod nearmiss;
pub mod pii;
pub mod rules;
pub mod tokenizer;

#[cfg(feature = "python")]
mod py;
