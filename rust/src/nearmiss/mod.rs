//! The semantic cache's near-miss check: does a cached answer to one question also answer another?
//!
//! A sentence embedding scores near misses ("°F to °C" vs "°C to °F", "15% of 80" vs "15% of 90",
//! "soft yolk" vs "hard yolk", "in Python" vs "in JavaScript") as high as true paraphrases, so a
//! cosine threshold cannot refuse them. This module compares the two texts themselves and refuses
//! what an answer depends on but an embedding blurs. It judges paraphrase against near miss from the
//! wording alone; it does not ask any model whether an answer is right.
//!
//! The checks run in this order, the first conflict deciding the verdict:
//!
//! - negation (`text.rs` counts it), with negative evaluation words ("not safe" agrees with
//!   "dangerous", not with "safe");
//! - numbers and units (`numbers.rs`): numbers normalised ("3" = "three", "1,000" = "1000",
//!   "first" = 1st), in order, with the unit attached to each ("15%" is not "15"); where both texts
//!   name units of one dimension, the same ones;
//! - the answer type of wh-words (who / where / when / why) and the thing counted ("how many X")
//!   (`question.rs`);
//! - roles around relation words (to/into/from, than, before/after, in/per, by): "X to Y" vs "Y to X",
//!   and the same words with two of them swapped (`roles.rs`);
//! - content words present on one side only (`content.rs`). Words that only frame a question ("how do
//!   I", "what's the best way to", "explain", "command", "formula") are left out, inflections match
//!   ("virus" = "viruses", "format" = "formatting", `words.rs`). A content word swapped for another in
//!   the same place, or added to an otherwise identical question, refuses the hit; a reworded question
//!   whose content words differ in several places is `Reworded`: the caller then asks more of the
//!   cosine.
//!
//! Underneath: `tokens.rs` splits a text into normalised tokens, `lexicon.rs` holds the word lists,
//! and `text.rs` classifies every token once per text, so each check reads a prepared `Text`.
//!
//! Cost is linear in the text length but for two capped parts: the alignment of the differing middle
//! and the search for inexact counterparts of content words. Both texts are read in full (the
//! embedding sees only their first 256 tokens). About 10 µs for two questions.

mod content;
mod lexicon;
mod numbers;
mod question;
mod roles;
mod text;
mod tokens;
mod words;

use lexicon::LEXICON;
use text::Text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same content words, nothing that changes the answer.
    Same,
    /// No conflict found, but the wording differs in several places: trust it only with a high cosine.
    Reworded,
    /// The texts ask different things.
    Differs(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Negation,
    Number,
    NumberOrder,
    NumberUnit,
    Unit,
    QuestionWord,
    AskedQuantity,
    Direction,
    Swapped,
    TooDifferent,
    Opposite,
    Substitution,
    Insertion,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Reworded => "reworded",
            Verdict::Differs(r) => r.as_str(),
        }
    }
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Negation => "negation",
            Reason::Number => "number",
            Reason::NumberOrder => "number order",
            Reason::NumberUnit => "number unit",
            Reason::Unit => "unit",
            Reason::QuestionWord => "question word",
            Reason::AskedQuantity => "asked quantity",
            Reason::Direction => "direction",
            Reason::Swapped => "swapped",
            Reason::TooDifferent => "too different",
            Reason::Opposite => "opposite",
            Reason::Substitution => "substitution",
            Reason::Insertion => "insertion",
        }
    }
}

/// A verdict with the content words that only one text has, for a caller that can tell synonyms
/// ("delete" / "remove") from other words: the text alone cannot, so such a rewording is a
/// `Substitution` or `Reworded` here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub verdict: Verdict,
    /// Words of the first text without a counterpart in the second, and the other way round. Both are
    /// empty unless the verdict is `Substitution`, `Insertion` or `Reworded` and neither side's words
    /// include a quantifier ("all", "only"): those verdicts come after every other check, so a word
    /// match is all that is left to find, while quantifiers change the answer whatever their neighbours.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

/// Whether a cached answer to one text also answers the other, judged from the texts alone (see the
/// module docs). Symmetric.
pub fn compare(a: &str, b: &str) -> Verdict {
    compare_words(a, b).verdict
}

