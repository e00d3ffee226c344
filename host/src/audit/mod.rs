//! The tamper-evident audit trail (SPEC section 8).
//!
//! One writer at a time holds the chain: it takes events in arrival order, computes
//! `event_hash = sha256(JCS(event with prev_event_hash))`, and appends a batch at once
//! (group commit; [`writer`] says who writes, `store/journal.rs` where it goes on the
//! embedded store). [`AuditLog::record`] resolves only after the batch holding the event is
//! durable, so every event a client was answered for is: a request is acknowledged after its
//! audit event, never before.

mod canonical;
pub mod checkpoint;
pub mod coalesce;
mod verify;
mod writer;

use std::net::IpAddr;
use std::path::Path;

use serde_json::{Map, Value};

use crate::protocol::codes::{Code, Reason};
use crate::protocol::ids::{self, Kind};
use crate::store::{AuditRow, ChainReader, StoreError};

#[cfg(test)]
pub(crate) use verify::assert_intact_with;
pub use verify::{Anchors, BrokenLink, VerifyReport, verify_chain, verify_store};
pub use writer::{AuditLog, PruneReport, Signing};

/// The `prev_event_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit writer stopped")]
    WriterStopped,
    #[error("audit write failed: {0}")]
    Write(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Outcome class of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    Denied,
}

impl Status {
    /// The outcome class of a reason code: the one rule every plane's events follow.
    /// Refusals by governance (credentials, grants, policy, admission, conflicts, and the
    /// auto-execute gate) are `denied`; everything else that is not a success `failed`.
    pub fn of(code: Code) -> Status {
        match code.reason {
            Reason::Success | Reason::IdempotencyReplay => Status::Success,
            Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::Forbidden
            | Reason::ScopeDenied
            | Reason::PolicyDenied
            | Reason::StepUpRequired
            | Reason::StepUpInvalid
            | Reason::RateLimited
            | Reason::QuotaExceeded
            | Reason::ConcurrencyLimited
            | Reason::IdempotencyMismatch
            | Reason::IdempotencyInProgress
            | Reason::PreconditionFailed
            | Reason::PreflightRequired
            | Reason::IdempotencyRequired
            | Reason::AutoExecuteDisabled
            | Reason::AutoExecuteDenied
            | Reason::AutoExecuteExpired
            | Reason::AdminUnauthorized
            | Reason::AdminForbidden
            | Reason::RequestStateInvalid => Status::Denied,
            Reason::Validation
            | Reason::InternalError
            | Reason::ActionUnknown
            | Reason::ActionInvalid
            | Reason::NotFound
            | Reason::DraftNotFound
            | Reason::DraftAlreadyFinal
            | Reason::PreflightMismatch
            | Reason::PreflightNotFound
            | Reason::ExecutionFailed
            | Reason::ExecutionIndeterminate
            | Reason::Overloaded
            | Reason::RequestTooLarge
            | Reason::PluginTimeout
            | Reason::PluginUnavailable
            | Reason::WitnessUnavailable
            | Reason::DraftExpired
            | Reason::InputRequired
            | Reason::AdminConflict => Status::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Denied => "denied",
        }
    }
}

/// An event before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub org_id: Option<String>,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub actor_user_id: Option<String>,
    pub performed_by_user_id: Option<String>,
    pub action: String,
    pub status: Status,
    pub code: String,
    pub request_id: Option<String>,
    pub draft_id: Option<String>,
    pub execution_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Map<String, Value>,
    pub tool: Option<String>,
    pub risk: Option<String>,
    pub policy_ids: Vec<String>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub latency_us: Option<i64>,
    pub created_at: String,
}

/// The request an event answers, as every plane records it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The client's address (after trusted proxies, where the plane applies them).
    pub client_ip: IpAddr,
    pub user_agent: Option<&'a str>,
}

/// The one truncation rule for what a client sends that the trail keeps in clear.
const MAX_USER_AGENT_CHARS: usize = 256;
const MAX_PATH_CHARS: usize = 512;

/// The first `max` characters of `text`, copied once.
fn first_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

