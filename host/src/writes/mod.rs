//! The write lifecycle (SPEC section 6): preflight impact binding and draft-first actions.
//!
//! An action becomes a draft unless `execute: true` and the auto-execute gate passes.
//! The gate reads the app's auto-execute policy; an app without one never auto-executes,
//! and the draft says why in `autoExecuteDeniedCode`.

pub mod recovery;
pub mod review;
pub mod step_up;

use serde_json::{Map, Value, json};
use time::Duration;

use crate::app_policy::{AutoExecutePolicy, WindowClosed};
use crate::auth::Principal;
use crate::catalog::Tool;
use crate::clock;
use crate::gateway::Gateway;
use crate::hashing::jcs_sha256;
use crate::outcome::{Refused, call_refusal, witness_refusal};
use crate::plugin::CallContext;
use crate::protocol::codes::{self, Code};
use crate::protocol::ids::{self, Kind};
use crate::protocol::{ActionBody, Failure};
use crate::store::{
    DraftRecord, DraftStatus, ExecutionStatus, IdempotencyScope, PreflightRecord, Reservation, WITHDRAWN_BY_AGENT,
};
use crate::tool::Risk;

/// How long a preflight binding lives.
const PREFLIGHT_TTL: Duration = Duration::minutes(10);

/// What the reference returns as the review location.
pub const REVIEW_PATH: &str = "/agent-admin/v1/drafts";

/// An action that passed authorization and validation.
#[derive(Debug)]
pub struct Proposal<'a> {
    pub tool: &'a Tool,
    pub payload: Value,
    pub body: &'a ActionBody,
    pub preflight: Option<&'a PreflightRecord>,
    /// Whether the caller asked to execute now, and Cedar's word on it (the pipeline's).
    pub auto_execute: AutoExecute,
}

/// The caller's request to execute now, decided once by the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoExecute {
    /// A draft was asked for (no `execute: true`, or `forceDraft`).
    NotRequested,
    /// `execute: true`; `cedar_allows` is Cedar's `auto_execute` decision for the call.
    Requested { cedar_allows: bool },
}

/// What `/actions` did with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A new draft waits for review.
    Drafted,
    /// The auto-execute gate passed and the action ran.
    Executed,
    /// A repeated idempotency key: the first request's draft or execution again.
    Replayed,
}

impl Disposition {
    /// The audit action of the request.
    pub fn audit_action(self) -> &'static str {
        match self {
            Disposition::Executed => "agent.action.auto_execute",
            Disposition::Drafted | Disposition::Replayed => "agent.action.draft.created",
        }
    }
}

/// The result of `/actions`: the response data and what the audit event adds.
#[derive(Debug)]
pub struct Proposed {
    pub data: Value,
    pub draft_id: String,
    pub audit_details: Map<String, Value>,
    /// `common.success`, or `agent.idempotency_replay` for a replayed execution.
    pub code: Code,
    pub disposition: Disposition,
}

/// The impact of a write from the adapter's `plan` on live state, with its binding hash
/// `hex(sha256(JCS({action, payload, impact})))`.
async fn impact(context: &CallContext, tool: &Tool, payload: &Value) -> Result<(Value, String), Refused> {
    let planned = tool
        .plugin
        .plan(context, &tool.name, &crate::hashing::canonical_json(payload))
        .await
        .map_err(|e| call_refusal(e, false))?;
    let mut impact = match planned.detail {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("detail".into(), other);
            map
        }
    };
    impact
        .entry("summary")
        .or_insert_with(|| Value::String(planned.summary));
    let impact = Value::Object(impact);
    let hash = jcs_sha256(&json!({"action": tool.name, "payload": payload, "impact": impact}));
    Ok((impact, hash))
}

/// The State Witness of a write, when a witness plugin watches the tool: the captured
/// state and `hex(sha256(JCS(witness)))`. A witness that fails fails the request closed.
async fn witness(
    gw: &Gateway,
    context: &CallContext,
    tool: &Tool,
    payload: &Value,
) -> Result<Option<(Value, String)>, Refused> {
    let catalog = gw.catalog();
    let Some(plugin) = catalog.witness(&tool.name) else {
        return Ok(None);
    };
    let captured = plugin
        .capture(context, &tool.name, &crate::hashing::canonical_json(payload))
        .await
        .map_err(witness_refusal)?;
    let hash = jcs_sha256(&captured);
    Ok(Some((captured, hash)))
}

