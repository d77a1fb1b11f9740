//! Hit verification for the semantic cache: do two prompts ask the same thing?
//!
//! A sentence embedding scores near misses ("°F to °C" vs "°C to °F", "15% of 80" vs "15% of 90",
//! "soft yolk" vs "hard yolk", "in Python" vs "in JavaScript") as high as true paraphrases, so a
//! cosine threshold cannot refuse them. This module compares the two texts themselves and refuses
//! what an answer depends on but an embedding blurs:
//!
//! - numbers, normalised ("3" = "three", "1,000" = "1000", "first" = 1st), in order, with the unit
//!   attached to each ("15%" is not "15");
//! - units: where both texts name units of one dimension, the same ones;
//! - negation, with negative evaluation words ("not safe" agrees with "dangerous", not with "safe");
//! - the answer type of wh-words (who / where / when / why) and the thing counted ("how many X");
//! - roles around relation words (to/into/from, than, before/after, in/per, by): "X to Y" vs "Y to X",
//!   and the same words with two of them swapped;
//! - content words present on one side only. Words that only frame a question ("how do I", "what's
//!   the best way to", "explain", "command", "formula") are left out, inflections match ("virus" =
//!   "viruses", "format" = "formatting"). A content word swapped for another in the same place, or
//!   added to an otherwise identical question, refuses the hit; a reworded question whose content
//!   words differ in several places is `Reworded`: the caller then asks more of the cosine.
//!
//! Cost is linear in the text length but for two capped parts: the alignment of the differing middle
//! and the search for inexact counterparts of content words. Both texts are read in full (the
//! embedding sees only their first 256 tokens). About 10 µs for two questions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Word lookups happen a dozen times per token: a fast hash, not SipHash (the maps hold only our own
/// word lists, so no input can flood them).
type Map<K, V> = HashMap<K, V, Xxh3DefaultBuilder>;
type Set<K> = HashSet<K, Xxh3DefaultBuilder>;

/// Content words seen on one side only, per side, beyond which two texts are simply different.
const MAX_UNMATCHED: usize = 6;
/// Relation words read per text (the first ones); more only costs time.
const MAX_RELATIONS: usize = 32;
/// Longest differing middle (tokens per side) that is aligned word by word.
const MAX_ALIGN: usize = 256;
/// Word comparisons spent looking for inexact counterparts of content words (about 1 ms).
const MAX_COMPARISONS: usize = 100_000;

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

// --- lexicon -------------------------------------------------------------------------------------

/// Function words: they carry grammar, not the topic.
const STOP: &str = "a an the this that these those i me my mine myself you your yours yourself we our ours us he him
his she her it its itself they them their theirs is are was were be been being am do does did doing done have has had
having can could will would shall should may might must what which how whether if then so as at for of on onto with
about there here and or but also just please some any such own other another else yet";

/// Words that frame a question or request rather than say what it is about ("how do I", "what's the
/// best way to", "explain", "the command for", "the formula for", "how many"), so paraphrases swap
/// them freely. One of these against nothing is no difference; against a content word it still is.
const GENERIC: &str = "way ways method methods approach steps step process procedure thing things something anything
question questions answer answers example examples info information detail details explanation reason reasons idea ideas
option options tip tips advice guide kind kinds type types number amount lot lots part tell tells told explain explains
explained describe describes show shows showed give gives gave given get gets got getting find finds found figure
figured out know knows knew want wants wanted need needs needed like wonder ask asks asking asked mean means meant
meaning let lets help helps suggest suggests recommend recommends define defines name names calculate calculates
computed compute computes say says said go goes going use uses using used try tries trying make makes making made take
takes took taking work works working happen happens happened see sees look looks looking seem seems appear appears
possible able good best better right correct proper properly easy easiest simple simplest quick quickly exactly actually
really basically generally usually typically count total quantity contain contains containing equal equals cause causes
caused main mainly primary formula calculation equation current currently now today present nowadays syntax command
commands function functions code write writes writing script program okay ok fine safe allowed alright acceptable long
based person people someone somebody anyone editor language programming file files difference differences differ
differs distinguish distinguishes compare comparison versus vs between degree degrees";

const NEGATION: &str = "not no never none nothing nobody nowhere neither nor without";

