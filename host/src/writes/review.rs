//! Human review of drafts on the admin plane: approve (which executes the draft once) and
//! reject. Every state change is one conditional store update, so of two racing approvals
//! exactly one wins; the loser is told the draft is no longer pending.

use serde_json::{Value, json};

use crate::audit::AuditEvent;
use crate::catalog::Tool;
use crate::clock;
use crate::gateway::Gateway;
use crate::hashing::{canonical_json, jcs_sha256};
use crate::outcome::{Refused, call_refusal, witness_refusal};
use crate::plugin::interaction::Round;
use crate::plugin::{CallContext, CallError, GuestError};
use crate::protocol::Failure;
use crate::protocol::codes::{self, Code};
use crate::protocol::ids::{self, Kind};
use crate::store::{DraftRecord, DraftStatus, ExecutionRecord, ExecutionStatus};

/// Who reviews: an admin credential's name and, if scoped, its tenant.
#[derive(Debug, Clone, Copy)]
pub struct Reviewer<'a> {
    pub name: &'a str,
    pub org_id: Option<&'a str>,
    pub request_id: &'a str,
}

fn refused(code: Code, message: &str) -> Refused {
    Failure::new(code, message).into()
}

/// A draft the reviewer may see: another tenant's answers like a missing one.
pub fn visible_draft(gw: &Gateway, reviewer: &Reviewer<'_>, id: &str) -> Result<DraftRecord, Refused> {
    gw.store
        .drafts
        .get(id)
        .map_err(Refused::internal)?
        .filter(|d| reviewer.org_id.is_none_or(|org| org == d.org_id))
        .ok_or_else(|| refused(codes::DRAFT_NOT_FOUND, "Draft not found"))
}

/// Refuses a draft that is not pending, marking an overdue one `expired` first.
async fn pending(gw: &Gateway, reviewer: &Reviewer<'_>, draft: &DraftRecord) -> Result<(), Refused> {
    if draft.status != DraftStatus::Draft {
        return Err(refused(codes::DRAFT_ALREADY_FINAL, "Draft is not pending"));
    }
    let now = gw.clock.now();
    if clock::parse_iso(&draft.expires_at).is_none_or(|t| t <= now) {
        if gw
            .store
            .drafts
            .transition(
                &draft.id,
                DraftStatus::Draft,
                DraftStatus::Expired,
                None,
                &clock::iso(now),
            )
            .map_err(Refused::internal)?
        {
            lifecycle(gw, reviewer, draft, "agent.draft.expired", codes::DRAFT_EXPIRED, None).await?;
        }
        return Err(refused(codes::DRAFT_EXPIRED, "Draft expired before review"));
    }
    Ok(())
}

/// A lifecycle audit event, durable before this returns.
pub(super) async fn lifecycle(
    gw: &Gateway,
    reviewer: &Reviewer<'_>,
    draft: &DraftRecord,
    action: &str,
    code: Code,
    execution_id: Option<&str>,
) -> Result<(), Refused> {
    let event = lifecycle_event(gw, reviewer, draft, action, code, execution_id);
    gw.audit.record(event).await.map_err(Refused::internal)?;
    Ok(())
}

/// The audit event of a step in a draft's lifecycle.
pub(super) fn lifecycle_event(
    gw: &Gateway,
    reviewer: &Reviewer<'_>,
    draft: &DraftRecord,
    action: &str,
    code: Code,
    execution_id: Option<&str>,
) -> AuditEvent {
    let mut event = AuditEvent::new(action, code, gw.now_iso());
    event.org_id = Some(draft.org_id.clone());
    event.app_id = Some(draft.app_id.clone());
    event.key_id = Some(draft.key_id.clone());
    event.actor_user_id = Some(draft.actor_user_id.clone());
    event.performed_by_user_id = Some(reviewer.name.to_string());
    event.request_id = Some(reviewer.request_id.to_string());
    event.draft_id = Some(draft.id.clone());
    event.execution_id = execution_id.map(String::from);
    event.tool = Some(draft.action_type.clone());
    event.risk = Some(draft.risk.clone());
    event.plugin = Some(draft.plugin.clone());
    event.plugin_digest = Some(draft.plugin_digest.clone());
    event
}

