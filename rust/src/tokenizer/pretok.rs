//! Hand-written pre-tokenizers: they split text exactly where tiktoken's `pat_str` regexes do, without
//! a regex engine. Each `*_piece` function returns the end of the leftmost-first match that starts at
//! byte `i`, following the alternatives of the pattern in order (backtracking worked out by hand).
//!
//! cl100k_base:
//! `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
//!
//! o200k_base (one alternative per line):
//! ```text
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//! \p{N}{1,3}
//!  ?[^\s\p{L}\p{N}]+[\r\n/]*
//! \s*[\r\n]+
//! \s+(?!\S)
//! \s+
//! ```

use super::classes::{
    at, CASED_LOWER, CASED_UPPER, LEAD, LETTER, LOWER, MARK, NUMBER, SYMBOL, WHITESPACE,
};

/// Which `pat_str` to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Cl100k,
    O200k,
}

/// Calls `f` with each pre-token of `text`, in order; the pieces concatenate back to `text`.
#[inline]
pub fn split(pattern: Pattern, text: &str, mut f: impl FnMut(&[u8])) {
    let s = text.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let end = match pattern {
            Pattern::Cl100k => cl100k_piece(s, i),
            Pattern::O200k => o200k_piece(s, i),
        };
        f(&s[i..end]);
        i = end;
    }
}

fn cl100k_piece(s: &[u8], i: usize) -> usize {
    let b = s[i];
    if b == b'\'' {
        let n = contraction(s, i);
        if n > 0 {
            return i + n;
        }
    }
    let (c, n) = at(s, i);
    if c & LETTER != 0 {
        return run(s, i + n, LETTER);
    }
    if c & NUMBER != 0 {
        return numbers(s, i);
    }
    // `[^\r\n\p{L}\p{N}]?+\p{L}++` with the lead character.
    if c & LEAD != 0 && i + n < s.len() && at(s, i + n).0 & LETTER != 0 {
        return run(s, i + n, LETTER);
    }
    if let Some(j) = symbol_start(s, i, b, c) {
        let end = run(s, j, SYMBOL);
        return run_bytes(s, end, |b| b == b'\r' || b == b'\n');
    }
    let ws = Whitespace::scan(s, i);
    if ws.end == s.len() {
        ws.end // \s++$
    } else if let Some(end) = ws.last_newline_end {
        end // \s*[\r\n]
    } else if ws.last_char_start > i {
        ws.last_char_start // \s+(?!\S)
    } else {
        ws.end // \s
    }
}

fn o200k_piece(s: &[u8], i: usize) -> usize {
    let b = s[i];
    let (c, n) = at(s, i);
    if c & (LETTER | MARK) != 0 {
        // A mark is both a possible lead character (tried first, as `?` is greedy) and a cased
        // character; a letter can only start the cased runs. Both cases always match.
        let end = if c & MARK != 0 {
            cased(s, i + n).0.or(cased(s, i).0)
        } else {
            let (first, second) = cased(s, i);
            first.or(second)
        };
        let end = end.expect("a letter or mark always starts a cased match");
        return end + contraction(s, end);
    }
    if c & NUMBER != 0 {
        return numbers(s, i);
    }
    if c & LEAD != 0 && i + n < s.len() {
        let (first, second) = cased(s, i + n);
        if let Some(end) = first.or(second) {
            return end + contraction(s, end);
        }
    }
    if let Some(j) = symbol_start(s, i, b, c) {
        let end = run(s, j, SYMBOL);
        return run_bytes(s, end, |b| b == b'\r' || b == b'\n' || b == b'/');
    }
    let ws = Whitespace::scan(s, i);
    if let Some(end) = ws.last_newline_end {
        end // \s*[\r\n]+
    } else if ws.end == s.len() {
        ws.end // \s+(?!\S) at the end of the text
    } else if ws.last_char_start > i {
        ws.last_char_start // \s+(?!\S)
    } else {
        ws.end // \s+ (a single character here)
    }
}

/// Ends of o200k's two cased alternatives from `start` (after any lead character, before the
/// contraction): `[UP]*[LO]+` and `[UP]+[LO]*`, where UP and LO share Lm, Lo and marks.
fn cased(s: &[u8], start: usize) -> (Option<usize>, Option<usize>) {
    let mut i = start;
    let mut last_shared_end = None;
    while i < s.len() {
        let (c, n) = at(s, i);
        if c & CASED_UPPER == 0 {
            break;
        }
        i += n;
        if c & CASED_LOWER != 0 {
            last_shared_end = Some(i);
        }
    }
    let upper_end = i;
    // The greedy UP* run stops before a Ll character, which LO+ then extends…
    let lower_end = (i < s.len() && at(s, i).0 & LOWER != 0).then(|| run(s, i, CASED_LOWER));
    // …else UP* backtracks to give LO+ its last shared (Lm/Lo/mark) character.
    let first = lower_end.or(last_shared_end);
    let second = (upper_end > start).then(|| lower_end.unwrap_or(upper_end));
    (first, second)
}

