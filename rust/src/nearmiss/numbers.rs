//! Numbers and units: the same quantities, in the same order, in the same units.
//!
//! An embedding places "15% of 80" next to "15% of 90" and "5 km to miles" next to "5 miles to km",
//! yet each needs its own answer. Numbers are read in any common spelling ("3" = "three", "1,000" =
//! "1000", "twenty-five" = 25, "first" = 1, "3,5" = 3.5) so that paraphrases agree, each with the unit
//! written after it or the currency sign before it, and then compared as values, as a sequence, and
//! unit by unit; units named without a number must agree per dimension ("ounces in a pound" is not
//! "grams in a pound").

use std::collections::{BTreeMap, BTreeSet};

use super::lexicon::LEXICON;
use super::text::{Kind, Text};
use super::Reason;

/// Units named in a text: canonical units per dimension.
pub(super) type Units = BTreeMap<&'static str, BTreeSet<&'static str>>;

fn parse_number(token: &str) -> Option<f64> {
    let t = token.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let grouped = {
        let mut parts = t.split('.');
        let int = parts.next().unwrap_or("");
        let groups: Vec<&str> = int.split(',').collect();
        groups.len() > 1
            && (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && parts.count() <= 1
    };
    let s = if grouped {
        t.replace(',', "")
    } else {
        t.replace(',', ".")
    };
    s.parse().ok()
}

/// The numbers of `tokens` in order, each with its unit. Marks the tokens that spell a number, and
/// its unit, in `kinds`, and files those units in `units`.
pub(super) fn read(
    tokens: &[String],
    kinds: &mut [Option<Kind>],
    units: &mut Units,
) -> Vec<(f64, Option<&'static str>)> {
    let lex = &*LEXICON;
    let mut numbers = Vec::new();
    let word = |i: usize| tokens.get(i).map_or("", String::as_str);

    let mut i = 0;
    while i < tokens.len() {
        let w = word(i);
        let mut j = i + 1;
        let value = if w.starts_with(|c: char| c.is_ascii_digit()) {
            let v = parse_number(w);
            match (v, lex.scales.get(word(j))) {
                (Some(v), Some(s)) => {
                    j += 1;
                    Some(v * s)
                }
                (v, _) => v,
            }
        } else if lex.small.contains_key(w)
            || lex.tens.contains_key(w)
            || (lex.scales.contains_key(w) && i > 0 && matches!(word(i - 1), "a" | "one"))
        {
            let mut total = 0.0;
            j = i;
            while j < tokens.len() {
                let x = word(j);
                if let Some(v) = lex.small.get(x).or_else(|| lex.tens.get(x)) {
                    total += v;
                } else if let Some(s) = lex.scales.get(x) {
                    total = f64::max(total, 1.0) * s;
                } else {
                    break;
                }
                j += 1;
            }
            Some(total)
        } else if let Some(&v) = lex.ordinals.get(w) {
            // "5 second(s)" is a duration, not "the second"
            let duration =
                w == "second" && i > 0 && word(i - 1).starts_with(|c: char| c.is_ascii_digit());
            (!duration).then_some(v)
        } else {
            None
        };
        let Some(value) = value else {
            i += 1;
            continue;
        };
        let mut unit = None;
        if j < tokens.len() {
            let mut next = word(j);
            if matches!(next, "degree" | "degrees") && lex.units.contains_key(word(j + 1)) {
                kinds[j] = Some(Kind::Unit);
                j += 1;
                next = word(j);
            }
            if let Some(&(canon, dim)) = lex.units.get(next).or_else(|| lex.short_units.get(next)) {
                unit = Some(canon);
                units.entry(dim).or_default().insert(canon);
                kinds[j] = Some(Kind::Unit);
            } else if matches!(next, "degree" | "degrees") {
                unit = Some("deg");
                kinds[j] = Some(Kind::Unit);
            }
        }
        if i > 0 && matches!(word(i - 1), "$" | "€" | "£" | "¥") {
            unit = lex.units.get(word(i - 1)).map(|&(canon, _)| canon);
        }
        for k in &mut kinds[i..j] {
            *k = Some(Kind::Number);
        }
        numbers.push((value, unit));
        i = j;
    }
    numbers
}

/// Why the numbers or units of `a` and `b` ask different things, if they do.
pub(super) fn conflict(a: &Text, b: &Text) -> Option<Reason> {
    let values = |t: &Text| t.numbers.iter().map(|n| n.0).collect::<Vec<f64>>();
    let (va, vb) = (values(a), values(b));
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    if sorted(va.clone()) != sorted(vb.clone()) {
        return Some(Reason::Number);
    }
    if va != vb {
        return Some(Reason::NumberOrder);
    }
    for (&(_, ua), &(_, ub)) in a.numbers.iter().zip(&b.numbers) {
        if ua != ub && (ua.is_some() && ub.is_some() || va.len() > 1) {
            return Some(Reason::NumberUnit);
        }
    }
    if a.units
        .iter()
        .any(|(dim, set)| b.units.get(dim).is_some_and(|other| other != set))
    {
        return Some(Reason::Unit);
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::nearmiss::verdict;

    #[test]
    fn numbers_are_normalised_and_compared() {
        assert_eq!(
            verdict(
                "Split the bill of 1,000 dollars three ways",
                "Split the bill of 1000 dollars 3 ways"
            ),
            "same"
        );
        assert_eq!(
            verdict("What is 15% of 80?", "What is 15% of 90?"),
            "number"
        );
        assert_eq!(
            verdict("What is 15% of 80?", "What is 80% of 15?"),
            "number order"
        );
        assert_eq!(
            verdict(
                "Who was the first person on the Moon?",
                "Who was the second person on the Moon?"
            ),
            "number"
        );
        assert_eq!(
            verdict("Is 3.5 bigger than 3,5?", "Is 3.5 bigger than 3.5?"),
            "same"
        );
        assert_eq!(
            verdict("Convert 5 km to miles", "Convert 5 miles to km"),
            "number unit"
        );
        assert_eq!(
            verdict(
                "Convert 100 °F to Celsius",
                "Convert 100 degrees Celsius to Fahrenheit"
            ),
            "number unit"
        );
        assert_eq!(verdict("Twenty-five plus two", "25 plus 2"), "same");
    }

    #[test]
    fn units_of_one_dimension_must_agree() {
        assert_eq!(
            verdict(
                "How many ounces are in a pound?",
                "How many grams are in a pound?"
            ),
            "unit"
        );
    }
}
