//! Routing rules: a list of `when` → `route` rules compiled once into a matcher, evaluated per request.
//!
//! Compilation (`compile.rs`) validates everything (unknown keys, bad regexes, empty conditions, bad
//! actions) and names the rule in the error, so a bad config fails start-up instead of a request.
//! Evaluation reads only what rules need from the request body (`facts.rs`) and is shaped for many
//! rules tried in order:
//!
//! * every condition of every rule is numbered, a rule's conditions consecutively, and filed under
//!   its group (token bounds, flags, models, keys, …, keywords and regexes per scope). The first rule
//!   that needs a group evaluates it for all rules at once, in one tight loop (model names, keys and
//!   teams by hash lookup), into a bitset; a rule is then a test of a few consecutive bits. One loop
//!   per group instead of a branch per condition is what keeps a few hundred rules cheap.
//! * a rule's conditions run in three stages of rising cost (context and flags, keywords, regexes),
//!   so an `all` rule that fails early, or an `any` rule that holds early, never pays for a scan.
//! * the text work is done once per request for all rules: every keyword sits in one Aho-Corasick
//!   automaton (`keywords.rs`) and every body regex in one `RegexSet`, each run at most once per text
//!   (the system prompt, the last user message), and only when a rule reaches such a condition.
//! * sensitive-data conditions (`pii_any`, `pii_count`) run the detectors (`crate::pii`) over every
//!   text the request carries, once, and only when a rule reaches one; rules without them never pay.
//!
//! The syntax is documented in python/mmproxy/rules.py.

mod compile;
mod facts;

pub use compile::DEFAULT_MIN_CONFIDENCE;
mod keywords;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use regex::{Regex, RegexSet};

use crate::json::InvalidInput;
use crate::pii::Detector;
use facts::Facts;
use keywords::Keywords;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Frontier,
    Workhorse,
    Economy,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Frontier => "frontier",
            Tier::Workhorse => "workhorse",
            Tier::Economy => "economy",
        }
    }
}

/// What a matching rule does: route to a model group, or to a tier (optionally local deployments only),
/// or to local deployments only; and whether sensitive data is redacted first (`redact` alone keeps the
/// requested model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub model: Option<String>,
    pub tier: Option<Tier>,
    pub local_only: bool,
    pub redact: bool,
}

/// The sensitive-data detectors the `pii_*` conditions run, and the confidence a finding needs to count.
pub struct Privacy {
    pub detector: Arc<Detector>,
    pub min_confidence: f64,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("kinds", &self.detector.kinds())
            .field("min_confidence", &self.min_confidence)
            .finish()
    }
}

/// A rule decision and the sensitive data found on the way, when a rule needed the detectors.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rule: Option<usize>,
    /// Findings per kind, indexed like the detector's kinds; None when no rule ran the detectors.
    pub pii: Option<Vec<u32>>,
}

/// The per-request context that does not come from the body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Context<'a> {
    /// (name, value) pairs; names compare ASCII-case-insensitively and a name may repeat. Only the
    /// headers in [`RuleSet::header_names`] matter.
    pub headers: &'a [(&'a str, &'a str)],
    pub key: Option<&'a str>,
    pub team: Option<&'a str>,
    pub input_tokens: u64,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    match_any: bool,
    /// The word of the condition bitset that holds all of the rule's conditions (at most one per
    /// `when` key, so they always fit).
    word: usize,
    /// All the rule's condition bits, and the groups they belong to.
    mask: u64,
    groups: u16,
    /// The rule's conditions by stage: context and flags, then keywords, then regexes.
    stages: [Stage; 3],
}

#[derive(Debug, Default, Clone, Copy)]
struct Stage {
    /// The stage's condition bits within the rule's word; 0 for an empty stage.
    mask: u64,
    /// The groups (see [`group`]) the stage's conditions belong to.
    groups: u16,
}

#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    cond_count: usize,
    tables: Tables,
    keywords: Option<Keywords>,
    regexes: Option<RegexSet>,
    tag_ids: HashMap<String, usize>,
    /// Present when some rule has a `pii_*` condition.
    privacy: Option<Privacy>,
}

/// Where the text of keywords and regexes comes from; the discriminant indexes per-scope tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    System = 0,
    LastUser = 1,
    Any = 2,
}