/// Rejects a pending draft.
pub async fn reject(gw: &Gateway, reviewer: &Reviewer<'_>, id: &str) -> Result<Value, Refused> {
    let draft = visible_draft(gw, reviewer, id)?;
    pending(gw, reviewer, &draft).await?;
    let now = gw.now_iso();
    if !gw
        .store
        .drafts
        .transition(id, DraftStatus::Draft, DraftStatus::Canceled, Some(reviewer.name), &now)
        .map_err(Refused::internal)?
    {
        return Err(refused(codes::DRAFT_ALREADY_FINAL, "Draft is not pending"));
    }
    lifecycle(gw, reviewer, &draft, "agent.draft.reject", codes::SUCCESS, None).await?;
    let draft = visible_draft(gw, reviewer, id)?;
    Ok(json!({"ok": true, "draft": super::public_draft(&draft)}))
}

/// Approves a pending draft and executes it once. `impact_hash`, when given, must be the
/// hash of the impact the reviewer saw.
pub async fn approve(
    gw: &Gateway,
    reviewer: &Reviewer<'_>,
    id: &str,
    impact_hash: Option<&str>,
) -> Result<Value, Refused> {
    let draft = visible_draft(gw, reviewer, id)?;
    pending(gw, reviewer, &draft).await?;
    if let Some(seen) = impact_hash
        && draft.impact_hash.as_deref() != Some(seen)
    {
        return Err(
            Failure::new(codes::PREFLIGHT_MISMATCH, "The impact you reviewed is not this draft's")
                .with("reason", "impact_hash")
                .into(),
        );
    }
    let now = gw.now_iso();
    // The one atomic claim: of racing approvals, exactly one gets past this line.
    if !gw
        .store
        .drafts
        .transition(
            id,
            DraftStatus::Draft,
            DraftStatus::Confirmed,
            Some(reviewer.name),
            &now,
        )
        .map_err(Refused::internal)?
    {
        return Err(refused(codes::DRAFT_ALREADY_FINAL, "Draft is not pending"));
    }
    match execute(gw, reviewer, &draft).await {
        Ok(execution) => Ok(json!({"draftStatus": "confirmed", "execution": execution})),
        Err((to, refusal)) => {
            let _ = gw
                .store
                .drafts
                .transition(id, DraftStatus::Confirmed, to, None, &gw.now_iso());
            let action = if to == DraftStatus::Stale {
                "agent.draft.stale"
            } else {
                "agent.action.execute"
            };
            lifecycle(gw, reviewer, &draft, action, refusal.failure.code, None).await?;
            Err(refusal)
        }
    }
}

/// Re-checks the impact and the State Witness on live state, makes the approval durable in
/// the audit trail, then runs the action. On a refusal, says which state the draft ends in.
async fn execute(gw: &Gateway, reviewer: &Reviewer<'_>, draft: &DraftRecord) -> Result<Value, (DraftStatus, Refused)> {
    let fail = |r: Refused| (DraftStatus::Failed, r);
    let catalog = gw.catalog();
    let tool = catalog
        .tool(&draft.action_type)
        .cloned()
        .ok_or_else(|| fail(refused(codes::PLUGIN_UNAVAILABLE, "The tool is unavailable")))?;
    let context = execution_context(gw, draft, &tool, reviewer.request_id).map_err(fail)?;
    let payload_text = canonical_json(&draft.payload);
    // The State Witness, recomputed before any effect (SPEC 6): fail closed.
    if let Some(expected) = &draft.preflight_state_witness_hash {
        let Some(witness) = catalog.witness(&tool.name) else {
            return Err((
                DraftStatus::Stale,
                Failure::new(codes::PRECONDITION_FAILED, "State precondition failed")
                    .with("reason", "state_witness_unsupported")
                    .into(),
            ));
        };
        let now = witness
            .capture(&context, &tool.name, &payload_text)
            .await
            .map_err(|e| fail(witness_refusal(e)))?;
        if &jcs_sha256(&now) != expected {
            return Err((
                DraftStatus::Stale,
                Failure::new(codes::PRECONDITION_FAILED, "State precondition failed")
                    .with("reason", "state_witness_mismatch")
                    .into(),
            ));
        }
    }
    // The impact, recomputed by the same rule as at creation: a plugin upgrade or a changed
    // state that alters it never executes.
    let (_, recomputed) = super::impact(&context, &tool, &draft.payload).await.map_err(fail)?;
    if draft.impact_hash.as_deref() != Some(recomputed.as_str()) {
        return Err(fail(
            Failure::new(codes::PREFLIGHT_MISMATCH, "The impact changed since the draft was made")
                .with("reason", "impact_changed")
                .into(),
        ));
    }
    // The approval is durable before the write runs.
    lifecycle(gw, reviewer, draft, "agent.draft.approve", codes::SUCCESS, None)
        .await
        .map_err(fail)?;
    // The run is on record before the plugin is called: if this process dies now, another
    // process finds it `running` and runs it again with the same id if the plugin records
    // its effects under it (`resumable`), or marks it `indeterminate` (`super::recovery`).
    let mut record = ExecutionRecord {
        id: ids::new_id(Kind::Execution),
        draft_id: draft.id.clone(),
        app_id: draft.app_id.clone(),
        idempotency_key: draft.idempotency_key.clone(),
        status: ExecutionStatus::Running,
        result: None,
        error: None,
        instance_id: gw.instance_id.clone(),
        created_at: gw.now_iso(),
        attempts: 1,
    };
    gw.store
        .drafts
        .insert_execution(&record)
        .map_err(|e| fail(Refused::internal(e)))?;
    match run(gw, &tool, context, &payload_text, &mut record)
        .await
        .map_err(fail)?
    {
        Ran::Succeeded => {
            lifecycle(
                gw,
                reviewer,
                draft,
                "agent.action.execute",
                codes::SUCCESS,
                Some(&record.id),
            )
            .await
            .map_err(fail)?;
        }
        Ran::Failed(refusal) => return Err(fail(refusal)),
        // Another process took this one for dead and runs it: its outcome is the one
        // recorded (and audited) there; this answer shows the execution as stored now.
        Ran::Superseded => {}
    }
    Ok(serde_json::to_value(record).unwrap_or(Value::Null))
}

