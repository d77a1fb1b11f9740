//! Cache keys for OpenAI chat requests.
//!
//! [`request_hash`] is the response-cache key: xxh3-128 over the canonical JSON of the body (see
//! [`crate::canonical`]) without the top-level fields in [`IGNORED_FIELDS`], mixed with a namespace.
//! [`prefix_hashes`] gives one rolling hash per message, for prefix-aware routing.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::canonical::Parser;
use crate::json::InvalidInput;

/// Top-level fields left out of [`request_hash`] because they cannot change the answer's content:
/// delivery (`stream`, `stream_options`), client-side transport (`timeout`, `request_timeout`,
/// `num_retries`, `max_retries`), cache control itself (`cache`), and bookkeeping the model never
/// sees (`user`, `safety_identifier`, `metadata`, `store`, `prompt_cache_key`).
///
/// Kept on purpose: `model`, sampling parameters, `seed`, `tools`, `response_format`, … and also
/// `service_tier` (it can route to a different model snapshot or processing path) and
/// `extra_headers` (headers such as `anthropic-beta` switch provider features on).
pub const IGNORED_FIELDS: &[&str] = &[
    "cache",
    "max_retries",
    "metadata",
    "num_retries",
    "prompt_cache_key",
    "request_timeout",
    "safety_identifier",
    "store",
    "stream",
    "stream_options",
    "timeout",
    "user",
];

/// The 32-hex-digit cache key of a chat request body. Key order, whitespace, string escapes and
/// number spelling do not matter; any other change to a kept field does. `namespace` (a model group
/// or tenant) is length-prefixed into the hashed bytes, so equal bodies in different namespaces get
/// unrelated keys.
pub fn request_hash(body: &[u8], namespace: &str) -> Result<String, InvalidInput> {
    let mut out = Vec::with_capacity(body.len());
    let members = Parser::new(body).document_members(&mut out, IGNORED_FIELDS)?;
    let mut h = Xxh3::new();
    h.update(&(namespace.len() as u64).to_le_bytes());
    h.update(namespace.as_bytes());
    h.update(b"{");
    for (i, member) in members.into_iter().enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(&out[member]);
    }
    h.update(b"}");
    Ok(format!("{:032x}", h.digest128()))
}

/// Rolling hashes over the conversation: `result[i]` covers the tool definitions and
/// `messages[0..=i]`, so two requests whose tools and first k messages are equal (canonically) share
/// their first k hashes, whatever follows.
///
/// `h_tools = xxh3_64(canonical({"functions": …, "tools": …}))` with absent keys left out, then
/// `h_i = xxh3_64(h_{i-1} as 8 LE bytes ‖ canonical(messages[i]))`, starting from `h_tools`. Nothing
/// else is covered: not `model`, `response_format`, `tool_choice` or sampling parameters, which do not
/// change the prompt prefix a provider can cache. A body without `messages` gives an empty list.
pub fn prefix_hashes(body: &[u8]) -> Result<Vec<u64>, InvalidInput> {
    let mut messages = Vec::new(); // canonical messages, back to back
    let mut ends = Vec::new();
    let (mut functions, mut tools) = (None, None);
    Parser::new(body).members(|p, key| match key {
        b"messages" => {
            let kind = p.peek_kind();
            if kind != "an array" {
                p.skip_value()?;
                return Err(InvalidInput(format!(
                    "`messages` must be an array, not {kind}"
                )));
            }
            messages.clear();
            ends.clear();
            p.array(|p| {
                p.value(&mut messages, 3)?;
                ends.push(messages.len());
                Ok(())
            })
        }
        b"functions" | b"tools" => {
            let mut canonical = Vec::new();
            p.value(&mut canonical, 2)?;
            *(if key == b"tools" {
                &mut tools
            } else {
                &mut functions
            }) = Some(canonical);
            Ok(())
        }
        _ => p.skip_value(),
    })?;
    let mut buf = b"{".to_vec();
    for (name, value) in [("functions", &functions), ("tools", &tools)] {
        if let Some(value) = value {
            if buf.len() > 1 {
                buf.push(b',');
            }
            buf.extend_from_slice(format!("\"{name}\":").as_bytes());
            buf.extend_from_slice(value);
        }
    }
    buf.push(b'}');
    let mut h = xxh3_64(&buf);
    let mut start = 0;
    let mut out = Vec::with_capacity(ends.len());
    for end in ends {
        buf.clear();
        buf.extend_from_slice(&h.to_le_bytes());
        buf.extend_from_slice(&messages[start..end]);
        h = xxh3_64(&buf);
        out.push(h);
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> String {
        request_hash(body.as_bytes(), "").unwrap()
    }

    #[test]
    fn canonical_spellings_share_a_key() {
        let a = key(
            r#"{"model":"gpt-4o","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let b = key(
            r#"{ "messages": [ {"content": "h\u0069", "role": "user"} ], "temperature": 1.0e0,
                         "model": "gpt-4o", "stream": true, "user": "u1", "metadata": {"x": 1} }"#,
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            key(
                r#"{"model":"gpt-4o","temperature":0.9,"messages":[{"role":"user","content":"hi"}]}"#
            )
        );
        assert_ne!(
            a,
            key(
                r#"{"model":"gpt-4o","temperature":1,"messages":[{"role":"user","content":"hi"}],"service_tier":"flex"}"#
            )
        );
        let other_ns = request_hash(
            br#"{"model":"gpt-4o","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#,
            "t2",
        );
        assert_ne!(a, other_ns.unwrap());
    }

    #[test]
    fn prefixes() {
        let one = prefix_hashes(
            br#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"}]}"#,
        )
        .unwrap();
        let two = prefix_hashes(br#"{"model":"x","messages":[{"content":"s","role":"system"},{"role":"user","content":"b"}]}"#).unwrap();
        assert_eq!(one.len(), 2);
        assert_eq!(one[0], two[0]);
        assert_ne!(one[1], two[1]);
        let tools =
            prefix_hashes(br#"{"tools":[],"messages":[{"role":"system","content":"s"}]}"#).unwrap();
        assert_ne!(tools[0], one[0]);
        assert_eq!(prefix_hashes(b"{}").unwrap(), Vec::<u64>::new());
        assert!(prefix_hashes(br#"{"messages":{}}"#).is_err());
    }
}
