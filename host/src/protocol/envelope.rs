//! The OpenPort envelope (SPEC section 2), plus our `request_id`.

use serde::Serialize;
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
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    pub request_id: String,
}

impl Envelope {
    pub fn success(data: Value, request_id: &str) -> Self {
        Envelope::success_with(codes::SUCCESS, data, request_id)
    }

    /// A success that carries another code, e.g. `agent.idempotency_replay`.
    pub fn success_with(code: Code, data: Value, request_id: &str) -> Self {
        Envelope {
            ok: true,
            code: code.name,
            data: Some(data),
            message: None,
            details: None,
            request_id: request_id.to_string(),
        }
    }

    pub fn failure(failure: &Failure, request_id: &str) -> Self {
        let mut details = failure.details.clone();
        details.insert("retryable".into(), Value::Bool(failure.code.retryable));
        Envelope {
            ok: false,
            code: failure.code.name,
            data: None,
            message: Some(failure.message.clone()),
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