/// Length of `'(?i:s|t|re|ve|m|ll|d)` at `i`, or 0. Case folding makes `ſ` (U+017F) match `s`.
#[inline]
fn contraction(s: &[u8], i: usize) -> usize {
    if s.get(i) != Some(&b'\'') {
        return 0;
    }
    let next = s.get(i + 2).copied().unwrap_or(0) | 0x20;
    match s.get(i + 1).map(|b| b | 0x20) {
        Some(b's' | b't' | b'm' | b'd') => 2,
        Some(b'l') if next == b'l' => 3,
        Some(b'r' | b'v') if next == b'e' => 3,
        _ if s.get(i + 1) == Some(&0xC5) && s.get(i + 2) == Some(&0xBF) => 3,
        _ => 0,
    }
}

/// Where ` ?[^\s\p{L}\p{N}]+` starts its symbol run if it matches at `i` (after an optional space).
#[inline]
fn symbol_start(s: &[u8], i: usize, b: u8, c: u8) -> Option<usize> {
    if b == b' ' && i + 1 < s.len() && at(s, i + 1).0 & SYMBOL != 0 {
        Some(i + 1)
    } else if c & SYMBOL != 0 {
        Some(i)
    } else {
        None
    }
}

/// `\p{N}{1,3}`.
#[inline]
fn numbers(s: &[u8], mut i: usize) -> usize {
    for _ in 0..3 {
        if i >= s.len() {
            break;
        }
        let (c, n) = at(s, i);
        if c & NUMBER == 0 {
            break;
        }
        i += n;
    }
    i
}

/// End of the run of characters in class `mask` from `i`.
#[inline]
fn run(s: &[u8], mut i: usize, mask: u8) -> usize {
    while i < s.len() {
        let (c, n) = at(s, i);
        if c & mask == 0 {
            break;
        }
        i += n;
    }
    i
}

/// End of the run of ASCII bytes accepted by `accept` from `i`.
#[inline]
fn run_bytes(s: &[u8], mut i: usize, accept: impl Fn(u8) -> bool) -> usize {
    while i < s.len() && accept(s[i]) {
        i += 1;
    }
    i
}

/// The maximal `\s` run at a position.
struct Whitespace {
    end: usize,
    last_char_start: usize,
    last_newline_end: Option<usize>,
}

impl Whitespace {
    fn scan(s: &[u8], start: usize) -> Self {
        let (mut i, mut last_char_start, mut last_newline_end) = (start, start, None);
        while i < s.len() {
            let (c, n) = at(s, i);
            if c & WHITESPACE == 0 {
                break;
            }
            if s[i] == b'\r' || s[i] == b'\n' {
                last_newline_end = Some(i + 1);
            }
            last_char_start = i;
            i += n;
        }
        Whitespace {
            end: i,
            last_char_start,
            last_newline_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pattern: Pattern, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split(pattern, text, |p| {
            out.push(String::from_utf8(p.to_vec()).unwrap())
        });
        out
    }

    // Expected splits were produced by tiktoken 0.14 (its regex engine) on the same strings.
    #[test]
    fn cl100k_splits() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello, world!", &["Hello", ",", " world", "!"]),
            (
                "I'm don't HE'LL 'S",
                &["I", "'m", " don", "'t", " HE", "'LL", " '", "S"],
            ),
            ("x'ſ", &["x", "'ſ"]),
            ("12345 1", &["123", "45", " ", "1"]),
            ("a  \n  ", &["a", "  \n  "]),
            ("a  \n  b", &["a", "  \n", " ", " b"]),
            ("a   b\t\tc", &["a", "  ", " b", "\t", "\tc"]),
            ("(hello) \u{301}x", &["(hello", ")", " \u{301}", "x"]),
            ("foo!!\n\nbar", &["foo", "!!\n\n", "bar"]),
            ("日本語 テキスト", &["日本語", " テキスト"]),
            ("\r\n\r\nx", &["\r\n\r\n", "x"]),
        ];
        for (text, want) in cases {
            assert_eq!(pieces(Pattern::Cl100k, text), *want, "{text:?}");
        }
    }

    #[test]
    fn o200k_splits() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello, world!", &["Hello", ",", " world", "!"]),
            (
                "I'm don't HE'LL 'S",
                &["I'm", " don't", " HE'LL", " '", "S"],
            ),
            ("CamelCaseWORDSNow", &["Camel", "Case", "WORDSNow"]),
            ("x'ſ", &["x'ſ"]),
            ("12345 1", &["123", "45", " ", "1"]),
            ("a  \n  ", &["a", "  \n", "  "]),
            ("a  \n  b", &["a", "  \n", " ", " b"]),
            ("path/to//x\n", &["path", "/to", "//", "x", "\n"]),
            ("foo!!/\n/bar", &["foo", "!!/\n/", "bar"]),
            ("\u{301}\u{301}A", &["\u{301}\u{301}", "A"]),
            ("\u{301}!", &["\u{301}", "!"]),
            ("ÀB\u{301}C", &["ÀB\u{301}", "C"]),
            ("日本語 テキスト", &["日本語", " テキスト"]),
        ];
        for (text, want) in cases {
            assert_eq!(pieces(Pattern::O200k, text), *want, "{text:?}");
        }
    }
}