/// `POST /preflight`: computes and stores the impact binding.
pub async fn preflight(
    gw: &Gateway,
    principal: &Principal,
    context: &CallContext,
    tool: &Tool,
    payload: Value,
) -> Result<Value, Refused> {
    let (impact, impact_hash) = impact(context, tool, &payload).await?;
    let witnessed = witness(gw, context, tool, &payload).await?;
    let (state_witness, state_witness_hash) = witnessed.map_or((None, None), |(w, h)| (Some(w), Some(h)));
    let now = gw.clock.now();
    let record = PreflightRecord {
        id: ids::new_id(Kind::Preflight),
        app_id: principal.app.id.clone(),
        key_id: principal.key.id.clone(),
        actor_user_id: principal.actor_user_id.clone(),
        action: tool.name.clone(),
        payload,
        impact: impact.clone(),
        impact_hash: impact_hash.clone(),
        state_witness: state_witness.clone(),
        state_witness_hash: state_witness_hash.clone(),
        plugin_digest: tool.plugin.digest().to_string(),
        created_at: clock::iso(now),
        expires_at: clock::iso(now + PREFLIGHT_TTL),
    };
    gw.store.preflights.insert(&record).map_err(Refused::internal)?;
    Ok(json!({
        "action": tool.name,
        "risk": tool.risk,
        "requiresConfirmation": tool.requires_confirmation,
        "impact": impact,
        "impactHash": impact_hash,
        "stateWitness": state_witness,
        "stateWitnessHash": state_witness_hash,
        "preflightId": record.id,
    }))
}

/// Loads a preflight bound to this app, key and actor, unexpired, for this action.
pub fn bound_preflight(
    gw: &Gateway,
    principal: &Principal,
    id: &str,
    action: &str,
) -> Result<PreflightRecord, Refused> {
    let not_found = || Refused::from(Failure::new(codes::PREFLIGHT_NOT_FOUND, "Preflight not found"));
    let record = gw
        .store
        .preflights
        .get(id)
        .map_err(Refused::internal)?
        .ok_or_else(not_found)?;
    let bound = record.app_id == principal.app.id
        && record.key_id == principal.key.id
        && record.actor_user_id == principal.actor_user_id;
    let live = clock::parse_iso(&record.expires_at).is_some_and(|t| t > gw.clock.now());
    if !bound || !live {
        return Err(not_found());
    }
    if record.action != action {
        return Err(Failure::new(codes::PREFLIGHT_MISMATCH, "Preflight mismatch")
            .with("reason", "action")
            .into());
    }
    Ok(record)
}

/// The auto-execute gate (SPEC 6), in its order. `None`: the action may run now;
/// otherwise the code the draft reports as `autoExecuteDeniedCode`. An app without an
/// auto-execute policy has it disabled for every class.
fn auto_execute_gate(
    body: &ActionBody,
    policy: &AutoExecutePolicy,
    tool: &Tool,
    impact_hash: &str,
    cedar_allows: bool,
    now: time::OffsetDateTime,
) -> Option<Code> {
    let closed = |c: WindowClosed| match c {
        WindowClosed::Disabled => codes::AUTO_EXECUTE_DISABLED,
        WindowClosed::Expired => codes::AUTO_EXECUTE_EXPIRED,
        WindowClosed::NotAllowed => codes::AUTO_EXECUTE_DENIED,
    };
    if tool.risk >= Risk::High {
        let Some(class) = &policy.high_risk else {
            return Some(codes::AUTO_EXECUTE_DISABLED);
        };
        if let Err(c) = class.window(&tool.name, now) {
            return Some(closed(c));
        }
        if !body.has_justification() {
            return Some(codes::ACTION_INVALID);
        }
        if class.require_idempotency && body.idempotency_key.is_none() {
            return Some(codes::IDEMPOTENCY_REQUIRED);
        }
        if class.require_preflight {
            match &body.preflight_hash {
                None => return Some(codes::PREFLIGHT_REQUIRED),
                Some(hash) if hash != impact_hash => return Some(codes::PREFLIGHT_MISMATCH),
                Some(_) => {}
            }
        }
    } else {
        let Some(class) = &policy.writes else {
            return Some(codes::AUTO_EXECUTE_DISABLED);
        };
        if let Err(c) = class.window(&tool.name, now) {
            return Some(closed(c));
        }
    }
    // Ours: a Cedar `auto_execute` permit is needed too, and critical never runs unattended.
    if !cedar_allows || tool.risk == Risk::Critical {
        return Some(codes::AUTO_EXECUTE_DENIED);
    }
    None
}

