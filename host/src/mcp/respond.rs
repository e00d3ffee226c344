//! JSON-RPC answers on `/mcp`: one JSON body, or an SSE stream (one event, or progress
//! notifications ahead of the result).

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{
    INVALID_REQUEST, REFUSED, SESSION_MISSING, SESSION_NOT_FOUND, SESSION_UNKNOWN, base_url, is_authentication,
};
use crate::gateway::Gateway;
use crate::outcome::Refused;
use crate::pipeline::Outbound;
use crate::protocol::Envelope;

/// Whether the client asked for an event stream only (it did not accept plain JSON).
pub(super) fn wants_event_stream(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    let json = types
        .iter()
        .any(|t| t.eq_ignore_ascii_case("application/json") || *t == "*/*" || t.eq_ignore_ascii_case("application/*"));
    !json && types.iter().any(|t| t.eq_ignore_ascii_case("text/event-stream"))
}

/// Whether the client accepts an event stream at all.
pub(super) fn accepts_event_stream(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
    })
}

/// Writes JSON-RPC answers, as JSON or as an SSE stream.
pub(super) struct Responder<'a> {
    pub(super) gw: &'a Gateway,
    pub(super) request_id: &'a str,
    /// The client accepts only an event stream.
    pub(super) sse: bool,
    /// The client accepts an event stream (then notifications may precede a result).
    pub(super) accepts_sse: bool,
    /// Whether the request carried an `Authorization` header (then a 401 says why).
    pub(super) presented_credential: bool,
}

impl Responder<'_> {
    pub(super) fn result(
        &self,
        status: u16,
        id: Value,
        result: impl Serialize,
        headers: Vec<(&'static str, String)>,
    ) -> Outbound {
        self.message(status, &RpcResult::new(id, result), headers)
    }

    /// A result preceded by notifications (progress) on one event stream, when the client
    /// accepts one and there are any; else the result alone.
    pub(super) fn result_after(&self, id: Value, result: impl Serialize, notifications: Vec<Value>) -> Outbound {
        if notifications.is_empty() || !self.accepts_sse {
            return self.result(200, id, result, Vec::new());
        }
        let mut body = String::new();
        for message in &notifications {
            body.push_str(&sse_event(message));
        }
        body.push_str(&sse_event(&RpcResult::new(id, result)));
        Outbound {
            status: 200,
            headers: self.stream_headers(Vec::new()),
            body: body.into_bytes(),
        }
    }

    pub(super) fn error(
        &self,
        status: u16,
        id: Value,
        rpc_code: i64,
        refused: &Refused,
        headers: Vec<(&'static str, String)>,
    ) -> Outbound {
        self.error_with(status, id, rpc_code, refused, Map::new(), headers)
    }

    /// A JSON-RPC error whose `data` is the OpenPort envelope plus fields a revision defines
    /// (`supported`, `requested`, `requiredCapabilities`), with the refusal's headers
    /// (`Retry-After`, ...) after `headers`.
    pub(super) fn error_with(
        &self,
        status: u16,
        id: Value,
        rpc_code: i64,
        refused: &Refused,
        data: Map<String, Value>,
        mut headers: Vec<(&'static str, String)>,
    ) -> Outbound {
        let mut envelope = serde_json::to_value(Envelope::failure(refused.failure.clone(), self.request_id))
            .unwrap_or_else(|_| json!({}));
        if let Value::Object(fields) = &mut envelope {
            fields.extend(data);
        }
        let body = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": rpc_code, "message": refused.failure.message, "data": envelope},
        });
        headers.extend(refused.headers.iter().cloned());
        self.message(status, &body, headers)
    }

    fn stream_headers(&self, extra: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Content-Type", "text/event-stream".to_string()),
            ("X-Request-Id", self.request_id.to_string()),
            ("Cache-Control", "no-store".to_string()),
        ];
        headers.extend(extra);
        headers
    }

    /// A governance refusal of a whole request: `401` (with `WWW-Authenticate`) for a
    /// credential problem, otherwise a JSON-RPC error carrying the envelope.
    pub(super) fn refused(&self, id: Value, refused: Refused) -> Outbound {
        if is_authentication(refused.failure.code) {
            let base = base_url(self.gw, None);
            let mut challenge = format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource\"");
            if self.presented_credential {
                challenge.push_str(", error=\"invalid_token\"");
            }
            return self.error(401, id, REFUSED, &refused, vec![("WWW-Authenticate", challenge)]);
        }
        match refused.failure.details.get("reason").and_then(Value::as_str) {
            Some(SESSION_MISSING) => return self.error(400, id, INVALID_REQUEST, &refused, Vec::new()),
            Some(SESSION_UNKNOWN) => return self.error(404, id, SESSION_NOT_FOUND, &refused, Vec::new()),
            _ => {}
        }
        let status = match refused.failure.code.status {
            413 => 413,
            500 => 500,
            _ => 200,
        };
        self.error(status, id, REFUSED, &refused, Vec::new())
    }

    pub(super) fn message(&self, status: u16, body: &impl Serialize, extra: Vec<(&'static str, String)>) -> Outbound {
        if self.sse {
            return Outbound {
                status,
                headers: self.stream_headers(extra),
                body: sse_event(body).into_bytes(),
            };
        }
        json_response(status, body, extra, self.request_id)
    }
}

/// A JSON-RPC result message, serialized straight from the result (no `Value` in between).
#[derive(Serialize)]
struct RpcResult<R> {
    jsonrpc: &'static str,
    id: Value,
    result: R,
}

impl<R> RpcResult<R> {
    fn new(id: Value, result: R) -> Self {
        RpcResult {
            jsonrpc: "2.0",
            id,
            result,
        }
    }
}

/// One server-sent event carrying a JSON-RPC message.
fn sse_event(message: &impl Serialize) -> String {
    let data = serde_json::to_string(message).unwrap_or_default();
    format!("event: message\ndata: {data}\n\n")
}

/// Most answers are a few hundred bytes to a few KiB: one allocation up front.
const BODY_CAPACITY: usize = 1024;

pub(super) fn json_response(
    status: u16,
    body: &impl Serialize,
    extra: Vec<(&'static str, String)>,
    request_id: &str,
) -> Outbound {
    let mut bytes = Vec::with_capacity(BODY_CAPACITY);
    // Serializing our own types and `Value`s cannot fail; an empty body would show it.
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes.clear();
    }
    Outbound::json(status, bytes, extra, request_id)
}

pub(super) fn empty(status: u16, extra: Vec<(&'static str, String)>, request_id: &str) -> Outbound {
    let mut headers = vec![("X-Request-Id", request_id.to_string())];
    headers.extend(extra);
    Outbound {
        status,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_only_when_json_is_not_accepted() {
        assert!(!wants_event_stream(None));
        assert!(!wants_event_stream(Some("application/json, text/event-stream")));
        assert!(wants_event_stream(Some("text/event-stream")));
        assert!(!wants_event_stream(Some("*/*")));
    }
}