/// Negative evaluation and implicit negation; counted with NEGATION, so "not safe" = "dangerous".
const NEGATIVE: &str = "bad worse worst wrong incorrect difficult dangerous unsafe harmful impossible unable avoid avoids
avoided avoiding prevent prevents prevented preventing stop stops stopped stopping fail fails failed failing lack lacks
lacking refuse refuses refused except excluding unless instead";

/// Connectives between two swapped words that make the swap harmless ("X and Y" = "Y and X").
const SYMMETRIC: &str = "and or vs versus between";

/// Apostrophe-less negative contractions ("dont") and "cannot": the verb, then "not".
const NOT_CONTRACTIONS: &[(&str, &str)] = &[
    ("dont", "do"),
    ("doesnt", "does"),
    ("didnt", "did"),
    ("cant", "can"),
    ("wont", "will"),
    ("isnt", "is"),
    ("arent", "are"),
    ("wasnt", "was"),
    ("werent", "were"),
    ("shouldnt", "should"),
    ("couldnt", "could"),
    ("wouldnt", "would"),
    ("havent", "have"),
    ("hasnt", "has"),
    ("hadnt", "had"),
    ("mustnt", "must"),
    ("neednt", "need"),
    ("aint", "is"),
    ("cannot", "can"),
];

/// Answer types of wh-words; "what", "which" and "how" are left out because paraphrases trade them.
const WH: &[(&str, u8)] = &[
    ("who", 1),
    ("whom", 1),
    ("whose", 1),
    ("where", 2),
    ("when", 4),
    ("why", 8),
];

/// Quantifiers are content ("all branches" is not "a branch"); synonyms share a form.
const QUANTIFIERS: &[(&str, &str)] = &[
    ("all", "all"),
    ("every", "all"),
    ("each", "all"),
    ("everything", "all"),
    ("only", "only"),
    ("most", "most"),
    ("more", "more"),
    ("less", "less"),
    ("fewer", "less"),
    ("least", "least"),
    ("both", "both"),
    ("few", "few"),
    ("several", "several"),
];

/// Relation words: (class, +1 when the left word comes first in the relation, -1 when it comes second).
/// "from X" and "after X" read backwards: "to Y from X" = "from X to Y", "A after B" = "B before A".
const RELATIONS: &[(&str, &str, i8)] = &[
    ("to", "to", 1),
    ("into", "to", 1),
    ("toward", "to", 1),
    ("towards", "to", 1),
    ("from", "to", -1),
    ("than", "than", 1),
    ("before", "before", 1),
    ("after", "before", -1),
    ("per", "in", 1),
    ("in", "in", 1),
    ("by", "by", -1),
];

const SMALL_NUMBERS: &str =
    "zero - two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen"; // "one" is left out: mostly a pronoun ("which one")
const TENS: &str = "twenty thirty forty fifty sixty seventy eighty ninety";
const SCALES: &[(&str, f64)] = &[
    ("hundred", 1e2),
    ("thousand", 1e3),
    ("million", 1e6),
    ("billion", 1e9),
    ("trillion", 1e12),
];
const ORDINALS: &str =
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth";

