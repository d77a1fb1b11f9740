//! Sensitive data in request text: what must not leave the organisation, found at proxy speed.
//!
//! One pass finds the anchors of every kind at once (an Aho-Corasick automaton over key prefixes,
//! private-key headers, `Bearer` and words such as `password`), a second walks the bytes once for
//! `@`, digit runs, IBAN-shaped words and IPv6 colons. A candidate becomes a finding only after the
//! check its kind allows: Luhn and the issuer's prefix and length for cards, mod 97 for IBANs, the
//! SSA's never-issued ranges for SSNs, a parse for IP addresses, the number plan's grouping for phone
//! numbers. Shapes that look alike but are not (dates, times, versions, order numbers without a
//! context word) are refused rather than reported at low confidence. Operators add their own kinds:
//! regular expressions and word lists.
//!
//! Spans are byte offsets into the UTF-8 text; findings never overlap (the more certain, then the
//! longer, wins).

mod checks;
mod numbers;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

pub use checks::{card_network, iban_valid, luhn, ssn_valid, verhoeff};

/// The built-in kinds, by the names configs and headers use.
pub const BUILTIN: [&str; 11] = [
    "email",
    "phone",
    "card",
    "iban",
    "us_ssn",
    "uk_nino",
    "ca_sin",
    "in_aadhaar",
    "ip_address",
    "credential",
    "private_key",
];
/// On unless a config names its own list: the national identifiers beyond the US SSN are opt-in.
pub const DEFAULT_ON: [&str; 8] = [
    "email",
    "phone",
    "card",
    "iban",
    "us_ssn",
    "ip_address",
    "credential",
    "private_key",
];

pub(crate) const EMAIL: u16 = 0;
pub(crate) const PHONE: u16 = 1;
pub(crate) const CARD: u16 = 2;
pub(crate) const IBAN: u16 = 3;
pub(crate) const US_SSN: u16 = 4;
pub(crate) const UK_NINO: u16 = 5;
pub(crate) const CA_SIN: u16 = 6;
pub(crate) const IN_AADHAAR: u16 = 7;
pub(crate) const IP_ADDRESS: u16 = 8;
pub(crate) const CREDENTIAL: u16 = 9;
pub(crate) const PRIVATE_KEY: u16 = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finding {
    /// Index into [`Detector::kinds`].
    pub kind: u16,
    pub start: usize,
    pub end: usize,
    pub confidence: f64,
}

/// What an anchor found by the automaton starts.
#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// A provider key: the exact (case-sensitive) prefix, then `min..=max` characters of a class.
    Key {
        min: usize,
        max: usize,
        class: Class,
    },
    /// A JSON Web Token: `eyJ` then three base64url segments.
    Jwt,
    /// `-----BEGIN ... PRIVATE KEY-----` through its `-----END ...-----` line.
    PrivateKey,
    /// `Bearer <token>`.
    Bearer,
    /// A word after which a secret value follows (`password: ...`, `the password is ...`).
    SecretWord,
}

