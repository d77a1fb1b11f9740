//! Comparing two words: the same word up to an inflection, or a word and its opposite.
//!
//! Paraphrases inflect freely ("virus" / "viruses", "format" / "formatting"), so every check that
//! matches words across the two texts uses `same_word` instead of equality. A prefix that reverses a
//! word ("install" / "uninstall", "inflation" / "deflation") leaves most of it the same, so
//! `opposite` catches what a shared stem would otherwise pass.

/// Prefixes that oppose a word's meaning: "increase"/"decrease", "install"/"uninstall", "import"/"export".
const OPPOSING: &[&str] = &[
    "un", "in", "im", "il", "ir", "dis", "de", "non", "anti", "mis", "ex", "up", "down", "over",
    "under", "out",
];

/// Same word up to an inflection or derivation: equal, or a shared stem (4+ chars) followed by
/// endings from `is_suffix` ("virus"/"viruses", "format"/"formatting"), or plural/past of a 3-letter stem.
pub(super) fn same_word(x: &str, y: &str) -> bool {
    if x == y {
        return true;
    }
    let mut n = 0; // common prefix, in chars
    let mut split = 0; // its length in bytes
    let mut last = ' ';
    for (cx, cy) in x.chars().zip(y.chars()) {
        if cx != cy {
            break;
        }
        n += 1;
        last = cx;
        split += cx.len_utf8();
    }
    if n < 3 {
        return false;
    }
    // a doubled final consonant before the ending: "format" / "formatting"
    let undouble = |r: &str| -> usize {
        let mut it = r.chars();
        match (it.next(), it.next()) {
            (Some(f), Some(_)) if f == last => f.len_utf8(),
            _ => 0,
        }
    };
    let (rx, ry) = (&x[split..], &y[split..]);
    let (rx, ry) = (&rx[undouble(rx)..], &ry[undouble(ry)..]);
    if n == 3 {
        let plural_or_past = |r: &str| matches!(r, "" | "s" | "es" | "d" | "ed");
        return plural_or_past(rx) && plural_or_past(ry);
    }
    is_suffix(rx) && is_suffix(ry)
}

/// Endings that keep a word's meaning: "virus"/"viruses", "differ"/"difference", "bacterium"/"bacteria".
const SUFFIXES: &[&str] = &[
    "", "s", "es", "e", "ed", "d", "ing", "ly", "er", "ers", "est", "ion", "ions", "ation",
    "ations", "ity", "ities", "ive", "ment", "ments", "al", "ally", "ence", "ance", "y", "ies",
    "ied", "a", "um", "ness", "ize", "ise", "ized", "ised", "izing", "ising",
];

fn is_suffix(r: &str) -> bool {
    SUFFIXES.contains(&r)
}

/// `x` is `y` under an opposing prefix, or both are one stem under different ones ("increase"/"decrease",
/// "uninstall"/"install"). Check both orders.
pub(super) fn opposite(x: &str, y: &str) -> bool {
    OPPOSING.iter().any(|p| {
        x.strip_prefix(p).is_some_and(|stem| {
            stem.chars().count() >= 3
                && (y == stem
                    || OPPOSING
                        .iter()
                        .any(|q| q != p && y.strip_prefix(q) == Some(stem)))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_match_across_inflections() {
        assert!(same_word("virus", "viruses"));
        assert!(same_word("format", "formatting"));
        assert!(same_word("bacterium", "bacteria"));
        assert!(same_word("dog", "dogs"));
        assert!(!same_word("java", "javascript"));
        assert!(!same_word("import", "important"));
        assert!(!same_word("class", "classic"));
        assert!(opposite("inflation", "deflation"));
        assert!(opposite("uninstall", "install"));
        assert!(!opposite("install", "instill"));
    }
}
