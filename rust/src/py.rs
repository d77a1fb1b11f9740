//! The pyo3 binding layer: `mmproxy._native` (stubs in python/mmproxy/_native.pyi).
//!
//! Only conversion lives here: Python strings and bytes in, the plain Rust modules' results out, and
//! the GIL released around large inputs. Everything these functions compute is in the plain modules,
//! where `cargo test` reaches it without a Python interpreter.

use std::borrow::Cow;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::json::InvalidInput;
use crate::{chat, features, hashing, nearmiss, pii, rules, tokenizer};

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

/// The near-miss verdict on two texts (nearmiss::compare): "same", "reworded", or why a cached
/// answer to one does not serve the other, so the semantic cache refuses the hit.
#[pyfunction]
fn near_miss_verdict(
    py: Python<'_>,
    a: &Bound<'_, PyString>,
    b: &Bound<'_, PyString>,
) -> PyResult<&'static str> {
    let (a, b) = (utf8(a)?, utf8(b)?);
    Ok(run(py, a.len() + b.len(), || {
        nearmiss::compare(&a, &b).as_str()
    }))
}

/// `near_miss_verdict`, with the content words only the first text has and only the second has: those
/// a word embedding may still match as synonyms (see nearmiss::Comparison for when they are given).
#[pyfunction]
fn near_miss_words(
    py: Python<'_>,
    a: &Bound<'_, PyString>,
    b: &Bound<'_, PyString>,
) -> PyResult<(&'static str, Vec<String>, Vec<String>)> {
    let (a, b) = (utf8(a)?, utf8(b)?);
    let c = run(py, a.len() + b.len(), || nearmiss::compare_words(&a, &b));
    Ok((c.verdict.as_str(), c.only_a, c.only_b))
}

/// Cheap features of a prompt for the learned router, in the order of `PROMPT_FEATURE_NAMES`.
#[pyfunction]
fn prompt_features(
    py: Python<'_>,
    text: &Bound<'_, PyString>,
) -> PyResult<[f32; features::NAMES.len()]> {
    let text = utf8(text)?;
    Ok(run(py, text.len(), || features::prompt_features(&text)))
}

/// A compiled `routing_rules` list (see python/mmproxy/rules.py); immutable, shared across threads.
/// `mmproxy.rules.RuleSet` subclasses it, so a request's `decide` runs no Python code.
#[pyclass(frozen, subclass, name = "RuleSet", module = "mmproxy._native")]
struct PyRuleSet {
    inner: rules::RuleSet,
    /// One decision per rule, made once by the `decision` factory and returned as is.
    decisions: Vec<Py<PyAny>>,
    /// `inner.header_names()` as Python strings, to ask a multidict for.
    header_names: Vec<Py<PyString>>,
}

/// (index into `names`, value) of each header in `names` (lower-case): from a multidict (aiohttp's
/// request headers) by `getall` per name, so only those headers cross; from a dict, a list or
/// tuple of (name, value) pairs, or another mapping's `items()`, by a case-insensitive walk.
fn header_values<'py>(
    headers: &Bound<'py, PyAny>,
    names: &[String],
    py_names: &[Py<PyString>],
) -> PyResult<Vec<(usize, Bound<'py, PyString>)>> {
    let py = headers.py();
    let mut out = Vec::new();
    let mut keep = |name: Bound<'py, PyAny>, value: Bound<'py, PyAny>| -> PyResult<()> {
        let name = name.cast_into::<PyString>()?;
        let name = name.to_string_lossy();
        if let Some(at) = names.iter().position(|n| n.eq_ignore_ascii_case(&name)) {
            out.push((at, value.cast_into::<PyString>()?));
        }
        Ok(())
    };
    if let Ok(dict) = headers.cast::<PyDict>() {
        for (name, value) in dict.iter() {
            keep(name, value)?;
        }
    } else if headers.is_instance_of::<PyList>() || headers.is_instance_of::<PyTuple>() {
        for pair in headers.try_iter()? {
            let (name, value) = pair?.extract()?;
            keep(name, value)?;
        }
    } else if let Ok(getall) = headers.getattr(intern!(py, "getall")) {
        let no_values = PyTuple::empty(py);
        for (at, name) in py_names.iter().enumerate() {
            let values = getall.call1((name, &no_values))?;
            match values.cast::<PyList>() {
                Ok(list) => {
                    for value in list {
                        out.push((at, value.cast_into::<PyString>()?));
                    }
                }
                Err(_) => {
                    for value in values.try_iter()? {
                        out.push((at, value?.cast_into::<PyString>()?));
                    }
                }
            }
        }
    } else {
        for pair in headers.call_method0(intern!(py, "items"))?.try_iter()? {
            let (name, value) = pair?.extract()?;
            keep(name, value)?;
        }
    }
    Ok(out)
}