/// (canonical unit, dimension, words usable anywhere, words that are units only right after a number).
const UNITS: &[(&str, &str, &str, &str)] = &[
    ("%", "ratio", "% percent percentage pct", ""),
    (
        "mm",
        "length",
        "mm millimeter millimeters millimetre millimetres",
        "",
    ),
    (
        "cm",
        "length",
        "cm centimeter centimeters centimetre centimetres",
        "",
    ),
    ("m", "length", "meter meters metre metres", "m"),
    (
        "km",
        "length",
        "km kilometer kilometers kilometre kilometres",
        "",
    ),
    ("in", "length", "inch inches", ""),
    ("ft", "length", "ft foot feet", ""),
    ("yd", "length", "yard yards", "yd"),
    ("mi", "length", "mile miles", "mi"),
    ("mg", "mass", "mg milligram milligrams", ""),
    ("g", "mass", "gram grams gramme grammes", "g"),
    ("kg", "mass", "kg kilogram kilograms kilo kilos", ""),
    ("lb", "mass", "lb lbs pound pounds", ""),
    ("oz", "mass", "oz ounce ounces", ""),
    ("t", "mass", "ton tons tonne tonnes", "t"),
    (
        "ml",
        "volume",
        "ml milliliter milliliters millilitre millilitres",
        "",
    ),
    ("l", "volume", "liter liters litre litres", "l"),
    ("gal", "volume", "gallon gallons gal", ""),
    ("qt", "volume", "quart quarts", "qt"),
    ("pt", "volume", "pint pints", "pt"),
    ("cup", "volume", "cup cups", ""),
    ("tbsp", "volume", "tbsp tablespoon tablespoons", ""),
    ("tsp", "volume", "tsp teaspoon teaspoons", ""),
    ("c", "temperature", "celsius centigrade °c", "c"),
    ("f", "temperature", "fahrenheit °f", "f"),
    ("k", "temperature", "kelvin kelvins", "k"),
    ("ns", "time", "nanosecond nanoseconds", "ns"),
    ("us", "time", "microsecond microseconds", ""),
    ("ms", "time", "millisecond milliseconds", "ms"),
    ("s", "time", "seconds sec secs", "s second"),
    ("min", "time", "minute minutes mins", "min"),
    ("h", "time", "hour hours hr hrs", "h"),
    ("d", "time", "day days", "d"),
    ("wk", "time", "week weeks", ""),
    ("mo", "time", "month months", ""),
    ("yr", "time", "year years yr yrs", ""),
    ("decade", "time", "decade decades", ""),
    ("century", "time", "century centuries", ""),
    ("bit", "data", "bit bits", ""),
    ("byte", "data", "byte bytes", ""),
    ("kb", "data", "kb kib kilobyte kilobytes", ""),
    ("mb", "data", "mb mib megabyte megabytes", ""),
    ("gb", "data", "gb gib gigabyte gigabytes", ""),
    ("tb", "data", "tb tib terabyte terabytes", ""),
    ("usd", "money", "$ usd dollar dollars", ""),
    ("eur", "money", "€ eur euro euros", ""),
    ("gbp", "money", "£ gbp sterling", ""),
    ("jpy", "money", "¥ jpy yen", ""),
    ("cny", "money", "cny yuan rmb", ""),
    ("inr", "money", "inr rupee rupees", ""),
    ("chf", "money", "chf franc francs", ""),
    ("btc", "money", "btc bitcoin bitcoins", ""),
    ("mph", "speed", "mph", ""),
    ("kmh", "speed", "kph kmh", ""),
    ("kcal", "energy", "kcal calorie calories", ""),
    ("j", "energy", "joule joules", "j"),
    ("kwh", "energy", "kwh", ""),
    ("w", "power", "watt watts", "w"),
    ("hz", "frequency", "hz hertz", ""),
    ("ghz", "frequency", "ghz", ""),
    ("acre", "area", "acre acres", ""),
    ("ha", "area", "hectare hectares", "ha"),
];

/// Prefixes that oppose a word's meaning: "increase"/"decrease", "install"/"uninstall", "import"/"export".
const OPPOSING: &[&str] = &[
    "un", "in", "im", "il", "ir", "dis", "de", "non", "anti", "mis", "ex", "up", "down", "over",
    "under", "out",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Stop,
    Generic,
    Negation,
    Negative,
}

struct Lexicon {
    class: Map<&'static str, Class>,
    not_contractions: Map<&'static str, &'static str>,
    wh: Map<&'static str, u8>,
    quantifiers: Map<&'static str, &'static str>,
    relations: Map<&'static str, (&'static str, i8)>,
    small: Map<&'static str, f64>,
    tens: Map<&'static str, f64>,
    scales: Map<&'static str, f64>,
    ordinals: Map<&'static str, f64>,
    units: Map<&'static str, (&'static str, &'static str)>,
    short_units: Map<&'static str, (&'static str, &'static str)>,
    symmetric: Set<&'static str>,
}

static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
    let mut class = Map::default();
    for (list, c) in [
        (STOP, Class::Stop),
        (GENERIC, Class::Generic),
        (NEGATIVE, Class::Negative),
        (NEGATION, Class::Negation),
    ] {
        class.extend(list.split_whitespace().map(|w| (w, c)));
    }
    let mut units = Map::default();
    let mut short_units = Map::default();
    for &(canon, dim, words, short) in UNITS {
        units.extend(words.split_whitespace().map(|w| (w, (canon, dim))));
        short_units.extend(short.split_whitespace().map(|w| (w, (canon, dim))));
    }
    let indexed = |list: &'static str, scale: f64, base: f64| -> Map<&'static str, f64> {
        list.split_whitespace()
            .enumerate()
            .filter(|(_, w)| *w != "-")
            .map(|(i, w)| (w, base + scale * i as f64))
            .collect()
    };
    Lexicon {
        class,
        not_contractions: NOT_CONTRACTIONS.iter().copied().collect(),
        wh: WH.iter().copied().collect(),
        quantifiers: QUANTIFIERS.iter().copied().collect(),
        relations: RELATIONS.iter().map(|&(w, c, s)| (w, (c, s))).collect(),
        small: indexed(SMALL_NUMBERS, 1.0, 0.0),
        tens: indexed(TENS, 10.0, 20.0),
        scales: SCALES.iter().copied().collect(),
        ordinals: indexed(ORDINALS, 1.0, 1.0),
        units,
        short_units,
        symmetric: SYMMETRIC.split_whitespace().collect(),
    }
});

