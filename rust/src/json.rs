//! Request-body parsing into `serde_json` values, for token counting.

use std::fmt;

use serde_json::{Map, Value};

/// A request body that cannot be used; the binding layer raises it as `ValueError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// Parses a request body that must be a JSON object. Nesting is capped at serde_json's recursion
/// limit (128 levels), so hostile input cannot exhaust the stack.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, InvalidInput> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(InvalidInput(format!(
            "request body must be a JSON object, not {}",
            kind(&other)
        ))),
        Err(e) => Err(InvalidInput(format!("request body is not valid JSON: {e}"))),
    }
}

/// JSON type name, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors() {
        assert!(parse_object(b"{").unwrap_err().0.contains("not valid JSON"));
        assert!(parse_object(b"[1]").unwrap_err().0.contains("not an array"));
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse_object(deep.as_bytes())
            .unwrap_err()
            .0
            .contains("recursion limit"));
        assert!(parse_object(b"{\"a\": 1}").is_ok());
    }
}
