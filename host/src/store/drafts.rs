//! Drafts (proposed writes) and their executions.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::sql::{Db, Row, args};
use super::{StoreError, enum_col, json_col, optional_json_col};

/// Where a draft is in its lifecycle (SPEC 6). Only `Draft` is pending; every move out of
/// it is one conditional update, so of two racing reviewers exactly one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftStatus {
    /// Waiting for review.
    Draft,
    /// Approved (by a reviewer or the auto-execute gate); its execution follows.
    Confirmed,
    /// Rejected by a reviewer.
    Canceled,
    /// Its review window passed.
    Expired,
    /// Its State Witness no longer matched at execution: nothing ran.
    Stale,
    /// Approved, but its execution failed or never started.
    Failed,
}

impl DraftStatus {
    pub const ALL: [DraftStatus; 6] = [
        DraftStatus::Draft,
        DraftStatus::Confirmed,
        DraftStatus::Canceled,
        DraftStatus::Expired,
        DraftStatus::Stale,
        DraftStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DraftStatus::Draft => "draft",
            DraftStatus::Confirmed => "confirmed",
            DraftStatus::Canceled => "canceled",
            DraftStatus::Expired => "expired",
            DraftStatus::Stale => "stale",
            DraftStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DraftStatus {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        DraftStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or(())
    }
}

/// How a run of a draft's action ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// On record before the plugin is called.
    Running,
    Success,
    Failed,
    /// The process died while it ran: the outcome is unknown and it is never re-run.
    Indeterminate,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 4] = [
        ExecutionStatus::Running,
        ExecutionStatus::Success,
        ExecutionStatus::Failed,
        ExecutionStatus::Indeterminate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Indeterminate => "indeterminate",
        }
    }
}

impl std::str::FromStr for ExecutionStatus {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        ExecutionStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or(())
    }
}

/// A proposed write.
#[derive(Debug, Clone, Serialize)]
pub struct DraftRecord {
    pub id: String,
    pub app_id: String,
    pub key_id: String,
    pub org_id: String,
    pub actor_user_id: String,
    pub action_type: String,
    pub payload: Value,
    pub status: DraftStatus,
    pub risk: String,
    pub requires_confirmation: bool,
    pub auto_execute_requested: bool,
    pub justification: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: String,
    pub impact: Option<Value>,
    pub impact_hash: Option<String>,
    pub preflight_hash: Option<String>,
    pub preflight_state_witness_hash: Option<String>,
    pub plugin: String,
    pub plugin_digest: String,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: String,
    pub confirmed_at: Option<String>,
    pub canceled_at: Option<String>,
    pub confirmed_by_user_id: Option<String>,
    /// Who canceled it: the rejecting reviewer, or [`WITHDRAWN_BY_AGENT`].
    pub canceled_by: Option<String>,
}

/// `canceled_by` of a draft its own agent withdrew (MCP `tasks/cancel`).
pub const WITHDRAWN_BY_AGENT: &str = "agent";

/// One run of a draft's action.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub draft_id: String,
    pub app_id: String,
    pub idempotency_key: Option<String>,
    pub status: ExecutionStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    #[serde(skip)]
    pub instance_id: String,
    pub created_at: String,
    /// How many times the plugin call was started: more than 1 when a live node ran again
    /// an execution whose node died (a `resumable` write). Shown only then.
    #[serde(skip_serializing_if = "is_first_attempt")]
    pub attempts: i64,
}

fn is_first_attempt(attempts: &i64) -> bool {
    *attempts <= 1
}

/// An execution a gone process left `running`, with what is needed to decide its fate.
#[derive(Debug, Clone)]
pub struct OrphanedExecution {
    pub execution: ExecutionRecord,
    /// The draft's tool.
    pub action_type: String,
}

/// Filters for listing drafts; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct DraftFilter<'a> {
    pub org_id: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub status: Option<DraftStatus>,
    pub risk: Option<&'a str>,
    /// Only drafts created at or before this instant (RFC 3339): at least this old.
    pub created_before: Option<String>,
    /// Only drafts created at or after this instant: at most this old.
    pub created_after: Option<String>,
    pub limit: usize,
}

