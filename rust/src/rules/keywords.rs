//! Every keyword of every rule in one Aho-Corasick automaton, and the scan that tells which keywords
//! occur in a text.
//!
//! The scan walks the automaton by hand rather than through `AhoCorasick`'s iterator, to walk two
//! halves of the text at once: a walk is one chain of dependent table lookups, so the CPU runs two
//! independent chains in about the time of one. The second half starts `longest - 1` bytes early, so
//! a keyword across the middle is seen whole by that walk.

use std::borrow::Cow;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{dfa, nfa, Anchored, BuildError, MatchKind};

/// A DFA is the fastest automaton but takes a row of transitions per state; past this size the
/// compact NFA is used instead.
const DFA_MEMORY_LIMIT: usize = 8 << 20;

#[derive(Debug)]
enum Walker {
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

#[derive(Debug)]
pub(super) struct Keywords {
    walker: Walker,
    count: usize,
    /// Length in bytes of the longest keyword.
    longest: usize,
    /// A non-ASCII keyword needs a Unicode-lower-cased copy of the text; ASCII keywords are matched
    /// ASCII-case-insensitively on the text itself, without a copy.
    lower_text: bool,
}

impl Keywords {
    /// `keywords` are distinct, lower-cased and not empty; their ids are their positions.
    pub fn new(keywords: &[String]) -> Result<Self, BuildError> {
        let lower_text = keywords.iter().any(|k| !k.is_ascii());
        let dfa = dfa::Builder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(!lower_text)
            .prefilter(false)
            .build(keywords)?;
        let walker = if dfa.memory_usage() <= DFA_MEMORY_LIMIT {
            Walker::Dfa(dfa)
        } else {
            Walker::Nfa(
                nfa::contiguous::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(!lower_text)
                    .prefilter(false)
                    .build(keywords)?,
            )
        };
        Ok(Keywords {
            walker,
            count: keywords.len(),
            longest: keywords.iter().map(String::len).max().unwrap_or(1),
            lower_text,
        })
    }

    /// Which keywords occur in `text`, case-insensitively, overlapping ones included (both
    /// "security" and "social security"); stops once every keyword is found.
    pub fn scan(&self, text: &str) -> Vec<bool> {
        let mut found = vec![false; self.count];
        let text: Cow<'_, str> = if self.lower_text {
            Cow::Owned(text.to_lowercase())
        } else {
            Cow::Borrowed(text)
        };
        let text = text.as_bytes();
        match &self.walker {
            Walker::Dfa(a) => walk(a, text, self.longest, &mut found),
            Walker::Nfa(a) => walk(a, text, self.longest, &mut found),
        }
        found
    }
}

/// Marks in `found` every pattern of `aut` that occurs in `text`, walking its two halves at once.
fn walk(aut: &impl Automaton, text: &[u8], longest: usize, found: &mut [bool]) {
    let start = aut
        .start_state(Anchored::No)
        .expect("automata are built for unanchored search");
    let mid = text.len() / 2;
    let (first, second) = (&text[..mid], &text[mid.saturating_sub(longest - 1)..]);
    let mut left = found.len();
    // Marks the patterns that end in state `sid` (a special one); true once every pattern is found.
    let mut done = |sid: StateID| {
        if aut.is_match(sid) {
            for i in 0..aut.match_len(sid) {
                let id = aut.match_pattern(sid, i).as_usize();
                if !found[id] {
                    found[id] = true;
                    left -= 1;
                }
            }
        }
        left == 0
    };
    let (mut a, mut b) = (start, start);
    for (&x, &y) in first.iter().zip(second) {
        a = aut.next_state(Anchored::No, a, x);
        b = aut.next_state(Anchored::No, b, y);
        // One rarely taken branch per step of both walks.
        if (aut.is_special(a) || aut.is_special(b)) && (done(a) | done(b)) {
            return;
        }
    }
    // The second half is the longer one (by the overlap, and the odd byte).
    for &y in &second[first.len()..] {
        b = aut.next_state(Anchored::No, b, y);
        if aut.is_special(b) && done(b) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(keywords: &[&str], text: &str) -> Vec<bool> {
        let keywords: Vec<String> = keywords.iter().map(|k| k.to_lowercase()).collect();
        Keywords::new(&keywords).unwrap().scan(text)
    }

    #[test]
    fn overlapping_and_case_insensitive() {
        assert_eq!(
            found(
                &["security", "social security", "cia"],
                "My SOCIAL Security"
            ),
            [true, true, true]
        );
        assert_eq!(found(&["ab", "bc", "x"], "abc"), [true, true, false]);
        assert_eq!(found(&["diagnóstico"], "el DIAGNÓSTICO"), [true]);
        assert_eq!(found(&["a"], ""), [false]);
    }

    #[test]
    fn a_keyword_across_the_middle_is_found() {
        // Every position of the keyword in texts of many lengths, so some straddle the split.
        let keywords = Keywords::new(&["0123456789".into(), "5".into()]).unwrap();
        for len in 10..60 {
            for at in 0..=len - 10 {
                let mut text = "-".repeat(len);
                text.replace_range(at..at + 10, "0123456789");
                assert_eq!(keywords.scan(&text), [true, true], "{len} {at}");
            }
        }
    }

    #[test]
    fn the_compact_automaton_agrees() {
        let keywords: Vec<String> = ["security", "social security", "ab", "bc"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let nfa = Keywords {
            walker: Walker::Nfa(
                nfa::contiguous::Builder::new()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(true)
                    .build(&keywords)
                    .unwrap(),
            ),
            count: 4,
            longest: 15,
            lower_text: false,
        };
        let dfa = Keywords::new(&keywords).unwrap();
        for text in ["abc social SECURITY", "securit", "xbcx", ""] {
            assert_eq!(nfa.scan(text), dfa.scan(text), "{text}");
        }
    }
}
