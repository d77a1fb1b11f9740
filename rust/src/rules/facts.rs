//! What the rules read from a request body, by two parsers that must agree: a typed, borrowed fast
//! path that skips everything else unparsed and keeps no per-message state, and the full parse,
//! which takes the shapes the fast path rejects (a wrong type, a duplicate key, invalid JSON) and
//! words the errors.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::json::{kind, parse_object, InvalidInput};

#[derive(Debug)]
pub(super) struct Facts<'a> {
    pub model: Cow<'a, str>,
    /// System and developer messages' text, joined by newlines.
    pub system: Cow<'a, str>,
    /// Text of the last `user` message (its text parts joined by newlines).
    pub last_user: Cow<'a, str>,
    pub has_tools: bool,
    pub has_images: bool,
    pub json_mode: bool,
    /// Indexed by the rule set's tag ids.
    pub tags: Vec<bool>,
}

impl<'a> Facts<'a> {
    /// Reads `body` by the fast path, or by the full parse when the fast path does not take it.
    pub fn of(body: &'a [u8], tag_ids: &HashMap<String, usize>) -> Result<Self, InvalidInput> {
        // One UTF-8 check of the whole body is cheaper than serde_json's check of each string.
        let fast = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<fast::Body<'a>>(text).ok());
        match fast {
            Some(fast) => Ok(fast.facts(tag_ids)),
            None => Facts::read(&parse_object(body)?, tag_ids).map(Facts::into_owned),
        }
    }

    fn into_owned(self) -> Facts<'static> {
        Facts {
            model: Cow::Owned(self.model.into_owned()),
            system: Cow::Owned(self.system.into_owned()),
            last_user: Cow::Owned(self.last_user.into_owned()),
            ..self
        }
    }

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
                has_images |= parts
                    .iter()
                    .any(|p| is_image(p.get("type").and_then(Value::as_str)));
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
        let json_mode = is_json_mode(
            body.get("response_format")
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str),
        );
        let mut tags = vec![false; tag_ids.len()];
        if !tag_ids.is_empty() {
            if let Some(Value::Array(list)) = body.get("metadata").and_then(|m| m.get("tags")) {
                mark_tags(&mut tags, tag_ids, list.iter().filter_map(Value::as_str));
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

fn is_image(part_type: Option<&str>) -> bool {
    matches!(part_type, Some("image_url" | "input_image" | "image"))
}

fn is_text(part_type: Option<&str>) -> bool {
    matches!(part_type, Some("text" | "input_text"))
}

fn is_json_mode(format_type: Option<&str>) -> bool {
    matches!(format_type, Some("json_object" | "json_schema"))
}

fn mark_tags<'t>(
    tags: &mut [bool],
    tag_ids: &HashMap<String, usize>,
    present: impl Iterator<Item = &'t str>,
) {
    for t in present {
        if let Some(&id) = tag_ids.get(t) {
            tags[id] = true;
        }
    }
}

/// Adds a text part to a message's text: a newline between pieces (an empty first piece leaves
/// nothing behind).
fn join<'a>(acc: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if acc.is_empty() {
        *acc = piece;
    } else {
        let s = acc.to_mut();
        s.push('\n');
        s.push_str(&piece);
    }
}

/// Adds a message's text to the system prompt (empty texts add nothing, not even a newline).
fn append<'a>(acc: &mut Cow<'a, str>, text: Cow<'a, str>) {
    if !text.is_empty() {
        join(acc, text);
    }
}

/// A message content's text: the string itself, or its `text`/`input_text` parts joined by newlines.
fn text_of(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => {
            let mut out = Cow::Borrowed("");
            for p in parts {
                if is_text(p.get("type").and_then(Value::as_str)) {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        join(&mut out, Cow::Borrowed(t));
                    }
                }
            }
            out
        }
        _ => Cow::Borrowed(""),
    }
}

