//! Routing rules: a list of `when` → `route` rules compiled once into a matcher, evaluated per request.
//!
//! Compilation validates everything (unknown keys, bad regexes, empty conditions, bad actions) and
//! names the rule in the error, so a bad config fails start-up instead of a request. Evaluation reads
//! only what rules need from the request body, and does the text work once per request for all rules:
//! every keyword of every rule sits in one Aho-Corasick automaton and every body regex in one
//! `RegexSet`, each run at most once per scanned text (the system prompt, the last user message) and
//! only when a rule reaches such a condition. The syntax is documented in python/mmproxy/rules.py.

use std::borrow::Cow;
use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::{Map, Value};

use crate::json::{kind, parse_object, InvalidInput};

/// Compiled size cap per regex, so one pathological pattern cannot take the gateway's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
/// or to local deployments only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub model: Option<String>,
    pub tier: Option<Tier>,
    pub local_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    System,
    LastUser,
    Any,
}

#[derive(Debug)]
enum Glob {
    Exact(String),
    /// `*`-separated literal pieces: the first is a prefix, the last a suffix, the rest in order.
    Wild(Vec<String>),
}

impl Glob {
    fn new(p: &str) -> Self {
        if p.contains('*') {
            Glob::Wild(p.split('*').map(str::to_owned).collect())
        } else {
            Glob::Exact(p.to_owned())
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Exact(e) => e == s,
            Glob::Wild(parts) => {
                let (first, rest) = (&parts[0], &parts[1..]);
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
    }
}

#[derive(Debug)]
enum HeaderWant {
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum Cond {
    Model(Vec<Glob>),
    MinTokens(u64),
    MaxTokens(u64),
    Keywords {
        ids: Vec<usize>,
        all: bool,
        scope: Scope,
    },
    Regex {
        id: usize,
        scope: Scope,
    },
    HasTools(bool),
    HasImages(bool),
    JsonMode(bool),
    Tags {
        ids: Vec<usize>,
        all: bool,
    },
    /// Lower-cased header name → wanted value; all listed headers must match.
    Headers(Vec<(String, HeaderWant)>),
    Key(Vec<String>),
    Team(Vec<String>),
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    match_any: bool,
    /// Cheap conditions first, so `all` and `any` rules short-circuit before the text scans.
    conds: Vec<Cond>,
}

/// The per-request context that does not come from the body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Context<'a> {
    pub headers: &'a [(String, String)],
    pub key: Option<&'a str>,
    pub team: Option<&'a str>,
    pub input_tokens: u64,
}

#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    keywords: Option<AhoCorasick>,
    keyword_count: usize,
    /// A non-ASCII keyword needs a Unicode-lower-cased copy of the text; ASCII keywords are matched
    /// ASCII-case-insensitively on the text itself, without a copy.
    lower_text: bool,
    regexes: Option<RegexSet>,
    tags: HashMap<String, usize>,
    pub uses_headers: bool,
}

// --- compilation -------------------------------------------------------------------------------------

struct Builder {
    keywords: Vec<String>,
    keyword_ids: HashMap<String, usize>,
    regexes: Vec<String>,
    regex_ids: HashMap<String, usize>,
    tags: HashMap<String, usize>,
}

/// The error prefix that names a rule: `routing_rules[3] "code-to-frontier"`.
fn label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("routing_rules[{index}] {n:?}"),
        None => format!("routing_rules[{index}]"),
    }
}

fn bool_of(v: &Value, key: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{key}: must be true or false, not {}", kind(v)))
}

fn count_of(v: &Value, key: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("{key}: must be a non-negative integer, not {}", kind(v)))
}

fn str_of<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v.as_str()
        .ok_or_else(|| format!("{key}: must be a string, not {}", kind(v)))
}

/// A non-empty list of non-empty strings; a single string is accepted as a one-item list.
fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        other => {
            return Err(format!(
                "{key}: must be a list of strings, not {}",
                kind(other)
            ))
        }
    };
    if items.is_empty() {
        return Err(format!("{key}: must not be empty"));
    }
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(format!("{key}: must not contain an empty string")),
            other => Err(format!("{key}: must contain strings, not {}", kind(other))),
        })
        .collect()
}

