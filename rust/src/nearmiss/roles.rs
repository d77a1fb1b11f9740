//! Roles around relation words: who converts into what, migrates from where, is faster than whom.
//!
//! "Convert Fahrenheit to Celsius" and "Convert Celsius into Fahrenheit" hold the same words, and so
//! do "Is Rust faster than Go?" and "Is Go faster than Rust?"; an embedding of the whole sentence
//! barely tells them apart. Each relation word (to/into/from, than, before/after, in/per, by) is read
//! as an ordered pair of the words around it, and the pairs of the two texts must not contradict each
//! other. Failing that, two words of an otherwise identical question may not trade places, unless a
//! symmetric connective ("X and Y", "between X and Y") sits between them.

use super::lexicon::LEXICON;
use super::text::{Kind, Text};
use super::words::same_word;
use super::Reason;

/// Relation words read per text (the first ones); more only costs time.
const MAX_RELATIONS: usize = 32;

/// Words that name things: what relations connect and swaps move.
fn is_anchor(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Content | Kind::Generic | Kind::Unit | Kind::Number
    )
}

/// (relation class, first word, second word).
type Relation<'a> = (&'static str, &'a str, &'a str);

impl Text {
    /// clause, oriented so that "from X to Y" and "to Y from X" give the same triple.
    fn relations(&self) -> Vec<Relation<'_>> {
        let mut out = Vec::new();
        for (i, k) in self.kinds.iter().enumerate() {
            if *k != Kind::Relation {
                continue;
            }
            let left = self.kinds[..i]
                .iter()
                .rposition(|&k| is_anchor(k) || k == Kind::Punct);
            let right = self.kinds[i + 1..]
                .iter()
                .position(|&k| is_anchor(k) || k == Kind::Punct)
                .map(|p| p + i + 1);
            let (Some(l), Some(r)) = (left, right) else {
                continue;
            };
            if self.kinds[l] == Kind::Punct || self.kinds[r] == Kind::Punct {
                continue;
            }
            let (class, sense) = LEXICON.relations[self.words[i].as_str()];
            // "from X to Y": the "to" gives (X, Y); the word before "from" is a verb, not a target
            if sense < 0
                && class == "to"
                && self.kinds.get(r + 1) == Some(&Kind::Relation)
                && LEXICON.relations[self.words[r + 1].as_str()].0 == "to"
            {
                continue;
            }
            let (x, y) = (self.words[l].as_str(), self.words[r].as_str());
            out.push(if sense > 0 {
                (class, x, y)
            } else {
                (class, y, x)
            });
            if out.len() == MAX_RELATIONS {
                break;
            }
        }
        out
    }
}

/// Roles swapped around a relation word between `a` and `b`, in either direction.
pub(super) fn conflict(a: &Text, b: &Text) -> Option<Reason> {
    let (ra, rb) = (a.relations(), b.relations());
    (roles_conflict(&ra, &rb) || roles_conflict(&rb, &ra)).then_some(Reason::Direction)
}

/// Roles swapped around a relation word: "X to Y" against "Y to X", or "time in Tokyo … noon in London"
/// against "time in London … noon in Tokyo".
fn roles_conflict(pa: &[Relation<'_>], pb: &[Relation<'_>]) -> bool {
    for &(c1, x1, y1) in pa {
        for &(c2, x2, y2) in pb {
            if c1 != c2 {
                continue;
            }
            if same_word(x1, y2) && same_word(y1, x2) && !same_word(x1, y1) {
                return true;
            }
            if same_word(x1, x2)
                && !same_word(y1, y2)
                && pb.iter().any(|&(c, _, y)| c == c1 && same_word(y, y1))
            {
                return true;
            }
            if same_word(y1, y2)
                && !same_word(x1, x2)
                && pb.iter().any(|&(c, x, _)| c == c1 && same_word(x, x1))
            {
                return true;
            }
        }
    }
    false
}

/// Same frame, same words, two of them trading places, with no symmetric connective ("and", "or",
/// "vs") between them. Only words that carry meaning count: "don't run" / "do … not run" is no swap.
pub(super) fn swapped(a: &Text, b: &Text) -> bool {
    let words = |t: &Text| t.kinds.iter().filter(|&&k| k != Kind::Punct).count();
    if words(a) != words(b) {
        return false;
    }
    let anchors = |t: &Text| -> Vec<usize> {
        (0..t.words.len())
            .filter(|&i| is_anchor(t.kinds[i]))
            .collect()
    };
    let (pa, pb) = (anchors(a), anchors(b));
    if pa.len() != pb.len() {
        return false;
    }
    let diff: Vec<usize> = (0..pa.len())
        .filter(|&k| !same_word(&a.words[pa[k]], &b.words[pb[k]]))
        .collect();
    let (Some(&first), Some(&last)) = (diff.first(), diff.last()) else {
        return false;
    };
    let mut da: Vec<&str> = diff.iter().map(|&k| a.words[pa[k]].as_str()).collect();
    let mut db: Vec<&str> = diff.iter().map(|&k| b.words[pb[k]].as_str()).collect();
    da.sort_unstable();
    db.sort_unstable();
    da == db
        && !a.words[pa[first] + 1..pa[last]]
            .iter()
            .any(|w| LEXICON.symmetric.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use crate::nearmiss::verdict;

    #[test]
    fn direction_and_roles() {
        assert_eq!(
            verdict(
                "How do I convert Fahrenheit to Celsius?",
                "How do I convert Celsius into Fahrenheit?"
            ),
            "direction"
        );
        assert_eq!(
            verdict(
                "How do I migrate from MySQL to PostgreSQL?",
                "How do I migrate from PostgreSQL to MySQL?"
            ),
            "direction"
        );
        assert_eq!(
            verdict("Is Rust faster than Go?", "Is Go faster than Rust?"),
            "swapped"
        );
        assert_eq!(
            verdict(
                "What time is it in Tokyo when it is noon in London?",
                "What time is it in London when it is noon in Tokyo?"
            ),
            "direction"
        );
        assert_eq!(
            verdict(
                "Does a square count as a rectangle",
                "Does a rectangle count as a square"
            ),
            "swapped"
        );
    }
}
