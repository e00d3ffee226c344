//! What an agent request's terminal audit event records, gathered as the steps run, and
//! the one place that writes it.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::admission::Permit;
use crate::audit::AuditEvent;
use crate::audit::coalesce::Coalesced;
use crate::auth::Principal;
use crate::authz::{Authorizer, Decision};
use crate::catalog::Tool;
use crate::clock::Stopwatch;
use crate::config::Capture;
use crate::gateway::Gateway;
use crate::hashing::{canonical_json, sha256_hex};
use crate::metrics::{Metrics, Stage};
use crate::outcome::{Refused, Reply};
use crate::protocol::Failure;

use super::request::Inbound;

/// What the audit event of a request records beyond the outcome.
#[derive(Debug, Default)]
pub struct Trail {
    pub action: String,
    /// Shared with the steps that run under it: the audit event needs it after they end.
    pub principal: Option<Arc<Principal>>,
    pub client_ip: Option<IpAddr>,
    pub tool: Option<Arc<Tool>>,
    pub policy_ids: Vec<String>,
    pub draft_id: Option<String>,
    pub details: Map<String, Value>,
    /// Held until the request is answered: it counts the call as in flight.
    pub permit: Option<Permit>,
    /// Time spent per pipeline stage, for the metrics.
    pub stages: Vec<(Stage, std::time::Duration)>,
    /// Refused by admission or network policy (or before any step): under a flood such a
    /// refusal may be counted in a summary event instead of one of its own. Refusals
    /// before authentication always may.
    pub coalescable: bool,
}

impl Trail {
    pub(super) fn new(binding: Option<&'static str>) -> Trail {
        let mut trail = Trail {
            action: "agent.request".into(),
            // A read times seven stages (Cedar twice): one allocation, not three.
            stages: Vec::with_capacity(8),
            ..Trail::default()
        };
        if let Some(name) = binding {
            trail.details.insert("binding".into(), name.into());
        }
        trail
    }

    /// Runs `f` and records how long it took as `stage`.
    pub(super) fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let started = Stopwatch::start();
        let out = f();
        self.stages.push((stage, started.elapsed()));
        out
    }

    /// Records a payload as the config says: its hash, and a redacted copy if enabled.
    /// A decision's shadow side: recorded in the audit event, and counted where the
    /// shadow policies would have changed the outcome. Never enforced.
    pub(super) fn record_shadow(&mut self, decision: &Decision, authorizer: &Authorizer, metrics: &Metrics) {
        let Some(shadow) = &decision.shadow else {
            return;
        };
        self.details.insert(
            "shadow".into(),
            json!({"allowed": shadow.allowed, "policyIds": shadow.policy_ids}),
        );
        for id in decision
            .shadow_disagreement(authorizer.shadow_ids())
            .unwrap_or_default()
        {
            metrics.policy_shadow_disagreement(&id);
        }
    }

    pub(super) fn payload(&mut self, gw: &Gateway, payload: &Value) {
        self.details
            .insert("payload_sha256".into(), payload_hash(payload).into());
        if gw.config.audit_capture == Capture::Redacted {
            self.details.insert("payload".into(), redact(payload));
        }
    }
}

