//! mmproxy's native core. Plain Rust modules; the pyo3 binding layer is the only code here.

pub mod canonical;
pub mod chat;
pub mod hashing;
pub mod json;
pub mod rules;
pub mod tokenizer;

#[cfg(feature = "python")]
mod python {
    use std::borrow::Cow;

    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    use crate::json::InvalidInput;
    use crate::{chat, hashing, rules, tokenizer};

    /// Inputs at least this large are processed with the GIL released, so other Python threads run
    /// meanwhile; below it the release/reacquire costs more than it frees.
    const RELEASE_GIL_FROM: usize = 8 * 1024;

    fn value_error(e: InvalidInput) -> PyErr {
        PyValueError::new_err(e.0)
    }

    fn run<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
        if len >= RELEASE_GIL_FROM {
            py.detach(f)
        } else {
            f()
        }
    }

    fn encoding(name: &str) -> PyResult<&'static tokenizer::Encoding> {
        tokenizer::get(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown encoding {name:?}; expected \"o200k_base\" or \"cl100k_base\""
            ))
        })
    }

    /// The UTF-8 text of `text`. A str with lone surrogates cannot be UTF-8; like tiktoken, each one
    /// becomes U+FFFD (via UTF-16 with `surrogatepass`, so a valid surrogate pair becomes its char).
    fn utf8<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
        match text.to_str() {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(_) => {
                let fixed = text
                    .call_method1("encode", ("utf-16", "surrogatepass"))?
                    .call_method1("decode", ("utf-16", "replace"))?;
                Ok(Cow::Owned(fixed.extract::<String>()?))
            }
        }
    }

    #[pyfunction]
    #[pyo3(signature = (text, encoding = "o200k_base"))]
    fn count_tokens(py: Python<'_>, text: &Bound<'_, PyString>, encoding: &str) -> PyResult<usize> {
        let enc = self::encoding(encoding)?;
        let text = utf8(text)?;
        Ok(run(py, text.len(), || enc.count(&text)))
    }

    #[pyfunction]
    #[pyo3(signature = (text, encoding = "o200k_base"))]
    fn encode(py: Python<'_>, text: &Bound<'_, PyString>, encoding: &str) -> PyResult<Vec<u32>> {
        let enc = self::encoding(encoding)?;
        let text = utf8(text)?;
        Ok(run(py, text.len(), || enc.encode(&text)))
    }

    #[pyfunction]
    fn encoding_for_model(model: &str) -> Option<&'static str> {
        tokenizer::encoding_for_model(model)
    }

    #[pyfunction]
    fn warm(py: Python<'_>) -> usize {
        py.detach(tokenizer::warm)
    }

    #[pyfunction]
    fn count_chat_tokens(py: Python<'_>, body: &[u8], model: &str) -> PyResult<(usize, bool)> {
        let count =
            run(py, body.len(), || chat::count_chat_tokens(body, model)).map_err(value_error)?;
        Ok((count.tokens, count.exact))
    }

    #[pyfunction]
    #[pyo3(signature = (body, namespace = ""))]
    fn request_hash(py: Python<'_>, body: &[u8], namespace: &str) -> PyResult<String> {
        run(py, body.len(), || hashing::request_hash(body, namespace)).map_err(value_error)
    }

    #[pyfunction]
    fn prefix_hashes(py: Python<'_>, body: &[u8]) -> PyResult<Vec<u64>> {
        run(py, body.len(), || hashing::prefix_hashes(body)).map_err(value_error)
    }

    /// A compiled `routing_rules` list (see python/mmproxy/rules.py); immutable, shared across threads.
    #[pyclass(frozen, name = "RuleSet", module = "mmproxy._native")]
    struct PyRuleSet {
        inner: rules::RuleSet,
    }

    #[pymethods]
    impl PyRuleSet {
        #[new]
        fn new(spec: &[u8]) -> PyResult<Self> {
            let inner = rules::RuleSet::compile(spec).map_err(value_error)?;
            Ok(Self { inner })
        }

        /// (name, model, tier, local_only) of every rule, in order.
        fn actions(&self) -> Vec<(String, Option<String>, Option<&'static str>, bool)> {
            self.inner
                .rules
                .iter()
                .map(|r| {
                    let a = &r.action;
                    (
                        r.name.clone(),
                        a.model.clone(),
                        a.tier.map(rules::Tier::as_str),
                        a.local_only,
                    )
                })
                .collect()
        }

        #[getter]
        fn uses_headers(&self) -> bool {
            self.inner.uses_headers
        }

        fn __len__(&self) -> usize {
            self.inner.rules.len()
        }

        #[pyo3(signature = (body, headers = Vec::new(), key = None, team = None, input_tokens = 0))]
        fn evaluate(
            &self,
            py: Python<'_>,
            body: &[u8],
            headers: Vec<(String, String)>,
            key: Option<&str>,
            team: Option<&str>,
            input_tokens: u64,
        ) -> PyResult<Option<usize>> {
            let ctx = rules::Context {
                headers: &headers,
                key,
                team,
                input_tokens,
            };
            run(py, body.len(), || self.inner.evaluate(body, &ctx)).map_err(value_error)
        }
    }

    #[pymodule]
    fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("IGNORED_FIELDS", hashing::IGNORED_FIELDS.to_vec())?;
        m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
        m.add_function(wrap_pyfunction!(encode, m)?)?;
        m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
        m.add_function(wrap_pyfunction!(warm, m)?)?;
        m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
        m.add_function(wrap_pyfunction!(request_hash, m)?)?;
        m.add_function(wrap_pyfunction!(prefix_hashes, m)?)?;
        m.add_class::<PyRuleSet>()?;
        Ok(())
    }
}
