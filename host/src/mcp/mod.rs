//! The MCP binding: Streamable HTTP at `POST /mcp` (protocol `2025-11-25` and
//! `2025-06-18`). It only translates: JSON-RPC in, a pipeline [`Operation`] through
//! [`pipeline::govern`] (the same steps and audit as REST), JSON-RPC out.
//!
//! - `tools/list` is the manifest, as MCP tools (see [`tools`]).
//! - `tools/call` is [`Operation::Call`]: reads return the adapter's content, actions the
//!   `/actions` response shape as `structuredContent`, refusals `isError` results carrying
//!   the envelope (with its `agent.*` code) as `structuredContent`.
//! - Credentials are the agent bearer tokens; without one the answer is `401` with
//!   `WWW-Authenticate` naming the protected-resource metadata, unless the operator turned
//!   on the loopback-only anonymous integration (`[mcp] anonymous_app`).
//! - `Origin` and `Host` are checked against DNS rebinding before anything else.

mod prompts;
mod rebinding;
mod request_state;
mod respond;
mod session;
mod stateless;
mod tasks;
mod tools;

use serde_json::{Value, json};

use crate::catalog::Tool;
use crate::gateway::Gateway;
use crate::outcome::Refused;
use crate::pipeline::{self, Binding, BodyError, Credentials, Inbound, Operation, Outbound};
use crate::plugin::interaction::Round;
use crate::protocol::codes::{self, Code};
use crate::protocol::trace::TraceContext;
use crate::protocol::{ActionBody, Failure, strict_json};

use rebinding::rebinding_guard;
pub use request_state::Sealer;
use respond::{Responder, accepts_event_stream, empty, json_response, wants_event_stream};
pub use session::{Session, Sessions, table as session_table};
use session::{SessionError, credential_of};

/// The route.
pub const PATH: &str = "/mcp";

/// Protocol versions this binding speaks, newest first. `2025-03-26` is accepted in the
/// `MCP-Protocol-Version` header (clients send it after an older handshake) but never
/// negotiated.
const SUPPORTED: &[&str] = &["2025-11-25", "2025-06-18"];
const ACCEPTED_HEADER_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// A governance refusal of a request other than `tools/call` (e.g. a rate limit on
/// `tools/list`); the envelope is in `error.data`.
const REFUSED: i64 = -32000;
const SESSION_NOT_FOUND: i64 = -32001;

/// Whether `path` serves the OAuth protected-resource metadata (RFC 9728), at the root
/// and in the path-suffixed form for `/mcp`.
pub fn is_resource_metadata_path(path: &str) -> bool {
    matches!(
        path,
        "/.well-known/oauth-protected-resource" | "/.well-known/oauth-protected-resource/mcp"
    )
}

/// The protected-resource metadata: which resource this is and how to present a token.
/// Tokens are issued by operators on the admin plane, so no authorization server is listed.
pub fn resource_metadata(gw: &Gateway, host: Option<&str>, request_id: &str) -> Outbound {
    let base = base_url(gw, host);
    let body = json!({
        "resource": format!("{base}{PATH}"),
        "resource_name": "OpenPort gateway",
        "authorization_servers": [],
        "bearer_methods_supported": ["header"],
        "scopes_supported": gw.catalog().scopes(),
    });
    json_response(200, &body, Vec::new(), request_id)
}

/// The scheme (`https` under TLS) + the request's `Host` when it is a plain authority, else
/// the listen address.
fn base_url(gw: &Gateway, host: Option<&str>) -> String {
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    };
    match host.filter(plain) {
        Some(host) => format!("{}://{host}", gw.scheme()),
        None => format!("{}://{}", gw.scheme(), gw.config.listen),
    }
}

/// MCP's part in the steps: every request but `initialize` belongs to an open session of
/// its credential, checked right after authentication; every tool the caller cannot use
/// is an unknown tool.
struct Mcp<'a> {
    sessions: &'a Sessions,
    /// `None` for `initialize` (there is no session yet) and for refusals decided before
    /// any operation; else the request's `Mcp-Session-Id`, if any.
    session: Option<Option<&'a str>>,
    authorization: Option<&'a str>,
    /// The trace context in the message's `_meta`, if any.
    trace: Option<TraceContext>,
}

impl<'a> Mcp<'a> {
    fn opening(sessions: &'a Sessions, inbound: &'a Inbound) -> Self {
        Mcp {
            sessions,
            session: None,
            authorization: inbound.authorization.as_deref(),
            trace: None,
        }
    }

