//! Compiling a `routing_rules` list: validation with errors that name the rule and key, then the
//! conditions of all rules laid out by group (see [`Tables`]) for evaluation.

use std::collections::HashMap;
use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSetBuilder};
use serde_json::{Map, Value};

use super::keywords::Keywords;
use super::{
    group, Action, AnyAll, Flag, Glob, HeaderWant, Privacy, Rule, RuleSet, Scope, Stage, Tables,
    Tier,
};
use crate::json::{kind, InvalidInput};
use crate::pii::Detector;

/// The confidence a finding needs to count when the config does not say.
pub const DEFAULT_MIN_CONFIDENCE: f64 = 0.7;

/// Compiled size cap per regex, so one pathological pattern cannot take the gateway's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One `when` condition, as written.
#[derive(Debug)]
enum Cond {
    Model(Vec<String>),
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
    Flag(Flag, bool),
    Tags {
        ids: Vec<usize>,
        all: bool,
    },
    /// Lower-cased header name → wanted value; all listed headers must match.
    Headers(Vec<(String, HeaderWant)>),
    Key(Vec<String>),
    Team(Vec<String>),
    /// Detector kind indexes, any of which must be found (None: any kind at all).
    PiiAny(Option<Vec<u16>>),
    PiiCount(u64),
}

impl Cond {
    /// The evaluation stage: context, flags, tags and headers first, then keywords, then regexes, so
    /// a rule that fails early never pays for a text scan.
    fn stage(&self) -> usize {
        match self {
            Cond::Keywords { .. } => 1,
            Cond::Regex { .. } | Cond::PiiAny(_) | Cond::PiiCount(_) => 2,
            _ => 0,
        }
    }
}

/// A rule as written, before its conditions are numbered.
struct Parsed {
    name: String,
    action: Action,
    match_any: bool,
    conds: Vec<Cond>,
}

#[derive(Default)]
struct Builder {
    /// The detectors `pii_*` conditions run: the configured ones, else the defaults once a rule needs them.
    privacy: Option<Privacy>,
    uses_pii: bool,
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

    /// The detectors, the default ones made on the first `pii_*` condition when none were configured.
    fn detector(&mut self) -> Result<&Detector, String> {
        self.uses_pii = true;
        if self.privacy.is_none() {
            self.privacy = Some(Privacy {
                detector: Arc::new(Detector::new(None, &[], &[])?),
                min_confidence: DEFAULT_MIN_CONFIDENCE,
            });
        }
        Ok(&self.privacy.as_ref().expect("just set").detector)
    }

