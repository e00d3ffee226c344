//! The OpenPort envelope (SPEC section 2), plus our `request_id`.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::codes::{self, Code};

/// A refusal or failure on its way to the client: a code, a public message and details.
/// The message is for humans; the code is the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    pub details: Map<String, Value>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one `details` entry.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// A bug or an unavailable dependency: the client sees no internals.
    pub fn internal() -> Self {
        Failure::new(codes::INTERNAL_ERROR, "Internal server error")
    }

    /// `common.validation` with one issue in the reference's `{code, path, message}` shape.
    pub fn validation(path: &[&str], message: impl Into<String>) -> Self {
        let issue = serde_json::json!({"code": "invalid", "path": path, "message": message.into()});
        Failure::new(codes::VALIDATION, "Validation failed").with("issues", vec![issue])
    }
}

/// A response body: `{ok, code, data}` or `{ok, code, message, details}`, always with
/// `request_id`.
#[derive(Debug, Serialize)]
pub struct Envelope {
    pub ok: bool,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    pub request_id: String,
}

impl Envelope {
    pub fn success(data: impl Into<Data>, request_id: &str) -> Self {
        Envelope::success_with(codes::SUCCESS, data, request_id)
    }

    /// A success that carries another code, e.g. `agent.idempotency_replay`.
    pub fn success_with(code: Code, data: impl Into<Data>, request_id: &str) -> Self {
        Envelope {
            ok: true,
            code: code.name,
            data: Some(data.into()),
            message: None,
            details: None,
            request_id: request_id.to_string(),
        }
    }

    pub fn failure(failure: Failure, request_id: &str) -> Self {
        let mut details = failure.details;
        details.insert("retryable".into(), Value::Bool(failure.code.retryable));
        Envelope {
            ok: false,
            code: failure.code.name,
            data: None,
            message: Some(failure.message),
            details: Some(details),
            request_id: request_id.to_string(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Room for a typical envelope at once, rather than growing through several copies.
        let mut body = Vec::with_capacity(512);
        // Serializing plain maps and strings cannot fail; fall back to a fixed body anyway.
        match serde_json::to_writer(&mut body, self) {
            Ok(()) => body,
            Err(_) => br#"{"ok":false,"code":"common.internal_error","message":"Internal server error"}"#.to_vec(),
        }
    }
}

/// An answer's `data`: a value the gateway built, or JSON it passes on as it was written.
///
/// A read whose result needs nothing redacted answers with the plugin's own JSON text,
/// checked when it arrived but never parsed into a tree: building that tree and
/// serializing it again, once more over MCP, was 7 – 9% of a ledger read's CPU
/// (`BENCHMARKS.md`, session 15).
#[derive(Debug, Clone)]
pub enum Data {
    Value(Value),
    Json(Box<RawValue>),
}

impl Data {
    /// JSON text already checked ([`super::strict_json::check`]), to pass on as written.
    pub fn checked(text: String) -> Data {
        // Checked text is JSON; `null` would only answer a serde_json bug.
        RawValue::from_string(text).map_or(Data::Value(Value::Null), Data::Json)
    }

    /// The data as a value. Passed-on JSON was checked when it arrived, so it parses.
    pub fn into_value(self) -> Value {
        match self {
            Data::Value(value) => value,
            Data::Json(json) => serde_json::from_str(json.get()).unwrap_or(Value::Null),
        }
    }

    /// The data as JSON text, serialized at most once.
    pub fn into_json(self) -> Box<RawValue> {
        match self {
            // A `Value` always serializes; `null` would only answer a serde_json bug.
            Data::Value(value) => serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned()),
            Data::Json(json) => json,
        }
    }

    /// Whether the data is an object with at least one member.
    pub fn is_nonempty_object(&self) -> bool {
        match self {
            Data::Value(value) => value.as_object().is_some_and(|m| !m.is_empty()),
            // Checked JSON that opens with `{` is an object; `}` next means it is empty.
            Data::Json(json) => json
                .get()
                .trim_start()
                .strip_prefix('{')
                .is_some_and(|rest| !rest.trim_start().starts_with('}')),
        }
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Data::Value(value)
    }
}

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Value(value) => value.serialize(serializer),
            Data::Json(json) => json.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn passed(text: &str) -> Data {
        Data::Json(RawValue::from_string(text.into()).expect("JSON"))
    }

    #[test]
    fn passed_on_json_is_sent_as_written_and_reads_as_the_same_value() {
        let text = r#"{"items":[{"id":"txn_1"}],"hasMore":false}"#;
        let envelope = Envelope::success(passed(text), "req_1");
        let wire = String::from_utf8(envelope.to_bytes()).expect("UTF-8");
        assert_eq!(
            wire,
            format!(r#"{{"ok":true,"code":"common.success","data":{text},"request_id":"req_1"}}"#)
        );
        assert_eq!(
            passed(text).into_value(),
            json!({"items": [{"id": "txn_1"}], "hasMore": false})
        );
        assert_eq!(Data::from(json!({"a": 1})).into_json().get(), r#"{"a":1}"#);
    }

    #[test]
    fn only_an_object_with_members_is_a_nonempty_object() {
        for (text, expected) in [
            (r#"{"a":1}"#, true),
            (r#" { "a" : 1 } "#, true),
            ("{}", false),
            (" {  } ", false),
            ("[1]", false),
            (r#""{""#, false),
            ("null", false),
        ] {
            assert_eq!(passed(text).is_nonempty_object(), expected, "{text}");
            let value: Value = serde_json::from_str(text).expect("JSON");
            assert_eq!(Data::from(value).is_nonempty_object(), expected, "{text} as a value");
        }
    }
}