    /// With the trace context of a message's `_meta` (`traceparent`, `tracestate`).
    fn traced(mut self, params: &Value) -> Self {
        self.trace = meta_trace(params);
        self
    }

    fn in_session(sessions: &'a Sessions, inbound: &'a Inbound) -> Self {
        Mcp {
            sessions,
            session: Some(inbound.mcp.session_id.as_deref()),
            authorization: inbound.authorization.as_deref(),
            trace: None,
        }
    }
}

impl Binding for Mcp<'_> {
    fn name(&self) -> Option<&'static str> {
        Some("mcp")
    }

    fn check_session(&self) -> Result<(), Failure> {
        let Some(id) = self.session else {
            return Ok(());
        };
        let credential = credential_of(self.authorization);
        session::check(self.sessions, id, &credential)
            .map(|_| ())
            .map_err(|e| match e {
                SessionError::Missing => Failure::validation(
                    &["Mcp-Session-Id"],
                    "Mcp-Session-Id header is required; call initialize first",
                )
                .with("reason", SESSION_MISSING),
                SessionError::NotFound => Failure::new(codes::NOT_FOUND, "Session not found; initialize a new session")
                    .with("reason", SESSION_UNKNOWN),
            })
    }

    fn hidden_tool(&self, _tool: &Tool) -> Failure {
        unknown_tool()
    }

    fn not_an_action(&self, _found: Option<&Tool>) -> Failure {
        unknown_tool()
    }

    fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
}

/// W3C trace context carried in a message's `_meta`.
fn meta_trace(params: &Value) -> Option<TraceContext> {
    let meta = &params["_meta"];
    TraceContext::parse(meta.get("traceparent")?.as_str()?, meta["tracestate"].as_str())
}

/// Over MCP, a name that does not exist and one the caller may not see answer alike.
fn unknown_tool() -> Failure {
    Failure::new(codes::ACTION_UNKNOWN, "Unknown tool")
}

/// One `/mcp` request.
pub async fn handle(gw: &Gateway, sessions: &Sessions, sealer: &Sealer, inbound: Inbound) -> Outbound {
    let request_id = inbound.request_id.clone();
    let credentials = match gw.config.mcp.anonymous_app.as_deref() {
        Some(app_id) if inbound.peer.is_loopback() && inbound.authorization.is_none() => {
            Credentials::Anonymous { app_id }
        }
        _ => Credentials::Bearer,
    };
    let reply = Responder {
        gw,
        request_id: &request_id,
        sse: wants_event_stream(inbound.mcp.accept.as_deref()),
        accepts_sse: accepts_event_stream(inbound.mcp.accept.as_deref()),
        presented_credential: inbound.authorization.is_some(),
    };

    if let Err(what) = rebinding_guard(gw, &inbound) {
        let refused = Refused::from(
            Failure::new(codes::FORBIDDEN, format!("{what} not allowed")).with("reason", "dns_rebinding_protection"),
        );
        let refused = refusal(gw, sessions, &inbound, refused, credentials).await;
        return reply.error(403, Value::Null, INVALID_REQUEST, &refused, Vec::new());
    }

    match inbound.method.as_str() {
        "POST" => post(gw, sessions, sealer, &inbound, credentials, &reply).await,
        "DELETE" => {
            let credential = credential_of(inbound.authorization.as_deref());
            let operation = Operation::Session {
                method: "session.delete".into(),
            };
            let binding = Mcp::opening(sessions, &inbound);
            let outcome = pipeline::govern(gw, &inbound, Ok(operation), &binding, credentials).await;
            match outcome {
                Ok(_) => {
                    let ended = inbound
                        .mcp
                        .session_id
                        .as_deref()
                        .is_some_and(|id| sessions.close_if(id, |s| s.credential == credential));
                    let status = if ended { 204 } else { 404 };
                    empty(status, Vec::new(), &request_id)
                }
                Err(refused) => reply.refused(Value::Null, refused),
            }
        }
        _ => {
            // No server-initiated stream: GET (and anything else) is not offered.
            let refused = Refused::from(Failure::new(
                codes::NOT_FOUND,
                "Method not allowed: /mcp takes POST (and DELETE to end a session)",
            ));
            let _ = refusal(gw, sessions, &inbound, refused, credentials).await;
            empty(405, vec![("Allow", "POST, DELETE".into())], &request_id)
        }
    }
}

