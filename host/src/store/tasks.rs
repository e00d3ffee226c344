//! Reads running in the background as tasks (MCP Tasks extension), and what they ended in.
//!
//! Every change is a compare-and-set on the status (and, for answers, on the pending
//! requests), so a cancel racing a completion, or two answers racing each other, leave
//! exactly one of them applied.

use std::sync::Arc;

use serde_json::Value;

use super::sql::{Db, Row, args};
use super::{StoreError, enum_col, json_col, optional_json_col};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Working,
    /// Parked until the client answers the input the tool asked for.
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Working,
        TaskStatus::InputRequired,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input_required",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text).ok_or(())
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    pub org_id: String,
    pub app_id: String,
    pub key_id: String,
    pub actor_user_id: String,
    pub tool: String,
    /// The arguments, to run the tool again once the client answers.
    pub payload: Value,
    pub status: TaskStatus,
    /// The input requests still unanswered (a JSON object), while `input_required`.
    pub input_requests: Option<Value>,
    /// The answers gathered so far for those requests (a JSON object).
    pub input_responses: Option<Value>,
    /// The plugin's state for the round that follows the answers.
    pub input_state: Option<String>,
    /// The result or the error, once terminal.
    pub outcome: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: String,
}

#[derive(Debug)]
pub struct Tasks {
    db: Arc<Db>,
}

const COLUMNS: &str = "id, org_id, app_id, key_id, actor_user_id, tool, payload, status, input_requests,
     input_responses, input_state, outcome, created_at, updated_at, expires_at";

impl Tasks {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Tasks { db }
    }

    /// Stores a new task, and forgets those past their expiry (never one still running:
    /// it stays until it ends, within its time budget).
    pub fn insert(&self, t: &TaskRecord) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "DELETE FROM tasks WHERE expires_at < ?1 AND status <> 'working'",
                args![t.created_at],
            )?;
            conn.execute(
                &format!(
                    "INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ),
                args![
                    t.id,
                    t.org_id,
                    t.app_id,
                    t.key_id,
                    t.actor_user_id,
                    t.tool,
                    t.payload.to_string(),
                    t.status.as_str(),
                    t.input_requests.as_ref().map(Value::to_string),
                    t.input_responses.as_ref().map(Value::to_string),
                    t.input_state,
                    t.outcome.as_ref().map(Value::to_string),
                    t.created_at,
                    t.updated_at,
                    t.expires_at,
                ],
            )?;
            Ok(())
        })
    }

    /// A task still running, or not yet expired at `now`.
    pub fn get(&self, id: &str, now: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1 AND (expires_at >= ?2 OR status = 'working')"),
                args![id, now],
                from_row,
            )
        })
    }

    /// Ends an active task (`working` or `input_required`) with `to` and its outcome;
    /// `false` when it had already ended. Every change moves the expiry to `expires_at`.
    pub fn finish(&self, id: &str, to: TaskStatus, outcome: Option<&Value>, at: &Stamp) -> Result<bool, StoreError> {
        debug_assert!(to.is_terminal());
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE tasks SET status = ?2, outcome = ?3, input_requests = NULL, input_responses = NULL,
                 input_state = NULL, updated_at = ?4, expires_at = ?5
             WHERE id = ?1 AND status IN ('working', 'input_required')",
                args![id, to.as_str(), outcome.map(Value::to_string), at.now, at.expires],
            )
        })?;
        Ok(n == 1)
    }

    /// Fails a parked task, only if it still waits on exactly `was_pending` (a concurrent
    /// answer that resumed it wins).
    pub fn fail_parked(&self, id: &str, was_pending: &Value, outcome: &Value, at: &Stamp) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE tasks SET status = 'failed', outcome = ?3, input_requests = NULL, input_responses = NULL,
                 input_state = NULL, updated_at = ?4, expires_at = ?5
             WHERE id = ?1 AND status = 'input_required' AND input_requests = ?2",
                args![id, was_pending.to_string(), outcome.to_string(), at.now, at.expires],
            )
        })?;
        Ok(n == 1)
    }

    /// A running task parks on input requests; `false` when it is no longer running.
    pub fn park(&self, id: &str, requests: &Value, state: Option<&str>, at: &Stamp) -> Result<bool, StoreError> {
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE tasks SET status = 'input_required', input_requests = ?2, input_responses = '{}',
                 input_state = ?3, updated_at = ?4, expires_at = ?5
             WHERE id = ?1 AND status = 'working'",
                args![id, requests.to_string(), state, at.now, at.expires],
            )
        })?;
        Ok(n == 1)
    }

    /// Records answers to a parked task: `pending` are the requests still unanswered (an
    /// empty object resumes the task: `working`) and `responses` every answer so far.
    /// Applies only if the task still waits on exactly `was_pending`.
    pub fn answer(
        &self,
        id: &str,
        was_pending: &Value,
        pending: &Value,
        responses: &Value,
        at: &Stamp,
    ) -> Result<bool, StoreError> {
        let resumes = pending.as_object().is_none_or(serde_json::Map::is_empty);
        let status = if resumes {
            TaskStatus::Working
        } else {
            TaskStatus::InputRequired
        };
        let n = self.db.write(|conn| {
            conn.execute(
                "UPDATE tasks SET status = ?2, input_requests = ?3, input_responses = ?4, updated_at = ?5,
                 expires_at = ?7
             WHERE id = ?1 AND status = 'input_required' AND input_requests = ?6",
                args![
                    id,
                    status.as_str(),
                    (!resumes).then(|| pending.to_string()),
                    responses.to_string(),
                    at.now,
                    was_pending.to_string(),
                    at.expires,
                ],
            )
        })?;
        Ok(n == 1)
    }

    /// At start: a task still `working` that was last changed before `changed_before`
    /// (`None`: any) lost its runner with a process that is gone. It fails (and is never run again: its tool
    /// may not be safe to repeat). Returns them. On a shared store the cutoff is a task's
    /// time budget ago: a live node's task cannot run longer than that.
    pub fn interrupt_running(
        &self,
        outcome: &Value,
        at: &Stamp,
        changed_before: Option<&str>,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.db.write(|conn| {
            let tasks = conn.query(
                &format!("SELECT {COLUMNS} FROM tasks WHERE status = 'working' AND (CAST(?1 AS TEXT) IS NULL OR updated_at < ?1)"),
                args![changed_before],
                from_row,
            )?;
            for task in &tasks {
                conn.execute(
                    "UPDATE tasks SET status = 'failed', outcome = ?1, updated_at = ?2, expires_at = ?3
                     WHERE id = ?4 AND status = 'working'",
                    args![outcome.to_string(), at.now, at.expires, task.id],
                )?;
            }
            Ok(tasks)
        })
    }
}

