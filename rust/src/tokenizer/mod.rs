//! Exact BPE token counting for OpenAI's `cl100k_base` and `o200k_base` encodings.
//!
//! Same output as tiktoken's `encode_ordinary`: special-token text such as `<|endoftext|>` is
//! ordinary text. The vocabularies are compiled in and each rank map is built on first use
//! ([`warm`] pays that cost up front).

mod bpe;
mod classes;
mod pretok;
mod vocab;

use std::sync::OnceLock;

use bpe::Merger;
use pretok::Pattern;
use vocab::Vocab;

pub const CL100K_BASE: &str = "cl100k_base";
pub const O200K_BASE: &str = "o200k_base";

pub(crate) static CL100K_BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bin"));
pub(crate) static O200K_BLOB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bin"));

pub struct Encoding {
    pattern: Pattern,
    vocab: Vocab,
}

/// The encoding called `name` (`"cl100k_base"` or `"o200k_base"`), loaded on first use.
pub fn get(name: &str) -> Option<&'static Encoding> {
    static CL100K: OnceLock<Encoding> = OnceLock::new();
    static O200K: OnceLock<Encoding> = OnceLock::new();
    let (cell, pattern, blob) = match name {
        CL100K_BASE => (&CL100K, Pattern::Cl100k, CL100K_BLOB),
        O200K_BASE => (&O200K, Pattern::O200k, O200K_BLOB),
        _ => return None,
    };
    Some(cell.get_or_init(|| Encoding {
        pattern,
        vocab: Vocab::from_blob(blob),
    }))
}

/// Loads both encodings now so that the first request does not pay for it; returns how many
/// tokens were loaded.
pub fn warm() -> usize {
    [CL100K_BASE, O200K_BASE]
        .iter()
        .map(|name| get(name).expect("known encoding").vocab.len())
        .sum()
}

impl Encoding {
    /// Number of tokens of `text`, without building the token list.
    pub fn count(&self, text: &str) -> usize {
        let mut merger = Merger::default();
        let mut total = 0;
        pretok::split(self.pattern, text, |piece| {
            total += if piece.len() == 1 || self.vocab.rank(piece).is_some() {
                1
            } else {
                merger.merge(&self.vocab, piece);
                merger.count()
            };
        });
        total
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut merger = Merger::default();
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        pretok::split(self.pattern, text, |piece| {
            if piece.len() == 1 {
                out.push(self.vocab.byte_rank(piece[0]));
            } else if let Some(rank) = self.vocab.rank(piece) {
                out.push(rank);
            } else {
                merger.merge(&self.vocab, piece);
                out.extend(merger.ids());
            }
        });
        out
    }
}

/// The encoding of an OpenAI model name, or `None` when the model has no public tokenizer.
///
/// A `provider/` routing prefix (everything up to the last `/`) and a fine-tune `ft:` prefix are
/// ignored; matching is by name prefix, case-insensitive, most specific first.
pub fn encoding_for_model(model: &str) -> Option<&'static str> {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let name = name.strip_prefix("ft:").unwrap_or(&name);
    const O200K_PREFIXES: &[&str] = &[
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
        "gpt-oss",
    ];
    const CL100K_PREFIXES: &[&str] = &[
        "gpt-4",
        "gpt-3.5",
        "gpt-35",
        "text-embedding-3",
        "text-embedding-ada-002",
    ];
    if O200K_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(O200K_BASE)
    } else if CL100K_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(CL100K_BASE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected ids from tiktoken 0.14 (`encode_ordinary`).
    #[test]
    fn known_token_ids() {
        let cases: &[(&str, &str, &[u32])] = &[
            (CL100K_BASE, "hello world", &[15339, 1917]),
            (O200K_BASE, "hello world", &[24912, 2375]),
            (
                CL100K_BASE,
                "<|endoftext|>",
                &[27, 91, 8862, 728, 428, 91, 29],
            ),
            (
                O200K_BASE,
                "<|endoftext|>",
                &[27, 91, 419, 1440, 919, 91, 29],
            ),
            (CL100K_BASE, "", &[]),
        ];
        for (name, text, want) in cases {
            let enc = get(name).unwrap();
            assert_eq!(enc.encode(text), *want, "{name} {text:?}");
            assert_eq!(enc.count(text), want.len());
        }
    }

    #[test]
    fn round_trip_and_count_agree() {
        let text = "Ünïcödé — 日本語のテキスト 🙂👩‍👩‍👧 don't\r\n\t  fn main() { x += 1; }  ".repeat(3)
            + &"a".repeat(5000);
        for name in [CL100K_BASE, O200K_BASE] {
            let enc = get(name).unwrap();
            let ids = enc.encode(&text);
            let bytes: Vec<u8> = ids
                .iter()
                .flat_map(|&id| enc.vocab.token(id).to_vec())
                .collect();
            assert_eq!(bytes, text.as_bytes());
            assert_eq!(enc.count(&text), ids.len());
        }
    }

    #[test]
    fn model_names() {
        for (model, want) in [
            ("gpt-4o-mini", Some(O200K_BASE)),
            ("openai/gpt-4.1", Some(O200K_BASE)),
            ("azure/gpt-5-nano", Some(O200K_BASE)),
            ("o3-mini", Some(O200K_BASE)),
            ("ft:gpt-4o-mini:org::id", Some(O200K_BASE)),
            ("GPT-4", Some(CL100K_BASE)),
            ("gpt-4-turbo", Some(CL100K_BASE)),
            ("gpt-3.5-turbo", Some(CL100K_BASE)),
            ("text-embedding-3-small", Some(CL100K_BASE)),
            ("text-embedding-ada-002", Some(CL100K_BASE)),
            ("claude-3-5-sonnet", None),
            ("gemini/gemini-2.0-flash", None),
            ("llama-3", None),
        ] {
            assert_eq!(encoding_for_model(model), want, "{model}");
        }
        assert!(get("p50k_base").is_none());
    }
}