/// How an execution's plugin call ended for the process that made it.
pub(super) enum Ran {
    /// Recorded `success`.
    Succeeded,
    /// Recorded `failed`, for this refusal.
    Failed(Refused),
    /// Another process took the execution over meanwhile: nothing was recorded by this
    /// one, and `record` holds the execution as stored.
    Superseded,
}

/// The context a draft's plugin calls run in, on behalf of `request_id`.
pub(super) fn execution_context(
    gw: &Gateway,
    draft: &DraftRecord,
    tool: &Tool,
    request_id: &str,
) -> Result<CallContext, Refused> {
    let app = gw.store.apps.get(&draft.app_id).map_err(Refused::internal)?;
    Ok(CallContext {
        tenant: draft.org_id.clone(),
        integration: draft.app_id.clone(),
        request_id: request_id.to_string(),
        actor: draft.actor_user_id.clone(),
        // An app gone since its draft was proposed allows nothing extra (fail closed).
        allow_sensitive_fields: app.as_ref().is_some_and(|a| a.policy.allows_sensitive_fields()),
        // The agent's trace ended with its request; the reviewer's is not recorded here.
        trace: None,
        // Executions of high and critical tools always get a fresh instance.
        reuse_instance: tool.risk < crate::tool::Risk::High,
        // Set by `run`, for `invoke` only.
        execution_id: None,
    })
}

/// Calls the plugin for an execution on record as `running` under this process (the call
/// sees its id through `host.execution-id`) and records how it ended, in the store and in
/// `record`, unless another process took the execution over meanwhile. Errors are the
/// store's: the execution stays `running`.
pub(super) async fn run(
    gw: &Gateway,
    tool: &Tool,
    mut context: CallContext,
    payload_text: &str,
    record: &mut ExecutionRecord,
) -> Result<Ran, Refused> {
    context.execution_id = Some(record.id.clone());
    // Writes never ask the client for input: their human step is this review.
    let output = tool
        .plugin
        .invoke(&context, &tool.name, payload_text, Round::default())
        .await
        .and_then(|out| match out.asked {
            Some(_) => Err(CallError::Guest(GuestError::Internal(
                "a write asked the client for input; only reads may".into(),
            ))),
            None => Ok(out),
        });
    let (status, result, error, refusal) = match output {
        Ok(out) => {
            // Checked JSON when it arrived, so it parses.
            let result = out.structured.and_then(|text| serde_json::from_str(&text).ok());
            (ExecutionStatus::Success, result, None, None)
        }
        Err(e) => {
            let r = call_refusal(e, false);
            (ExecutionStatus::Failed, None, Some(r.failure.message.clone()), Some(r))
        }
    };
    let recorded = gw
        .store
        .drafts
        .finish_execution(
            &record.id,
            &record.instance_id,
            status,
            result.as_ref(),
            error.as_deref(),
        )
        .map_err(Refused::internal)?;
    if !recorded {
        if let Some(stored) = gw.store.drafts.execution(&record.id).map_err(Refused::internal)? {
            *record = stored;
        }
        tracing::warn!(execution = %record.id, "another process took this execution over; its outcome stands");
        return Ok(Ran::Superseded);
    }
    record.status = status;
    record.result = result;
    record.error = error;
    Ok(match refusal {
        Some(refusal) => Ran::Failed(refusal),
        None => Ran::Succeeded,
    })
}
