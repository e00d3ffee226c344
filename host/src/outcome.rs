//! What a governed request ends in, whatever the binding: a [`Reply`] or a [`Refused`], and
//! the one mapping from each refusing component's error to its reason code.

use crate::admission::{Limit, Refusal as RateRefusal};
use crate::auth::AuthFailure;
use crate::plugin::interaction::{InputAsk, Progress};
use crate::plugin::{CallError, Content, GuestError};
use crate::protocol::codes::{self, Code};
use crate::protocol::{Data, Failure};
use crate::store::TaskRecord;

/// A successful result.
#[derive(Debug)]
pub struct Reply {
    pub data: Data,
    pub code: Code,
    /// A read's content blocks, for bindings that render them (MCP); REST sends `data`.
    pub content: Vec<Content>,
    /// A read that asks the client for input instead of answering (MCP `input_required`).
    pub asked: Option<InputAsk>,
    /// Progress the read reported, when the client asked for it.
    pub progress: Vec<Progress>,
    /// The task a read became, or the one a task request names (MCP Tasks).
    pub task: Option<TaskRecord>,
}

impl Reply {
    pub fn ok(data: impl Into<Data>) -> Self {
        Reply {
            data: data.into(),
            code: codes::SUCCESS,
            content: Vec::new(),
            asked: None,
            progress: Vec::new(),
            task: None,
        }
    }
}

/// A refusal or failure, with what the audit event and the response need.
#[derive(Debug)]
pub struct Refused {
    pub failure: Failure,
    pub headers: Vec<(&'static str, String)>,
    /// Internal detail for the log and the audit event; never sent to the client.
    pub internal: Option<String>,
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Self {
        Refused {
            failure,
            headers: Vec::new(),
            internal: None,
        }
    }
}

impl Refused {
    /// A failure whose detail goes to the log and audit event, never to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Refused {
            failure: Failure::internal(),
            headers: Vec::new(),
            internal: Some(detail.to_string()),
        }
    }

    /// A public failure with an internal detail for the log and audit event.
    pub fn with_internal(failure: Failure, detail: impl std::fmt::Display) -> Self {
        Refused {
            failure,
            headers: Vec::new(),
            internal: Some(detail.to_string()),
        }
    }
}

/// Steps (2) to (6): why a credential was not accepted.
pub fn auth_refusal(failure: AuthFailure) -> Refused {
    match failure {
        AuthFailure::Missing => Failure::new(codes::TOKEN_INVALID, "Missing agent token"),
        AuthFailure::Invalid => Failure::new(codes::TOKEN_INVALID, "Invalid agent token"),
        AuthFailure::Expired => Failure::new(codes::TOKEN_EXPIRED, "Agent token expired"),
        AuthFailure::Misconfigured => Failure::new(codes::FORBIDDEN, "Agent app is misconfigured"),
    }
    .into()
}

/// Step (8): an admission refusal, with `Retry-After` and the `RateLimit` headers.
pub fn rate_refusal(refusal: &RateRefusal) -> Refused {
    let (code, message) = match refusal.limit {
        Limit::PerKey | Limit::PerApp | Limit::PerTool | Limit::PerTenant | Limit::Unauthenticated => {
            (codes::RATE_LIMITED, "Rate limit exceeded")
        }
        Limit::Quota => (codes::QUOTA_EXCEEDED, "Quota exceeded"),
        Limit::Concurrency => (codes::CONCURRENCY_LIMITED, "Too many calls in flight"),
        Limit::Overloaded => (codes::OVERLOADED, "The gateway is overloaded"),
    };
    let failure = Failure::new(code, message)
        .with("retry_after_ms", refusal.retry_after_ms)
        .with("limit", refusal.limit.name());
    let mut headers = vec![("Retry-After", refusal.retry_after_seconds().to_string())];
    headers.extend(refusal.headers());
    Refused {
        failure,
        headers,
        internal: None,
    }
}

/// Maps a failed plugin call. Messages the agent sees are fixed strings or the plugin's
/// own words for its documented input and not-found cases; everything else is sanitized.
pub fn call_refusal(error: CallError, read: bool) -> Refused {
    let internal = error.to_string();
    let busy = matches!(error, CallError::Busy(_));
    let failure = match error {
        CallError::Timeout => Failure::new(codes::PLUGIN_TIMEOUT, "The tool did not answer in time"),
        CallError::Guest(GuestError::InvalidInput(message)) => {
            let code = if read { codes::VALIDATION } else { codes::ACTION_INVALID };
            Failure::new(code, sanitize(&message))
        }
        CallError::Guest(GuestError::NotFound(message)) => Failure::new(codes::NOT_FOUND, sanitize(&message)),
        CallError::Guest(GuestError::Conflict(message)) => Failure::new(codes::ACTION_INVALID, sanitize(&message)),
        CallError::Guest(GuestError::Unavailable(_))
        | CallError::Guest(GuestError::UnknownTool(_))
        | CallError::Instantiate(_) => Failure::new(codes::PLUGIN_UNAVAILABLE, "The tool is unavailable"),
        CallError::Busy(budget) => Failure::new(codes::OVERLOADED, "The tool is busy; retry shortly")
            .with("reason", format!("plugin_{}", budget.name())),
        CallError::Guest(GuestError::Internal(_))
        | CallError::Trap(_)
        | CallError::OutOfMemory
        | CallError::OutputTooLarge { .. } => Failure::new(codes::EXECUTION_FAILED, "The tool failed"),
    };
    let mut refused = Refused::with_internal(failure, internal);
    if busy {
        refused.headers.push(("Retry-After", "1".into()));
    }
    refused
}

/// A State Witness that could not capture: fail closed, nothing executes.
pub fn witness_refusal(error: CallError) -> Refused {
    Refused::with_internal(
        Failure::new(codes::WITNESS_UNAVAILABLE, "The state witness is unavailable"),
        error,
    )
}

/// Plugin text shown to agents: one short line, no control characters.
fn sanitize(message: &str) -> String {
    message.chars().filter(|c| !c.is_control()).take(200).collect()
}
