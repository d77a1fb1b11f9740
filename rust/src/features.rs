//! Cheap, deterministic features of a prompt, read by the learned model router beside a sentence
//! embedding.
//!
//! An embedding captures what a prompt is about but blurs its size and surface form: a 40-line code
//! block and its one-line description can embed alike, and neither says how many numbers a word
//! problem holds or whether answer options follow. These features keep that. Every value is in
//! [0, 1], so they sit beside the embedding without rescaling, and they cost one pass over the text
//! plus one Aho-Corasick scan for the marker phrases: microseconds, small against the embedding.
//!
//! Marker phrases match ASCII-case-insensitively, each non-overlapping occurrence once (leftmost
//! longest, so "\sum of" is one math marker, not two). A prose marker (math words, reasoning,
//! creative, constraints) that begins with a letter counts only at a word start, the byte before it
//! not an ASCII letter, digit or `_`: "prove" is not in "improve", nor "story" in "history". Only the
//! start is checked, so a marker stands for its word family ("analy" is analyse, analysis, analytic;
//! "totally" is a "total" too). Code markers count anywhere, as code glues words into identifiers
//! ("mysql", "debug", "getFunction"). A non-ASCII byte before a marker is a word start, since Chinese
//! and Japanese text runs into Latin words without a space. A match rejected for not starting a word
//! is not retried at later offsets inside it; markers are short and such overlaps rare.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// The features' names, in the order `prompt_features` returns them.
pub const NAMES: [&str; 14] = [
    "chars",
    "words",
    "lines",
    "digit_share",
    "numbers",
    "math",
    "code",
    "reasoning",
    "creative",
    "constraints",
    "question_marks",
    "choices",
    "non_ascii",
    "upper",
];

/// The features that count marker phrases; a count is scaled as min(count, 10) / 10.
#[derive(Clone, Copy)]
enum Group {
    Math,
    Code,
    Reasoning,
    Creative,
    Constraints,
}

/// Lower-case marker phrases per group. Math also counts an arithmetic operator between operands,
/// which no fixed phrase can express (see `between_operands`).
#[rustfmt::skip]
const MARKERS: [(Group, &[&str]); 5] = [
    (
        Group::Math,
        &[
            "^", "%", "$", "\\frac", "\\sqrt", "\\sum", "calculate", "how many", "how much",
            "solve", "equation", "probability", "percent", "integer", "derivative", "integral",
            "sum of", "total",
        ],
    ),
    (
        Group::Code,
        &[
            "```", "def ", "class ", "function", "return ", "import ", "#include", "=>", "();",
            "{", "}", "select ", "console.", "print(", "python", "javascript", "sql", "regex",
            "bug", "compile",
        ],
    ),
    (
        Group::Reasoning,
        &[
            "why", "explain", "prove", "step by step", "reason", "compare", "analy", "justify",
            "evaluate", "implication", "argue", "infer",
        ],
    ),
    (
        Group::Creative,
        &[
            "write", "story", "poem", "essay", "email", "letter", "imagine", "describe", "draft",
            "blog",
        ],
    ),
    (
        Group::Constraints,
        &[
            "must", "at least", "at most", "exactly", "no more than", "in json", "format",
            "words", "bullet", "list",
        ],
    ),
];

/// Every marker phrase in one automaton, with each pattern's group and whether it must start a word.
struct Markers {
    automaton: AhoCorasick,
    patterns: Vec<(Group, bool)>,
}

fn markers() -> &'static Markers {
    static MARKERS_AUTOMATON: OnceLock<Markers> = OnceLock::new();
    MARKERS_AUTOMATON.get_or_init(|| {
        let mut phrases = Vec::new();
        let mut patterns = Vec::new();
        for (group, list) in MARKERS {
            let prose = !matches!(group, Group::Code);
            for phrase in list {
                phrases.push(*phrase);
                patterns.push((group, prose && phrase.as_bytes()[0].is_ascii_alphabetic()));
            }
        }
        // A DFA is the fastest automaton to run, and for a few dozen short phrases it is small.
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&phrases)
            .expect("the marker phrases are valid patterns");
        Markers {
            automaton,
            patterns,
        }
    })
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Marker phrases found in `text`, per group (indexed by `Group as usize`).
fn count_markers(text: &str) -> [usize; MARKERS.len()] {
    let markers = markers();
    let bytes = text.as_bytes();
    let mut counts = [0; MARKERS.len()];
    for m in markers.automaton.find_iter(text) {
        let (group, word_start) = markers.patterns[m.pattern()];
        if word_start && m.start() > 0 && is_word_byte(bytes[m.start() - 1]) {
            continue;
        }
        counts[group as usize] += 1;
    }
    counts
}