// --- tokens --------------------------------------------------------------------------------------

/// Lower-cased words, numbers, currency/percent signs, °c/°f and clause punctuation, with
/// contractions expanded ("don't" → "do not"), possessive 's and "i.e."/"e.g." dropped.
fn tokenize(text: &str) -> Vec<String> {
    let lex = &*LEXICON;
    let chars: Vec<char> = text
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == '’' { '\'' } else { c })
        .collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).copied().unwrap_or(' ');
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        let start = i;
        if c == '°' && matches!(at(i + 1), 'c' | 'f') && !at(i + 2).is_alphabetic() {
            out.push(chars[i..i + 2].iter().collect());
            i += 2;
        } else if matches!(
            c,
            '$' | '€' | '£' | '¥' | '%' | ',' | ';' | ':' | '?' | '!' | '(' | ')'
        ) {
            out.push(c.to_string());
            i += 1;
            continue;
        } else if c.is_ascii_digit() {
            i += 1;
            loop {
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                if matches!(at(i), '.' | ',') && at(i + 1).is_ascii_digit() {
                    i += 1;
                } else {
                    break;
                }
            }
            let suffix: String = [at(i), at(i + 1)].iter().collect();
            if matches!(suffix.as_str(), "st" | "nd" | "rd" | "th") && !at(i + 2).is_alphabetic() {
                i += 2;
            }
            out.push(chars[start..i].iter().collect());
        } else if c.is_alphabetic() {
            // "i.e." and "e.g." say nothing about the question.
            if (c == 'i' && at(i + 2) == 'e' || c == 'e' && at(i + 2) == 'g')
                && at(i + 1) == '.'
                && at(i + 3) == '.'
                && (i == 0 || !chars[i - 1].is_alphanumeric())
            {
                i += 4;
                continue;
            }
            while at(i).is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut negated = false;
            if at(i) == '\'' && at(i + 1).is_alphabetic() {
                // a contraction: "n't" negates, any other ending ('s, 're, 'll, …) is dropped
                let mut e = i + 1;
                while at(e).is_alphabetic() {
                    e += 1;
                }
                negated = e == i + 2 && at(i + 1) == 't' && word.ends_with('n');
                i = e;
            }
            if negated {
                let base = match &word[..word.len() - 1] {
                    "ca" => "can",
                    "wo" => "will",
                    "sha" => "shall",
                    "ai" => "is",
                    b => b,
                };
                out.push(base.to_string());
                out.push("not".to_string());
            } else if let Some(&verb) = lex.not_contractions.get(word.as_str()) {
                out.push(verb.to_string());
                out.push("not".to_string());
            } else {
                out.push(word);
            }
            continue;
        } else {
            i += 1;
            continue;
        }
        // after a number or °c/°f: a possessive "'s" ("carbon-14's") is not a unit
        if at(i) == '\'' && at(i + 1) == 's' && !at(i + 2).is_alphabetic() {
            i += 2;
        }
    }
    out
}

/// Same word up to an inflection or derivation: equal, or a shared stem (4+ chars) followed by
/// endings from `is_suffix` ("virus"/"viruses", "format"/"formatting"), or plural/past of a 3-letter stem.
pub fn same_word(x: &str, y: &str) -> bool {
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
fn opposite(x: &str, y: &str) -> bool {
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
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

/// Words that name things: what relations connect and swaps move.
fn is_anchor(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Content | Kind::Generic | Kind::Unit | Kind::Number
    )
}

/// (relation class, first word, second word).
type Relation<'a> = (&'static str, &'a str, &'a str);