fn compile_regex(pattern: &str, key: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let e = e.to_string().replace('\n', " ");
            format!(
                "{key}: invalid regex {pattern:?}: {}",
                e.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
}

impl Builder {
    fn keyword(&mut self, k: &str) -> usize {
        let k = k.to_lowercase();
        let next = self.keywords.len();
        *self.keyword_ids.entry(k.clone()).or_insert_with(|| {
            self.keywords.push(k);
            next
        })
    }

    fn regex(&mut self, pattern: &str) -> usize {
        let next = self.regexes.len();
        *self.regex_ids.entry(pattern.to_owned()).or_insert_with(|| {
            self.regexes.push(pattern.to_owned());
            next
        })
    }

    fn tag(&mut self, t: String) -> usize {
        let next = self.tags.len();
        *self.tags.entry(t).or_insert(next)
    }

    fn rule(&mut self, v: &Value) -> Result<Rule, String> {
        let Value::Object(rule) = v else {
            return Err(format!("must be a mapping, not {}", kind(v)));
        };
        if rule.is_empty() {
            return Err("empty rule: needs `name` and `route`".into());
        }
        for k in rule.keys() {
            if !matches!(k.as_str(), "name" | "when" | "route") {
                return Err(format!("{k}: unknown key; expected name, when, route"));
            }
        }
        let name = match rule.get("name") {
            Some(n) => str_of(n, "name")?.to_owned(),
            None => return Err("name: missing".into()),
        };
        if name.is_empty() {
            return Err("name: must not be empty".into());
        }
        let action = match rule.get("route") {
            Some(r) => action(r)?,
            None => return Err("route: missing".into()),
        };
        let (conds, match_any) = match rule.get("when") {
            None | Some(Value::Null) => (Vec::new(), false),
            Some(Value::Object(when)) => self.when(when)?,
            Some(other) => return Err(format!("when: must be a mapping, not {}", kind(other))),
        };
        Ok(Rule {
            name,
            action,
            match_any,
            conds,
        })
    }

    fn when(&mut self, when: &Map<String, Value>) -> Result<(Vec<Cond>, bool), String> {
        let scope_of = |key: &str| -> Result<Scope, String> {
            match when.get("in") {
                None => Ok(Scope::LastUser),
                Some(v) => match str_of(v, "when.in")? {
                    "system" => Ok(Scope::System),
                    "last_user" => Ok(Scope::LastUser),
                    "any" => Ok(Scope::Any),
                    other => Err(format!(
                        "when.in: {other:?} is not a scope (for {key}); expected system, last_user, any"
                    )),
                },
            }
        };
        let mut match_any = false;
        let mut conds = Vec::new();
        let mut scoped = false;
        for (k, v) in when {
            let key = format!("when.{k}");
            let key = key.as_str();
            let cond = match k.as_str() {
                "match" => {
                    match_any = match str_of(v, key)? {
                        "all" => false,
                        "any" => true,
                        other => return Err(format!("{key}: {other:?}; expected all or any")),
                    };
                    continue;
                }
                "in" => continue,
                "model" => Cond::Model(strings(v, key)?.iter().map(|p| Glob::new(p)).collect()),
                "min_tokens" => Cond::MinTokens(count_of(v, key)?),
                "max_tokens" => Cond::MaxTokens(count_of(v, key)?),
                "keywords_any" | "keywords_all" => {
                    scoped = true;
                    let ids = strings(v, key)?.iter().map(|w| self.keyword(w)).collect();
                    Cond::Keywords {
                        ids,
                        all: k == "keywords_all",
                        scope: scope_of(key)?,
                    }
                }
                "regex" => {
                    scoped = true;
                    let pattern = str_of(v, key)?;
                    compile_regex(pattern, key)?;
                    Cond::Regex {
                        id: self.regex(pattern),
                        scope: scope_of(key)?,
                    }
                }
                "has_tools" => Cond::HasTools(bool_of(v, key)?),
                "has_images" => Cond::HasImages(bool_of(v, key)?),
                "json_mode" => Cond::JsonMode(bool_of(v, key)?),
                "tags_any" | "tags_all" => Cond::Tags {
                    ids: strings(v, key)?.into_iter().map(|t| self.tag(t)).collect(),
                    all: k == "tags_all",
                },
                "headers" => {
                    let Value::Object(h) = v else {
                        return Err(format!("{key}: must be a mapping of header name to value, not {}", kind(v)));
                    };
                    if h.is_empty() {
                        return Err(format!("{key}: must not be empty"));
                    }
                    let mut wants = Vec::new();
                    for (name, want) in h {
                        let hk = format!("{key}.{name}");
                        let want = match want {
                            Value::String(s) => HeaderWant::Exact(s.clone()),
                            Value::Object(o) if o.len() == 1 && o.contains_key("regex") => {
                                HeaderWant::Regex(compile_regex(str_of(&o["regex"], &hk)?, &hk)?)
                            }
                            _ => return Err(format!("{hk}: must be a string or {{regex: ...}}")),
                        };
                        wants.push((name.to_ascii_lowercase(), want));
                    }
                    Cond::Headers(wants)
                }
                "key" => Cond::Key(strings(v, key)?),
                "team" => Cond::Team(strings(v, key)?),
                _ => {
                    return Err(format!(
                        "{key}: unknown condition; expected model, min_tokens, max_tokens, keywords_any, \
                         keywords_all, regex, in, has_tools, has_images, json_mode, tags_any, tags_all, \
                         headers, key, team, match"
                    ))
                }
            };
            conds.push(cond);
        }
        if when.contains_key("in") {
            scope_of("in")?;
            if !scoped {
                return Err("when.in: only applies to keywords_any, keywords_all, regex".into());
            }
        }
        if conds.is_empty() {
            return Err("when: has no conditions; omit `when` for a default rule".into());
        }
        conds.sort_by_key(cost);
        Ok((conds, match_any))
    }
}

/// Evaluation order: context and flags, then tags and headers, then text scans.
fn cost(c: &Cond) -> u8 {
    match c {
        Cond::MinTokens(_)
        | Cond::MaxTokens(_)
        | Cond::HasTools(_)
        | Cond::HasImages(_)
        | Cond::JsonMode(_) => 0,
        Cond::Model(_) | Cond::Key(_) | Cond::Team(_) | Cond::Tags { .. } => 1,
        Cond::Headers(_) => 2,
        Cond::Keywords { .. } => 3,
        Cond::Regex { .. } => 4,
    }
}

fn action(v: &Value) -> Result<Action, String> {
    let Value::Object(route) = v else {
        return Err(format!("route: must be a mapping, not {}", kind(v)));
    };
    let mut action = Action {
        model: None,
        tier: None,
        local_only: false,
    };
    for (k, v) in route {
        let key = format!("route.{k}");
        match k.as_str() {
            "model" => {
                let m = str_of(v, &key)?;
                if m.is_empty() {
                    return Err(format!("{key}: must not be empty"));
                }
                action.model = Some(m.to_owned());
            }
            "tier" => {
                action.tier = Some(match str_of(v, &key)? {
                    "frontier" => Tier::Frontier,
                    "workhorse" => Tier::Workhorse,
                    "economy" => Tier::Economy,
                    other => {
                        return Err(format!(
                            "{key}: {other:?} is not a tier; expected frontier, workhorse, economy"
                        ))
                    }
                })
            }
            "local_only" => {
                if !bool_of(v, &key)? {
                    return Err(format!(
                        "{key}: only `true` is meaningful; drop the key otherwise"
                    ));
                }
                action.local_only = true;
            }
            _ => {
                return Err(format!(
                    "{key}: unknown action; expected model, tier, local_only"
                ))
            }
        }
    }
    match (&action.model, action.tier, action.local_only) {
        (None, None, false) => Err("route: needs one of model, tier, local_only".into()),
        (Some(_), Some(_), _) | (Some(_), _, true) => {
            Err("route.model: cannot be combined with tier or local_only".into())
        }
        _ => Ok(action),
    }
}

impl RuleSet {
    /// Compiles a JSON list of rules. The error message starts with the rule's index and name.
    pub fn compile(spec: &[u8]) -> Result<Self, InvalidInput> {
        let rules = match serde_json::from_slice::<Value>(spec) {
            Ok(Value::Array(rules)) => rules,
            Ok(other) => {
                return Err(InvalidInput(format!(
                    "routing_rules: must be a list of rules, not {}",
                    kind(&other)
                )))
            }
            Err(e) => return Err(InvalidInput(format!("routing_rules: not valid JSON: {e}"))),
        };
        Self::from_values(&rules)
    }

    pub fn from_values(rules: &[Value]) -> Result<Self, InvalidInput> {
        let mut b = Builder {
            keywords: Vec::new(),
            keyword_ids: HashMap::new(),
            regexes: Vec::new(),
            regex_ids: HashMap::new(),
            tags: HashMap::new(),
        };
        let mut compiled = Vec::with_capacity(rules.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let name = r.get("name").and_then(Value::as_str);
            let rule = b
                .rule(r)
                .map_err(|e| InvalidInput(format!("{}: {e}", label(i, name))))?;
            if let Some(first) = seen.insert(rule.name.clone(), i) {
                return Err(InvalidInput(format!(
                    "{}: name: duplicates routing_rules[{first}]",
                    label(i, name)
                )));
            }
            compiled.push(rule);
        }
        let lower_text = b.keywords.iter().any(|k| !k.is_ascii());
        let keywords = if b.keywords.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(!lower_text)
                .build(&b.keywords)
                .map_err(|e| InvalidInput(format!("routing_rules: keywords: {e}")))?;
            Some(ac)
        };
        let regexes = if b.regexes.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(&b.regexes)
                .size_limit(
                    REGEX_SIZE_LIMIT
                        .saturating_mul(b.regexes.len())
                        .max(10 << 20),
                )
                .build()
                .map_err(|e| InvalidInput(format!("routing_rules: regexes together: {e}")))?;
            Some(set)
        };
        let uses_headers = compiled
            .iter()
            .any(|r| r.conds.iter().any(|c| matches!(c, Cond::Headers(_))));
        Ok(RuleSet {
            rules: compiled,
            keyword_count: b.keywords.len(),
            keywords,
            lower_text,
            regexes,
            tags: b.tags,
            uses_headers,
        })
    }

    /// Index of the first rule matching `body` (a raw OpenAI chat request) and `ctx`, if any.
    /// A body that is not a JSON object, or whose `messages` is not a list of objects, is an error.
    pub fn evaluate(&self, body: &[u8], ctx: &Context<'_>) -> Result<Option<usize>, InvalidInput> {
        // Fast path: read only what rules need, borrowing from the body. Anything it does not expect
        // (a wrong type, a duplicate key, invalid JSON) goes to the full parse, which decides and
        // words the errors.
        if let Ok(fast) = serde_json::from_slice::<fast::Body<'_>>(body) {
            return Ok(self.first_match(&fast.facts(&self.tags), ctx));
        }
        let map = parse_object(body)?;
        let facts = Facts::read(&map, &self.tags)?;
        Ok(self.first_match(&facts, ctx))
    }

    fn first_match(&self, facts: &Facts<'_>, ctx: &Context<'_>) -> Option<usize> {
        let mut scans = Scans::default();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.conds.is_empty() {
                return Some(i);
            }
            let mut test = |c: &Cond| self.holds(c, facts, ctx, &mut scans);
            let hit = if rule.match_any {
                rule.conds.iter().any(&mut test)
            } else {
                rule.conds.iter().all(&mut test)
            };
            if hit {
                return Some(i);
            }
        }
        None
    }

    fn holds(&self, c: &Cond, f: &Facts<'_>, ctx: &Context<'_>, s: &mut Scans) -> bool {
        match c {
            Cond::Model(globs) => globs.iter().any(|g| g.matches(&f.model)),
            Cond::MinTokens(n) => ctx.input_tokens >= *n,
            Cond::MaxTokens(n) => ctx.input_tokens <= *n,
            Cond::HasTools(want) => f.has_tools == *want,
            Cond::HasImages(want) => f.has_images == *want,
            Cond::JsonMode(want) => f.json_mode == *want,
            Cond::Key(keys) => ctx.key.is_some_and(|k| keys.iter().any(|x| x == k)),
            Cond::Team(teams) => ctx.team.is_some_and(|t| teams.iter().any(|x| x == t)),
            Cond::Tags { ids, all } => {
                let has = |id: &usize| f.tags.get(*id).copied().unwrap_or(false);
                if *all {
                    ids.iter().all(has)
                } else {
                    ids.iter().any(has)
                }
            }
            Cond::Headers(wants) => wants.iter().all(|(name, want)| {
                ctx.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .any(|(_, v)| match want {
                        HeaderWant::Exact(e) => e == v,
                        HeaderWant::Regex(r) => r.is_match(v),
                    })
            }),
            Cond::Keywords { ids, all, scope } => {
                if matches!(scope, Scope::System | Scope::Any) && s.sys_kw.is_none() {
                    s.sys_kw = Some(self.scan_keywords(&f.system));
                }
                if matches!(scope, Scope::LastUser | Scope::Any) && s.user_kw.is_none() {
                    s.user_kw = Some(self.scan_keywords(&f.last_user));
                }
                let (sys, user) = match scope {
                    Scope::System => (s.sys_kw.as_deref(), None),
                    Scope::LastUser => (None, s.user_kw.as_deref()),
                    Scope::Any => (s.sys_kw.as_deref(), s.user_kw.as_deref()),
                };
                let has = |id: &usize| sys.is_some_and(|b| b[*id]) || user.is_some_and(|b| b[*id]);
                if *all {
                    ids.iter().all(has)
                } else {
                    ids.iter().any(has)
                }
            }
            Cond::Regex { id, scope } => {
                let in_sys = matches!(scope, Scope::System | Scope::Any)
                    && s.sys_re.get_or_insert_with(|| self.scan_regexes(&f.system))[*id];
                in_sys
                    || (matches!(scope, Scope::LastUser | Scope::Any)
                        && s.user_re
                            .get_or_insert_with(|| self.scan_regexes(&f.last_user))[*id])
            }
        }
    }

    /// Which keywords occur in `text`, case-insensitively. Overlapping search, so that both
    /// "security" and "social security" are found; stops once every keyword is found.
    fn scan_keywords(&self, text: &str) -> Vec<bool> {
        let mut found = vec![false; self.keyword_count];
        let Some(ac) = &self.keywords else {
            return found;
        };
        if text.is_empty() {
            return found;
        }
        let lowered: Cow<'_, str> = if self.lower_text {
            Cow::Owned(text.to_lowercase())
        } else {
            Cow::Borrowed(text)
        };
        let mut left = self.keyword_count;
        for m in ac.find_overlapping_iter(lowered.as_ref()) {
            let id = m.pattern().as_usize();
            if !found[id] {
                found[id] = true;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        found
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

/// Keyword and regex hits, computed on first use in a request.
#[derive(Default)]
struct Scans {
    sys_kw: Option<Vec<bool>>,
    user_kw: Option<Vec<bool>>,
    sys_re: Option<Vec<bool>>,
    user_re: Option<Vec<bool>>,
}

/// What the rules read from a request body.
struct Facts<'a> {
    model: Cow<'a, str>,
    /// System and developer messages' text, joined by newlines.
    system: Cow<'a, str>,
    /// Text of the last `user` message (its text parts joined by newlines).
    last_user: Cow<'a, str>,
    has_tools: bool,
    has_images: bool,
    json_mode: bool,
    /// Indexed by the rule set's tag ids.
    tags: Vec<bool>,
}

fn join<'a>(acc: &mut Cow<'a, str>, piece: &'a str) {
    if acc.is_empty() {
        *acc = Cow::Borrowed(piece);
    } else {
        let s = acc.to_mut();
        s.push('\n');
        s.push_str(piece);
    }
}

