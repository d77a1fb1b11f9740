//! Input-token count of an OpenAI chat request body.
//!
//! Messages follow the OpenAI cookbook's `num_tokens_from_messages`: 3 tokens per message, the tokens
//! of every string field (`role`, `content`, `name`, `tool_call_id`, …), 1 more for `name`, and 3 to
//! prime the reply. Beyond the cookbook:
//! * content parts: `text`/`refusal` text is counted; an image costs [`IMAGE_LOW`] at
//!   `"detail": "low"` and [`IMAGE_DEFAULT`] otherwise (gpt-4o's tile rule for a 1024×1024 image,
//!   since sizes are unknown without fetching and decoding the image); other parts (audio, files)
//!   count the tokens of their string fields except base64 payloads, so binary content is not
//!   estimated;
//! * `tool_calls` and other structured fields: the tokens of their string leaves;
//! * `tools`/`functions`: the cookbook's `num_tokens_for_tools` rule (see `count_functions`);
//! * `response_format.json_schema`: the tokens of its compact JSON text (an approximation).
//!
//! Models without a public tokenizer get an estimate: o200k_base counts scaled by [`estimate_percent`],
//! rounded up.

use serde_json::{Map, Value};

use crate::json::{kind, parse_object, InvalidInput};
use crate::tokenizer::{encoding_for_model, get, Encoding, CL100K_BASE, O200K_BASE};

pub const IMAGE_LOW: usize = 85;
pub const IMAGE_DEFAULT: usize = 765;
const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
const REPLY_PRIMING: usize = 3;

/// Counted input tokens. `exact` means the text was counted with the model's own tokenizer (images
/// and tool definitions still follow the rules above); false means the tokenizer is not public and
/// `tokens` is an o200k-based estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatCount {
    pub tokens: usize,
    pub exact: bool,
}

/// Rough ratio, in percent, of a model family's token count to o200k_base's on the same text.
/// Anthropic does not publish its tokenizer; published comparisons of Claude 3.5 with GPT-4o report
/// 16–30% more tokens (English ~16%, code ~30%), so 125%. Gemini and unknown models get a 10% margin:
/// these counts feed budgets and rate limits, where undercounting is the costlier error.
pub fn estimate_percent(model: &str) -> usize {
    if model.to_ascii_lowercase().contains("claude") {
        125
    } else {
        110
    }
}

/// Counts the input tokens of a chat request body for `model`.
pub fn count_chat_tokens(body: &[u8], model: &str) -> Result<ChatCount, InvalidInput> {
    let map = parse_object(body)?;
    let messages = match map.get("messages") {
        Some(Value::Array(messages)) => messages,
        Some(other) => {
            return Err(InvalidInput(format!(
                "`messages` must be an array, not {}",
                kind(other)
            )))
        }
        None => return Err(InvalidInput("request body has no `messages`".into())),
    };
    let name = encoding_for_model(model);
    let enc = get(name.unwrap_or(O200K_BASE)).expect("known encoding");
    let mut tokens = REPLY_PRIMING;
    for message in messages {
        let Value::Object(message) = message else {
            return Err(InvalidInput(format!(
                "each message must be an object, not {}",
                kind(message)
            )));
        };
        tokens += TOKENS_PER_MESSAGE + count_message(enc, message);
    }
    let func_init = if name == Some(CL100K_BASE) { 10 } else { 7 };
    tokens += count_functions(enc, &map, func_init);
    if let Some(schema) = map
        .get("response_format")
        .and_then(|f| f.get("json_schema"))
    {
        tokens += enc.count(&schema.to_string());
    }
    Ok(match name {
        Some(_) => ChatCount {
            tokens,
            exact: true,
        },
        None => ChatCount {
            tokens: (tokens * estimate_percent(model)).div_ceil(100),
            exact: false,
        },
    })
}

fn count_message(enc: &Encoding, message: &Map<String, Value>) -> usize {
    message
        .iter()
        .map(|(key, value)| {
            let name = if key == "name" { TOKENS_PER_NAME } else { 0 };
            let value = match (key.as_str(), value) {
                ("content", Value::Array(parts)) => parts.iter().map(|p| count_part(enc, p)).sum(),
                _ => count_strings(enc, value),
            };
            name + value
        })
        .sum()
}

fn count_part(enc: &Encoding, part: &Value) -> usize {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part.get("text").map_or(0, |t| count_strings(enc, t)),
        Some("refusal") => part.get("refusal").map_or(0, |t| count_strings(enc, t)),
        Some("image_url") => {
            let detail = part
                .get("image_url")
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str);
            if detail == Some("low") {
                IMAGE_LOW
            } else {
                IMAGE_DEFAULT
            }
        }
        _ => count_strings(enc, part),
    }
}