/// Drafts and executions.
#[derive(Debug)]
pub struct Drafts {
    db: Arc<Db>,
}

const DRAFT_COLUMNS: &str = "id, app_id, key_id, org_id, actor_user_id, action_type, payload, status, risk,
     requires_confirmation, auto_execute_requested, justification, idempotency_key, request_id, impact,
     impact_hash, preflight_hash, preflight_state_witness_hash, plugin, plugin_digest, created_at,
     updated_at, expires_at, confirmed_at, canceled_at, confirmed_by_user_id, canceled_by";

const EXECUTION_COLUMNS: &str =
    "id, draft_id, app_id, idempotency_key, status, result, error, instance_id, created_at, attempts";

fn draft_from_row(r: &Row<'_>) -> Result<DraftRecord, StoreError> {
    Ok(DraftRecord {
        id: r.get(0)?,
        app_id: r.get(1)?,
        key_id: r.get(2)?,
        org_id: r.get(3)?,
        actor_user_id: r.get(4)?,
        action_type: r.get(5)?,
        payload: json_col(r, 6, "payload")?,
        status: enum_col(r, 7, "drafts.status")?,
        risk: r.get(8)?,
        requires_confirmation: r.get(9)?,
        auto_execute_requested: r.get(10)?,
        justification: r.get(11)?,
        idempotency_key: r.get(12)?,
        request_id: r.get(13)?,
        impact: optional_json_col(r, 14)?,
        impact_hash: r.get(15)?,
        preflight_hash: r.get(16)?,
        preflight_state_witness_hash: r.get(17)?,
        plugin: r.get(18)?,
        plugin_digest: r.get(19)?,
        created_at: r.get(20)?,
        updated_at: r.get(21)?,
        expires_at: r.get(22)?,
        confirmed_at: r.get(23)?,
        canceled_at: r.get(24)?,
        confirmed_by_user_id: r.get(25)?,
        canceled_by: r.get(26)?,
    })
}

fn execution_from_row(r: &Row<'_>) -> Result<ExecutionRecord, StoreError> {
    Ok(ExecutionRecord {
        id: r.get(0)?,
        draft_id: r.get(1)?,
        app_id: r.get(2)?,
        idempotency_key: r.get(3)?,
        status: enum_col(r, 4, "executions.status")?,
        result: optional_json_col(r, 5)?,
        error: r.get(6)?,
        instance_id: r.get(7)?,
        created_at: r.get(8)?,
        attempts: r.get(9)?,
    })
}