/// `POST /actions`: the impact is computed from live state, and a draft is stored.
/// `POST /actions` with its idempotency key, if any (SPEC 6): a durable reservation is taken
/// before any effect; the same key with the same request gets the same draft again (or its
/// stored execution, `agent.idempotency_replay`); a different request is
/// `agent.idempotency_mismatch`; one still running is `agent.idempotency_in_progress`.
pub async fn propose(
    gw: &Gateway,
    principal: &Principal,
    context: &CallContext,
    proposal: Proposal<'_>,
) -> Result<Proposed, Refused> {
    let Some(key) = proposal.body.idempotency_key.clone() else {
        return create(gw, principal, context, proposal).await;
    };
    if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) {
        return Err(Failure::validation(
            &["idempotencyKey"],
            "`idempotencyKey` must be 1 to 255 printable characters",
        )
        .into());
    }
    let scope = IdempotencyScope {
        app_id: &principal.app.id,
        key_id: &principal.key.id,
        idempotency_key: &key,
    };
    let fingerprint = jcs_sha256(&json!({"action": proposal.tool.name, "payload": proposal.payload}));
    let now = gw.clock.now();
    let ttl = Duration::seconds(i64::try_from(gw.config.idempotency_ttl_seconds).unwrap_or(i64::MAX));
    let reservation = gw
        .store
        .idempotency
        .reserve(scope, &fingerprint, &clock::iso(now), &clock::iso(now + ttl))
        .map_err(Refused::internal)?;
    match reservation {
        Reservation::Taken => {
            let result = create(gw, principal, context, proposal).await;
            let stored = match &result {
                Ok(proposed) => gw.store.idempotency.complete(scope, &proposed.draft_id),
                Err(_) => gw.store.idempotency.release(scope),
            };
            stored.map_err(Refused::internal)?;
            result
        }
        Reservation::Held { fingerprint: other, .. } if other != fingerprint => Err(Failure::new(
            codes::IDEMPOTENCY_MISMATCH,
            "This idempotency key was used for a different request",
        )
        .into()),
        Reservation::Held { draft_id: None, .. } => Err(Refused {
            failure: Failure::new(
                codes::IDEMPOTENCY_IN_PROGRESS,
                "The first request with this key is still running",
            )
            .with("retry_after_ms", 1000),
            headers: vec![("Retry-After", "1".to_string())],
            internal: None,
        }),
        Reservation::Held {
            draft_id: Some(draft_id),
            ..
        } => replay(gw, &draft_id),
    }
}

/// The answer to a repeated key: the stored execution if the draft ran (a failure replays
/// as a failure), else the same draft again.
fn replay(gw: &Gateway, draft_id: &str) -> Result<Proposed, Refused> {
    let draft = gw
        .store
        .drafts
        .get(draft_id)
        .map_err(Refused::internal)?
        .ok_or_else(|| Refused::internal("idempotent draft vanished"))?;
    let mut audit_details = Map::new();
    audit_details.insert("replayed".into(), true.into());
    if let Some(execution) = gw.store.drafts.latest_execution(draft_id).map_err(Refused::internal)? {
        let unsettled = match execution.status {
            ExecutionStatus::Running => Some((
                codes::IDEMPOTENCY_IN_PROGRESS,
                "The first request with this key is still running",
            )),
            ExecutionStatus::Indeterminate => Some((
                codes::EXECUTION_INDETERMINATE,
                "The outcome of this execution is unknown; an operator must resolve it",
            )),
            ExecutionStatus::Success | ExecutionStatus::Failed => None,
        };
        if let Some((code, message)) = unsettled {
            return Err(Failure::new(code, message).with("execution_id", execution.id).into());
        }
        return Ok(Proposed {
            data: json!({
                "status": "executed",
                "replayed": true,
                "code": codes::IDEMPOTENCY_REPLAY.name,
                "draft": {"id": draft.id, "status": draft.status},
                "execution": execution,
            }),
            draft_id: draft.id,
            audit_details,
            code: codes::IDEMPOTENCY_REPLAY,
            disposition: Disposition::Replayed,
        });
    }
    Ok(Proposed {
        data: json!({
            "status": "draft",
            "replayed": true,
            "draft": public_draft(&draft),
            "autoExecuteDeniedCode": Value::Null,
            "review_path": REVIEW_PATH,
        }),
        draft_id: draft.id,
        audit_details,
        code: codes::SUCCESS,
        disposition: Disposition::Replayed,
    })
}