/// Audits a refusal decided before any operation, through the pipeline like any other.
async fn refusal(
    gw: &Gateway,
    sessions: &Sessions,
    inbound: &Inbound,
    refused: Refused,
    credentials: Credentials<'_>,
) -> Refused {
    let binding = Mcp::opening(sessions, inbound);
    match pipeline::govern(gw, inbound, Err(refused), &binding, credentials).await {
        Ok(_) => Refused::internal("a refusal was answered as a success"),
        Err(refused) => refused,
    }
}

/// A parsed JSON-RPC message.
pub(crate) enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
    },
    /// A response to a request of ours; we send none, so it is acknowledged and dropped.
    Response,
}

/// Why a body is not a JSON-RPC message.
pub(crate) struct Fault {
    pub(crate) status: u16,
    rpc_code: i64,
    id: Value,
    message: String,
}

pub(crate) fn parse_message(inbound: &Inbound) -> Result<Message, Fault> {
    let fault = |status, rpc_code, message: &str| Fault {
        status,
        rpc_code,
        id: Value::Null,
        message: message.into(),
    };
    if inbound.head_too_large {
        return Err(fault(413, INVALID_REQUEST, "Request headers too large"));
    }
    let body = match &inbound.body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Err(fault(413, INVALID_REQUEST, "Request body too large")),
        Err(BodyError::Unreadable) => return Err(fault(400, PARSE_ERROR, "Request body could not be read")),
    };
    let is_json = inbound.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(fault(415, INVALID_REQUEST, "Content-Type must be application/json"));
    }
    let value: Value = strict_json::parse(body).map_err(|e| {
        if strict_json::is_duplicate_key(&e) {
            fault(400, INVALID_REQUEST, &format!("Invalid request: {e}"))
        } else {
            fault(400, PARSE_ERROR, &format!("Parse error: {e}"))
        }
    })?;
    let Value::Object(mut message) = value else {
        return Err(fault(
            400,
            INVALID_REQUEST,
            "Expected one JSON-RPC message object (batches are not supported)",
        ));
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(fault(400, INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    let id = message.remove("id");
    let method = message.remove("method");
    match (id, method) {
        (Some(id @ (Value::String(_) | Value::Number(_))), Some(Value::String(method))) => Ok(Message::Request {
            id,
            method,
            params: message.remove("params").unwrap_or(Value::Null),
        }),
        (None, Some(Value::String(method))) => Ok(Message::Notification { method }),
        (Some(id), None) if message.contains_key("result") || message.contains_key("error") => {
            let _ = id;
            Ok(Message::Response)
        }
        (id, _) => Err(Fault {
            status: 400,
            rpc_code: INVALID_REQUEST,
            id: id.filter(|v| v.is_string() || v.is_number()).unwrap_or(Value::Null),
            message: "Invalid JSON-RPC message: a request needs a string `method` and a string or number `id`".into(),
        }),
    }
}

async fn post(
    gw: &Gateway,
    sessions: &Sessions,
    sealer: &Sealer,
    inbound: &Inbound,
    credentials: Credentials<'_>,
    reply: &Responder<'_>,
) -> Outbound {
    let message = match parse_message(inbound) {
        Ok(message) => message,
        Err(fault) => {
            let code = if fault.status == 413 {
                codes::REQUEST_TOO_LARGE
            } else {
                codes::VALIDATION
            };
            let refused = refusal(
                gw,
                sessions,
                inbound,
                Refused::from(Failure::new(code, fault.message)),
                credentials,
            )
            .await;
            return reply.error(fault.status, fault.id, fault.rpc_code, &refused, Vec::new());
        }
    };
    if let Message::Request { id, method, params } = &message
        && stateless::speaks(
            inbound.mcp.protocol_version.as_deref(),
            ACCEPTED_HEADER_VERSIONS,
            method,
            params,
        )
    {
        let call = stateless::Call {
            gw,
            sessions,
            sealer,
            inbound,
            credentials,
            reply,
            params,
        };
        return call.request(id.clone(), method).await;
    }
    if let Some(version) = inbound.mcp.protocol_version.as_deref()
        && !ACCEPTED_HEADER_VERSIONS.contains(&version)
    {
        let failure = Failure::validation(
            &["MCP-Protocol-Version"],
            format!(
                "unsupported MCP protocol version `{version}`; supported: {}",
                SUPPORTED.join(", ")
            ),
        );
        let refused = refusal(gw, sessions, inbound, failure.into(), credentials).await;
        let id = match &message {
            Message::Request { id, .. } => id.clone(),
            _ => Value::Null,
        };
        return reply.error(400, id, INVALID_REQUEST, &refused, Vec::new());
    }
    let in_session = &Mcp::in_session(sessions, inbound);
    let (id, method, params) = match message {
        Message::Request { id, method, params } => (id, method, params),
        Message::Notification { method } => {
            let operation = Operation::Session {
                method: audit_name(&method),
            };
            // A notification of the stateless wire belongs to no session.
            let stateless = inbound
                .mcp
                .protocol_version
                .as_deref()
                .is_some_and(|v| !ACCEPTED_HEADER_VERSIONS.contains(&v));
            let opening = Mcp::opening(sessions, inbound);
            let binding = if stateless { &opening } else { in_session };
            return match pipeline::govern(gw, inbound, Ok(operation), binding, credentials).await {
                Ok(_) => empty(202, Vec::new(), reply.request_id),
                Err(refused) => reply.refused(Value::Null, refused),
            };
        }
        Message::Response => {
            let operation = Operation::Session {
                method: "response".into(),
            };
            return match pipeline::govern(gw, inbound, Ok(operation), in_session, credentials).await {
                Ok(_) => empty(202, Vec::new(), reply.request_id),
                Err(refused) => reply.refused(Value::Null, refused),
            };
        }
    };

    if method == "initialize" {
        return initialize(gw, sessions, inbound, credentials, reply, id, &params).await;
    }
    match method.as_str() {
        "ping" => {
            let operation = Operation::Session { method: "ping".into() };
            match pipeline::govern(gw, inbound, Ok(operation), in_session, credentials).await {
                Ok(_) => reply.result(200, id, json!({}), Vec::new()),
                Err(refused) => reply.refused(id, refused),
            }
        }
        "tools/list" => match pipeline::govern(gw, inbound, Ok(Operation::Manifest), in_session, credentials).await {
            Ok(manifest) => reply.result(200, id, tools::list(&manifest.data.into_value()), Vec::new()),
            Err(refused) => reply.refused(id, refused),
        },
        "prompts/list" => match pipeline::govern(gw, inbound, Ok(Operation::Prompts), in_session, credentials).await {
            Ok(listed) => reply.result(200, id, listed.data, Vec::new()),
            Err(refused) => reply.refused(id, refused),
        },
        "prompts/get" => match prompts::operation(&params, false) {
            Ok(operation) => {
                let outcome = pipeline::govern(gw, inbound, Ok(operation), in_session, credentials).await;
                prompts::answer(reply, id, outcome, false)
            }
            Err(failure) => {
                let refused = refusal(gw, sessions, inbound, failure.into(), credentials).await;
                reply.error(200, id, INVALID_PARAMS, &refused, Vec::new())
            }
        },
        "tools/call" => {
            let body = match call_body(&params) {
                Ok(body) => body,
                Err(message) => {
                    let failure = Failure::validation(&["params"], message.clone());
                    let refused = refusal(gw, sessions, inbound, failure.into(), credentials).await;
                    return reply.error(200, id, INVALID_PARAMS, &refused, Vec::new());
                }
            };
            // This revision carries no input requests (a read that asks is refused), but
            // progress, for a client that gave a token.
            let token = params["_meta"].get("progressToken").cloned();
            let round = Round {
                wants_progress: token.is_some(),
                ..Round::default()
            };
            let operation = Operation::Call(body, Some(round));
            let in_session = Mcp::in_session(sessions, inbound).traced(&params);
            let outcome = pipeline::govern(gw, inbound, Ok(operation), &in_session, credentials).await;
            match outcome {
                Ok(result) => {
                    let notifications = tools::progress_notifications(token.as_ref(), &result);
                    reply.result_after(id, tools::call_result(result, reply.request_id), notifications)
                }
                Err(refused) if is_protocol_refusal(&refused) => reply.refused(id, refused),
                Err(refused) => {
                    let headers = refused.headers.clone();
                    reply.result(200, id, tools::refusal_result(&refused, reply.request_id), headers)
                }
            }
        }
        other => {
            let failure = Failure::validation(&["method"], format!("method `{other}` is not supported by this server"));
            let refused = refusal(gw, sessions, inbound, failure.into(), credentials).await;
            reply.error(200, id, METHOD_NOT_FOUND, &refused, Vec::new())
        }
    }
}

async fn initialize(
    gw: &Gateway,
    sessions: &Sessions,
    inbound: &Inbound,
    credentials: Credentials<'_>,
    reply: &Responder<'_>,
    id: Value,
    params: &Value,
) -> Outbound {
    let Some(requested) = params["protocolVersion"].as_str() else {
        let failure = Failure::validation(&["params", "protocolVersion"], "initialize needs `protocolVersion`");
        let refused = refusal(gw, sessions, inbound, failure.into(), credentials).await;
        return reply.error(200, id, INVALID_PARAMS, &refused, Vec::new());
    };
    // The client's version if we speak it, else our newest (the client then decides).
    let version = SUPPORTED
        .iter()
        .copied()
        .find(|v| *v == requested)
        .unwrap_or(SUPPORTED[0]);
    let operation = Operation::Session {
        method: "initialize".into(),
    };
    let opening = Mcp::opening(sessions, inbound);
    match pipeline::govern(gw, inbound, Ok(operation), &opening, credentials).await {
        Ok(_) => {
            let session = crate::protocol::ids::new_id(crate::protocol::ids::Kind::McpSession);
            sessions.open(
                session.clone(),
                Session {
                    credential: credential_of(inbound.authorization.as_deref()),
                    protocol_version: version.to_string(),
                },
            );
            let result = json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}, "prompts": {"listChanged": false}},
                "serverInfo": server_info(),
                "instructions": INSTRUCTIONS,
            });
            reply.result(200, id, result, vec![("Mcp-Session-Id", session)])
        }
        Err(refused) => reply.refused(id, refused),
    }
}