/// `compare`, with the words that differ (see `Comparison`).
pub fn compare_words(a: &str, b: &str) -> Comparison {
    // A fixed order makes every tie (alignment, relations) break the same way for (a, b) and (b, a).
    let flipped = (a.len(), a) > (b.len(), b);
    let (ta, tb) = if flipped {
        (Text::new(b), Text::new(a))
    } else {
        (Text::new(a), Text::new(b))
    };
    let (verdict, una, unb) = judge(&ta, &tb);
    let rescuable = matches!(
        verdict,
        Verdict::Reworded | Verdict::Differs(Reason::Substitution | Reason::Insertion)
    );
    let words = |t: &Text, idx: &[usize]| -> Vec<String> {
        idx.iter().map(|&i| t.words[i].clone()).collect()
    };
    let (mut only_a, mut only_b) = (words(&ta, &una), words(&tb, &unb));
    let quantifier = |w: &String| LEXICON.quantifiers.values().any(|q| q == w);
    if !rescuable || only_a.iter().chain(&only_b).any(quantifier) {
        only_a.clear();
        only_b.clear();
    }
    if flipped {
        std::mem::swap(&mut only_a, &mut only_b);
    }
    Comparison {
        verdict,
        only_a,
        only_b,
    }
}

/// The verdict for two parsed texts, and the positions of the content words each has and the other lacks
/// (empty when the verdict came before they were looked for).
fn judge(a: &Text, b: &Text) -> (Verdict, Vec<usize>, Vec<usize>) {
    let conflict = (a.negations != b.negations)
        .then_some(Reason::Negation)
        .or_else(|| numbers::conflict(a, b))
        .or_else(|| question::conflict(a, b))
        .or_else(|| roles::conflict(a, b));
    match conflict {
        Some(reason) => (Verdict::Differs(reason), Vec::new(), Vec::new()),
        None => content::judge(a, b),
    }
}

/// The verdict as a string, after checking that it is the same both ways round.
#[cfg(test)]
fn verdict(a: &str, b: &str) -> &'static str {
    let v = compare(a, b);
    assert_eq!(v, compare(b, a), "not symmetric: {a:?} / {b:?}");
    v.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        assert_eq!(
            verdict(
                "How do I sort a dictionary by value in Python?",
                "How can I sort a Python dictionary by its values?"
            ),
            "same"
        );
        assert_eq!(
            verdict("What's 15% of 80?", "Calculate fifteen percent of eighty."),
            "same"
        );
        assert_eq!(
            verdict(
                "How many grams are in a kilogram?",
                "A kilogram contains how many grams?"
            ),
            "same"
        );
        assert_eq!(
            verdict("Why don't my tests run?", "Why do my tests not run?"),
            "same"
        );
        assert_eq!(
            verdict(
                "What is the difference between TCP and UDP?",
                "What is the difference between UDP and TCP?"
            ),
            "same"
        );
        assert_eq!(
            verdict(
                "How do I create a virtual environment?",
                "What's the best way to create virtual environments?"
            ),
            "same"
        );
    }

    #[test]
    fn differing_words_are_given_per_side() {
        let c = compare_words("How do I buy a ticket?", "How can I purchase tickets?");
        assert_eq!(c.verdict.as_str(), "substitution");
        assert_eq!(
            (c.only_a, c.only_b),
            (vec!["buy".to_string()], vec!["purchase".to_string()])
        );
        let flipped = compare_words("How can I purchase tickets?", "How do I buy a ticket?");
        assert_eq!(flipped.only_a, vec!["purchase".to_string()]);
        for (a, b) in [
            ("What is 15% of 80?", "What is 15% of 90?"),
            (
                "How do I delete all branches?",
                "How do I remove only branches?",
            ),
            ("Why is the sky blue?", "Why is the sky blue?"),
        ] {
            let c = compare_words(a, b);
            assert!(c.only_a.is_empty() && c.only_b.is_empty(), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for (a, b) in [
            ("", ""),
            ("", "What is Rust?"),
            ("???", "!!!"),
            ("'s 's '", "’t"),
            (
                "1,2,3,,4..5 1e99999 99999999999999999999999999999",
                "°c° ° $ € 1st2nd",
            ),
            ("日本の首都はどこですか", "日本の首都はどこ？"),
            ("emoji 🙂 test", "emoji 🙂 test"),
        ] {
            let _ = compare(a, b);
        }
        assert_eq!(compare("", "").as_str(), "same");
        let long_a = "word ".repeat(5000) + "python";
        let long_b = "word ".repeat(5000) + "javascript";
        assert_eq!(compare(&long_a, &long_b).as_str(), "substitution");
        let many_a: String = (0..400).map(|i| format!("alpha{i} ")).collect();
        let many_b: String = (0..400).map(|i| format!("beta{i} ")).collect();
        assert_eq!(compare(&many_a, &many_b).as_str(), "too different");
        // every word matched only by an inflection, in reverse order: the search is bounded
        let word = |i: usize| -> String {
            let l = |k: usize| char::from(b'a' + (k % 26) as u8);
            format!("qx{}{}{}", l(i), l(i / 26), l(i / 676))
        };
        let forward: Vec<String> = (0..5000).map(word).collect();
        let backward: Vec<String> = (0..5000).rev().map(|i| word(i) + "s").collect();
        assert_eq!(
            compare(&forward.join(" "), &backward.join(" ")).as_str(),
            "too different"
        );
    }
}