/// Whether the operator at `b[at..at + len]` stands between two operands, spaces allowed around it:
/// "3 + 4", "x=5", "2x + 3 = 11", "f(x) = 3". An operand is a digit, a one-letter variable or a
/// bracket, and at least one side is a digit, so code's "a + b" or "count = total" is not math (code's
/// "i = 0" is). Dates and ranges ("2024-01-05", "3-4 hours") do count: cheap beats exact here.
fn between_operands(b: &[u8], at: usize, len: usize) -> bool {
    let (before, after) = (&b[..at], &b[at + len..]);
    let (Some(l), Some(r)) = (
        before.iter().rposition(|&c| c != b' '),
        after.iter().position(|&c| c != b' '),
    ) else {
        return false;
    };
    let (lc, rc) = (before[l], after[r]);
    let left = lc.is_ascii_digit()
        || lc == b')'
        || (lc.is_ascii_alphabetic() && !(l > 0 && before[l - 1].is_ascii_alphabetic()));
    let right = rc.is_ascii_digit()
        || rc == b'('
        || (rc.is_ascii_alphabetic() && !after.get(r + 1).is_some_and(u8::is_ascii_alphabetic));
    left && right && (lc.is_ascii_digit() || rc.is_ascii_digit())
}

/// `char::is_alphabetic`, answered directly for ASCII and for the all-letter blocks that make up most
/// Chinese, Japanese and Korean text: there the general table lookup costs about 14 ns a character,
/// more than all the rest of the pass.
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        c,
        '\u{3041}'..='\u{3096}' // hiragana
            | '\u{30A1}'..='\u{30FA}' // katakana
            | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
            | '\u{AC00}'..='\u{D7A3}' // Hangul syllables
    ) || c.is_alphabetic()
}

/// Whether the line starting at `line` opens, after spaces or tabs, with an answer-option label:
/// `A.`, `A)`, `(A)` or `A:`, A to J in either case, then a space or tab.
fn is_choice_line(line: &[u8]) -> bool {
    let start = line.iter().position(|&c| c != b' ' && c != b'\t');
    let line = &line[start.unwrap_or(line.len())..];
    let is_label = |c: &u8| matches!(c.to_ascii_uppercase(), b'A'..=b'J');
    let rest = match line {
        [b'(', l, b')', rest @ ..] if is_label(l) => rest,
        [l, b'.' | b')' | b':', rest @ ..] if is_label(l) => rest,
        _ => return false,
    };
    matches!(rest.first(), Some(b' ' | b'\t'))
}