/// One text, classified.
struct Text {
    /// Normalised tokens (quantifier synonyms merged).
    words: Vec<String>,
    kinds: Vec<Kind>,
    /// Numbers in order, each with the unit written right after (or the currency sign before) it.
    numbers: Vec<(f64, Option<&'static str>)>,
    /// Units named, per dimension.
    units: BTreeMap<&'static str, BTreeSet<&'static str>>,
    /// Negations plus negative-evaluation words.
    negations: usize,
    /// Bit set of who/where/when/why.
    wh: u8,
    /// What "how many X" / "number of X" counts.
    asked: Vec<String>,
}

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

impl Text {
    fn new(text: &str) -> Self {
        let lex = &*LEXICON;
        let tokens = tokenize(text);
        let mut kinds: Vec<Option<Kind>> = vec![None; tokens.len()];
        let mut numbers = Vec::new();
        let mut units: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
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
                if let Some(&(canon, dim)) =
                    lex.units.get(next).or_else(|| lex.short_units.get(next))
                {
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

        let mut asked = Vec::new();
        for (i, w) in tokens.iter().enumerate() {
            let start = match w.as_str() {
                "many" | "much" if i > 0 && tokens[i - 1] == "how" => i + 1,
                "number" | "amount" if tokens.get(i + 1).is_some_and(|n| n == "of") => i + 2,
                _ => continue,
            };
            let mut j = start;
            while j < tokens.len() && out_kinds[j] == Kind::Stop {
                j += 1;
            }
            if j < tokens.len()
                && matches!(out_kinds[j], Kind::Content | Kind::Generic | Kind::Unit)
            {
                let t = tokens[j].as_str();
                asked.push(
                    lex.units
                        .get(t)
                        .map_or_else(|| t.to_string(), |&(canon, _)| canon.to_string()),
                );
            }
        }
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

    fn content(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words.len()).filter(|&i| self.kinds[i] == Kind::Content)
    }

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

    /// (class, first, second) around each relation word, with the nearest word on each side inside one
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

    fn non_punct(&self) -> Vec<&str> {
        self.words
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k != Kind::Punct)
            .map(|(w, _)| w.as_str())
            .collect()
    }
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
fn swapped(a: &Text, b: &Text) -> bool {
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
    let v = |r: Reason| (Verdict::Differs(r), Vec::new(), Vec::new());
    if a.negations != b.negations {
        return v(Reason::Negation);
    }
    let values = |t: &Text| t.numbers.iter().map(|n| n.0).collect::<Vec<f64>>();
    let (va, vb) = (values(a), values(b));
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    if sorted(va.clone()) != sorted(vb.clone()) {
        return v(Reason::Number);
    }
    if va != vb {
        return v(Reason::NumberOrder);
    }
    for (&(_, ua), &(_, ub)) in a.numbers.iter().zip(&b.numbers) {
        if ua != ub && (ua.is_some() && ub.is_some() || va.len() > 1) {
            return v(Reason::NumberUnit);
        }
    }
    if a.units
        .iter()
        .any(|(dim, set)| b.units.get(dim).is_some_and(|other| other != set))
    {
        return v(Reason::Unit);
    }
    if a.wh != 0 && b.wh != 0 && a.wh != b.wh {
        return v(Reason::QuestionWord);
    }
    if !a.asked.is_empty()
        && !b.asked.is_empty()
        && !a
            .asked
            .iter()
            .any(|x| b.asked.iter().any(|y| same_word(x, y)))
    {
        return v(Reason::AskedQuantity);
    }
    let (ra, rb) = (a.relations(), b.relations());
    if roles_conflict(&ra, &rb) || roles_conflict(&rb, &ra) {
        return v(Reason::Direction);
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(a: &str, b: &str) -> &'static str {
        let v = compare(a, b);
        assert_eq!(v, compare(b, a), "not symmetric: {a:?} / {b:?}");
        v.as_str()
    }

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
    fn units_direction_and_roles() {
        assert_eq!(
            verdict(
                "How many ounces are in a pound?",
                "How many grams are in a pound?"
            ),
            "unit"
        );
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
                "A pound equals how many ounces?",
                "How many pounds are in an ounce?"
            ),
            "asked quantity"
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
            verdict(
                "Where does photosynthesis take place?",
                "When does photosynthesis take place?"
            ),
            "question word"
        );
        assert_eq!(
            verdict("How do I write a loop in C?", "How do I write a loop in R?"),
            "substitution"
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
