//! Byte-pair merging of one pre-token: start from single bytes and repeatedly merge the adjacent pair
//! whose concatenation has the lowest rank (the leftmost such pair on ties) until no adjacent pair is a
//! token. Short pieces use a linear scan per merge (cache-friendly, O(n²) worst case); long ones
//! (e.g. 5000 × "a", one pre-token) use a min-heap over a linked list of parts, O(n log n). Both
//! produce the same merge sequence.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// No mergeable pair.
const NONE: u32 = u32::MAX;
/// Pieces at least this long use the heap.
const HEAP_FROM: usize = 128;

#[derive(Clone, Copy)]
struct Part {
    /// First byte of the part in the piece.
    start: u32,
    /// Token id of the part.
    id: u32,
}

/// Scratch space reused across the pieces of one text; after [`Merger::merge`], `parts` holds the
/// tokens of the piece.
#[derive(Default)]
pub struct Merger {
    parts: Vec<Part>,
    /// `pairs[k]`: rank of part `k` merged with the next one, or `NONE`.
    pairs: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: BinaryHeap<Reverse<u64>>,
}

impl Merger {
    /// Number of tokens of the last merged piece.
    #[inline]
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// Token ids of the last merged piece.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.iter().map(|p| p.id)
    }

    /// Merges `piece` (at least 2 bytes) into tokens.
    pub fn merge(&mut self, vocab: &Vocab, piece: &[u8]) {
        if piece.len() < HEAP_FROM {
            self.merge_linear(vocab, piece);
        } else {
            self.merge_heap(vocab, piece);
        }
    }

    fn merge_linear(&mut self, vocab: &Vocab, piece: &[u8]) {
        let n = piece.len();
        self.init(vocab, piece);
        // Pair ranks live in their own array so that the min-scan vectorises.
        let (parts, pairs) = (&mut self.parts, &mut self.pairs);
        // Bytes of parts `a..=b` merged together.
        let span = |parts: &[Part], a: usize, b: usize| {
            let end = parts.get(b + 1).map_or(n, |p| p.start as usize);
            &piece[parts[a].start as usize..end]
        };
        loop {
            let best = pairs.iter().copied().min().unwrap_or(NONE);
            if best == NONE {
                break;
            }
            let at = pairs
                .iter()
                .position(|&r| r == best)
                .expect("the minimum is present");
            parts[at].id = best;
            parts.remove(at + 1);
            pairs.remove(at + 1);
            pairs[at] = if at + 1 < parts.len() {
                vocab.rank(span(parts, at, at + 1)).unwrap_or(NONE)
            } else {
                NONE
            };
            if at > 0 {
                pairs[at - 1] = vocab.rank(span(parts, at - 1, at)).unwrap_or(NONE);
            }
        }
    }

    /// One part per byte, with the ranks of adjacent byte pairs.
    fn init(&mut self, vocab: &Vocab, piece: &[u8]) {
        let n = piece.len();
        self.parts.clear();
        self.parts
            .extend(piece.iter().enumerate().map(|(k, &b)| Part {
                start: k as u32,
                id: vocab.byte_rank(b),
            }));
        self.pairs.clear();
        self.pairs.extend((0..n).map(|k| {
            if k + 1 < n {
                vocab.rank(&piece[k..k + 2]).unwrap_or(NONE)
            } else {
                NONE
            }
        }));
    }

    fn merge_heap(&mut self, vocab: &Vocab, piece: &[u8]) {
        let n = piece.len();
        let end = n as u32;
        // Parts are linked by start offset: part `i` spans `i..next[i]`, `pairs[i]` is its pair rank,
        // and a merged-away part gets pair `NONE` so that its heap entries go stale.
        self.init(vocab, piece);
        self.next.clear();
        self.next.extend(1..=end);
        self.prev.clear();
        self.prev.extend((0..end).map(|k| k.wrapping_sub(1)));
        self.heap.clear();
        let key = |rank: u32, start: u32| Reverse((u64::from(rank) << 32) | u64::from(start));
        for (i, &pair) in self.pairs.iter().enumerate() {
            if pair != NONE {
                self.heap.push(key(pair, i as u32));
            }
        }
        while let Some(Reverse(entry)) = self.heap.pop() {
            let (rank, i) = ((entry >> 32) as u32, entry as u32 as usize);
            if self.pairs[i] != rank {
                continue; // stale: the part changed or was merged away
            }
            let j = self.next[i] as usize;
            let k = self.next[j];
            self.parts[i].id = rank;
            self.pairs[j] = NONE;
            self.next[i] = k;
            if k < end {
                self.prev[k as usize] = i as u32;
                let after = self.next[k as usize] as usize;
                self.pairs[i] = vocab.rank(&piece[i..after]).unwrap_or(NONE);
            } else {
                self.pairs[i] = NONE;
            }
            if self.pairs[i] != NONE {
                self.heap.push(key(self.pairs[i], i as u32));
            }
            if i > 0 {
                let p = self.prev[i] as usize;
                self.pairs[p] = vocab.rank(&piece[p..k as usize]).unwrap_or(NONE);
                if self.pairs[p] != NONE {
                    self.heap.push(key(self.pairs[p], p as u32));
                }
            }
        }
        // Compact the surviving parts, in order.
        let (mut i, mut kept) = (0usize, 0usize);
        while i < n {
            self.parts[kept] = self.parts[i];
            kept += 1;
            i = self.next[i] as usize;
        }
        self.parts.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{get, CL100K_BASE, O200K_BASE};

    /// The two merge strategies agree on pieces of every length around the switch-over.
    #[test]
    fn linear_and_heap_agree() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(8) + &"ab".repeat(100);
        for name in [CL100K_BASE, O200K_BASE] {
            let vocab = &get(name).unwrap().vocab;
            let mut a = Merger::default();
            let mut b = Merger::default();
            for len in [2, 3, 7, 40, 127, 128, 200, 500] {
                for start in [0, 1, 5] {
                    let piece = &text.as_bytes()[start..start + len];
                    a.merge_linear(vocab, piece);
                    b.merge_heap(vocab, piece);
                    assert_eq!(
                        a.ids().collect::<Vec<_>>(),
                        b.ids().collect::<Vec<_>>(),
                        "{name} {len}"
                    );
                    let rebuilt: Vec<u8> =
                        a.ids().flat_map(|id| vocab.token(id).to_vec()).collect();
                    assert_eq!(rebuilt, piece);
                }
            }
        }
    }
}