/// The features of `text`, in the order of `NAMES`, each in [0, 1]:
///
/// - `chars`, `words`, `lines`: ln(1 + n) / 10, / 8 and / 5 (capped at 1) of the characters,
///   whitespace-separated words and newlines; the log spreads short prompts apart and caps at about
///   22,000 characters, 3,000 words and 150 lines.
/// - `digit_share`: ASCII digits per character.
/// - `numbers`: runs of digits (a `,` or `.` between digits continues one: "1,234.5"), min(n, 20) / 20.
/// - `math`, `code`, `reasoning`, `creative`, `constraints`: marker phrases (see the module docs;
///   math also counts operators between operands), min(n, 10) / 10.
/// - `question_marks`: min(n, 5) / 5.
/// - `choices`: lines opening with an answer-option label ("A. ", "(b) "), min(n, 5) / 5.
/// - `non_ascii`, `upper`: non-ASCII and upper-case letters per letter; the first says which
///   script a prompt is written in, roughly.
///
/// The empty text has all zeros.
pub fn prompt_features(text: &str) -> [f32; NAMES.len()] {
    let b = text.as_bytes();
    let [mut math, code, reasoning, creative, constraints] = count_markers(text);
    let (mut chars, mut words, mut lines, mut digits, mut numbers, mut questions) =
        (0, 0, 0, 0, 0, 0);
    let (mut letters, mut non_ascii, mut upper) = (0, 0, 0);
    let mut choices = usize::from(is_choice_line(b));
    let (mut in_word, mut in_number) = (false, false);
    for (i, c) in text.char_indices() {
        chars += 1;
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            in_word = true;
            words += 1;
        }
        let digit = c.is_ascii_digit();
        if digit {
            digits += 1;
            numbers += usize::from(!in_number);
        }
        in_number = digit
            || (in_number
                && matches!(c, ',' | '.')
                && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        match c {
            '\n' => {
                lines += 1;
                choices += usize::from(is_choice_line(&b[i + 1..]));
            }
            '?' => questions += 1,
            '+' | '-' | '*' | '/' | '=' | '×' | '÷' => {
                math += usize::from(between_operands(b, i, c.len_utf8()));
            }
            _ if is_letter(c) => {
                letters += 1;
                non_ascii += usize::from(!c.is_ascii());
                upper += usize::from(c.is_uppercase());
            }
            _ => {}
        }
    }

    let log = |n: usize, scale: f32| ((n as f32).ln_1p() / scale).min(1.0);
    let share = |part: usize, whole: usize| {
        if whole == 0 {
            0.0
        } else {
            part as f32 / whole as f32
        }
    };
    let capped = |n: usize, cap: usize| n.min(cap) as f32 / cap as f32;
    [
        log(chars, 10.0),
        log(words, 8.0),
        log(lines, 5.0),
        share(digits, chars),
        capped(numbers, 20),
        capped(math, 10),
        capped(code, 10),
        capped(reasoning, 10),
        capped(creative, 10),
        capped(constraints, 10),
        capped(questions, 5),
        capped(choices, 5),
        share(non_ascii, letters),
        share(upper, letters),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(text: &str, name: &str) -> f32 {
        let at = NAMES.iter().position(|n| *n == name).unwrap();
        prompt_features(text)[at]
    }

    /// The raw count behind a min(n, 10) / 10 feature.
    fn count(text: &str, name: &str) -> usize {
        (feature(text, name) * 10.0).round() as usize
    }

    #[test]
    fn empty_text_is_all_zeros() {
        assert_eq!(prompt_features(""), [0.0; NAMES.len()]);
    }

    #[test]
    fn names_are_distinct_snake_case() {
        for (i, name) in NAMES.iter().enumerate() {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(!NAMES[..i].contains(name), "{name} twice");
        }
    }

    #[test]
    fn lengths_grow_and_cap() {
        let short = prompt_features("one two");
        let long = prompt_features(&"one two\n".repeat(50));
        for at in 0..3 {
            assert!(long[at] > short[at], "{}", NAMES[at]);
        }
        assert_eq!(feature(&"a\n".repeat(100_000), "chars"), 1.0);
        assert_eq!(feature(&"a\n".repeat(100_000), "lines"), 1.0);
        // Unicode whitespace separates words, as in Python's str.split().
        assert!((feature("a\u{3000}b\u{a0}c", "words") - 4f32.ln() / 8.0).abs() < 1e-6);
    }

    #[test]
    fn digits_and_numbers() {
        assert_eq!(feature("ab12", "digit_share"), 0.5);
        // "1,234.56" is one number; a trailing "." or "," ends one.
        assert_eq!(feature("1,234.56 and 7. Then 8, 9", "numbers"), 4.0 / 20.0);
        assert_eq!(feature(&"1 ".repeat(30), "numbers"), 1.0);
    }

    #[test]
    fn operators_between_operands_are_math() {
        for text in ["3 + 4", "x=5", "6 × 7", "f(x) = 3", "1/2"] {
            assert_eq!(count(text, "math"), 1, "{text}");
        }
        assert_eq!(count("2x + 3 = 11", "math"), 2);
        for text in ["a + b", "count = 0", "COVID-19", "- 5", "x += 1", "a => 1"] {
            assert_eq!(count(text, "math"), 0, "{text}");
        }
    }

    #[test]
    fn prose_markers_start_a_word() {
        assert_eq!(count("Why? WHY! why", "reasoning"), 3);
        assert_eq!(count("anywhy improve", "reasoning"), 0);
        assert_eq!(count("history", "creative"), 0);
        assert_eq!(count("count_words", "constraints"), 0);
        assert_eq!(count("用python写一个explain", "reasoning"), 1);
        // Code markers count inside words.
        assert_eq!(count("mysql debug", "code"), 2);
    }

    #[test]
    fn overlapping_markers_count_once() {
        assert_eq!(count("\\sum of", "math"), 1);
        assert_eq!(count("step by step", "reasoning"), 1);
    }

    #[test]
    fn groups_are_told_apart() {
        let code = "```python\ndef add(a, b):\n    return a + b\n```";
        assert!(count(code, "code") >= 4);
        assert_eq!(count(code, "math"), 0);
        let story = "Write a short poem, then draft an email.";
        assert_eq!(count(story, "creative"), 4);
        assert_eq!(count("Answer in JSON, at most 50 words.", "constraints"), 3);
    }

    #[test]
    fn choice_lines() {
        let text = "Pick one:\nA. red\nB) blue\n  (c) green\nd: grey\nK. no\nA.no\nAB. no";
        assert_eq!(feature(text, "choices"), 4.0 / 5.0);
        assert_eq!(feature("A. first line counts", "choices"), 1.0 / 5.0);
    }

    #[test]
    fn letters_script_and_case() {
        assert_eq!(feature("héllo", "non_ascii"), 0.2);
        assert_eq!(feature("Привет", "non_ascii"), 1.0);
        assert_eq!(feature("ABcd 12", "upper"), 0.5);
        assert_eq!(feature("12 ?!", "upper"), 0.0);
        assert_eq!(feature("???", "question_marks"), 0.6);
    }

    #[test]
    fn cjk_fast_path_agrees_with_is_alphabetic() {
        for c in ('\u{3000}'..='\u{AFFF}').chain('\u{D700}'..='\u{D7FF}') {
            assert_eq!(is_letter(c), c.is_alphabetic(), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn values_stay_in_range() {
        let texts = [
            "{".repeat(50),
            "?".repeat(50),
            "1+1=2 ".repeat(50),
            "A. x\n".repeat(50),
            "ÉÈ".repeat(50),
            "\n".repeat(50),
        ];
        for text in &texts {
            for (v, name) in prompt_features(text).iter().zip(NAMES) {
                assert!((0.0..=1.0).contains(v), "{name} = {v}");
            }
        }
    }
}
