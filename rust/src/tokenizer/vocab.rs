//! The rank map (token bytes → rank = token id) of one encoding, built once from the blob that
//! `build.rs` compiles in.
//!
//! Token bytes stay in the static blob, indexed by rank through `offsets`. Lookups go through an
//! open-addressing table (load ≤ 0.5, linear probing) of 16-byte slots holding the token length, its
//! rank and a key: the token's bytes themselves when it is at most 8 bytes long (most tokens), else a
//! 64-bit hash that is then confirmed against the blob. A lookup of a short piece thus touches one
//! cache line and allocates nothing.

#[derive(Clone, Copy)]
struct Slot {
    /// Short tokens: the bytes, little-endian and zero-padded; longer ones: their 64-bit hash.
    key: u64,
    rank: u32,
    /// Token length; 0 marks an empty slot.
    len: u32,
}

const EMPTY: Slot = Slot {
    key: 0,
    rank: 0,
    len: 0,
};

pub struct Vocab {
    bytes: &'static [u8],
    offsets: Box<[u32]>,
    slots: Box<[Slot]>,
    mask: usize,
    /// Longest token: longer pieces are not looked up.
    max_len: usize,
    byte_ranks: [u32; 256],
}

impl Vocab {
    /// Parses a blob written by `build.rs`: `u32 LE n`, `n` token lengths (u8), token bytes by rank.
    pub fn from_blob(blob: &'static [u8]) -> Self {
        let n = u32::from_le_bytes(blob[..4].try_into().expect("blob header")) as usize;
        let (lens, bytes) = blob[4..].split_at(n);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut offset = 0u32;
        offsets.push(0);
        for &len in lens {
            offset += u32::from(len);
            offsets.push(offset);
        }
        assert_eq!(offset as usize, bytes.len(), "vocab blob is truncated");
        let size = (2 * n).next_power_of_two();
        let mut vocab = Vocab {
            bytes,
            offsets: offsets.into_boxed_slice(),
            slots: vec![EMPTY; size].into_boxed_slice(),
            mask: size - 1,
            max_len: lens.iter().copied().max().map_or(0, usize::from),
            byte_ranks: [u32::MAX; 256],
        };
        for rank in 0..n as u32 {
            let token = vocab.token(rank);
            let (key, h) = key_and_hash(token);
            let mut i = h as usize & vocab.mask;
            while vocab.slots[i].len != 0 {
                i = (i + 1) & vocab.mask;
            }
            vocab.slots[i] = Slot {
                key,
                rank,
                len: token.len() as u32,
            };
            if let [b] = token {
                vocab.byte_ranks[usize::from(*b)] = rank;
            }
        }
        assert!(
            vocab.byte_ranks.iter().all(|&r| r != u32::MAX),
            "every byte must be a token"
        );
        vocab
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The bytes of token `rank`.
    #[inline]
    pub fn token(&self, rank: u32) -> &'static [u8] {
        let bytes: &'static [u8] = self.bytes;
        &bytes[self.offsets[rank as usize] as usize..self.offsets[rank as usize + 1] as usize]
    }

    /// The rank of the single-byte token `b` (every byte is one).
    #[inline]
    pub fn byte_rank(&self, b: u8) -> u32 {
        self.byte_ranks[usize::from(b)]
    }

    /// The rank of the token with exactly these bytes.
    #[inline]
    pub fn rank(&self, piece: &[u8]) -> Option<u32> {
        if piece.len() > self.max_len {
            return None;
        }
        let (key, h) = key_and_hash(piece);
        let len = piece.len() as u32;
        let mut i = h as usize & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                return None;
            }
            if slot.len == len && slot.key == key && (len <= 8 || self.token(slot.rank) == piece) {
                return Some(slot.rank);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Slot key and table hash of `b`. Short inputs are read with (possibly overlapping) word loads, not
/// copied into a buffer, and mixed with one 64×64→128-bit multiply.
#[inline]
fn key_and_hash(b: &[u8]) -> (u64, u64) {
    const K0: u64 = 0xA076_1D64_78BD_642F;
    const K1: u64 = 0xE703_7ED1_A0B4_28DB;
    let len = b.len();
    if len <= 8 {
        let word = short_word(b);
        (word, mix(word ^ K0, len as u64 ^ K1))
    } else {
        let mut h = len as u64 ^ K1;
        let mut i = 0;
        while i + 8 < len {
            h = mix(read_u64(b, i) ^ K0, h);
            i += 8;
        }
        h = mix(read_u64(b, len - 8) ^ K0, h);
        (h, h)
    }
}

/// The bytes of `b` (at most 8) as a little-endian, zero-padded word.
#[inline]
fn short_word(b: &[u8]) -> u64 {
    let len = b.len();
    if len >= 4 {
        let lo = u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")));
        let hi = u64::from(u32::from_le_bytes(
            b[len - 4..].try_into().expect("4 bytes"),
        ));
        lo | (hi << ((len - 4) * 8))
    } else if len > 0 {
        u64::from(b[0])
            | (u64::from(b[len / 2]) << ((len / 2) * 8))
            | (u64::from(b[len - 1]) << ((len - 1) * 8))
    } else {
        0
    }
}

#[inline]
fn read_u64(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{CL100K_BLOB, O200K_BLOB};

    /// The hash spreads real tokens well: short probe sequences, so lookups stay one cache line.
    #[test]
    fn probe_lengths_are_short() {
        for blob in [CL100K_BLOB, O200K_BLOB] {
            let vocab = Vocab::from_blob(blob);
            let (mut total, mut worst) = (0usize, 0usize);
            for (i, slot) in vocab.slots.iter().enumerate() {
                if slot.len != 0 {
                    let home = key_and_hash(vocab.token(slot.rank)).1 as usize & vocab.mask;
                    let distance = i.wrapping_sub(home) & vocab.mask;
                    total += distance;
                    worst = worst.max(distance);
                }
            }
            let mean = total as f64 / vocab.len() as f64;
            assert!(mean < 0.5 && worst < 40, "mean {mean}, worst {worst}");
            for rank in [0, 1000, vocab.len() as u32 - 1] {
                assert_eq!(vocab.rank(vocab.token(rank)), Some(rank));
            }
        }
    }

    #[test]
    fn short_words_are_exact() {
        let data = b"abcdefgh";
        for len in 0..=8 {
            let mut buf = [0u8; 8];
            buf[..len].copy_from_slice(&data[..len]);
            assert_eq!(short_word(&data[..len]), u64::from_le_bytes(buf), "{len}");
        }
    }
}