#[derive(Clone, Copy, Debug)]
enum Class {
    /// `[A-Za-z0-9_-]`
    Token,
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Z0-9]`
    Upper,
    /// `[A-Za-z]`
    Letters,
}

impl Class {
    fn has(self, b: u8) -> bool {
        match self {
            Class::Token => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Class::Alnum => b.is_ascii_alphanumeric(),
            Class::Upper => b.is_ascii_uppercase() || b.is_ascii_digit(),
            Class::Letters => b.is_ascii_alphabetic(),
        }
    }
}

/// Provider key formats (prefix, body length range, body class), as each provider documents them.
const KEYS: &[(&str, usize, usize, Class)] = &[
    ("sk-", 20, 300, Class::Token), // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), DeepSeek
    ("sk_live_", 16, 200, Class::Alnum), // Stripe secret keys
    ("rk_live_", 16, 200, Class::Alnum),
    ("sk_test_", 16, 200, Class::Alnum),
    ("AKIA", 16, 16, Class::Upper), // AWS access key ids
    ("ASIA", 16, 16, Class::Upper),
    ("AGPA", 16, 16, Class::Upper),
    ("AIDA", 16, 16, Class::Upper),
    ("AROA", 16, 16, Class::Upper),
    ("ghp_", 30, 255, Class::Alnum), // GitHub tokens
    ("gho_", 30, 255, Class::Alnum),
    ("ghu_", 30, 255, Class::Alnum),
    ("ghs_", 30, 255, Class::Alnum),
    ("ghr_", 30, 255, Class::Alnum),
    ("github_pat_", 22, 255, Class::Token),
    ("xoxb-", 10, 255, Class::Token), // Slack
    ("xoxp-", 10, 255, Class::Token),
    ("xoxa-", 10, 255, Class::Token),
    ("xoxr-", 10, 255, Class::Token),
    ("xoxs-", 10, 255, Class::Token),
    ("AIza", 35, 35, Class::Token),    // Google API keys
    ("glpat-", 20, 255, Class::Token), // GitLab
    ("hf_", 30, 255, Class::Letters),  // Hugging Face
];
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "auth_token",
    "token",
];
const LONGEST_SECRET_WORD: usize = 13;

pub struct Detector {
    enabled: [bool; BUILTIN.len()],
    kinds: Vec<String>,
    anchors: Option<AhoCorasick>,
    roles: Vec<Anchor>,
    /// The operator's word lists, matched whole and in any case.
    terms: Option<AhoCorasick>,
    term_kinds: Vec<u16>,
    patterns: Vec<(u16, Regex)>,
}

impl Detector {
    /// `enabled`: built-in kinds to run (None: [`DEFAULT_ON`]); `patterns`: operator kinds as
    /// (name, regular expression); `terms`: operator kinds as (name, words matched whole, any case).
    pub fn new(
        enabled: Option<&[&str]>,
        patterns: &[(&str, &str)],
        terms: &[(&str, Vec<&str>)],
    ) -> Result<Self, String> {
        let mut on = [false; BUILTIN.len()];
        for name in enabled.unwrap_or(&DEFAULT_ON) {
            let index = BUILTIN.iter().position(|b| b == name).ok_or_else(|| {
                format!(
                    "unknown kind {name:?}; expected one of {}",
                    BUILTIN.join(", ")
                )
            })?;
            on[index] = true;
        }
        let mut kinds: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
        let mut add_kind = |name: &str| -> Result<u16, String> {
            if BUILTIN.contains(&name) {
                return Err(format!(
                    "{name:?} is a built-in kind; give the operator's kind another name"
                ));
            }
            Ok(match kinds.iter().position(|k| k == name) {
                Some(i) => i as u16,
                None => {
                    kinds.push(name.to_string());
                    (kinds.len() - 1) as u16
                }
            })
        };
        let mut compiled = Vec::new();
        for (name, pattern) in patterns {
            let regex = Regex::new(pattern).map_err(|e| format!("pattern {name:?}: {e}"))?;
            compiled.push((add_kind(name)?, regex));
        }
        let mut terms_words: Vec<String> = Vec::new();
        let mut term_kinds: Vec<u16> = Vec::new();
        for (name, list) in terms {
            let kind = add_kind(name)?;
            for word in list {
                if !word.trim().is_empty() {
                    terms_words.push(word.trim().to_string());
                    term_kinds.push(kind);
                }
            }
        }
        // Exact (case-sensitive) literals, which the automaton's SIMD prefilter skips prose for; the few case
        // variants people write are listed. `password:`-style words are found from their `:` or `=` instead
        // (numbers::walk), which prose has few of.
        let mut words: Vec<String> = Vec::new();
        let mut roles: Vec<Anchor> = Vec::new();
        if on[CREDENTIAL as usize] {
            for &(prefix, min, max, class) in KEYS {
                words.push(prefix.to_string());
                roles.push(Anchor::Key { min, max, class });
            }
            words.push("eyJ".into());
            roles.push(Anchor::Jwt);
            for bearer in ["Bearer ", "bearer ", "BEARER "] {
                words.push(bearer.into());
                roles.push(Anchor::Bearer);
            }
            for phrase in [
                "password",
                "Password",
                "PASSWORD",
                "passphrase",
                "Passphrase",
                "passwd",
            ] {
                words.push(phrase.into()); // "my password is ..." has no `:` to find it by
                roles.push(Anchor::SecretWord);
            }
        }
        if on[PRIVATE_KEY as usize] {
            words.push("-----BEGIN ".into());
            roles.push(Anchor::PrivateKey);
        }
        // Leftmost-longest, so `sk_live_` wins over `sk-`'s neighbours.
        let anchors = (!words.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&words)
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        let terms = (!terms_words.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&terms_words)
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Detector {
            enabled: on,
            kinds,
            anchors,
            roles,
            terms,
            term_kinds,
            patterns: compiled,
        })
    }

    /// Every kind's name: the built-ins, then the operator's, indexed by [`Finding::kind`].
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    pub(crate) fn on(&self, kind: u16) -> bool {
        self.enabled[kind as usize]
    }

    /// The findings in `text`, in order, none overlapping.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        self.anchored(text, &mut found);
        numbers::walk(self, text.as_bytes(), &mut found);
        for (kind, regex) in &self.patterns {
            for m in regex.find_iter(text) {
                if !m.is_empty() {
                    found.push(Finding {
                        kind: *kind,
                        start: m.start(),
                        end: m.end(),
                        confidence: 1.0,
                    });
                }
            }
        }
        resolve(found)
    }

    fn anchored(&self, text: &str, found: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        if let Some(anchors) = &self.anchors {
            for m in anchors.find_iter(text) {
                let (start, end) = (m.start(), m.end());
                let finding = match self.roles[m.pattern().as_usize()] {
                    Anchor::Key { min, max, class } => key(bytes, start, end, min, max, class),
                    Anchor::Jwt => jwt(bytes, start),
                    Anchor::PrivateKey => private_key(text, start),
                    Anchor::Bearer => bearer(bytes, start, end),
                    Anchor::SecretWord => secret_value(bytes, start, end),
                };
                found.extend(finding);
            }
        }
        if let Some(terms) = &self.terms {
            for m in terms.find_iter(text) {
                let (start, end) = (m.start(), m.end());
                if word_start(bytes, start) && word_end(bytes, end) {
                    let kind = self.term_kinds[m.pattern().as_usize()];
                    found.push(Finding {
                        kind,
                        start,
                        end,
                        confidence: 1.0,
                    });
                }
            }
        }
    }
}

pub(crate) fn word_start(bytes: &[u8], at: usize) -> bool {
    at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_')
}

pub(crate) fn word_end(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || !(bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_')
}

fn run(bytes: &[u8], from: usize, class: Class) -> usize {
    let mut j = from;
    while j < bytes.len() && class.has(bytes[j]) {
        j += 1;
    }
    j
}

fn key(
    bytes: &[u8],
    start: usize,
    end: usize,
    min: usize,
    max: usize,
    class: Class,
) -> Option<Finding> {
    if !word_start(bytes, start) {
        return None; // "task-..." is not an "sk-" key
    }
    let stop = run(bytes, end, class);
    let body = stop - end;
    if body < min || body > max || !word_end(bytes, stop) {
        return None;
    }
    // A real key body mixes letters and digits; "sk-learn-tutorial-for-beginners" does not.
    let tail = &bytes[end..stop];
    let digits = tail.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == 0 && !matches!(class, Class::Letters) {
        return None;
    }
    Some(Finding {
        kind: CREDENTIAL,
        start,
        end: stop,
        confidence: 0.99,
    })
}

fn jwt(bytes: &[u8], start: usize) -> Option<Finding> {
    if !word_start(bytes, start) {
        return None;
    }
    let mut j = start;
    for segment in 0..3 {
        let stop = run(bytes, j, Class::Token);
        if stop - j < 4 {
            return None;
        }
        j = stop;
        if segment < 2 {
            if bytes.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    (j - start >= 30 && word_end(bytes, j)).then_some(Finding {
        kind: CREDENTIAL,
        start,
        end: j,
        confidence: 0.99,
    })
}

fn private_key(text: &str, start: usize) -> Option<Finding> {
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let header = &text[start..line_end];
    if !(header.contains("PRIVATE KEY-----") || header.contains("OPENSSH PRIVATE KEY")) {
        return None;
    }
    let end = match text[line_end..].find("-----END ") {
        Some(i) => {
            let from = line_end + i + 9;
            text[from..]
                .find("-----")
                .map_or(text.len(), |k| from + k + 5)
        }
        None => text.len(), // a key cut off mid-way is still a key
    };
    Some(Finding {
        kind: PRIVATE_KEY,
        start,
        end,
        confidence: 0.99,
    })
}

fn bearer(bytes: &[u8], start: usize, end: usize) -> Option<Finding> {
    if !word_start(bytes, start) {
        return None;
    }
    let mut j = end;
    while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || b"._~+/=-".contains(&bytes[j])) {
        j += 1;
    }
    let token = &bytes[end..j];
    (token.len() >= 16 && checks::entropy(token) >= 3.0).then_some(Finding {
        kind: CREDENTIAL,
        start: end,
        end: j,
        confidence: 0.9,
    })
}

/// At a `:` or `=`: the value after it when the word before it names a secret (`"api_key": "..."`, `secret=...`).
pub(crate) fn secret_at_separator(bytes: &[u8], separator: usize) -> Option<Finding> {
    let mut end = separator;
    while end > 0 && matches!(bytes[end - 1], b' ' | b'"' | b'\'') {
        end -= 1;
    }
    let mut start = end;
    while start > 0
        && end - start <= LONGEST_SECRET_WORD
        && (bytes[start - 1].is_ascii_alphanumeric()
            || bytes[start - 1] == b'_'
            || bytes[start - 1] == b'-')
    {
        start -= 1;
    }
    let word = &bytes[start..end];
    SECRET_WORDS
        .iter()
        .any(|w| w.as_bytes().eq_ignore_ascii_case(word))
        .then(|| secret_value(bytes, start, end))
        .flatten()
}

/// `password: hunter2`, `secret=...`, `the password is ...`: the value after the word at `start..end`.
fn secret_value(bytes: &[u8], start: usize, end: usize) -> Option<Finding> {
    if !word_start(bytes, start) {
        return None;
    }
    // `password_reset_url` is not a password: the word must end here (a closing quote may follow).
    let mut j = end;
    if j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
        return None;
    }
    while j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
        j += 1;
    }
    while j < bytes.len() && bytes[j] == b' ' {
        j += 1;
    }
    let rest = &bytes[j..];
    if rest.first().is_some_and(|&b| b == b':' || b == b'=') {
        j += 1;
    } else if rest.starts_with(b"is ") || rest.starts_with(b"was ") {
        j += if rest[0] == b'i' { 3 } else { 4 };
    } else {
        return None;
    }
    while j < bytes.len() && matches!(bytes[j], b' ' | b'"' | b'\'' | b'`') {
        j += 1;
    }
    let from = j;
    while j < bytes.len()
        && !matches!(
            bytes[j],
            b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'`' | b',' | b';' | b'}' | b')'
        )
    {
        j += 1;
    }
    // A sentence's full stop is not part of the secret.
    while j > from && bytes[j - 1] == b'.' {
        j -= 1;
    }
    let value = &bytes[from..j];
    if value.len() < 6 || value.len() > 200 || not_a_secret(value) {
        return None;
    }
    let classes = [
        value.iter().any(u8::is_ascii_lowercase),
        value.iter().any(u8::is_ascii_uppercase),
        value.iter().any(u8::is_ascii_digit),
        value.iter().any(|b| b.is_ascii_punctuation()),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    let confidence = if classes >= 2 && checks::entropy(value) >= 2.5 {
        0.9
    } else {
        0.6
    };
    Some(Finding {
        kind: CREDENTIAL,
        start: from,
        end: j,
        confidence,
    })
}

