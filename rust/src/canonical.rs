//! Streaming canonical JSON: validates a document and writes its canonical form in one pass, without
//! building a tree, so hashing a request body costs about one read and one write of it.
//!
//! Canonical form: no insignificant whitespace; object members sorted by the UTF-8 bytes of their
//! decoded keys (for a duplicated key the last value wins, as in Python's `json` and serde_json);
//! strings escaped one way only (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters
//! as `\u00xx`, everything else literal, so `"\u00e9"`, `"é"` and `"\/"`, `"/"` agree); numbers as a
//! JSON parser and so the provider reads them (integer literals that fit i64/u64 exactly, anything
//! else as the nearest f64), integral values written as integers, others in shortest round-trip
//! exponent form (`1.0`, `1e0` → `1`; `0.70` → `7e-1`).
//!
//! Parsing is strict (RFC 8259): invalid UTF-8, lone surrogate escapes, control characters in
//! strings, trailing commas, `NaN` and numbers beyond f64 are errors, and so is nesting deeper than
//! [`MAX_DEPTH`], which also bounds the recursion.

use std::ops::Range;

use crate::json::InvalidInput;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

type Result<T> = std::result::Result<T, InvalidInput>;

struct Member {
    /// Decoded key, in `Parser::keys`.
    key: Range<usize>,
    /// Canonical `"key":value` text, in the output.
    text: Range<usize>,
}

pub struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    // Stacks shared by nested objects (each truncates back to where it started).
    keys: Vec<u8>,
    members: Vec<Member>,
    scratch: Vec<u8>,
}

