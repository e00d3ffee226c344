//! What the pipeline takes and gives: a request as the HTTP layer hands it over (no hyper
//! types past this point), the operation a binding parsed from it, and the response the
//! HTTP layer writes back.

use std::net::IpAddr;

use bytes::Bytes;

use crate::audit::RequestFacts;
use crate::catalog::Tool;
use crate::plugin::interaction::Round;
use crate::protocol::trace::TraceContext;
use crate::protocol::{ActionBody, Failure, PreflightBody};

/// Why the body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// A request on any plane, as the HTTP layer hands it over.
#[derive(Debug)]
pub struct Inbound {
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The `Idempotency-Key` header, an alias of the body's `idempotencyKey`.
    pub idempotency_key: Option<String>,
    /// The `Cookie` header: only the reviewer page on the admin plane reads it.
    pub cookie: Option<String>,
    /// Headers only the MCP binding reads.
    pub mcp: McpHeaders,
    /// The W3C `traceparent`/`tracestate` headers, when well formed.
    pub trace: Option<TraceContext>,
    pub peer: IpAddr,
    /// SHA-256 of the TLS client certificate the connection presented, if any.
    pub client_cert: Option<String>,
    /// The head was over the limits (`http`): the request is refused, its headers dropped.
    pub head_too_large: bool,
    pub body: Result<Bytes, BodyError>,
}

impl Inbound {
    /// What the audit event of this request records of it, with the client's address.
    pub fn audit_facts(&self, client_ip: IpAddr) -> RequestFacts<'_> {
        RequestFacts {
            request_id: &self.request_id,
            method: &self.method,
            path: &self.path,
            client_ip,
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// The request headers the MCP binding needs: DNS-rebinding checks and its session.
#[derive(Debug, Default)]
pub struct McpHeaders {
    pub host: Option<String>,
    pub origin: Option<String>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub accept: Option<String>,
    /// The 2026-07-28 routing headers, which must agree with the body.
    pub method: Option<String>,
    pub name: Option<String>,
    /// `Mcp-Param-<Name>` headers: (`<Name>`, value), mirroring tool arguments.
    pub params: Vec<(String, String)>,
}

/// The response the HTTP layer writes.
#[derive(Debug)]
pub struct Outbound {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Outbound {
    /// A JSON body with the headers every JSON response carries (the envelope, JSON-RPC).
    pub fn json(status: u16, body: Vec<u8>, extra: Vec<(&'static str, String)>, request_id: &str) -> Outbound {
        let mut headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("X-Request-Id", request_id.to_string()),
            ("Cache-Control", "no-store".to_string()),
        ];
        headers.extend(extra);
        Outbound { status, headers, body }
    }
}

/// What a request asks for, once a binding parsed it (step 1).
#[derive(Debug)]
pub enum Operation {
    Manifest,
    Read {
        route: String,
        query: Option<String>,
    },
    Action(ActionBody),
    Preflight(PreflightBody),
    /// `?wait=N`: wait up to N seconds (at most 30) for a pending draft to change.
    Draft {
        id: String,
        wait_seconds: u64,
    },
    /// A call by tool name (MCP `tools/call`): a read runs as a read, anything else as an
    /// action; `body.action` is the tool and `body.payload` its arguments. With the input
    /// round the client brings; `None` on a revision that cannot carry input requests.
    Call(ActionBody, Option<Round>),
    /// A task of the key that started it (MCP Tasks): a background read's, or a draft's.
    Task {
        id: String,
        change: TaskChange,
    },
    /// MCP `prompts/list`: the prompts the app's scopes allow.
    Prompts,
    /// MCP `prompts/get`: a prompt filled in with the arguments, and with the answers the
    /// round brings to a question for the required ones left out (`None`: a revision
    /// without input rounds, where a missing argument is invalid).
    Prompt {
        name: String,
        arguments: serde_json::Map<String, serde_json::Value>,
        round: Option<Round>,
    },
    /// An MCP lifecycle request (`initialize`, `ping`, a notification, session end): the
    /// caller is authenticated and admitted, and nothing else happens.
    Session {
        method: String,
    },
}

/// What a task request does.
#[derive(Debug)]
pub enum TaskChange {
    Read,
    /// Cancels an active task (a draft's: withdraws it while it is pending).
    Cancel,
    /// Answers the input requests a background read's task waits on (a draft's input is
    /// its reviewer's decision: there, only acknowledged).
    Answer {
        responses: serde_json::Map<String, serde_json::Value>,
        /// The client's declared capabilities, for the tool's next round.
        capabilities: Option<serde_json::Value>,
    },
}

impl Operation {
    /// The tool a request names, before it is resolved: for per-tool admission limits.
    pub(super) fn tool_hint(&self) -> Option<&str> {
        match self {
            Operation::Read { route, .. } => Some(route),
            Operation::Action(body) => Some(&body.action),
            Operation::Preflight(body) => Some(&body.action),
            Operation::Call(body, _) => Some(&body.action),
            Operation::Manifest
            | Operation::Draft { .. }
            | Operation::Task { .. }
            | Operation::Prompts
            | Operation::Prompt { .. }
            | Operation::Session { .. } => None,
        }
    }

    pub(super) fn audit_action(&self) -> String {
        match self {
            Operation::Manifest => "agent.manifest.read".into(),
            Operation::Read { route, .. } => ["agent.read.", route].concat(),
            Operation::Action(_) => "agent.action.propose".into(),
            Operation::Preflight(_) => "agent.action.preflight".into(),
            Operation::Draft { .. } => "agent.draft.read".into(),
            Operation::Call(..) => "agent.tool.call".into(),
            Operation::Task { change, .. } => match change {
                TaskChange::Read => "agent.task.read".into(),
                TaskChange::Cancel => "agent.task.cancel".into(),
                TaskChange::Answer { .. } => "agent.task.update".into(),
            },
            Operation::Prompts => "agent.prompt.list".into(),
            Operation::Prompt { .. } => "agent.prompt.get".into(),
            Operation::Session { method } => format!("agent.mcp.{method}"),
        }
    }
}

/// How a request may authenticate.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// An `Authorization: Bearer op_...` header.
    Bearer,
    /// No header: act as this app (the MCP binding's loopback-only anonymous integration).
    Anonymous { app_id: &'a str },
}

/// What a binding adds to the shared steps: its own check of the caller, and how it names
/// a tool the caller cannot use. Everything else is the pipeline's.
pub trait Binding: Sync {
    /// Recorded as the audit event's `details.binding`; `None` for REST.
    fn name(&self) -> Option<&'static str>;

    /// Right after authentication (steps 2-6): the binding's own check of the caller, such
    /// as an MCP session belonging to the credential that opened it.
    fn check_session(&self) -> Result<(), Failure>;

    /// The answer for a tool the caller may not see: exactly the answer for one that does
    /// not exist, so a hidden tool is no oracle.
    fn hidden_tool(&self, tool: &Tool) -> Failure;

    /// The answer when an action names no write tool: an unknown name, or a read.
    fn not_an_action(&self, found: Option<&Tool>) -> Failure;

    /// A trace context the message itself carries (MCP `_meta`), which wins over the
    /// HTTP headers'.
    fn trace(&self) -> Option<&TraceContext> {
        None
    }
}

/// Request flags Cedar sees in its context.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub idempotency_key: bool,
    pub preflight_hash: bool,
    pub justification: bool,
}