/// Adds a message's text to the system prompt (empty texts add nothing, not even a newline).
fn append<'a>(acc: &mut Cow<'a, str>, text: Cow<'a, str>) {
    match text {
        Cow::Borrowed(b) => {
            if !b.is_empty() {
                join(acc, b);
            }
        }
        Cow::Owned(o) => {
            if !o.is_empty() {
                if !acc.is_empty() {
                    acc.to_mut().push('\n');
                }
                acc.to_mut().push_str(&o);
            }
        }
    }
}

impl<'a> Facts<'a> {
    fn read(
        body: &'a Map<String, Value>,
        tag_ids: &HashMap<String, usize>,
    ) -> Result<Self, InvalidInput> {
        let model = match body.get("model") {
            None | Some(Value::Null) => Cow::Borrowed(""),
            Some(Value::String(m)) => Cow::Borrowed(m.as_str()),
            Some(other) => {
                return Err(InvalidInput(format!(
                    "`model` must be a string, not {}",
                    kind(other)
                )))
            }
        };
        let messages: &[Value] = match body.get("messages") {
            Some(Value::Array(m)) => m,
            Some(other) => {
                return Err(InvalidInput(format!(
                    "`messages` must be an array, not {}",
                    kind(other)
                )))
            }
            None => return Err(InvalidInput("request body has no `messages`".into())),
        };
        let mut system = Cow::Borrowed("");
        let mut last_user = None;
        let mut has_images = false;
        for m in messages {
            let Value::Object(m) = m else {
                return Err(InvalidInput(format!(
                    "each message must be an object, not {}",
                    kind(m)
                )));
            };
            let content = m.get("content").unwrap_or(&Value::Null);
            if let Value::Array(parts) = content {
                has_images |= parts.iter().any(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("image_url" | "input_image" | "image")
                    )
                });
            }
            match m.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => append(&mut system, text_of(content)),
                Some("user") => last_user = Some(content),
                _ => {}
            }
        }
        let non_empty = |k: &str| {
            body.get(k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        let json_mode = matches!(
            body.get("response_format")
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str),
            Some("json_object" | "json_schema")
        );
        let mut tags = vec![false; tag_ids.len()];
        if !tag_ids.is_empty() {
            if let Some(Value::Array(list)) = body.get("metadata").and_then(|m| m.get("tags")) {
                for t in list.iter().filter_map(Value::as_str) {
                    if let Some(&id) = tag_ids.get(t) {
                        tags[id] = true;
                    }
                }
            }
        }
        Ok(Facts {
            model,
            system,
            last_user: last_user.map_or(Cow::Borrowed(""), text_of),
            has_tools: non_empty("tools") || non_empty("functions"),
            has_images,
            json_mode,
            tags,
        })
    }
}