impl AuditEvent {
    /// An event whose status follows from its code ([`Status::of`]).
    pub fn new(action: impl Into<String>, code: Code, created_at: String) -> Self {
        AuditEvent {
            org_id: None,
            app_id: None,
            key_id: None,
            actor_user_id: None,
            performed_by_user_id: None,
            action: action.into(),
            status: Status::of(code),
            code: code.name.to_string(),
            request_id: None,
            draft_id: None,
            execution_id: None,
            ip: None,
            user_agent: None,
            details: Map::new(),
            tool: None,
            risk: None,
            policy_ids: Vec::new(),
            plugin: None,
            plugin_digest: None,
            latency_us: None,
            created_at,
        }
    }

    /// The terminal event of a request, on any plane: the request's id, client, user agent,
    /// method and path, each bounded by the same rule.
    pub fn for_request(action: impl Into<String>, code: Code, created_at: String, request: &RequestFacts<'_>) -> Self {
        let mut event = AuditEvent::new(action, code, created_at);
        event.request_id = Some(request.request_id.to_string());
        event.ip = Some(request.client_ip.to_string());
        event.user_agent = request.user_agent.map(|ua| first_chars(ua, MAX_USER_AGENT_CHARS));
        event.details.insert("method".into(), request.method.into());
        event
            .details
            .insert("path".into(), first_chars(request.path, MAX_PATH_CHARS).into());
        event
    }

    /// The row without its chain hashes, and its canonical form split for the writer. The
    /// details and policy ids go on as the split's text, so their trees are freed here, on
    /// the thread that built them: the row goes on to the batch's leader, maybe another
    /// thread, and a block freed by another thread than its own costs the allocator more.
    fn prepare(self, node: &str) -> (AuditRow, canonical::Split) {
        let mut row = self.unchained_row(String::new(), node);
        let split = canonical::split(&row);
        row.details = Value::Null;
        row.policy_ids = Vec::new();
        (row, split)
    }

    /// The row chained after `prev_event_hash`, with its `event_hash`.
    fn into_row(self, prev_event_hash: String, node: &str) -> AuditRow {
        let mut row = self.unchained_row(prev_event_hash, node);
        row.event_hash = event_hash(&row);
        row
    }

    fn unchained_row(self, prev_event_hash: String, node: &str) -> AuditRow {
        AuditRow {
            seq: 0,
            node: node.to_string(),
            id: ids::new_id(Kind::Audit),
            org_id: self.org_id,
            app_id: self.app_id,
            key_id: self.key_id,
            actor_user_id: self.actor_user_id,
            performed_by_user_id: self.performed_by_user_id,
            action: self.action,
            status: self.status.as_str().to_string(),
            code: self.code,
            request_id: self.request_id,
            draft_id: self.draft_id,
            execution_id: self.execution_id,
            ip: self.ip,
            user_agent: self.user_agent,
            details: Value::Object(self.details),
            tool: self.tool,
            risk: self.risk,
            policy_ids: self.policy_ids,
            plugin: self.plugin,
            plugin_digest: self.plugin_digest,
            latency_us: self.latency_us,
            created_at: self.created_at,
            prev_event_hash,
            event_hash: String::new(),
        }
    }
}

/// The signed checkpoints to check a chain against: those in the database and in every
/// given log file, trusted only under the public key (or the secret key) at `key`.
pub fn anchors(chain: &ChainReader, key: Option<&Path>, logs: &[std::path::PathBuf]) -> Result<Anchors, String> {
    let key = key
        .map(checkpoint::load_verifying_key)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut checkpoints = chain.checkpoints().map_err(|e| e.to_string())?;
    for log in logs {
        // A configured log that is not there yet holds no checkpoints; one named on the
        // command line must exist.
        if log.exists() {
            // A log may hold several nodes' checkpoints: only this chain's count here.
            checkpoints.extend(
                checkpoint::read_log(log)?
                    .into_iter()
                    .filter(|c| c.node == chain.node()),
            );
        }
    }
    Ok(Anchors { checkpoints, key })
}

/// `hex(sha256(JCS(every field but event_hash)))`.
pub fn event_hash(row: &AuditRow) -> String {
    canonical::hash(&canonical::split(row), &row.prev_event_hash)
}