impl<'a> Parser<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Parser {
            s,
            pos: 0,
            keys: Vec::new(),
            members: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Parses a whole document that must be an object, leaving out its top-level members named in
    /// `skip`. Returns the ranges of `out` holding the canonical `"key":value` members in canonical
    /// order: the canonical document is `{` + those joined by `,` + `}`. The caller can hash them in
    /// place, saving a copy of the whole body.
    pub fn document_members(
        &mut self,
        out: &mut Vec<u8>,
        skip: &[&str],
    ) -> Result<Vec<Range<usize>>> {
        self.ws();
        if !self.eat(b'{') {
            let kind = self.peek_kind();
            self.skip_value()?;
            return Err(InvalidInput(format!(
                "request body must be a JSON object, not {kind}"
            )));
        }
        let (base, keys_base) = (self.members.len(), self.keys.len());
        self.object_members(out, 1, skip)?;
        let order = self
            .canonical_order(base)
            .unwrap_or_else(|| self.members.iter().map(|m| m.text.clone()).collect());
        self.members.truncate(base);
        self.keys.truncate(keys_base);
        self.end()?;
        Ok(order)
    }

    /// Walks a document that must be an object: `member` gets each top-level key (decoded) and must
    /// consume its value, with [`Parser::value`], [`Parser::array`] or [`Parser::skip_value`].
    pub fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.ws();
        if self.peek() != Some(b'{') {
            let kind = self.peek_kind();
            self.skip_value()?;
            return Err(InvalidInput(format!(
                "request body must be a JSON object, not {kind}"
            )));
        }
        self.pos += 1;
        self.ws();
        if self.eat(b'}') {
            return self.end();
        }
        let mut key = Vec::new();
        let mut sink = Vec::new();
        loop {
            self.expect(b'"')?;
            key.clear();
            sink.clear();
            self.string(&mut sink, Some(&mut key))?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            member(self, &key)?;
            self.ws();
            if !self.eat(b',') {
                self.expect(b'}')?;
                return self.end();
            }
            self.ws();
        }
    }

    /// Appends the canonical form of the next value.
    pub fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                self.object(out, depth, &[])
            }
            Some(b'[') => {
                out.push(b'[');
                let mut first = true;
                self.array(|p| {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    p.value(out, depth + 1)
                })?;
                out.push(b']');
                Ok(())
            }
            Some(b'"') => {
                self.pos += 1;
                self.string(out, None)
            }
            Some(b'-' | b'0'..=b'9') => self.number(out),
            Some(b't') => self.literal(b"true", out),
            Some(b'f') => self.literal(b"false", out),
            Some(b'n') => self.literal(b"null", out),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    /// Validates and discards the next value.
    pub fn skip_value(&mut self) -> Result<()> {
        let mut sink = std::mem::take(&mut self.scratch);
        sink.clear();
        let result = self.value(&mut sink, 1);
        self.scratch = sink;
        result
    }

    /// Calls `element` for each element of the array that must come next; `element` must consume it.
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.expect(b'[')?;
        self.ws();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            if !self.eat(b',') {
                return self.expect(b']');
            }
        }
    }

    /// The JSON type of the next value, for error messages.
    pub fn peek_kind(&mut self) -> &'static str {
        self.ws();
        match self.peek() {
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "invalid JSON",
        }
    }

    /// A canonical object; the opening brace is consumed.
    fn object(&mut self, out: &mut Vec<u8>, depth: usize, skip: &[&str]) -> Result<()> {
        out.push(b'{');
        let region = out.len();
        let (base, keys_base) = (self.members.len(), self.keys.len());
        self.object_members(out, depth, skip)?;
        if let Some(order) = self.canonical_order(base) {
            self.scratch.clear();
            self.scratch.extend_from_slice(&out[region..]);
            out.truncate(region);
            for (i, r) in order.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&self.scratch[r.start - region..r.end - region]);
            }
        }
        out.push(b'}');
        self.members.truncate(base);
        self.keys.truncate(keys_base);
        Ok(())
    }

    /// Members up to and including the closing brace: each canonical `"key":value` goes to `out`
    /// (comma-separated, in input order) and is recorded in `self.members`.
    fn object_members(&mut self, out: &mut Vec<u8>, depth: usize, skip: &[&str]) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        let base = self.members.len();
        self.ws();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let before_comma = out.len();
            if self.members.len() > base {
                out.push(b',');
            }
            let (text_start, key_start) = (out.len(), self.keys.len());
            let mut keys = std::mem::take(&mut self.keys);
            let key = self.string(out, Some(&mut keys));
            self.keys = keys;
            key?;
            self.ws();
            self.expect(b':')?;
            out.push(b':');
            self.ws();
            self.value(out, depth + 1)?;
            let name = &self.keys[key_start..];
            if skip.iter().any(|s| s.as_bytes() == name) {
                out.truncate(before_comma);
                self.keys.truncate(key_start);
            } else {
                self.members.push(Member {
                    key: key_start..self.keys.len(),
                    text: text_start..out.len(),
                });
            }
            self.ws();
            if !self.eat(b',') {
                return self.expect(b'}');
            }
            self.ws();
        }
    }

    /// The member texts of `self.members[base..]` sorted by key with duplicates resolved (the last
    /// one wins), or `None` when they already are in that order.
    fn canonical_order(&mut self, base: usize) -> Option<Vec<Range<usize>>> {
        let keys = &self.keys;
        let members = &mut self.members[base..];
        if members
            .windows(2)
            .all(|w| keys[w[0].key.clone()] < keys[w[1].key.clone()])
        {
            return None;
        }
        members.sort_by(|a, b| keys[a.key.clone()].cmp(&keys[b.key.clone()]));
        let order = members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                members
                    .get(i + 1)
                    .is_none_or(|next| keys[next.key.clone()] != keys[m.key.clone()])
            })
            .map(|(_, m)| m.text.clone())
            .collect();
        Some(order)
    }

    /// String contents after the opening quote: canonical text to `out` (with quotes), decoded
    /// bytes to `decoded`.
    fn string(&mut self, out: &mut Vec<u8>, mut decoded: Option<&mut Vec<u8>>) -> Result<()> {
        out.push(b'"');
        loop {
            let start = self.pos;
            self.skip_plain();
            // Chunks end at ASCII bytes, so they never split a valid UTF-8 sequence.
            let chunk = &self.s[start..self.pos];
            if !chunk.is_ascii() && std::str::from_utf8(chunk).is_err() {
                return Err(self.error("invalid UTF-8 in string"));
            }
            out.extend_from_slice(chunk);
            if let Some(d) = decoded.as_mut() {
                d.extend_from_slice(chunk);
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    out.push(b'"');
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    write_char(out, c);
                    if let Some(d) = decoded.as_mut() {
                        d.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
                None => return Err(self.error("unexpected end of input in string")),
            }
        }
    }

    /// Advances past literal string content: up to a `"`, `\` or control character. Eight bytes at a
    /// time (SWAR): a byte is flagged if it equals 0x22 or 0x5C or is below 0x20; borrows can only
    /// flag bytes after a true hit, so the lowest flag is exact.
    #[inline]
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        while let Some(word) = self.s.get(self.pos..self.pos + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let quote = w ^ (ONES * u64::from(b'"'));
            let backslash = w ^ (ONES * u64::from(b'\\'));
            let hits = (quote.wrapping_sub(ONES) & !quote)
                | (backslash.wrapping_sub(ONES) & !backslash)
                | (w.wrapping_sub(ONES * 0x20) & !w);
            let hits = hits & HIGH;
            if hits != 0 {
                self.pos += hits.trailing_zeros() as usize / 8;
                return;
            }
            self.pos += 8;
        }
        while self.pos < self.s.len() && !STRING_SPECIAL[usize::from(self.s[self.pos])] {
            self.pos += 1;
        }
    }

    /// The character of an escape sequence, after its backslash.
    fn escape(&mut self) -> Result<char> {
        let b = self
            .peek()
            .ok_or_else(|| self.error("unexpected end of input in string"))?;
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let cp = match hi {
                    0xD800..=0xDBFF => {
                        if !(self.eat(b'\\') && self.eat(b'u')) {
                            return Err(self.error("lone surrogate in escape"));
                        }
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.error("lone surrogate in escape"));
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(self.error("lone surrogate in escape")),
                    _ => hi,
                };
                char::from_u32(cp).expect("surrogates excluded")
            }
            _ => return Err(self.error("invalid escape")),
        };
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .s
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        let mut v = 0;
        for &d in digits {
            let x = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            v = v * 16 + x;
        }
        self.pos += 4;
        Ok(v)
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).expect("ASCII");
        // An integer literal that fits 64 bits is already canonical (JSON has no `+` or leading
        // zeros), except `-0`.
        if integer
            && (text.len() <= 18 || text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok())
        {
            out.extend_from_slice(if text == "-0" { b"0" } else { text.as_bytes() });
            return Ok(());
        }
        let f: f64 = text.parse().expect("a valid JSON number parses as f64");
        if !f.is_finite() {
            return Err(self.error("number out of range"));
        }
        write_f64(f, out);
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn end(&mut self) -> Result<()> {
        self.ws();
        if self.pos == self.s.len() {
            Ok(())
        } else {
            Err(self.error("trailing characters"))
        }
    }

    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    #[inline]
    fn expect(&mut self, b: u8) -> Result<()> {
        if self.eat(b) {
            Ok(())
        } else if self.pos >= self.s.len() {
            Err(self.error("unexpected end of input"))
        } else {
            Err(self.error(&format!("expected '{}'", b as char)))
        }
    }

    fn error(&self, what: &str) -> InvalidInput {
        InvalidInput(format!(
            "request body is not valid JSON: {what} at byte {}",
            self.pos
        ))
    }
}