/// Condition groups, as bits: each is evaluated for all rules at once, the first time a rule needs it.
mod group {
    pub const TOKENS: u16 = 1;
    pub const FLAGS: u16 = 1 << 1;
    pub const MODEL: u16 = 1 << 2;
    pub const KEY: u16 = 1 << 3;
    pub const TEAM: u16 = 1 << 4;
    pub const TAGS: u16 = 1 << 5;
    pub const HEADERS: u16 = 1 << 6;
    /// Indexed by scope.
    pub const KEYWORDS: [u16; 3] = [1 << 7, 1 << 8, 1 << 9];
    pub const REGEXES: [u16; 3] = [1 << 10, 1 << 11, 1 << 12];
    pub const PII: u16 = 1 << 13;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Tools,
    Images,
    JsonMode,
}

/// A model pattern with `*`s (exact names are looked up instead): its `*`-separated literal pieces,
/// the first a prefix, the last a suffix, the rest in order.
#[derive(Debug)]
struct Glob(Vec<String>);

impl Glob {
    fn new(pattern: &str) -> Self {
        debug_assert!(pattern.contains('*'));
        Glob(pattern.split('*').map(str::to_owned).collect())
    }

    fn matches(&self, s: &str) -> bool {
        let (first, rest) = self.0.split_first().expect("split yields a piece");
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let (last, middle) = rest.split_last().expect("a glob with * has two pieces");
        for piece in middle {
            match s.find(piece.as_str()) {
                Some(i) => s = &s[i + piece.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

#[derive(Debug)]
enum HeaderWant {
    Exact(String),
    Regex(Regex),
}

impl HeaderWant {
    fn matches(&self, value: &str) -> bool {
        match self {
            HeaderWant::Exact(e) => e == value,
            HeaderWant::Regex(r) => r.is_match(value),
        }
    }
}

/// Ids (of tags or keywords) of which any one, or all, must be present.
#[derive(Debug)]
struct AnyAll {
    ids: Vec<usize>,
    all: bool,
}

impl AnyAll {
    fn holds(&self, present: impl Fn(usize) -> bool) -> bool {
        if self.all {
            self.ids.iter().all(|&i| present(i))
        } else {
            self.ids.iter().any(|&i| present(i))
        }
    }
}

/// Every condition of every rule, by group; `u32`s are condition ids.
#[derive(Debug, Default)]
struct Tables {
    /// Inclusive token bounds: `min_tokens` is `(n, MAX)`, `max_tokens` is `(0, n)`.
    tokens: Vec<(u32, u64, u64)>,
    flags: Vec<(u32, Flag, bool)>,
    /// Exact model names, each with the conditions it satisfies, and the `*` globs.
    model_exact: HashMap<String, Vec<u32>>,
    model_globs: Vec<(u32, Glob)>,
    keys: HashMap<String, Vec<u32>>,
    teams: HashMap<String, Vec<u32>>,
    tags: Vec<(u32, AnyAll)>,
    /// Each wanted header as an index into `header_names`.
    headers: Vec<(u32, Vec<(usize, HeaderWant)>)>,
    /// Lower-cased, distinct: the only headers evaluation reads.
    header_names: Vec<String>,
    /// Indexed by scope.
    keywords: [Vec<(u32, AnyAll)>; 3],
    regexes: [Vec<(u32, usize)>; 3],
    /// `pii_any`: detector kind indexes (None: any kind); `pii_count`: the least number of findings.
    pii_any: Vec<(u32, Option<Vec<u16>>)>,
    pii_count: Vec<(u32, u64)>,
}

/// Which conditions hold, by id.
struct Bits(Vec<u64>);

impl Bits {
    /// Room for ids below `len`, and for the word a rule without conditions points past them.
    fn new(len: usize) -> Self {
        Bits(vec![0; len / 64 + 1])
    }

    fn set_all(&mut self, ids: Option<&Vec<u32>>) {
        for &id in ids.into_iter().flatten() {
            self.mark(id, true);
        }
    }

    /// Sets `id`'s bit if `holds`, without a branch (condition outcomes are poorly predictable).
    fn mark(&mut self, id: u32, holds: bool) {
        self.0[id as usize / 64] |= u64::from(holds) << (id % 64);
    }
}

/// Keyword and regex hits per text (0: system prompt, 1: last user message), and findings per
/// detector kind over every text, computed on first use.
#[derive(Default)]
struct Scans {
    keywords: [Option<Vec<bool>>; 2],
    regexes: [Option<Vec<bool>>; 2],
    pii: Option<Vec<u32>>,
}

/// A scope's hits, scanning its texts (0: the system prompt, 1: the last user message) on first
/// use; for `any`, a hit in either text.
fn hits(
    scans: &mut [Option<Vec<bool>>; 2],
    scope: Scope,
    scan: impl Fn(usize) -> Vec<bool>,
) -> Cow<'_, [bool]> {
    let texts: &[usize] = match scope {
        Scope::System => &[0],
        Scope::LastUser => &[1],
        Scope::Any => &[0, 1],
    };
    for &i in texts {
        if scans[i].is_none() {
            scans[i] = Some(scan(i));
        }
    }
    let [system, user] = scans.each_ref().map(|h| h.as_deref().unwrap_or_default());
    match scope {
        Scope::System => Cow::Borrowed(system),
        Scope::LastUser => Cow::Borrowed(user),
        Scope::Any => Cow::Owned(system.iter().zip(user).map(|(a, b)| *a || *b).collect()),
    }
}

/// One request's evaluation so far.
struct State {
    truth: Bits,
    /// Groups already evaluated into `truth`.
    done: u16,
    scans: Scans,
}

impl RuleSet {
    /// The lower-cased names of the headers some rule reads (distinct); other headers need not be passed.
    pub fn header_names(&self) -> &[String] {
        &self.tables.header_names
    }

    /// Index of the first rule matching `body` (a raw OpenAI chat request) and `ctx`, if any.
    /// A body that is not a JSON object, or whose `messages` is not a list of objects, is an error.
    pub fn evaluate(&self, body: &[u8], ctx: &Context<'_>) -> Result<Option<usize>, InvalidInput> {
        Ok(self.decide(body, ctx)?.rule)
    }

    /// `evaluate`, with the findings per kind when a rule ran the detectors.
    pub fn decide(&self, body: &[u8], ctx: &Context<'_>) -> Result<Outcome, InvalidInput> {
        let facts = Facts::of(body, &self.tag_ids)?;
        let mut state = State {
            truth: Bits::new(self.cond_count),
            done: 0,
            scans: Scans::default(),
        };
        let rule = self.first_match(body, &facts, ctx, &mut state)?;
        Ok(Outcome {
            rule,
            pii: state.scans.pii,
        })
    }

    /// The detector kinds the `pii_*` conditions use (empty without such conditions), indexed like
    /// [`Outcome::pii`].
    pub fn pii_kinds(&self) -> &[String] {
        self.privacy.as_ref().map_or(&[], |p| p.detector.kinds())
    }

    /// Findings per kind as `kind:count` pairs sorted by kind (`card:1,email:2`), for ledgers and
    /// headers: what was found, never the values. None when nothing was found.
    pub fn pii_summary(&self, counts: &[u32]) -> Option<String> {
        let kinds = self.pii_kinds();
        let mut found: Vec<(&str, u32)> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(k, &n)| (kinds[k].as_str(), n))
            .collect();
        found.sort_unstable();
        (!found.is_empty()).then(|| {
            let pairs: Vec<String> = found
                .iter()
                .map(|(kind, n)| format!("{kind}:{n}"))
                .collect();
            pairs.join(",")
        })
    }

    fn first_match(
        &self,
        body: &[u8],
        facts: &Facts<'_>,
        ctx: &Context<'_>,
        state: &mut State,
    ) -> Result<Option<usize>, InvalidInput> {
        let mut failed = None;
        let found = self.rules.iter().position(|rule| {
            if rule.groups & !state.done == 0 {
                // Everything the rule reads is known (soon true of every rule): one test, no branch.
                let hits = state.truth.0[rule.word] & rule.mask;
                if rule.match_any {
                    hits != 0
                } else {
                    hits == rule.mask
                }
            } else {
                match self.holds_by_stage(rule, body, facts, ctx, state) {
                    Ok(holds) => holds,
                    Err(e) => {
                        failed = Some(e);
                        true
                    }
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Whether `rule` holds, evaluating the groups of each stage as it is reached. Kept out of line
    /// so the loop above stays small.
    #[inline(never)]
    fn holds_by_stage(
        &self,
        rule: &Rule,
        body: &[u8],
        f: &Facts<'_>,
        ctx: &Context<'_>,
        s: &mut State,
    ) -> Result<bool, InvalidInput> {
        for stage in &rule.stages {
            if stage.mask == 0 {
                continue;
            }
            if stage.groups & !s.done != 0 {
                self.evaluate_groups(stage.groups & !s.done, body, f, ctx, s)?;
            }
            let hits = s.truth.0[rule.word] & stage.mask;
            if rule.match_any {
                if hits != 0 {
                    return Ok(true);
                }
            } else if hits != stage.mask {
                return Ok(false);
            }
        }
        Ok(!rule.match_any)
    }

    /// Sets the bits of the conditions that hold in the groups `todo`, for every rule.
    fn evaluate_groups(
        &self,
        todo: u16,
        body: &[u8],
        f: &Facts<'_>,
        ctx: &Context<'_>,
        s: &mut State,
    ) -> Result<(), InvalidInput> {
        s.done |= todo;
        let t = &self.tables;
        let truth = &mut s.truth;
        if todo & group::MODEL != 0 {
            truth.set_all(t.model_exact.get(f.model.as_ref()));
            for (id, glob) in &t.model_globs {
                truth.mark(*id, glob.matches(&f.model));
            }
        }
        if todo & group::KEY != 0 {
            truth.set_all(ctx.key.and_then(|k| t.keys.get(k)));
        }
        if todo & group::TEAM != 0 {
            truth.set_all(ctx.team.and_then(|k| t.teams.get(k)));
        }
        if todo & group::TOKENS != 0 {
            let n = ctx.input_tokens;
            for &(id, lo, hi) in &t.tokens {
                truth.mark(id, lo <= n && n <= hi);
            }
        }
        if todo & group::FLAGS != 0 {
            for &(id, flag, want) in &t.flags {
                let have = match flag {
                    Flag::Tools => f.has_tools,
                    Flag::Images => f.has_images,
                    Flag::JsonMode => f.json_mode,
                };
                truth.mark(id, have == want);
            }
        }
        if todo & group::TAGS != 0 {
            for (id, tags) in &t.tags {
                truth.mark(*id, tags.holds(|i| f.tags[i]));
            }
        }
        if todo & group::HEADERS != 0 {
            // Which of the names rules read each request header has: one comparison per pair.
            let names: Vec<Option<usize>> = ctx
                .headers
                .iter()
                .map(|(n, _)| {
                    t.header_names
                        .iter()
                        .position(|h| n.eq_ignore_ascii_case(h))
                })
                .collect();
            for (id, wants) in &t.headers {
                let holds = wants.iter().all(|(name, want)| {
                    ctx.headers
                        .iter()
                        .zip(&names)
                        .any(|((_, v), n)| *n == Some(*name) && want.matches(v))
                });
                truth.mark(*id, holds);
            }
        }
        let texts = [f.system.as_ref(), f.last_user.as_ref()];
        for scope in [Scope::System, Scope::LastUser, Scope::Any] {
            let at = scope as usize;
            if todo & group::KEYWORDS[at] != 0 {
                let found = hits(&mut s.scans.keywords, scope, |i| {
                    self.scan_keywords(texts[i])
                });
                for (id, words) in &t.keywords[at] {
                    truth.mark(*id, words.holds(|k| found[k]));
                }
            }
            if todo & group::REGEXES[at] != 0 {
                let found = hits(&mut s.scans.regexes, scope, |i| self.scan_regexes(texts[i]));
                for &(id, regex) in &t.regexes[at] {
                    truth.mark(id, found[regex]);
                }
            }
        }
        if todo & group::PII != 0 {
            let counts = s.scans.pii.insert(self.scan_pii(body)?);
            let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
            for (id, kinds) in &t.pii_any {
                let holds = match kinds {
                    None => total > 0,
                    Some(kinds) => kinds.iter().any(|&k| counts[k as usize] > 0),
                };
                truth.mark(*id, holds);
            }
            for &(id, least) in &t.pii_count {
                truth.mark(id, total >= least);
            }
        }
        Ok(())
    }

    /// Findings per detector kind over every text of the request, at the configured confidence.
    fn scan_pii(&self, body: &[u8]) -> Result<Vec<u32>, InvalidInput> {
        let privacy = self
            .privacy
            .as_ref()
            .expect("a rule set with pii conditions has detectors");
        let mut counts = vec![0u32; privacy.detector.kinds().len()];
        for text in facts::every_text(body)? {
            for finding in privacy.detector.scan(&text) {
                if finding.confidence >= privacy.min_confidence {
                    counts[finding.kind as usize] += 1;
                }
            }
        }
        Ok(counts)
    }

    fn scan_keywords(&self, text: &str) -> Vec<bool> {
        self.keywords
            .as_ref()
            .map_or_else(Vec::new, |k| k.scan(text))
    }

    fn scan_regexes(&self, text: &str) -> Vec<bool> {
        match &self.regexes {
            Some(set) => {
                let mut found = vec![false; set.len()];
                for i in set.matches(text).iter() {
                    found[i] = true;
                }
                found
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rs(rules: Value) -> RuleSet {
        RuleSet::compile(rules.to_string().as_bytes()).unwrap()
    }

    fn err(rules: Value) -> String {
        RuleSet::compile(rules.to_string().as_bytes())
            .unwrap_err()
            .0
    }

    fn eval(set: &RuleSet, body: Value, ctx: &Context<'_>) -> Option<usize> {
        set.evaluate(body.to_string().as_bytes(), ctx).unwrap()
    }

    fn chat(user: &str) -> Value {
        json!({"model": "auto", "messages": [{"role": "system", "content": "You are helpful."},
                                              {"role": "user", "content": user}]})
    }

    #[test]
    fn globs() {
        assert!(Glob::new("gpt-4o*").matches("gpt-4o-mini"));
        assert!(Glob::new("*mini").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt*o*mini").matches("gpt-4o-mini"));
        assert!(!Glob::new("gpt*o*mini").matches("gpt-4-mini"));
        assert!(Glob::new("a*a").matches("aa"));
        assert!(!Glob::new("a*a").matches("a"));
        assert!(Glob::new("*").matches(""));
    }

    #[test]
    fn first_match_wins_and_default() {
        let set = rs(json!([
            {"name": "kw", "when": {"keywords_any": ["Diagnosis"]}, "route": {"local_only": true}},
            {"name": "re", "when": {"regex": "\\bfn\\b"}, "route": {"tier": "frontier"}},
            {"name": "default", "route": {"tier": "economy"}},
        ]));
        let ctx = Context::default();
        assert_eq!(eval(&set, chat("my DIAGNOSIS and fn"), &ctx), Some(0));
        assert_eq!(eval(&set, chat("write fn main"), &ctx), Some(1));
        assert_eq!(eval(&set, chat("hello"), &ctx), Some(2));
        assert!(set.rules[0].action.local_only);
    }

    #[test]
    fn keywords_overlap_and_unicode() {
        let set = rs(json!([
            {"name": "all", "when": {"keywords_all": ["security", "social security"]}, "route": {"model": "a"}},
            {"name": "uni", "when": {"keywords_any": ["DIAGNÓSTICO"], "in": "any"}, "route": {"model": "b"}},
        ]));
        let ctx = Context::default();
        assert_eq!(eval(&set, chat("my Social Security number"), &ctx), Some(0));
        assert_eq!(eval(&set, chat("security only"), &ctx), None);
        assert_eq!(eval(&set, chat("el Diagnóstico"), &ctx), Some(1));
    }

    #[test]
    fn context_conditions() {
        let set = rs(json!([
            {"name": "h", "when": {"headers": {"X-Env": {"regex": "^prod"}}, "team": ["t1"]}, "route": {"model": "a"}},
            {"name": "k", "when": {"key": "k1", "min_tokens": 10, "max_tokens": 20}, "route": {"model": "b"}},
        ]));
        assert_eq!(set.header_names(), ["x-env"]);
        let headers = [("X-ENV", "production")];
        let ctx = Context {
            headers: &headers,
            team: Some("t1"),
            ..Default::default()
        };
        assert_eq!(eval(&set, chat("x"), &ctx), Some(0));
        let ctx = Context {
            key: Some("k1"),
            input_tokens: 15,
            ..Default::default()
        };
        assert_eq!(eval(&set, chat("x"), &ctx), Some(1));
        let ctx = Context {
            key: Some("k1"),
            input_tokens: 21,
            ..Default::default()
        };
        assert_eq!(eval(&set, chat("x"), &ctx), None);
    }

    #[test]
    fn conditions_shared_across_rules_and_stages() {
        // The same model, key and keyword in several rules, `any` rules that hold only in a later
        // stage, and `all` rules that fail only in a later stage: each rule is judged on its own.
        let set = rs(json!([
            {"name": "a", "when": {"model": ["auto", "x"], "keywords_any": ["zebra"]}, "route": {"model": "a"}},
            {"name": "b", "when": {"model": "auto", "regex": "^no$", "key": "k"}, "route": {"model": "b"}},
            {"name": "c", "when": {"tags_any": ["t"], "regex": "lion", "match": "any"}, "route": {"model": "c"}},
            {"name": "d", "when": {"key": ["k", "j"], "keywords_all": ["zebra", "lion"], "match": "any"},
             "route": {"model": "d"}},
            {"name": "e", "when": {"model": ["au*"], "keywords_any": ["lion"], "in": "system"}, "route": {"model": "e"}},
        ]));
        let ctx = Context::default();
        assert_eq!(eval(&set, chat("a zebra"), &ctx), Some(0));
        assert_eq!(eval(&set, chat("a lion"), &ctx), Some(2));
        let keyed = Context {
            key: Some("j"),
            ..Default::default()
        };
        assert_eq!(eval(&set, chat("nothing"), &keyed), Some(3));
        let system = json!({"model": "auto", "messages": [{"role": "system", "content": "Lion"}]});
        assert_eq!(eval(&set, system, &ctx), Some(4));
        assert_eq!(eval(&set, chat("nothing"), &ctx), None);
    }

    #[test]
    fn many_rules_each_judged_on_its_own_conditions() {
        // 5 conditions a rule, so rules straddle the bitset's 64-bit words unless placed in one.
        let rules: Vec<Value> = (0..100)
            .map(|i| {
                json!({"name": format!("r{i}"), "route": {"model": "m"}, "when": {
                    "model": [format!("m{i}")], "min_tokens": 0, "keywords_any": [format!("w{i}")],
                    "regex": format!("r{i}x"), "has_tools": false}})
            })
            .collect();
        let set = rs(Value::Array(rules));
        let ctx = Context::default();
        let body = |model: &str, user: &str| json!({"model": model, "messages": [{"role": "user", "content": user}]});
        for i in [0, 12, 13, 57, 99] {
            let text = format!("w{i} r{i}x");
            assert_eq!(eval(&set, body(&format!("m{i}"), &text), &ctx), Some(i));
            assert_eq!(
                eval(&set, body(&format!("m{i}"), &format!("w{i}")), &ctx),
                None
            );
            assert_eq!(eval(&set, body("other", &text), &ctx), None);
        }
    }

    #[test]
    fn compile_errors_name_the_rule() {
        assert!(
            err(json!([{"name": "x", "when": {"regex": "("}, "route": {"model": "a"}}]))
                .starts_with("routing_rules[0] \"x\": when.regex: invalid regex")
        );
        assert!(
            err(json!([{"route": {"model": "a"}}])).starts_with("routing_rules[0]: name: missing")
        );
        assert!(
            err(json!([{"name": "y", "when": {"bogus": 1}, "route": {"model": "a"}}]))
                .starts_with("routing_rules[0] \"y\": when.bogus")
        );
        assert!(
            err(json!([{"name": "z", "route": {"model": "a", "tier": "economy"}}]))
                .starts_with("routing_rules[0] \"z\": route.model")
        );
        assert!(err(json!({})).starts_with("routing_rules: must be a list"));
    }

    #[test]
    fn pii_conditions_read_every_text() {
        let set = rs(json!([
            {"name": "cards", "when": {"pii_any": ["card", "iban"]}, "route": {"local_only": true}},
            {"name": "many", "when": {"pii_count": 2}, "route": {"redact": true}},
            {"name": "some", "when": {"pii_any": ["any"]}, "route": {"tier": "economy"}},
        ]));
        let ctx = Context::default();
        // A card in a tool result, not in the last user message.
        let tool = json!({"model": "auto", "messages": [
            {"role": "user", "content": "charge it"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function",
              "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "card on file: 4111 1111 1111 1111"},
            {"role": "user", "content": "thanks"}]});
        let out = set.decide(tool.to_string().as_bytes(), &ctx).unwrap();
        assert_eq!(out.rule, Some(0));
        let counts = out.pii.unwrap();
        let card = set.pii_kinds().iter().position(|k| k == "card").unwrap();
        assert_eq!(counts[card], 1);
        assert_eq!(counts.iter().sum::<u32>(), 1);
        assert_eq!(set.pii_summary(&counts).as_deref(), Some("card:1"));
        // Two e-mails, one in the system prompt and one in tool call arguments.
        let two = json!({"messages": [
            {"role": "system", "content": "escalate to ops@example.com"},
            {"role": "assistant", "tool_calls": [{"function": {"arguments": "{\"to\": \"jane@example.org\"}"}}]},
            {"role": "user", "content": "ok"}]});
        assert_eq!(eval(&set, two, &ctx), Some(1));
        assert_eq!(
            eval(&set, chat("mail me at a.b@example.com"), &ctx),
            Some(2)
        );
        let clean = set
            .decide(chat("hello there").to_string().as_bytes(), &ctx)
            .unwrap();
        assert_eq!(clean.rule, None);
        assert_eq!(clean.pii.unwrap().iter().sum::<u32>(), 0);
        assert!(set.rules[1].action.redact && set.rules[1].action.model.is_none());
    }

    #[test]
    fn pii_detection_runs_only_when_a_rule_reaches_it() {
        let set = rs(json!([
            {"name": "first", "when": {"model": "m"}, "route": {"model": "a"}},
            {"name": "cards", "when": {"pii_any": "card", "has_tools": true}, "route": {"local_only": true}},
        ]));
        let ctx = Context::default();
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": "4111 1111 1111 1111"}]});
        let out = set.decide(body.to_string().as_bytes(), &ctx).unwrap();
        assert_eq!((out.rule, out.pii), (Some(0), None));
        // An `all` rule whose cheap condition fails never scans.
        let body =
            json!({"model": "x", "messages": [{"role": "user", "content": "4111 1111 1111 1111"}]});
        let out = set.decide(body.to_string().as_bytes(), &ctx).unwrap();
        assert_eq!((out.rule, out.pii), (None, None));
        // A rule set without pii conditions holds no detectors.
        assert!(rs(json!([{"name": "d", "route": {"model": "a"}}]))
            .pii_kinds()
            .is_empty());
    }

    #[test]
    fn pii_conditions_use_the_configured_detectors() {
        let detector = Detector::new(Some(&["email"]), &[("employee", r"EMP-\d{6}")], &[]).unwrap();
        let privacy = Privacy {
            detector: Arc::new(detector),
            min_confidence: 0.7,
        };
        let spec = json!([{"name": "hr", "when": {"pii_any": ["employee"]}, "route": {"local_only": true}}]);
        let set = RuleSet::compile_with(spec.to_string().as_bytes(), Some(privacy)).unwrap();
        let ctx = Context::default();
        assert_eq!(eval(&set, chat("badge EMP-123456"), &ctx), Some(0));
        // A kind the detectors do not have is a compile error naming the rule.
        let unknown = err(
            json!([{"name": "c", "when": {"pii_any": ["cards"]}, "route": {"local_only": true}}]),
        );
        assert!(
            unknown.starts_with("routing_rules[0] \"c\": when.pii_any: unknown kind \"cards\""),
            "{unknown}"
        );
        let zero = err(json!([{"name": "n", "when": {"pii_count": 0}, "route": {"redact": true}}]));
        assert!(
            zero.contains("when.pii_count: must be at least 1"),
            "{zero}"
        );
    }

    #[test]
    fn malformed_bodies() {
        let set = rs(json!([{"name": "d", "route": {"model": "a"}}]));
        let ctx = Context::default();
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"messages\": 1}",
            b"{\"messages\": [1]}",
            b"{}",
        ] {
            assert!(set.evaluate(body, &ctx).is_err());
        }
    }
}