/// Creates the draft: impact from live state, preflight and State Witness checks.
async fn create(
    gw: &Gateway,
    principal: &Principal,
    context: &CallContext,
    proposal: Proposal<'_>,
) -> Result<Proposed, Refused> {
    let Proposal {
        tool,
        payload,
        body,
        preflight,
        auto_execute,
    } = proposal;
    let (impact, impact_hash) = impact(context, tool, &payload).await?;
    // A plugin upgraded since the preflight computed the impact under other code: the
    // binding's provenance changed, so it no longer binds.
    if let Some(preflight) = preflight
        && preflight.plugin_digest != tool.plugin.digest()
    {
        return Err(Failure::new(codes::PREFLIGHT_MISMATCH, "Preflight mismatch")
            .with("reason", "plugin_changed")
            .into());
    }
    // A payload swapped after preflight is caught first: its impact is not the one bound.
    if let Some(preflight) = preflight
        && preflight.impact_hash != impact_hash
    {
        return Err(Failure::new(codes::PREFLIGHT_MISMATCH, "Preflight mismatch")
            .with("reason", "impact_changed")
            .into());
    }
    // The State Witness at draft creation; a supplied hash must match it (SPEC 6).
    let witnessed = witness(gw, context, tool, &payload).await?;
    let supplied = body
        .state_witness_hash
        .clone()
        .or_else(|| preflight.and_then(|p| p.state_witness_hash.clone()));
    let current = witnessed.as_ref().map(|(_, hash)| hash.clone());
    if let Some(supplied) = &supplied {
        let reason = match &current {
            None => Some("state_witness_unsupported"),
            Some(current) if current != supplied => Some("state_witness_mismatch"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Err(Failure::new(codes::PRECONDITION_FAILED, "State precondition failed")
                .with("action", tool.name.clone())
                .with("reason", reason)
                .into());
        }
    }
    let now = gw.clock.now();
    // `None`: no auto-execution asked for; `Some(None)`: the gate passed; `Some(Some(code))`:
    // the gate said no, and the draft says why.
    let gate = match auto_execute {
        AutoExecute::NotRequested => None,
        AutoExecute::Requested { cedar_allows } => Some(auto_execute_gate(
            body,
            &principal.app.auto_execute,
            tool,
            &impact_hash,
            cedar_allows,
            now,
        )),
    };
    let denied = gate.flatten();
    let runs_now = gate == Some(None);
    // Step-up (SPEC 6): a policy may make high-risk auto-execution wait for a reviewer's
    // grant. Asking to execute without a valid one is refused outright, not drafted.
    if runs_now && tool.risk >= Risk::High && principal.app.auto_execute.requires_step_up() {
        step_up::redeem(gw, principal, body)?;
    }
    let review_window = Duration::seconds(i64::try_from(gw.config.draft_review_window_seconds).unwrap_or(i64::MAX));
    let draft = DraftRecord {
        id: ids::new_id(Kind::Draft),
        app_id: principal.app.id.clone(),
        key_id: principal.key.id.clone(),
        org_id: principal.org_id.clone(),
        actor_user_id: principal.actor_user_id.clone(),
        action_type: tool.name.clone(),
        payload,
        status: DraftStatus::Draft,
        risk: tool.risk.as_str().into(),
        requires_confirmation: tool.requires_confirmation,
        auto_execute_requested: body.execute == Some(true),
        justification: body.justification.clone(),
        idempotency_key: body.idempotency_key.clone(),
        request_id: context.request_id.clone(),
        impact: Some(impact),
        impact_hash: Some(impact_hash),
        preflight_hash: body
            .preflight_hash
            .clone()
            .or_else(|| preflight.map(|p| p.impact_hash.clone())),
        preflight_state_witness_hash: current,
        plugin: tool.plugin.name().into(),
        plugin_digest: tool.plugin.digest().into(),
        created_at: clock::iso(now),
        updated_at: clock::iso(now),
        expires_at: clock::iso(now + review_window),
        confirmed_at: None,
        canceled_at: None,
        confirmed_by_user_id: None,
        canceled_by: None,
    };
    gw.store.drafts.insert(&draft).map_err(Refused::internal)?;
    if runs_now {
        // The gate passed: execute now, through the same checks as a human approval.
        let runner = review::Reviewer {
            name: "auto-execute",
            org_id: None,
            request_id: &context.request_id,
        };
        let result = review::approve(gw, &runner, &draft.id, None).await?;
        let mut audit_details = Map::new();
        audit_details.insert("actionType".into(), tool.name.clone().into());
        audit_details.insert("autoExecuted".into(), true.into());
        return Ok(Proposed {
            data: json!({
                "status": "executed",
                "draft": {"id": draft.id, "status": "confirmed"},
                "execution": result["execution"],
            }),
            draft_id: draft.id,
            audit_details,
            code: codes::SUCCESS,
            disposition: Disposition::Executed,
        });
    }
    let mut audit_details = Map::new();
    audit_details.insert("actionType".into(), tool.name.clone().into());
    audit_details.insert("autoExecuteRequested".into(), draft.auto_execute_requested.into());
    audit_details.insert("autoExecuteDeniedCode".into(), denied.map(|c| c.name).into());
    Ok(Proposed {
        data: json!({
            "status": "draft",
            "draft": public_draft(&draft),
            "autoExecuteDeniedCode": denied.map(|c| c.name),
            "review_path": REVIEW_PATH,
        }),
        draft_id: draft.id,
        audit_details,
        code: codes::SUCCESS,
        disposition: Disposition::Drafted,
    })
}

/// `GET /drafts/{id}`: a draft of this app with its latest execution, after waiting up to
/// `wait_seconds` for it to leave review. The wait is on the gateway's clock, polled five
/// times a second, and never takes more polls than the real wait has (should that clock
/// stand still). Another app's draft answers exactly like a missing one.
pub async fn draft_status(gw: &Gateway, app_id: &str, id: &str, wait_seconds: u64) -> Result<Value, Refused> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(200);
    let mine = || -> Result<DraftRecord, Refused> {
        let draft = gw.store.drafts.get(id).map_err(Refused::internal)?;
        draft
            .filter(|d| d.app_id == app_id)
            .ok_or_else(|| Failure::new(codes::DRAFT_NOT_FOUND, "Draft not found").into())
    };
    let mut draft = mine()?;
    let deadline_ms = gw
        .clock
        .now_ms()
        .saturating_add(i64::try_from(wait_seconds * 1000).unwrap_or(i64::MAX));
    let mut polls = wait_seconds * 5;
    while draft.status == DraftStatus::Draft && polls > 0 && gw.clock.now_ms() < deadline_ms {
        tokio::time::sleep(POLL).await;
        polls -= 1;
        draft = mine()?;
    }
    let execution = gw.store.drafts.latest_execution(&draft.id).map_err(Refused::internal)?;
    Ok(json!({"draft": public_draft(&draft), "execution": execution}))
}