impl Drafts {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Drafts { db }
    }

    pub fn insert(&self, d: &DraftRecord) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO drafts ({DRAFT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                     ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"
                ),
                args![
                    d.id,
                    d.app_id,
                    d.key_id,
                    d.org_id,
                    d.actor_user_id,
                    d.action_type,
                    d.payload.to_string(),
                    d.status.as_str(),
                    d.risk,
                    d.requires_confirmation,
                    d.auto_execute_requested,
                    d.justification,
                    d.idempotency_key,
                    d.request_id,
                    d.impact.as_ref().map(Value::to_string),
                    d.impact_hash,
                    d.preflight_hash,
                    d.preflight_state_witness_hash,
                    d.plugin,
                    d.plugin_digest,
                    d.created_at,
                    d.updated_at,
                    d.expires_at,
                    d.confirmed_at,
                    d.canceled_at,
                    d.confirmed_by_user_id,
                    d.canceled_by
                ],
            )?;
            Ok(())
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<DraftRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = ?1"),
                args![id],
                draft_from_row,
            )
        })
    }

    /// Drafts for review, newest first, filtered by tenant, app and status.
    pub fn list(&self, filter: &DraftFilter<'_>) -> Result<Vec<DraftRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                &format!(
                    "SELECT {DRAFT_COLUMNS} FROM drafts
                     WHERE (CAST(?1 AS TEXT) IS NULL OR org_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR app_id = ?2)
                     AND (CAST(?3 AS TEXT) IS NULL OR status = ?3) AND (CAST(?4 AS TEXT) IS NULL OR risk = ?4)
                     AND (CAST(?5 AS TEXT) IS NULL OR created_at <= ?5) AND (CAST(?6 AS TEXT) IS NULL OR created_at >= ?6)
                     ORDER BY created_at DESC, id DESC LIMIT ?7"
                ),
                args![
                    filter.org_id,
                    filter.app_id,
                    filter.status.map(DraftStatus::as_str),
                    filter.risk,
                    filter.created_before,
                    filter.created_after,
                    i64::try_from(filter.limit).unwrap_or(i64::MAX)
                ],
                draft_from_row,
            )
        })
    }

    /// Draft counts by state, for the metrics.
    pub fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                "SELECT status, COUNT(*) FROM drafts GROUP BY status ORDER BY status",
                args![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Drafts of an app still waiting for review.
    pub fn pending_of_app(&self, app_id: &str) -> Result<i64, StoreError> {
        self.db.read(|conn| {
            conn.query_one(
                "SELECT COUNT(*) FROM drafts WHERE app_id = ?1 AND status = 'draft'",
                args![app_id],
                |r| r.get(0),
            )
        })
    }

    /// Moves a draft from `from` to `to` in one statement; `false` when it was not in
    /// `from` any more (another request won the race, or it is final). `by` and `at` fill
    /// the confirmation or cancellation columns the target state has.
    pub fn transition(
        &self,
        id: &str,
        from: DraftStatus,
        to: DraftStatus,
        by: Option<&str>,
        at: &str,
    ) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE drafts SET status = ?3, updated_at = ?5,
                     confirmed_at = CASE WHEN ?3 = 'confirmed' THEN ?5 ELSE confirmed_at END,
                     confirmed_by_user_id = CASE WHEN ?3 = 'confirmed' THEN ?4 ELSE confirmed_by_user_id END,
                     canceled_at = CASE WHEN ?3 = 'canceled' THEN ?5 ELSE canceled_at END,
                     canceled_by = CASE WHEN ?3 = 'canceled' THEN ?4 ELSE canceled_by END
                 WHERE id = ?1 AND status = ?2",
                args![id, from.as_str(), to.as_str(), by, at],
            )
        })?;
        Ok(n == 1)
    }

    /// Records an execution of a draft.
    pub fn insert_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                args![
                    execution.id,
                    execution.draft_id,
                    execution.app_id,
                    execution.idempotency_key,
                    execution.status.as_str(),
                    execution.result.as_ref().map(Value::to_string),
                    execution.error,
                    execution.instance_id,
                    execution.created_at,
                    execution.attempts
                ],
            )?;
            Ok(())
        })
    }

    /// Records how a running execution ended; `false` if it was not running under `owner`
    /// (another process took it over, taking it for dead: its outcome is that one's).
    pub fn finish_execution(
        &self,
        id: &str,
        owner: &str,
        status: ExecutionStatus,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE executions SET status = ?3, result = ?4, error = ?5
                 WHERE id = ?1 AND instance_id = ?2 AND status = 'running'",
                args![id, owner, status.as_str(), result.map(Value::to_string), error],
            )
        })?;
        Ok(n == 1)
    }

    /// One execution.
    pub fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
                args![id],
                execution_from_row,
            )
        })
    }

    /// Executions left `running` by gateway processes that are gone: `live` holds the
    /// processes known to be running (this one, and on a shared store every node whose
    /// lease holds).
    pub fn orphaned_executions(&self, live: &[String]) -> Result<Vec<OrphanedExecution>, StoreError> {
        let columns = EXECUTION_COLUMNS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let running = self.db.read(|conn| {
            conn.query(
                &format!(
                    "SELECT {columns}, d.action_type FROM executions e JOIN drafts d ON d.id = e.draft_id
                     WHERE e.status = 'running' ORDER BY e.created_at, e.id"
                ),
                args![],
                |r| {
                    Ok(OrphanedExecution {
                        execution: execution_from_row(r)?,
                        action_type: r.get(10)?,
                    })
                },
            )
        })?;
        Ok(running
            .into_iter()
            .filter(|o| !live.contains(&o.execution.instance_id))
            .collect())
    }

    /// Takes over an orphaned execution for process `to`, counting one more attempt: `true`
    /// only for the one caller that found it still `running` under the gone process `from`
    /// (of nodes racing to take it over, exactly one wins).
    pub fn take_over(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE executions SET instance_id = ?3, attempts = attempts + 1
                 WHERE id = ?1 AND status = 'running' AND instance_id = ?2",
                args![id, from, to],
            )
        })?;
        Ok(n == 1)
    }

    /// Hands an execution `me` took over back to `to` (the gone process it was taken from),
    /// still `running`, for the next settling pass: this process could not run it to an
    /// outcome. `false` if it was not `me`'s.
    pub fn give_back(&self, id: &str, me: &str, to: &str) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE executions SET instance_id = ?3 WHERE id = ?1 AND status = 'running' AND instance_id = ?2",
                args![id, me, to],
            )
        })?;
        Ok(n == 1)
    }

    /// Marks an orphaned execution of the gone process `from` `indeterminate`: `false` if
    /// another process took it over or settled it first.
    pub fn mark_indeterminate(&self, id: &str, from: &str) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE executions SET status = 'indeterminate' WHERE id = ?1 AND status = 'running' AND instance_id = ?2",
                args![id, from],
            )
        })?;
        Ok(n == 1)
    }

    /// At startup: approved drafts a previous process claimed but never started (no
    /// execution record, which is written before the plugin is called) become `failed`
    /// with a failed execution saying nothing ran, so their replay is a failure, never a
    /// silent re-run. Only drafts approved before `approved_before` count (`None`: all): on
    /// a shared store a live node may be between its claim and its execution record now.
    /// Returns (draft id, execution id) of each.
    pub fn fail_unstarted_approvals(
        &self,
        instance_id: &str,
        now: &str,
        approved_before: Option<&str>,
        new_execution_id: impl Fn() -> String,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.db.write(|conn| {
            let stranded: Vec<(String, String, Option<String>)> = conn.query(
                "SELECT d.id, d.app_id, d.idempotency_key FROM drafts d
                 WHERE d.status = 'confirmed' AND (CAST(?1 AS TEXT) IS NULL OR d.updated_at < ?1)
                 AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.draft_id = d.id)",
                args![approved_before],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut failed = Vec::new();
            for (draft_id, app_id, idempotency_key) in stranded {
                let execution_id = new_execution_id();
                conn.execute(
                    "UPDATE drafts SET status = 'failed', updated_at = ?2 WHERE id = ?1 AND status = 'confirmed'",
                    args![draft_id, now],
                )?;
                conn.execute(
                    &format!(
                        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'failed', NULL, ?5, ?6, ?7, 1)"
                    ),
                    args![
                        execution_id,
                        draft_id,
                        app_id,
                        idempotency_key,
                        "the gateway stopped after the approval and before the write started; nothing was executed",
                        instance_id,
                        now
                    ],
                )?;
                failed.push((draft_id, execution_id));
            }
            Ok(failed)
        })
    }

    /// An operator's decision on an indeterminate execution; `None` if it was not one.
    pub fn resolve_execution(
        &self,
        id: &str,
        outcome: ExecutionStatus,
        note: &str,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        self.db.write(|conn| {
            let n = conn.execute(
                "UPDATE executions SET status = ?2, error = ?3 WHERE id = ?1 AND status = 'indeterminate'",
                args![id, outcome.as_str(), note],
            )?;
            if n == 0 {
                return Ok(None);
            }
            conn.query_optional(
                &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
                args![id],
                execution_from_row,
            )
        })
    }

    /// The latest execution of a draft.
    pub fn latest_execution(&self, draft_id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!(
                    "SELECT {EXECUTION_COLUMNS} FROM executions WHERE draft_id = ?1
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                args![draft_id],
                execution_from_row,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Store;
    use super::*;

    fn draft(id: &str) -> DraftRecord {
        let at = "2026-12-01T00:00:00Z".to_string();
        DraftRecord {
            id: id.into(),
            app_id: "app_1".into(),
            key_id: "key_1".into(),
            org_id: "org_demo".into(),
            actor_user_id: "user_1".into(),
            action_type: "transaction.create".into(),
            payload: json!({}),
            status: DraftStatus::Confirmed,
            risk: "medium".into(),
            requires_confirmation: false,
            auto_execute_requested: false,
            justification: None,
            idempotency_key: None,
            request_id: "req_1".into(),
            impact: None,
            impact_hash: None,
            preflight_hash: None,
            preflight_state_witness_hash: None,
            plugin: "ledger".into(),
            plugin_digest: "00".into(),
            created_at: at.clone(),
            updated_at: at.clone(),
            expires_at: at,
            confirmed_at: None,
            canceled_at: None,
            confirmed_by_user_id: None,
            canceled_by: None,
        }
    }

    fn running(id: &str, draft_id: &str, instance: &str) -> ExecutionRecord {
        ExecutionRecord {
            id: id.into(),
            draft_id: draft_id.into(),
            app_id: "app_1".into(),
            idempotency_key: None,
            status: ExecutionStatus::Running,
            result: None,
            error: None,
            instance_id: instance.into(),
            created_at: "2026-12-01T00:00:01Z".into(),
            attempts: 1,
        }
    }

    #[test]
    fn an_orphaned_execution_is_taken_over_or_marked_indeterminate_by_exactly_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("drafts.db")).unwrap();
        let drafts = &store.drafts;
        for (d, e, instance) in [
            ("drf_a", "exe_a", "dead"),
            ("drf_b", "exe_b", "dead"),
            ("drf_c", "exe_c", "alive"),
        ] {
            drafts.insert(&draft(d)).unwrap();
            drafts.insert_execution(&running(e, d, instance)).unwrap();
        }
        let live = ["alive".to_string()];
        let orphans = drafts.orphaned_executions(&live).unwrap();
        let ids: Vec<&str> = orphans.iter().map(|o| o.execution.id.as_str()).collect();
        assert_eq!(ids, ["exe_a", "exe_b"], "a live process's execution is no orphan");
        assert_eq!(orphans[0].action_type, "transaction.create");

        // Two processes race to take `exe_a` over: one wins, and it counts an attempt.
        assert!(drafts.take_over("exe_a", "dead", "p1").unwrap());
        assert!(!drafts.take_over("exe_a", "dead", "p2").unwrap());
        assert!(
            !drafts.mark_indeterminate("exe_a", "dead").unwrap(),
            "taken over: not settled again"
        );
        let taken = drafts.latest_execution("drf_a").unwrap().unwrap();
        assert_eq!((taken.instance_id.as_str(), taken.attempts), ("p1", 2));
        assert_eq!(taken.status, ExecutionStatus::Running);
        // `p1` dies too: the next taker counts a third attempt.
        assert!(drafts.take_over("exe_a", "p1", "p3").unwrap());
        assert_eq!(drafts.latest_execution("drf_a").unwrap().unwrap().attempts, 3);

        assert!(drafts.mark_indeterminate("exe_b", "dead").unwrap());
        assert!(
            !drafts.take_over("exe_b", "dead", "p1").unwrap(),
            "settled: never taken over"
        );
        assert_eq!(
            drafts.latest_execution("drf_b").unwrap().unwrap().status,
            ExecutionStatus::Indeterminate
        );
        // An ended execution is no orphan.
        // The process it was taken from cannot record an outcome any more; `p3` can.
        assert!(
            !drafts
                .finish_execution("exe_a", "p1", ExecutionStatus::Failed, None, Some("late"))
                .unwrap()
        );
        assert!(drafts.give_back("exe_a", "p3", "p1").unwrap());
        assert!(drafts.take_over("exe_a", "p1", "p3").unwrap());
        assert_eq!(drafts.execution("exe_a").unwrap().unwrap().attempts, 4);
        assert!(
            drafts
                .finish_execution("exe_a", "p3", ExecutionStatus::Success, Some(&json!({})), None)
                .unwrap()
        );
        assert!(drafts.orphaned_executions(&live).unwrap().is_empty());
    }
}