/// Bytes that end a run of literal string content: `"`, `\` and control characters.
static STRING_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn write_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

/// Integral values in i64/u64 range as integers, others in shortest round-trip exponent form.
fn write_f64(f: f64, out: &mut Vec<u8>) {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    let text = if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
        (f as i64).to_string()
    } else if f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) {
        (f as u64).to_string()
    } else {
        format!("{f:e}")
    };
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(json: &str) -> String {
        let mut out = Vec::new();
        let members = Parser::new(json.as_bytes())
            .document_members(&mut out, &["skip"])
            .unwrap();
        let texts: Vec<&str> = members
            .into_iter()
            .map(|r| std::str::from_utf8(&out[r]).unwrap())
            .collect();
        format!("{{{}}}", texts.join(","))
    }

    fn error(json: &[u8]) -> String {
        Parser::new(json)
            .document_members(&mut Vec::new(), &[])
            .unwrap_err()
            .0
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            canonical(
                r#" { "b" : [1, 1.0, 1e0, -0.0, 2.50, 1e19, 0.7, -0], "a": {"y": null, "x": "\u00e9\n\/"}, "skip": 1 } "#
            ),
            r#"{"a":{"x":"é\n/","y":null},"b":[1,1,1,0,2.5e0,10000000000000000000,7e-1,0]}"#
        );
        assert_eq!(
            canonical(r#"{"k": [9007199254740993, -9223372036854775808, 1e300, 1e-400]}"#),
            r#"{"k":[9007199254740993,-9223372036854775808,1e300,0]}"#
        );
        assert_eq!(
            canonical(r#"{"a\"": "\u0001\ud83d\ude00", "a": true, "a!": false}"#),
            r#"{"a":true,"a!":false,"a\"":"\u0001😀"}"#
        );
        // Duplicates: the last value wins; sorted input is left as is.
        assert_eq!(canonical(r#"{"b": 1, "a": 2, "b": 3}"#), r#"{"a":2,"b":3}"#);
        assert_eq!(canonical(r#"{"skip": 0, "a": 1, "skip": 2}"#), r#"{"a":1}"#);
        assert_eq!(canonical(r#"{"a": {}, "b": []}"#), r#"{"a":{},"b":[]}"#);
        assert_eq!(canonical(r#"{}"#), r#"{}"#);
        // Long strings take the 8-bytes-at-a-time path; a special byte at every offset is found.
        for i in 0..20 {
            let text = format!("{}\\n{}", "x".repeat(i), "é".repeat(i));
            assert_eq!(
                canonical(&format!(r#"{{"k": "{text}"}}"#)),
                format!(r#"{{"k":"{text}"}}"#)
            );
        }
        // Skipping applies at the top level only.
        assert_eq!(canonical(r#"{"x": {"skip": 1}}"#), r#"{"x":{"skip":1}}"#);
    }

    #[test]
    fn errors() {
        for (json, what) in [
            (&b""[..], "unexpected end"),
            (b"{", "unexpected end"),
            (b"{\"a\":1,}", "expected '\"'"),
            (b"{\"a\":01}", "expected '}'"),
            (b"{\"a\":1.}", "invalid number"),
            (b"{\"a\":1e999}", "out of range"),
            (b"{\"a\":NaN}", "expected a value"),
            (b"{\"a\":\"\xff\"}", "invalid UTF-8"),
            (b"{\"a\":\"\\ud800\"}", "lone surrogate"),
            (b"{\"a\":\"\\udc00\"}", "lone surrogate"),
            (b"{\"a\":\"\x01\"}", "control character"),
            (b"{\"a\":\"\\x\"}", "invalid escape"),
            (b"{} {}", "trailing characters"),
            (b"[1]", "must be a JSON object, not an array"),
            (b"\"s\"", "must be a JSON object, not a string"),
        ] {
            let e = error(json);
            assert!(e.contains(what), "{:?}: {e}", String::from_utf8_lossy(json));
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(error(format!("{{\"a\":{deep}}}").as_bytes()).contains("recursion limit"));
        let ok = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(Parser::new(format!("{{\"a\":{ok}}}").as_bytes())
            .document_members(&mut Vec::new(), &[])
            .is_ok());
    }

    #[test]
    fn members_walk_top_level() {
        let mut seen = Vec::new();
        let mut p = Parser::new(br#" {"a": [1, {"b": 2}], "c": "x"} "#);
        p.members(|p, key| {
            seen.push(String::from_utf8(key.to_vec()).unwrap());
            p.skip_value()
        })
        .unwrap();
        assert_eq!(seen, ["a", "c"]);
        let err = Parser::new(b"[]")
            .members(|p, _| p.skip_value())
            .unwrap_err();
        assert!(err.0.contains("not an array"));
    }
}