    /// `pii_any`'s kinds as detector indexes; `any` or `*` (alone) is any kind.
    fn pii_kinds(&mut self, v: &Value, key: &str) -> Result<Option<Vec<u16>>, String> {
        let names = strings(v, key)?;
        let detector = self.detector()?;
        if names.iter().any(|n| n == "any" || n == "*") {
            return Ok(None);
        }
        let kinds = detector.kinds();
        names
            .iter()
            .map(|n| {
                kinds
                    .iter()
                    .position(|k| k == n)
                    .map(|i| i as u16)
                    .ok_or_else(|| {
                        format!(
                            "{key}: unknown kind {n:?}; expected any, or one of {}",
                            kinds.join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<u16>, String>>()
            .map(Some)
    }

    fn tag(&mut self, t: String) -> usize {
        let next = self.tags.len();
        *self.tags.entry(t).or_insert(next)
    }

    fn rule(&mut self, v: &Value) -> Result<Parsed, String> {
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
        Ok(Parsed {
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
                "model" => Cond::Model(strings(v, key)?),
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
                "has_tools" => Cond::Flag(Flag::Tools, bool_of(v, key)?),
                "has_images" => Cond::Flag(Flag::Images, bool_of(v, key)?),
                "json_mode" => Cond::Flag(Flag::JsonMode, bool_of(v, key)?),
                "tags_any" | "tags_all" => Cond::Tags {
                    ids: strings(v, key)?.into_iter().map(|t| self.tag(t)).collect(),
                    all: k == "tags_all",
                },
                "headers" => {
                    let Value::Object(h) = v else {
                        return Err(format!(
                            "{key}: must be a mapping of header name to value, not {}",
                            kind(v)
                        ));
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
                "pii_any" => Cond::PiiAny(self.pii_kinds(v, key)?),
                "pii_count" => {
                    let least = count_of(v, key)?;
                    if least == 0 {
                        return Err(format!("{key}: must be at least 1 (0 would match every request)"));
                    }
                    self.detector()?;
                    Cond::PiiCount(least)
                }
                _ => {
                    return Err(format!(
                        "{key}: unknown condition; expected model, min_tokens, max_tokens, keywords_any, \
                         keywords_all, regex, in, has_tools, has_images, json_mode, tags_any, tags_all, \
                         headers, key, team, pii_any, pii_count, match"
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
        Ok((conds, match_any))
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
        redact: false,
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
            "redact" => {
                if !bool_of(v, &key)? {
                    return Err(format!(
                        "{key}: only `true` is meaningful; drop the key otherwise"
                    ));
                }
                action.redact = true;
            }
            _ => {
                return Err(format!(
                    "{key}: unknown action; expected model, tier, local_only, redact"
                ))
            }
        }
    }
    match (&action.model, action.tier, action.local_only) {
        (None, None, false) if !action.redact => {
            Err("route: needs one of model, tier, local_only, redact".into())
        }
        (Some(_), Some(_), _) | (Some(_), _, true) => {
            Err("route.model: cannot be combined with tier or local_only".into())
        }
        _ => Ok(action),
    }
}

impl Tables {
    /// Files condition `id` under its group; returns the group's bit.
    fn add(&mut self, id: u32, cond: Cond) -> u16 {
        match cond {
            Cond::Model(patterns) => {
                for p in patterns {
                    if p.contains('*') {
                        self.model_globs.push((id, Glob::new(&p)));
                    } else {
                        self.model_exact.entry(p).or_default().push(id);
                    }
                }
                group::MODEL
            }
            Cond::MinTokens(n) => {
                self.tokens.push((id, n, u64::MAX));
                group::TOKENS
            }
            Cond::MaxTokens(n) => {
                self.tokens.push((id, 0, n));
                group::TOKENS
            }
            Cond::Flag(flag, want) => {
                self.flags.push((id, flag, want));
                group::FLAGS
            }
            Cond::Key(keys) => {
                for k in keys {
                    self.keys.entry(k).or_default().push(id);
                }
                group::KEY
            }
            Cond::Team(teams) => {
                for t in teams {
                    self.teams.entry(t).or_default().push(id);
                }
                group::TEAM
            }
            Cond::Tags { ids, all } => {
                self.tags.push((id, AnyAll { ids, all }));
                group::TAGS
            }
            Cond::Headers(wants) => {
                let wants = wants
                    .into_iter()
                    .map(|(name, want)| {
                        let at = match self.header_names.iter().position(|n| *n == name) {
                            Some(at) => at,
                            None => {
                                self.header_names.push(name);
                                self.header_names.len() - 1
                            }
                        };
                        (at, want)
                    })
                    .collect();
                self.headers.push((id, wants));
                group::HEADERS
            }
            Cond::Keywords { ids, all, scope } => {
                self.keywords[scope as usize].push((id, AnyAll { ids, all }));
                group::KEYWORDS[scope as usize]
            }
            Cond::Regex { id: regex, scope } => {
                self.regexes[scope as usize].push((id, regex));
                group::REGEXES[scope as usize]
            }
            Cond::PiiAny(kinds) => {
                self.pii_any.push((id, kinds));
                group::PII
            }
            Cond::PiiCount(least) => {
                self.pii_count.push((id, least));
                group::PII
            }
        }
    }
}

impl RuleSet {
    /// Compiles a JSON list of rules. The error message starts with the rule's index and name.
    pub fn compile(spec: &[u8]) -> Result<Self, InvalidInput> {
        Self::compile_with(spec, None)
    }

    /// `compile`, with the detectors `pii_*` conditions run (None: the default detectors, made only
    /// when a rule has such a condition).
    pub fn compile_with(spec: &[u8], privacy: Option<Privacy>) -> Result<Self, InvalidInput> {
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
        Self::from_values(&rules, privacy)
    }

    pub fn from_values(rules: &[Value], privacy: Option<Privacy>) -> Result<Self, InvalidInput> {
        let mut b = Builder {
            privacy,
            ..Builder::default()
        };
        let mut parsed = Vec::with_capacity(rules.len());
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
            parsed.push(rule);
        }
        // Number every condition, a rule's conditions in one word of the bitset (at most one per
        // `when` key, so well under 64).
        let mut tables = Tables::default();
        let mut next: u32 = 0;
        let compiled = parsed
            .into_iter()
            .map(|mut p| {
                p.conds.sort_by_key(Cond::stage);
                if next % 64 + p.conds.len() as u32 > 64 {
                    next = next.next_multiple_of(64);
                }
                let word = next as usize / 64;
                let mut stages = [Stage::default(); 3];
                for cond in p.conds {
                    let stage = &mut stages[cond.stage()];
                    stage.mask |= 1 << (next % 64);
                    stage.groups |= tables.add(next, cond);
                    next += 1;
                }
                Rule {
                    name: p.name,
                    action: p.action,
                    match_any: p.match_any,
                    word,
                    mask: stages.iter().fold(0, |m, s| m | s.mask),
                    groups: stages.iter().fold(0, |g, s| g | s.groups),
                    stages,
                }
            })
            .collect();
        let keywords = if b.keywords.is_empty() {
            None
        } else {
            let k = Keywords::new(&b.keywords)
                .map_err(|e| InvalidInput(format!("routing_rules: keywords: {e}")))?;
            Some(k)
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
        Ok(RuleSet {
            rules: compiled,
            cond_count: next as usize,
            tables,
            keywords,
            regexes,
            tag_ids: b.tags,
            privacy: if b.uses_pii { b.privacy } else { None },
        })
    }
}
