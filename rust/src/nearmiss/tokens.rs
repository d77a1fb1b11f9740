//! Splitting a text into the tokens every check reads.
//!
//! Case, curly apostrophes, contractions and abbreviations vary between paraphrases without changing
//! the question, so they are normalised here once: "don't" and "dont" both become "do not" (the
//! negation check then counts one "not" either way), and a number keeps its separators and ordinal
//! suffix in one token for `numbers.rs` to read.

use super::lexicon::LEXICON;

/// Lower-cased words, numbers, currency/percent signs, °c/°f and clause punctuation, with
/// contractions expanded ("don't" → "do not"), possessive 's and "i.e."/"e.g." dropped.
pub(super) fn tokenize(text: &str) -> Vec<String> {
    let lex = &*LEXICON;
    let chars: Vec<char> = text
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == '’' { '\'' } else { c })
        .collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).copied().unwrap_or(' ');
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let start = i;
        if c == '°' && matches!(at(i + 1), 'c' | 'f') && !at(i + 2).is_alphabetic() {
            out.push(chars[i..i + 2].iter().collect());
            i += 2;
        } else if matches!(
            c,
            '$' | '€' | '£' | '¥' | '%' | ',' | ';' | ':' | '?' | '!' | '(' | ')'
        ) {
            out.push(c.to_string());
            i += 1;
            continue;
        } else if c.is_ascii_digit() {
            i += 1;
            loop {
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                if matches!(at(i), '.' | ',') && at(i + 1).is_ascii_digit() {
                    i += 1;
                } else {
                    break;
                }
            }
            let suffix: String = [at(i), at(i + 1)].iter().collect();
            if matches!(suffix.as_str(), "st" | "nd" | "rd" | "th") && !at(i + 2).is_alphabetic() {
                i += 2;
            }
            out.push(chars[start..i].iter().collect());
        } else if c.is_alphabetic() {
            // "i.e." and "e.g." say nothing about the question.
            if (c == 'i' && at(i + 2) == 'e' || c == 'e' && at(i + 2) == 'g')
                && at(i + 1) == '.'
                && at(i + 3) == '.'
                && (i == 0 || !chars[i - 1].is_alphanumeric())
            {
                i += 4;
                continue;
            }
            while at(i).is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut negated = false;
            if at(i) == '\'' && at(i + 1).is_alphabetic() {
                // a contraction: "n't" negates, any other ending ('s, 're, 'll, …) is dropped
                let mut e = i + 1;
                while at(e).is_alphabetic() {
                    e += 1;
                }
                negated = e == i + 2 && at(i + 1) == 't' && word.ends_with('n');
                i = e;
            }
            if negated {
                let base = match &word[..word.len() - 1] {
                    "ca" => "can",
                    "wo" => "will",
                    "sha" => "shall",
                    "ai" => "is",
                    b => b,
                };
                out.push(base.to_string());
                out.push("not".to_string());
            } else if let Some(&verb) = lex.not_contractions.get(word.as_str()) {
                out.push(verb.to_string());
                out.push("not".to_string());
            } else {
                out.push(word);
            }
            continue;
        } else {
            i += 1;
            continue;
        }
        // after a number or °c/°f: a possessive "'s" ("carbon-14's") is not a unit
        if at(i) == '\'' && at(i + 1) == 's' && !at(i + 2).is_alphabetic() {
            i += 2;
        }
    }
    out
}