/// Tokens of every string in `v`, skipping base64 payloads (`data` and `file_data` fields, `data:`
/// URLs in `url` fields), which are not read as text.
fn count_strings(enc: &Encoding, v: &Value) -> usize {
    match v {
        Value::String(s) => enc.count(s),
        Value::Array(items) => items.iter().map(|i| count_strings(enc, i)).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, v)| match k.as_str() {
                "data" | "file_data" => false,
                "url" => !v.as_str().is_some_and(|u| u.starts_with("data:")),
                _ => true,
            })
            .map(|(_, v)| count_strings(enc, v))
            .sum(),
        _ => 0,
    }
}

/// The cookbook's `num_tokens_for_tools` over `tools[].function` and legacy `functions[]`:
/// per function `func_init` (7 for o200k models, 10 for cl100k) plus `name:description`; with
/// parameters, 3 plus per property 3 and `key:type:description` (one trailing `.` of each
/// description dropped), enum values 3 each plus their tokens, minus 3 per enum; 12 at the end.
/// Beyond the cookbook, a property's other schema keywords (nested `properties`, `items`, …) add the
/// tokens of their compact JSON text, and missing fields count as empty.
fn count_functions(enc: &Encoding, body: &Map<String, Value>, func_init: usize) -> usize {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"));
    let legacy = body
        .get("functions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut total = 0;
    let mut any = false;
    for function in tools.chain(legacy) {
        any = true;
        total += func_init;
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        total += enc.count(&format!("{name}:{}", description(function)));
        let properties = function
            .get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        let Some(properties) = properties.filter(|p| !p.is_empty()) else {
            continue;
        };
        total += 3;
        for (key, prop) in properties {
            total += 3;
            if let Some(items) = prop.get("enum").and_then(Value::as_array) {
                total -= 3;
                for item in items {
                    total += 3 + match item {
                        Value::String(s) => enc.count(s),
                        other => enc.count(&other.to_string()),
                    };
                }
            }
            let ty = match prop.get("type") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            total += enc.count(&format!("{key}:{ty}:{}", description(prop)));
            if let Value::Object(schema) = prop {
                let extra: Map<String, Value> = schema
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "description" | "enum"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !extra.is_empty() {
                    total += enc.count(&Value::Object(extra).to_string());
                }
            }
        }
    }
    if any {
        total += 12;
    }
    total
}

fn description(v: &Value) -> &str {
    let d = v.get("description").and_then(Value::as_str).unwrap_or("");
    d.strip_suffix('.').unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(body: &str, model: &str) -> ChatCount {
        count_chat_tokens(body.as_bytes(), model).unwrap()
    }

    #[test]
    fn cookbook_accounting() {
        // "user" and "hello world" are one and two o200k tokens: 3 + 1 + 2, + 3 priming.
        let body = r#"{"messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(
            count(body, "gpt-4o"),
            ChatCount {
                tokens: 9,
                exact: true
            }
        );
        // `name` adds its tokens plus one.
        let named = r#"{"messages":[{"role":"user","name":"bob","content":"hello world"}]}"#;
        let bob = get(O200K_BASE).unwrap().count("bob");
        assert_eq!(count(named, "gpt-4o").tokens, 9 + bob + 1);
        // Parts: text counted, a low-detail image costs 85.
        let parts = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]}]}"#;
        assert_eq!(count(parts, "gpt-4o").tokens, 9 + IMAGE_LOW);
    }

    #[test]
    fn estimates_for_private_tokenizers() {
        let body = r#"{"messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(
            count(body, "claude-3-5-sonnet"),
            ChatCount {
                tokens: 12,
                exact: false
            }
        ); // ceil(9 × 1.25)
        assert_eq!(
            count(body, "gemini-2.0-flash"),
            ChatCount {
                tokens: 10,
                exact: false
            }
        ); // ceil(9 × 1.1)
    }

    #[test]
    fn tools_follow_the_cookbook() {
        let body = r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","description":"Do.",
            "parameters":{"type":"object","properties":{"unit":{"type":"string","description":"U.","enum":["c","f"]}}}}}]}"#;
        let enc = get(O200K_BASE).unwrap();
        let want = 3 + 7 + enc.count("f:Do") + 3 + 3 - 3
            + (3 + enc.count("c"))
            + (3 + enc.count("f"))
            + enc.count("unit:string:U")
            + 12;
        assert_eq!(count(body, "gpt-4o").tokens, want);
    }

    #[test]
    fn malformed_bodies() {
        for (body, msg) in [
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            ("{}", "no `messages`"),
            (r#"{"messages":"hi"}"#, "must be an array"),
            (r#"{"messages":[1]}"#, "must be an object"),
        ] {
            let err = count_chat_tokens(body.as_bytes(), "gpt-4o").unwrap_err();
            assert!(err.0.contains(msg), "{body}: {err}");
        }
    }
}