/// Writes the terminal audit event and hands the outcome back. If the event cannot be
/// made durable, the outcome becomes an internal error instead of an unaudited answer.
pub(super) async fn finish(
    gw: &Gateway,
    inbound: &Inbound,
    mut trail: Trail,
    outcome: Result<Reply, Refused>,
    started: Stopwatch,
) -> Result<Reply, Refused> {
    let code = match &outcome {
        Ok(reply) => reply.code,
        Err(refused) => refused.failure.code,
    };
    let client_ip = trail.client_ip.unwrap_or(inbound.peer);
    let refusal = matches!(&outcome, Err(refused) if refused.internal.is_none());
    if refusal
        && (trail.coalescable || trail.principal.is_none())
        && gw
            .refusals
            .note(client_ip, code, &inbound.request_id, gw.clock.now_ms())
            == Coalesced::Summarized
    {
        // Accounted for in the source's summary event (written within a second).
        gw.metrics.coalesced_refusal();
        gw.metrics.request(None, None, code.name, started.elapsed());
        drop(trail.permit);
        return outcome;
    }
    let mut event = AuditEvent::for_request(
        std::mem::take(&mut trail.action),
        code,
        gw.now_iso(),
        &inbound.audit_facts(client_ip),
    );
    if let Some(p) = &trail.principal {
        event.org_id = Some(p.org_id.clone());
        event.app_id = Some(p.app.id.clone());
        event.key_id = Some(p.key.id.clone());
        event.actor_user_id = Some(p.actor_user_id.clone());
    }
    if let Some(tool) = &trail.tool {
        event.tool = Some(tool.name.clone());
        event.risk = Some(tool.risk.as_str().into());
        event.plugin = Some(tool.plugin.name().into());
        event.plugin_digest = Some(tool.plugin.digest().into());
    }
    event.policy_ids = std::mem::take(&mut trail.policy_ids);
    event.draft_id = trail.draft_id.take();
    event.details.extend(std::mem::take(&mut trail.details));
    // Why a request was refused, when the refusal says (`details.reason`), is kept too.
    if let Err(refused) = &outcome
        && let Some(reason) = refused.failure.details.get("reason")
    {
        event.details.entry("reason").or_insert_with(|| reason.clone());
    }
    if let Err(refused) = &outcome
        && let Some(internal) = &refused.internal
    {
        // An expected 4xx (a plugin's own `invalid-input` or `not-found`) is an answer, not
        // an operational problem: only 5xx are warnings.
        if code.status >= 500 {
            tracing::warn!(request_id = %inbound.request_id, error = %internal, code = code.name, "request failed");
        } else {
            tracing::debug!(request_id = %inbound.request_id, error = %internal, code = code.name, "request refused");
        }
        event.details.insert("error".into(), internal.clone().into());
    }
    // Two clock reads, before and after the audit event, serve every figure below.
    let before_audit = started.elapsed();
    event.latency_us = Some(i64::try_from(before_audit.as_micros()).unwrap_or(i64::MAX));
    let tool_name = event.tool.clone();

    let recorded = gw.audit.record(event).await;
    let answered = started.elapsed();
    gw.metrics.stage(Stage::Audit, answered.saturating_sub(before_audit));
    for &(stage, elapsed) in &trail.stages {
        gw.metrics.stage(stage, elapsed);
    }
    let app = trail.principal.as_ref().map(|p| p.app.id.as_str());
    gw.metrics.request(tool_name.as_deref(), app, code.name, answered);
    tracing::info!(
        target: "openport::access",
        request_id = %inbound.request_id,
        method = %inbound.method,
        path = %inbound.path,
        status = code.status,
        code = code.name,
        tool = tool_name.as_deref().unwrap_or(""),
        app_id = trail.principal.as_ref().map_or("", |p| p.app.id.as_str()),
        key_id = trail.principal.as_ref().map_or("", |p| p.key.id.as_str()),
        client = %client_ip,
        user_agent = bounded(inbound.user_agent.as_deref().unwrap_or(""), 256),
        latency_us = u64::try_from(answered.as_micros()).unwrap_or(u64::MAX),
    );
    drop(trail.permit);
    if let Err(e) = recorded {
        tracing::error!(request_id = %inbound.request_id, error = %e, "audit event not durable; refusing to answer");
        return Err(Failure::internal().into());
    }
    outcome
}

/// At most `max` bytes of `text`, cut at a character boundary (log lines stay bounded).
fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Payloads are stored in the audit trail as this hash, and in clear only when the config
/// asks for redacted capture.
pub fn payload_hash(payload: &Value) -> String {
    sha256_hex(canonical_json(payload).as_bytes())
}

/// Keys whose values never reach the audit trail, even with redacted capture.
const SENSITIVE_KEYS: &[&str] = &[
    "title",
    "notes",
    "description",
    "password",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "email",
];

/// The payload with sensitive values replaced by `[redacted]`, at any depth.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let sensitive = SENSITIVE_KEYS.iter().any(|s| k.to_ascii_lowercase().contains(s));
                    (
                        k.clone(),
                        if sensitive {
                            Value::String("[redacted]".into())
                        } else {
                            redact(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}