/// A draft as a task of the agent key that proposed it (MCP Tasks): one of another key or
/// app answers like a missing one. With `withdraw`, a still-pending draft is withdrawn
/// (canceled by its agent); a decided one is left as it is. Returns the draft and its
/// latest execution, and whether this call withdrew it.
pub fn own_draft(gw: &Gateway, principal: &Principal, id: &str, withdraw: bool) -> Result<(Value, bool), Refused> {
    let mine = || -> Result<DraftRecord, Refused> {
        let draft = gw.store.drafts.get(id).map_err(Refused::internal)?;
        draft
            .filter(|d| d.app_id == principal.app.id && d.key_id == principal.key.id)
            .ok_or_else(|| Failure::new(codes::DRAFT_NOT_FOUND, "Draft not found").into())
    };
    let mut draft = mine()?;
    let withdrawn = withdraw
        && draft.status == DraftStatus::Draft
        && gw
            .store
            .drafts
            .transition(
                id,
                DraftStatus::Draft,
                DraftStatus::Canceled,
                Some(WITHDRAWN_BY_AGENT),
                &gw.now_iso(),
            )
            .map_err(Refused::internal)?;
    if withdrawn {
        draft = mine()?;
    }
    let execution = gw.store.drafts.latest_execution(&draft.id).map_err(Refused::internal)?;
    let by_agent = draft.canceled_by.as_deref() == Some(WITHDRAWN_BY_AGENT);
    Ok((
        json!({"draft": public_draft(&draft), "execution": execution, "withdrawnByAgent": by_agent}),
        withdrawn,
    ))
}

/// The draft as agents see it: the reference's public fields, plus ours.
pub fn public_draft(d: &DraftRecord) -> Value {
    json!({
        "id": d.id,
        "app_id": d.app_id,
        "key_id": d.key_id,
        "action_type": d.action_type,
        "payload": d.payload,
        "status": d.status,
        "risk": d.risk,
        "requires_confirmation": d.requires_confirmation,
        "auto_execute_requested": d.auto_execute_requested,
        "justification": d.justification,
        "preflight_hash": d.preflight_hash,
        "preflight_state_witness_hash": d.preflight_state_witness_hash,
        "impact": d.impact,
        "impact_hash": d.impact_hash,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "expires_at": d.expires_at,
        "confirmed_at": d.confirmed_at,
        "canceled_at": d.canceled_at,
    })
}