/// Every text a request carries to the model, for the sensitive-data conditions: each message's text
/// (every role: system, user, assistant, tool results) and each tool call's arguments. Read by a pass
/// of its own, made only when a rule reaches such a condition, so rules without one never pay for it.
pub(super) fn every_text(body: &[u8]) -> Result<Vec<Cow<'_, str>>, InvalidInput> {
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<fast::Texts<'_>>(text).ok());
    if let Some(fast) = fast {
        return Ok(fast.messages.0);
    }
    let map = parse_object(body)?;
    let mut out = Vec::new();
    if let Some(Value::Array(messages)) = map.get("messages") {
        for m in messages {
            let text = text_of(m.get("content").unwrap_or(&Value::Null));
            if !text.is_empty() {
                out.push(Cow::Owned(text.into_owned()));
            }
            for call in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let args = call.get("function").and_then(|f| f.get("arguments"));
                if let Some(Value::String(a)) = args {
                    out.push(Cow::Owned(a.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// The fast path's view of a request body: typed, borrowed, everything else skipped unparsed.
/// Messages are folded into the facts as they are read, so no message or content part is kept.
mod fast {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{append, is_image, is_json_mode, is_text, join, mark_tags, Facts};

    #[derive(Deserialize)]
    pub struct Body<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
        #[serde(borrow)]
        messages: Messages<'a>,
        #[serde(default)]
        tools: Option<NonEmpty>,
        #[serde(default)]
        functions: Option<NonEmpty>,
        #[serde(borrow, default)]
        response_format: Option<Typed<'a>>,
        #[serde(borrow, default)]
        metadata: Option<Metadata<'a>>,
    }

    /// The request's texts only (see `every_text`).
    #[derive(Deserialize)]
    pub struct Texts<'a> {
        #[serde(borrow)]
        pub messages: AllTexts<'a>,
    }

    /// Every message's text and tool call arguments, in order; empty texts left out.
    pub struct AllTexts<'a>(pub Vec<Cow<'a, str>>);

    #[derive(Deserialize)]
    struct TextMessage<'a> {
        #[serde(borrow, default)]
        content: Option<Content<'a>>,
        #[serde(borrow, default)]
        tool_calls: Option<Vec<ToolCall<'a>>>,
    }

    #[derive(Deserialize)]
    struct ToolCall<'a> {
        #[serde(borrow, default)]
        function: Option<Function<'a>>,
    }

    #[derive(Deserialize)]
    struct Function<'a> {
        #[serde(borrow, default)]
        arguments: Option<MaybeStr<'a>>,
    }

    struct AllTextsVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for AllTextsVisitor<'a> {
        type Value = AllTexts<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of messages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(m) = seq.next_element::<TextMessage<'a>>()? {
                let text = m.content.unwrap_or_default().text;
                if !text.is_empty() {
                    out.push(text);
                }
                for call in m.tool_calls.into_iter().flatten() {
                    out.extend(call.function.and_then(|f| f.arguments).and_then(|a| a.0));
                }
            }
            Ok(AllTexts(out))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for AllTexts<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(AllTextsVisitor(PhantomData))
        }
    }

    /// What the message list says to the rules.
    #[derive(Default)]
    struct Messages<'a> {
        system: Cow<'a, str>,
        last_user: Cow<'a, str>,
        has_images: bool,
    }

    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<Content<'a>>,
    }

    /// Message content: a string, or the text and image parts of a list (anything else is empty).
    #[derive(Default)]
    struct Content<'a> {
        text: Cow<'a, str>,
        has_images: bool,
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

    /// A string, or None for any other JSON value.
    struct MaybeStr<'a>(Option<Cow<'a, str>>);

    impl<'a> Body<'a> {
        pub fn facts(self, tag_ids: &HashMap<String, usize>) -> Facts<'a> {
            let mut tags = vec![false; tag_ids.len()];
            if let Some(Strings(list)) = self.metadata.and_then(|m| m.tags) {
                mark_tags(&mut tags, tag_ids, list.iter().map(AsRef::as_ref));
            }
            Facts {
                model: self.model.unwrap_or_default(),
                system: self.messages.system,
                last_user: self.messages.last_user,
                has_tools: matches!(self.tools, Some(NonEmpty(true)))
                    || matches!(self.functions, Some(NonEmpty(true))),
                has_images: self.messages.has_images,
                json_mode: is_json_mode(
                    self.response_format
                        .as_ref()
                        .and_then(|f| f.kind.as_ref())
                        .and_then(|k| k.0.as_deref()),
                ),
                tags,
            }
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

    struct MessagesVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for MessagesVisitor<'a> {
        type Value = Messages<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of messages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Messages::default();
            while let Some(m) = seq.next_element::<Message<'a>>()? {
                let content = m.content.unwrap_or_default();
                out.has_images |= content.has_images;
                match m.role.as_deref() {
                    Some("system" | "developer") => append(&mut out.system, content.text),
                    Some("user") => out.last_user = content.text,
                    _ => {}
                }
            }
            Ok(out)
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(MessagesVisitor(PhantomData))
        }
    }

    struct ContentVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
        type Value = Content<'a>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("message content")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Content {
                text: Cow::Borrowed(v),
                has_images: false,
            })
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.visit_string(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Content {
                text: Cow::Owned(v),
                has_images: false,
            })
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Content::default();
            while let Some(part) = seq.next_element::<Part<'a>>()? {
                let kind = part.kind.as_deref();
                out.has_images |= is_image(kind);
                if is_text(kind) {
                    if let Some(t) = part.text {
                        join(&mut out.text, t);
                    }
                }
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Content::default())
        }
        ignore_scalars!(Content::default());
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

    #[test]
    fn fast_path_reads_what_the_full_parse_reads() {
        let tags: HashMap<String, usize> = [("pii".to_owned(), 0), ("x".to_owned(), 1)]
            .into_iter()
            .collect();
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
            // Empty and escaped text parts: an empty first part leaves nothing, a later one a newline.
            json!({"messages": [
                {"role": "system", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "a\nb"}]},
                {"role": "developer", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": ""}]},
                {"role": "user", "content": [{"type": "text", "text": "é\t"}, {"type": "input_image"}]},
                {"role": "user", "content": "q\"\\"}]}),
        ];
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            let fast = serde_json::from_slice::<fast::Body<'_>>(&bytes)
                .expect("fast path takes this body")
                .facts(&tags);
            let map = parse_object(&bytes).unwrap();
            let full = Facts::read(&map, &tags).unwrap();
            assert_eq!(fast.model, full.model, "{body}");
            assert_eq!(fast.system, full.system, "{body}");
            assert_eq!(fast.last_user, full.last_user, "{body}");
            assert_eq!(
                (fast.has_tools, fast.has_images, fast.json_mode),
                (full.has_tools, full.has_images, full.json_mode),
                "{body}"
            );
            assert_eq!(fast.tags, full.tags, "{body}");
        }
        // Shapes the fast path does not expect go to the full parse, which words the error.
        for bad in [
            &b"{\"model\": 5, \"messages\": []}"[..],
            b"{\"messages\": null}",
            b"[1]",
            b"{\"messages\": [1]}",
        ] {
            assert!(serde_json::from_slice::<fast::Body<'_>>(bad).is_err());
        }
    }

    #[test]
    fn the_full_parse_takes_duplicate_keys() {
        // serde_json's map keeps the last value of a duplicate key; the fast path rejects the body.
        let body = br#"{"messages": [{"role": "user", "content": "a"}], "messages": [{"role": "user", "content": "b"}]}"#;
        assert!(serde_json::from_slice::<fast::Body<'_>>(body).is_err());
        assert_eq!(Facts::of(body, &HashMap::new()).unwrap().last_user, "b");
    }
}