#[pymethods]
impl PyRuleSet {
    /// Compiles `spec` (a JSON list of rules) and makes each rule's decision by calling
    /// `decision(name, index, model, tier, local_only, redact)`. `pii_*` conditions run `detector`'s
    /// kinds (None: the defaults) and count findings of at least `min_confidence`.
    #[new]
    #[pyo3(signature = (spec, decision, detector = None, min_confidence = rules::DEFAULT_MIN_CONFIDENCE))]
    fn new(
        spec: &[u8],
        decision: &Bound<'_, PyAny>,
        detector: Option<PyRef<'_, PyPiiDetector>>,
        min_confidence: f64,
    ) -> PyResult<Self> {
        let privacy = detector.map(|d| rules::Privacy {
            detector: Arc::clone(&d.inner),
            min_confidence,
        });
        let inner = rules::RuleSet::compile_with(spec, privacy).map_err(value_error)?;
        let decisions = inner
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = &r.action;
                let tier = a.tier.map(rules::Tier::as_str);
                let args = (
                    r.name.as_str(),
                    i,
                    a.model.as_deref(),
                    tier,
                    a.local_only,
                    a.redact,
                );
                decision.call1(args).map(Bound::unbind)
            })
            .collect::<PyResult<_>>()?;
        let py = decision.py();
        let header_names = inner
            .header_names()
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect();
        Ok(Self {
            inner,
            decisions,
            header_names,
        })
    }

    /// Every rule's decision, in rule order.
    #[getter]
    fn decisions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.decisions.iter().map(|d| d.bind(py)))
    }

    fn __len__(&self) -> usize {
        self.decisions.len()
    }

    /// The decision of the first rule matching a raw chat request body and its context (or None), and
    /// the sensitive data a rule's detectors found as `kind:count` pairs sorted by kind (`card:1,email:2`;
    /// never the values), or None when no rule ran them or they found none.
    #[pyo3(signature = (body, *, headers = None, key = None, team = None, input_tokens = 0))]
    fn decide(
        &self,
        py: Python<'_>,
        body: &[u8],
        headers: Option<&Bound<'_, PyAny>>,
        key: Option<&str>,
        team: Option<&str>,
        input_tokens: u64,
    ) -> PyResult<(Option<Py<PyAny>>, Option<String>)> {
        let values = match headers {
            Some(h) if !self.header_names.is_empty() => {
                header_values(h, self.inner.header_names(), &self.header_names)?
            }
            _ => Vec::new(),
        };
        let texts: Vec<Cow<'_, str>> = values.iter().map(|(_, v)| v.to_string_lossy()).collect();
        let names = self.inner.header_names();
        let pairs: Vec<(&str, &str)> = values
            .iter()
            .zip(&texts)
            .map(|((at, _), value)| (names[*at].as_str(), value.as_ref()))
            .collect();
        let ctx = rules::Context {
            headers: &pairs,
            key,
            team,
            input_tokens,
        };
        let outcome = run(py, body.len(), || self.inner.decide(body, &ctx)).map_err(value_error)?;
        let decision = outcome.rule.map(|i| self.decisions[i].clone_ref(py));
        let summary = outcome
            .pii
            .and_then(|counts| self.inner.pii_summary(&counts));
        Ok((decision, summary))
    }
}

/// Sensitive-data detectors (`pii.rs`), configured once; `scan` returns character offsets, as Python
/// slices strings.
#[pyclass(frozen, name = "PiiDetector", module = "mmproxy._native")]
struct PyPiiDetector {
    /// Shared with the rule sets compiled with it: one set of detectors per config.
    inner: Arc<pii::Detector>,
}

#[pymethods]
impl PyPiiDetector {
    #[new]
    #[pyo3(signature = (kinds = None, patterns = Vec::new(), terms = Vec::new()))]
    fn new(
        kinds: Option<Vec<String>>,
        patterns: Vec<(String, String)>,
        terms: Vec<(String, Vec<String>)>,
    ) -> PyResult<Self> {
        let kinds: Option<Vec<&str>> = kinds
            .as_ref()
            .map(|k| k.iter().map(String::as_str).collect());
        let patterns: Vec<(&str, &str)> = patterns
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_str()))
            .collect();
        let terms: Vec<(&str, Vec<&str>)> = terms
            .iter()
            .map(|(n, words)| (n.as_str(), words.iter().map(String::as_str).collect()))
            .collect();
        pii::Detector::new(kinds.as_deref(), &patterns, &terms)
            .map(|inner| PyPiiDetector {
                inner: Arc::new(inner),
            })
            .map_err(PyValueError::new_err)
    }

    #[getter]
    fn kinds(&self) -> Vec<String> {
        self.inner.kinds().to_vec()
    }

    fn scan(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
    ) -> PyResult<Vec<(String, usize, usize, f64)>> {
        let text = utf8(text)?;
        let found = run(py, text.len(), || self.inner.scan(&text));
        let kinds = self.inner.kinds();
        // Byte offsets to character offsets: the characters are counted only up to each finding, from the last
        // one (the findings are in order and never overlap), so a long text with few findings costs little.
        let bytes = text.as_bytes();
        let (mut at, mut chars) = (0, 0);
        let mut char_of = |byte: usize| {
            chars += bytes[at..byte]
                .iter()
                .filter(|&&b| b & 0xC0 != 0x80)
                .count();
            at = byte;
            chars
        };
        let mut out = Vec::with_capacity(found.len());
        for f in found {
            let start = char_of(f.start);
            let end = char_of(f.end);
            out.push((kinds[f.kind as usize].clone(), start, end, f.confidence));
        }
        Ok(out)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("IGNORED_FIELDS", hashing::IGNORED_FIELDS.to_vec())?;
    m.add("PROMPT_FEATURE_NAMES", features::NAMES.to_vec())?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(encoding_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(warm, m)?)?;
    m.add_function(wrap_pyfunction!(count_chat_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(request_hash, m)?)?;
    m.add_function(wrap_pyfunction!(prefix_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(near_miss_verdict, m)?)?;
    m.add_function(wrap_pyfunction!(near_miss_words, m)?)?;
    m.add_function(wrap_pyfunction!(prompt_features, m)?)?;
    m.add_class::<PyRuleSet>()?;
    m.add_class::<PyPiiDetector>()?;
    Ok(())
}