/// A message content's text: the string itself, or its `text`/`input_text` parts joined by newlines.
fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => {
            let mut out = Cow::Borrowed("");
            for p in parts {
                if matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("text" | "input_text")
                ) {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        join(&mut out, t);
                    }
                }
            }
            out
        }
        _ => Cow::Borrowed(""),
    }
}

/// The fast path's view of a request body: typed, borrowed, everything else skipped unparsed.
mod fast {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{append, join, Facts};

    #[derive(Deserialize)]
    pub struct Body<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
        #[serde(borrow)]
        messages: Vec<Message<'a>>,
        #[serde(default)]
        tools: Option<NonEmpty>,
        #[serde(default)]
        functions: Option<NonEmpty>,
        #[serde(borrow, default)]
        response_format: Option<Typed<'a>>,
        #[serde(borrow, default)]
        metadata: Option<Metadata<'a>>,
    }

    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<Content<'a>>,
    }

    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, default, rename = "type")]
        kind: Option<MaybeStr<'a>>,
    }

    #[derive(Deserialize)]
    struct Metadata<'a> {
        #[serde(borrow, default)]
        tags: Option<Strings<'a>>,
    }

    /// Message content: a string, a list of parts, or anything else (which has no text).
    enum Content<'a> {
        Text(Cow<'a, str>),
        Parts(Vec<Part<'a>>),
        Other,
    }

    /// A content part's `type` and `text`, when it is an object.
    #[derive(Default)]
    struct Part<'a> {
        kind: Option<Cow<'a, str>>,
        text: Option<Cow<'a, str>>,
    }

    /// Whether a value is a non-empty array (anything else counts as absent).
    struct NonEmpty(bool);

    /// The string items of a list (other items and non-list values are ignored).
    struct Strings<'a>(Vec<Cow<'a, str>>);

    impl<'a> Body<'a> {
        pub fn facts(&'a self, tag_ids: &HashMap<String, usize>) -> Facts<'a> {
            let mut system = Cow::Borrowed("");
            let mut last_user: Option<Option<&Content<'a>>> = None;
            let mut has_images = false;
            for m in &self.messages {
                let content = m.content.as_ref();
                if let Some(Content::Parts(parts)) = content {
                    has_images |= parts
                        .iter()
                        .any(|p| matches!(p.kind.as_deref(), Some("image_url" | "input_image" | "image")));
                }
                match m.role.as_deref() {
                    Some("system" | "developer") => {
                        if let Some(c) = content {
                            append(&mut system, text_of(c));
                        }
                    }
                    Some("user") => last_user = Some(content),
                    _ => {}
                }
            }
            let mut tags = vec![false; tag_ids.len()];
            if let Some(Strings(list)) = self.metadata.as_ref().and_then(|m| m.tags.as_ref()) {
                for t in list {
                    if let Some(&id) = tag_ids.get(t.as_ref()) {
                        tags[id] = true;
                    }
                }
            }
            Facts {
                model: Cow::Borrowed(self.model.as_deref().unwrap_or("")),
                system,
                last_user: last_user.flatten().map_or(Cow::Borrowed(""), text_of),
                has_tools: matches!(self.tools, Some(NonEmpty(true)))
                    || matches!(self.functions, Some(NonEmpty(true))),
                has_images,
                json_mode: matches!(
                    self.response_format.as_ref().and_then(|f| f.kind.as_ref()).and_then(|k| k.0.as_deref()),
                    Some("json_object" | "json_schema")
                ),
                tags,
            }
        }
    }

    fn text_of<'a>(content: &'a Content<'a>) -> Cow<'a, str> {
        match content {
            Content::Text(s) => Cow::Borrowed(s.as_ref()),
            Content::Parts(parts) => {
                let mut out = Cow::Borrowed("");
                for p in parts {
                    if matches!(p.kind.as_deref(), Some("text" | "input_text")) {
                        if let Some(t) = p.text.as_deref() {
                            join(&mut out, t);
                        }
                    }
                }
                out
            }
            Content::Other => Cow::Borrowed(""),
        }
    }

    /// Skips a value of any type.
    macro_rules! ignore_scalars {
        ($value:expr) => {
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
        };
    }

    struct ContentVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
        type Value = Content<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("message content")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Content::Text(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Content::Text(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Content::Text(Cow::Owned(v)))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut parts = Vec::new();
            while let Some(part) = seq.next_element::<Part<'a>>()? {
                parts.push(part);
            }
            Ok(Content::Parts(parts))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Content::Other)
        }
        ignore_scalars!(Content::Other);
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ContentVisitor(PhantomData))
        }
    }

    struct PartVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for PartVisitor<'a> {
        type Value = Part<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a content part")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut part = Part::default();
            while let Some(MaybeStr(key)) = map.next_key::<MaybeStr<'a>>()? {
                match key.as_deref() {
                    // A non-string type or text has no meaning here; a duplicate key keeps the last one,
                    // as the full parse does.
                    Some("type") => part.kind = map.next_value::<MaybeStr<'a>>()?.0,
                    Some("text") => part.text = map.next_value::<MaybeStr<'a>>()?.0,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(part)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Part::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Part::default())
        }
        ignore_scalars!(Part::default());
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(PartVisitor(PhantomData))
        }
    }

    /// A string, or None for any other JSON value.
    struct MaybeStr<'a>(Option<Cow<'a, str>>);

    struct MaybeStrVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for MaybeStrVisitor<'a> {
        type Value = MaybeStr<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(MaybeStr(Some(Cow::Borrowed(v))))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(MaybeStr(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(MaybeStr(None))
        }
        ignore_scalars!(MaybeStr(None));
    }

    impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(MaybeStrVisitor(PhantomData))
        }
    }

    struct NonEmptyVisitor;

    impl<'de> Visitor<'de> for NonEmptyVisitor {
        type Value = NonEmpty;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut any = false;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                any = true;
            }
            Ok(NonEmpty(any))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(NonEmpty(false))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(NonEmpty(false))
        }
        ignore_scalars!(NonEmpty(false));
    }

    impl<'de> Deserialize<'de> for NonEmpty {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(NonEmptyVisitor)
        }
    }

    struct StringsVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for StringsVisitor<'a> {
        type Value = Strings<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(MaybeStr(item)) = seq.next_element::<MaybeStr<'a>>()? {
                out.extend(item);
            }
            Ok(Strings(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Strings(Vec::new()))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Strings(Vec::new()))
        }
        ignore_scalars!(Strings(Vec::new()));
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Strings<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StringsVisitor(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
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
        let headers = vec![("x-env".to_string(), "production".to_string())];
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
    fn fast_path_reads_what_the_full_parse_reads() {
        let tags: HashMap<String, usize> = [("pii".to_owned(), 0), ("x".to_owned(), 1)].into_iter().collect();
        let bodies = [
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "esc-\"quoted\"", "messages": [
                {"role": "system", "content": "one"}, {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "system", "content": ""}, {"role": "system", "content": "th\"ree"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
                                             {"type": "input_text", "text": "b"}, 7, [1], {"text": "untyped"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
                {"role": "user", "content": {"odd": true}}]}),
            json!({"messages": [{"role": "user"}], "tools": [], "functions": [{"name": "f"}],
                   "response_format": {"type": "json_schema"}, "metadata": {"tags": ["pii", 3, "y"]}}),
            json!({"messages": [{"content": "no role"}, {"role": "user", "content": "last"}], "tools": {"a": 1},
                   "response_format": {"type": 1}, "metadata": {"tags": "pii"}, "extra": [[[{}]]]}),
        ];
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            let fast = serde_json::from_slice::<fast::Body<'_>>(&bytes).expect("fast path takes this body");
            let fast = fast.facts(&tags);
            let map = parse_object(&bytes).unwrap();
            let full = Facts::read(&map, &tags).unwrap();
            assert_eq!(fast.model, full.model, "{body}");
            assert_eq!(fast.system, full.system, "{body}");
            assert_eq!(fast.last_user, full.last_user, "{body}");
            assert_eq!((fast.has_tools, fast.has_images, fast.json_mode), (full.has_tools, full.has_images, full.json_mode),
                       "{body}");
            assert_eq!(fast.tags, full.tags, "{body}");
        }
        // Shapes the fast path does not expect go to the full parse, which words the error.
        for bad in [&b"{\"model\": 5, \"messages\": []}"[..], b"{\"messages\": null}", b"[1]", b"{\"messages\": [1]}"] {
            assert!(serde_json::from_slice::<fast::Body<'_>>(bad).is_err());
        }
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