/// What the gateway tells clients about itself, on every revision.
const INSTRUCTIONS: &str = "Tools are governed by OpenPort: writes become drafts for human review unless policy allows auto-execution. Refusals are tool results with isError and an `agent.*` code in structuredContent.code.";

fn server_info() -> Value {
    json!({"name": "openport", "title": "OpenPort gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// `tools/call` params as an action body: `name`, `arguments`, and the OpenPort action
/// fields (`execute`, `idempotencyKey`, `justification`, `preflightHash`, `stepUpToken`, ...) from `_meta`.
fn call_body(params: &Value) -> Result<ActionBody, String> {
    let Some(name) = params["name"].as_str() else {
        return Err("tools/call needs a string `name`".into());
    };
    let arguments = match &params["arguments"] {
        Value::Null => json!({}),
        Value::Object(map) => Value::Object(map.clone()),
        _ => return Err("`arguments` must be an object".into()),
    };
    let meta = match &params["_meta"] {
        Value::Null => None,
        Value::Object(map) => Some(map),
        _ => return Err("`_meta` must be an object".into()),
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match meta.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`_meta.{key}` must be a string")),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>, String> {
        match meta.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("`_meta.{key}` must be a boolean")),
        }
    };
    Ok(ActionBody {
        action: name.to_string(),
        payload: Some(arguments),
        preflight_id: text("preflightId")?,
        execute: flag("execute")?,
        force_draft: flag("forceDraft")?,
        request_id: text("requestId")?,
        idempotency_key: text("idempotencyKey")?,
        justification: text("justification")?,
        preflight_hash: text("preflightHash")?,
        state_witness_hash: text("stateWitnessHash")?,
        step_up_token: text("stepUpToken")?,
    })
}

/// Refusals that are about the request rather than the tool: they are answered as HTTP or
/// JSON-RPC errors even for `tools/call`.
fn is_protocol_refusal(refused: &Refused) -> bool {
    is_authentication(refused.failure.code)
        || matches!(
            refused.failure.details.get("reason").and_then(Value::as_str),
            Some(SESSION_MISSING | SESSION_UNKNOWN)
        )
}

const SESSION_MISSING: &str = "mcp_session_missing";
const SESSION_UNKNOWN: &str = "mcp_session_not_found";

fn is_authentication(code: Code) -> bool {
    code == codes::TOKEN_INVALID || code == codes::TOKEN_EXPIRED
}

/// A JSON-RPC method as an audit action suffix: `notifications/initialized` →
/// `notifications.initialized`, bounded and without odd characters.
fn audit_name(method: &str) -> String {
    method
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '.' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openport_action_fields_travel_in_meta() {
        let body = call_body(&json!({
            "name": "transaction.create",
            "arguments": {"ledgerId": "ledger_main"},
            "_meta": {"execute": true, "idempotencyKey": "k1", "progressToken": 7}
        }))
        .expect("valid");
        assert_eq!(body.action, "transaction.create");
        assert_eq!(body.execute, Some(true));
        assert_eq!(body.idempotency_key.as_deref(), Some("k1"));
        assert!(call_body(&json!({"name": "x", "_meta": {"execute": "yes"}})).is_err());
        assert!(call_body(&json!({"arguments": {}})).is_err());
    }
}