/// Placeholders, template variables, paths and links: what follows "password:" in documentation.
fn not_a_secret(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    lower
        .iter()
        .all(|b| matches!(b, b'*' | b'x' | b'.' | b'<' | b'>' | b'-' | b'_' | b'#'))
        || [
            &b"null"[..],
            b"none",
            b"redacted",
            b"<redacted>",
            b"[redacted]",
            b"changeme",
            b"required",
            b"optional",
        ]
        .contains(&lower.as_slice())
        || lower.starts_with(b"${")
        || lower.starts_with(b"os.environ")
        || lower.starts_with(b"{{")
        || lower.starts_with(b"/")
        || lower.starts_with(b"~/")
        || lower.starts_with(b"http://")
        || lower.starts_with(b"https://")
}

/// Sorted by start; where two overlap, the more certain, then the longer, stays.
fn resolve(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut kept: Vec<Finding> = Vec::with_capacity(found.len());
    for f in found {
        match kept.last_mut() {
            Some(last) if f.start < last.end => {
                let longer = f.end - f.start > last.end - last.start;
                if f.confidence > last.confidence || (f.confidence == last.confidence && longer) {
                    *last = f;
                }
            }
            _ => kept.push(f),
        }
    }
    kept
}

#[cfg(test)]
mod tests;
