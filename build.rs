//! Build-time data for the tokenizer, written to OUT_DIR:
//!
//! * `{cl100k,o200k}_base.bin`: the vendored `.tiktoken` vocabularies (base64 text, ~5 MB) as a compact
//!   blob: `u32 LE n`, `n` token lengths (u8), then the token bytes concatenated in rank order. The
//!   rank map is built from it lazily at run time.
//! * `char_class.rs`: a two-level lookup table from code point to the character class the
//!   pre-tokenizer needs. The classes come from `regex-syntax`, the Unicode tables that tiktoken's
//!   regex engine (fancy-regex → regex) uses, so `\p{L}`, `\p{N}`, `\p{M}`, `\s`… agree exactly.

use std::collections::HashMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use regex_syntax::hir::{Class, HirKind};

const VOCABS: [&str; 2] = ["cl100k_base", "o200k_base"];

// Character classes; must match `rust/src/tokenizer/classes.rs`.
const UPPER: u8 = 0; // Lu, Lt
const LOWER: u8 = 1; // Ll
const OTHER_LETTER: u8 = 2; // Lm, Lo
const MARK: u8 = 3; // Mn, Mc, Me
const NUMBER: u8 = 4; // Nd, Nl, No
const SPACE: u8 = 5; // \s (Unicode White_Space) except \r and \n
const NEWLINE: u8 = 6; // \r, \n
const PUNCT: u8 = 7; // everything else
const BLOCK: usize = 128;

fn main() {
    let out = env::var("OUT_DIR").expect("OUT_DIR");
    let root = env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    for name in VOCABS {
        let src = format!("{root}/rust/assets/{name}.tiktoken");
        println!("cargo:rerun-if-changed={src}");
        let text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
        fs::write(
            Path::new(&out).join(format!("{name}.bin")),
            vocab_blob(&text, &src),
        )
        .expect("write vocab");
    }
    fs::write(Path::new(&out).join("char_class.rs"), class_table()).expect("write char_class.rs");
}

fn vocab_blob(text: &str, src: &str) -> Vec<u8> {
    let mut lens = Vec::new();
    let mut bytes = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let (b64, rank) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{src}:{}: no rank", line_no + 1));
        let rank: usize = rank
            .parse()
            .unwrap_or_else(|_| panic!("{src}:{}: bad rank", line_no + 1));
        assert_eq!(rank, line_no, "{src}: ranks must be 0..n in line order");
        let token =
            base64_decode(b64).unwrap_or_else(|| panic!("{src}:{}: bad base64", line_no + 1));
        assert!(
            !token.is_empty() && token.len() <= 255,
            "{src}: token length {}",
            token.len()
        );
        lens.push(token.len() as u8);
        bytes.extend_from_slice(&token);
    }
    let mut blob = (lens.len() as u32).to_le_bytes().to_vec();
    blob.extend_from_slice(&lens);
    blob.extend_from_slice(&bytes);
    blob
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Code point ranges of a regex character class, read from regex-syntax's Unicode tables.
fn ranges(class: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(class)
        .expect("class parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("{class}: not a Unicode class: {other:?}"),
    }
}

fn class_table() -> String {
    let mut class = vec![PUNCT; 0x11_0000];
    let sets = [
        (r"[\p{Lu}\p{Lt}]", UPPER),
        (r"\p{Ll}", LOWER),
        (r"[\p{Lm}\p{Lo}]", OTHER_LETTER),
        (r"\p{M}", MARK),
        (r"\p{N}", NUMBER),
        (r"\s", SPACE),
    ];
    for (pattern, id) in sets {
        for (lo, hi) in ranges(pattern) {
            for cp in lo..=hi {
                assert_eq!(class[cp as usize], PUNCT, "U+{cp:04X} in two classes");
                class[cp as usize] = id;
            }
        }
    }
    class[usize::from(b'\r')] = NEWLINE;
    class[usize::from(b'\n')] = NEWLINE;

    let mut blocks: Vec<&[u8]> = Vec::new();
    let mut seen: HashMap<&[u8], u16> = HashMap::new();
    let mut index = Vec::new();
    for block in class.chunks(BLOCK) {
        let id = *seen.entry(block).or_insert_with(|| {
            blocks.push(block);
            u16::try_from(blocks.len() - 1).expect("fewer than 65536 blocks")
        });
        index.push(id);
    }
    let mut src = String::new();
    writeln!(
        src,
        "// Generated by build.rs from regex-syntax's Unicode tables."
    )
    .unwrap();
    writeln!(src, "const BLOCK_SHIFT: u32 = {};", BLOCK.trailing_zeros()).unwrap();
    writeln!(
        src,
        "static BLOCK_INDEX: [u16; {}] = {:?};",
        index.len(),
        index
    )
    .unwrap();
    let flat: Vec<u8> = blocks.concat();
    writeln!(src, "static BLOCKS: [u8; {}] = {:?};", flat.len(), flat).unwrap();
    src
}
