//! One text, classified once: every token's kind, and the facts the checks compare.
//!
//! Each check asks the same questions of a token (is it a number, a unit, a negation, a relation word,
//! a content word?), so the answers are worked out here in one pass per text and the checks read
//! fields. The negation check is no more than comparing `negations`: negation words and negative
//! evaluation words ("bad", "dangerous", "stop") count alike, so "not safe" agrees with "dangerous"
//! while "good" against "bad" is a change of polarity.

use super::lexicon::{Class, LEXICON};
use super::numbers::{self, Units};
use super::question;
use super::tokens::tokenize;

/// What a token is to the checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Stop,
    Generic,
    Content,
    Number,
    Unit,
    Negation,
    Wh,
    Relation,
    Punct,
}

/// One text, classified.
pub(super) struct Text {
    /// Normalised tokens (quantifier synonyms merged).
    pub(super) words: Vec<String>,
    pub(super) kinds: Vec<Kind>,
    /// Numbers in order, each with the unit written right after (or the currency sign before) it.
    pub(super) numbers: Vec<(f64, Option<&'static str>)>,
    /// Units named, per dimension.
    pub(super) units: Units,
    /// Negations plus negative-evaluation words.
    pub(super) negations: usize,
    /// Bit set of who/where/when/why.
    pub(super) wh: u8,
    /// What "how many X" / "number of X" counts.
    pub(super) asked: Vec<String>,
}

impl Text {
    pub(super) fn new(text: &str) -> Self {
        let lex = &*LEXICON;
        let tokens = tokenize(text);
        let mut kinds: Vec<Option<Kind>> = vec![None; tokens.len()];
        let mut units = Units::new();
        let numbers = numbers::read(&tokens, &mut kinds, &mut units);

        let mut negations = 0;
        let mut wh = 0;
        let mut out_kinds = Vec::with_capacity(tokens.len());
        for (i, w) in tokens.iter().enumerate() {
            let w = w.as_str();
            let kind = match kinds[i] {
                Some(k) => k,
                None if matches!(w, "," | ";" | ":" | "?" | "!" | "(" | ")") => Kind::Punct,
                None => match lex.class.get(w) {
                    Some(Class::Negation | Class::Negative) => {
                        negations += 1;
                        Kind::Negation
                    }
                    _ if lex.units.contains_key(w) => {
                        let (canon, dim) = lex.units[w];
                        units.entry(dim).or_default().insert(canon);
                        Kind::Unit
                    }
                    _ if lex.wh.contains_key(w) => {
                        wh |= lex.wh[w];
                        Kind::Wh
                    }
                    _ if lex.relations.contains_key(w) => Kind::Relation,
                    _ if matches!(w, "many" | "much") && i > 0 && tokens[i - 1] == "how" => {
                        Kind::Generic
                    }
                    _ if lex.quantifiers.contains_key(w) => Kind::Content,
                    Some(Class::Stop) => Kind::Stop,
                    Some(Class::Generic) => Kind::Generic,
                    // single letters are initials or pronouns, except languages such as C and R
                    None if w.len() == 1
                        && w.is_ascii()
                        && !matches!(w, "c" | "r")
                        && w.as_bytes()[0].is_ascii_alphabetic() =>
                    {
                        Kind::Stop
                    }
                    None => Kind::Content,
                },
            };
            out_kinds.push(kind);
        }

        let asked = question::asked(&tokens, &out_kinds);
        let mut words = tokens;
        for w in &mut words {
            if let Some(q) = lex.quantifiers.get(w.as_str()) {
                *w = (*q).to_string();
            }
        }
        Text {
            words,
            kinds: out_kinds,
            numbers,
            units,
            negations,
            wh,
            asked,
        }
    }

    pub(super) fn content(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words.len()).filter(|&i| self.kinds[i] == Kind::Content)
    }

    pub(super) fn non_punct(&self) -> Vec<&str> {
        self.words
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k != Kind::Punct)
            .map(|(w, _)| w.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::nearmiss::verdict;

    #[test]
    fn negation_and_polarity() {
        assert_eq!(
            verdict("Can dogs eat grapes?", "Can dogs not eat grapes?"),
            "negation"
        );
        assert_eq!(
            verdict("How do I exit Vim?", "How do I exit Vim without saving?"),
            "negation"
        );
        assert_eq!(
            verdict(
                "Is it a good idea to buy bonds now?",
                "Is it a bad idea to buy bonds now?"
            ),
            "negation"
        );
        assert_eq!(
            verdict(
                "Is it not safe to eat raw eggs?",
                "Is it dangerous to eat raw eggs?"
            ),
            "same"
        );
        assert_eq!(
            verdict(
                "How do I start a Docker container?",
                "How do I stop a Docker container?"
            ),
            "negation"
        );
    }
}
