//! The word lists the checks read, and their lookup tables, built once per process.
//!
//! Every check asks what a word is (a function word, a question-framing word, a negation, a number
//! word, a unit, a relation word, …). One table of each kind, shared by all texts, keeps that a hash
//! lookup; the lists themselves are the judgement calls of this module, so they sit together here.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Word lookups happen a dozen times per token: a fast hash, not SipHash (the maps hold only our own
/// word lists, so no input can flood them).
pub(super) type Map<K, V> = HashMap<K, V, Xxh3DefaultBuilder>;
pub(super) type Set<K> = HashSet<K, Xxh3DefaultBuilder>;

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

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Stop,
    Generic,
    Negation,
    Negative,
}

pub(super) struct Lexicon {
    pub(super) class: Map<&'static str, Class>,
    pub(super) not_contractions: Map<&'static str, &'static str>,
    pub(super) wh: Map<&'static str, u8>,
    pub(super) quantifiers: Map<&'static str, &'static str>,
    pub(super) relations: Map<&'static str, (&'static str, i8)>,
    pub(super) small: Map<&'static str, f64>,
    pub(super) tens: Map<&'static str, f64>,
    pub(super) scales: Map<&'static str, f64>,
    pub(super) ordinals: Map<&'static str, f64>,
    pub(super) units: Map<&'static str, (&'static str, &'static str)>,
    pub(super) short_units: Map<&'static str, (&'static str, &'static str)>,
    pub(super) symmetric: Set<&'static str>,
}

pub(super) static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
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
