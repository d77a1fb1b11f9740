//! Content words one text has and the other lacks, once every other check has passed.
//!
//! "Reverse a list in Python" and "… in JavaScript", "delete a branch" and "delete a remote branch",
//! "install" and "uninstall" differ in one content word and nothing else the other checks see. Words
//! that only frame a question are not content, and inflections match (`same_word`), so what is left
//! over decides: none left is the same question (unless two words traded places); an opposite, one
//! word swapped for another in the same place, or a word added to an otherwise identical question
//! refuses the hit; several scattered differences are only `Reworded`, which the caller may accept at
//! a higher cosine. The word lists are handed back, since a synonym ("buy" / "purchase") looks like
//! any other changed word from the text alone.
//!
//! Two searches here can grow with the text, and both are capped: the inexact match of content words
//! (MAX_COMPARISONS) and the alignment of the differing middle (MAX_ALIGN).

use super::lexicon::Set;
use super::roles::swapped;
use super::text::{Kind, Text};
use super::words::{opposite, same_word};
use super::{Reason, Verdict};

/// Content words seen on one side only, per side, beyond which two texts are simply different.
const MAX_UNMATCHED: usize = 6;
/// Longest differing middle (tokens per side) that is aligned word by word.
const MAX_ALIGN: usize = 256;
/// Word comparisons spent looking for inexact counterparts of content words (about 1 ms).
const MAX_COMPARISONS: usize = 100_000;

impl Text {
    /// Content words of `self` without a counterpart in `other`: the same word, an inflection of it,
    /// or two adjacent words written together ("dataframe" / "data frame"). None past MAX_UNMATCHED,
    /// or when the word-by-word search exceeds MAX_COMPARISONS (long, mostly different texts).
    fn unmatched_in(&self, other: &Text) -> Option<Vec<usize>> {
        let exact: Set<&str> = other.content().map(|j| other.words[j].as_str()).collect();
        let mut budget = MAX_COMPARISONS;
        let mut out = Vec::new();
        for i in self.content() {
            let w = self.words[i].as_str();
            if exact.contains(w) {
                continue;
            }
            let mut spend = |n: usize| -> Option<()> {
                budget = budget.checked_sub(n)?;
                Some(())
            };
            spend(other.words.len())?;
            let covered = other.content().any(|j| same_word(w, &other.words[j]))
                || other.words.windows(2).any(|p| {
                    w.len() == p[0].len() + p[1].len() && w.starts_with(&p[0]) && w.ends_with(&p[1])
                });
            if !covered {
                out.push(i);
                if out.len() > MAX_UNMATCHED {
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// The verdict from the content words of `a` and `b`, with the positions of those each has and the
/// other lacks: the last of the checks, for texts that agree on everything else.
pub(super) fn judge(a: &Text, b: &Text) -> (Verdict, Vec<usize>, Vec<usize>) {
    let v = |r: Reason| (Verdict::Differs(r), Vec::new(), Vec::new());
    let (Some(una), Some(unb)) = (a.unmatched_in(b), b.unmatched_in(a)) else {
        return v(Reason::TooDifferent);
    };
    if una.is_empty() && unb.is_empty() {
        let verdict = if swapped(a, b) {
            Verdict::Differs(Reason::Swapped)
        } else {
            Verdict::Same
        };
        return (verdict, una, unb);
    }
    if una.iter().any(|&i| {
        unb.iter()
            .any(|&j| opposite(&a.words[i], &b.words[j]) || opposite(&b.words[j], &a.words[i]))
    }) {
        return v(Reason::Opposite);
    }
    let differs = |r: Reason, una: Vec<usize>, unb: Vec<usize>| (Verdict::Differs(r), una, unb);
    if una.len() == 1 && unb.len() == 1 {
        return differs(Reason::Substitution, una, unb);
    }
    // positions in the punctuation-free sequences
    let index = |t: &Text| -> Vec<usize> {
        (0..t.words.len())
            .filter(|&i| t.kinds[i] != Kind::Punct)
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    let Some((gaps, common)) = gaps(&a.non_punct(), &b.non_punct()) else {
        return v(Reason::TooDifferent);
    };
    if gaps.iter().any(|(ga, gb)| {
        ga.iter().any(|&p| una.contains(&ia[p])) && gb.iter().any(|&p| unb.contains(&ib[p]))
    }) {
        return differs(Reason::Substitution, una, unb);
    }
    if (una.is_empty() || unb.is_empty()) && common + 1 >= ia.len().min(ib.len()) {
        return differs(Reason::Insertion, una, unb);
    }
    (Verdict::Reworded, una, unb)
}

/// Unaligned positions of `a` and of `b` between two aligned words.
type Gap = (Vec<usize>, Vec<usize>);

/// Gaps of the word alignment of `a` and `b`: runs of unaligned positions, paired. The common prefix
/// and suffix align trivially; the middle by longest common subsequence. None if the middle is too long.
fn gaps(a: &[&str], b: &[&str]) -> Option<(Vec<Gap>, usize)> {
    let mut pre = 0;
    while pre < a.len() && pre < b.len() && same_word(a[pre], b[pre]) {
        pre += 1;
    }
    let mut suf = 0;
    while suf < a.len() - pre
        && suf < b.len() - pre
        && same_word(a[a.len() - 1 - suf], b[b.len() - 1 - suf])
    {
        suf += 1;
    }
    let (ma, mb) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let (n, m) = (ma.len(), mb.len());
    if n > MAX_ALIGN || m > MAX_ALIGN {
        return None;
    }
    let w = m + 1;
    let mut table = vec![0u16; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i * w + j] = if same_word(ma[i], mb[j]) {
                table[(i + 1) * w + j + 1] + 1
            } else {
                table[(i + 1) * w + j].max(table[i * w + j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if same_word(ma[i], mb[j]) {
            out.push((std::mem::take(&mut ga), std::mem::take(&mut gb)));
            i += 1;
            j += 1;
        } else if table[(i + 1) * w + j] >= table[i * w + j + 1] {
            ga.push(pre + i);
            i += 1;
        } else {
            gb.push(pre + j);
            j += 1;
        }
    }
    ga.extend((i..n).map(|k| pre + k));
    gb.extend((j..m).map(|k| pre + k));
    out.push((ga, gb));
    Some((out, pre + suf + table[0] as usize))
}

#[cfg(test)]
mod tests {
    use crate::nearmiss::verdict;

    #[test]
    fn content_changes() {
        assert_eq!(
            verdict(
                "How do I reverse a list in Python?",
                "How do I reverse a list in JavaScript?"
            ),
            "substitution"
        );
        assert_eq!(
            verdict(
                "How do I delete a branch in git?",
                "How do I delete a remote branch in git?"
            ),
            "insertion"
        );
        assert_eq!(
            verdict(
                "How do I delete all branches in git?",
                "How do I delete a branch in git?"
            ),
            "insertion"
        );
        assert_eq!(
            verdict(
                "How do I install numpy with pip?",
                "How do I uninstall numpy with pip?"
            ),
            "opposite"
        );
        assert_eq!(
            verdict(
                "What drives inflation in Europe?",
                "What drives deflation in Europe?"
            ),
            "opposite"
        );
        assert_eq!(
            verdict("How do I write a loop in C?", "How do I write a loop in R?"),
            "substitution"
        );
    }
}