/// When a change happens, and the expiry it gives the task.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub now: String,
    pub expires: String,
}

fn from_row(row: &Row<'_>) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        id: row.get(0)?,
        org_id: row.get(1)?,
        app_id: row.get(2)?,
        key_id: row.get(3)?,
        actor_user_id: row.get(4)?,
        tool: row.get(5)?,
        payload: json_col(row, 6, "tasks.payload")?,
        status: enum_col(row, 7, "tasks.status")?,
        input_requests: optional_json_col(row, 8)?,
        input_responses: optional_json_col(row, 9)?,
        input_state: row.get(10)?,
        outcome: optional_json_col(row, 11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
        expires_at: row.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Store;
    use super::*;

    fn task(id: &str) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            org_id: "org_demo".into(),
            app_id: "app_1".into(),
            key_id: "key_1".into(),
            actor_user_id: "user_1".into(),
            tool: "slow_compute".into(),
            payload: json!({"seconds": 5}),
            status: TaskStatus::Working,
            input_requests: None,
            input_responses: None,
            input_state: None,
            outcome: None,
            created_at: "2026-12-01T00:00:00Z".into(),
            updated_at: "2026-12-01T00:00:00Z".into(),
            expires_at: "2026-12-01T01:00:00Z".into(),
        }
    }

    #[test]
    fn one_ending_wins_and_a_parked_task_resumes_once_every_request_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("tasks.db")).unwrap();
        let tasks = &store.tasks;
        let now = "2026-12-01T00:00:01Z";
        let at = Stamp {
            now: now.into(),
            expires: "2026-12-01T01:00:01Z".into(),
        };
        tasks.insert(&task("tsk_a")).unwrap();
        assert!(tasks.finish("tsk_a", TaskStatus::Cancelled, None, &at).unwrap());
        assert!(
            !tasks
                .finish("tsk_a", TaskStatus::Completed, Some(&json!({})), &at)
                .unwrap()
        );
        assert_eq!(tasks.get("tsk_a", now).unwrap().unwrap().status, TaskStatus::Cancelled);

        tasks.insert(&task("tsk_b")).unwrap();
        let asked = json!({"x": {"method": "elicitation/create"}, "y": {"method": "elicitation/create"}});
        assert!(tasks.park("tsk_b", &asked, Some("s"), &at).unwrap());
        let only_y = json!({"y": {"method": "elicitation/create"}});
        let answered_x = json!({"x": {"action": "accept"}});
        assert!(tasks.answer("tsk_b", &asked, &only_y, &answered_x, &at).unwrap());
        // A second answer computed from the old pending set loses the race.
        assert!(!tasks.answer("tsk_b", &asked, &json!({}), &answered_x, &at).unwrap());
        // A failure of the parked task computed from the old pending set loses too.
        assert!(!tasks.fail_parked("tsk_b", &asked, &json!({}), &at).unwrap());
        let both = json!({"x": {"action": "accept"}, "y": {"action": "accept"}});
        assert!(tasks.answer("tsk_b", &only_y, &json!({}), &both, &at).unwrap());
        let resumed = tasks.get("tsk_b", now).unwrap().unwrap();
        assert_eq!(resumed.status, TaskStatus::Working);
        assert_eq!(resumed.input_responses, Some(both));
        assert_eq!(resumed.input_state.as_deref(), Some("s"));

        // A restart fails what was running, and an expired task is gone.
        // A running task stays visible past its expiry; a restart fails it, and then it
        // expires.
        assert!(tasks.get("tsk_b", "2026-12-01T09:00:00Z").unwrap().is_some());
        let failed = tasks.interrupt_running(&json!({"error": {}}), &at, None).unwrap();
        assert_eq!(failed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["tsk_b"]);
        assert_eq!(failed[0].key_id, "key_1");
        assert_eq!(tasks.get("tsk_b", now).unwrap().unwrap().status, TaskStatus::Failed);
        assert!(tasks.get("tsk_b", "2026-12-01T02:00:00Z").unwrap().is_none());
    }
}
