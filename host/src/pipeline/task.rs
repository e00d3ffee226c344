//! Task requests (MCP Tasks): a background read's task, or a draft's, of the key that
//! started it. Another key's task answers like a missing one.

use serde_json::{Map, Value, json};

use super::{Flags, Governed, Trail, read};
use crate::authz::Action;
use crate::outcome::{Refused, Reply};
use crate::plugin::interaction::Round;
use crate::protocol::ids::{Kind, is_well_formed};
use crate::protocol::{Failure, codes};
use crate::store::{TaskRecord, TaskStatus};
use crate::tasks::{Job, stamp};
use crate::writes;

use super::request::TaskChange;

impl Governed<'_> {
    pub(super) async fn task(&self, id: String, change: TaskChange, trail: &mut Trail) -> Result<Reply, Refused> {
        if !is_well_formed(Kind::Task, &id) {
            let withdraw = matches!(change, TaskChange::Cancel);
            let (data, withdrawn) = writes::own_draft(self.gw, self.principal, &id, withdraw)?;
            trail.draft_id = Some(id);
            if withdrawn {
                trail.action = "agent.draft.withdraw".into();
            }
            return Ok(Reply::ok(data));
        }
        trail.details.insert("taskId".into(), id.clone().into());
        let task = self.own_task(&id)?;
        trail.tool = self.gw.catalog().tool(&task.tool).cloned();
        let task = match change {
            TaskChange::Read => task,
            TaskChange::Cancel => {
                self.gw.tasks.cancel(&task).map_err(Refused::internal)?;
                self.own_task(&id)?
            }
            TaskChange::Answer {
                responses,
                capabilities,
            } => {
                self.answer(&task, responses, capabilities, trail).await?;
                self.own_task(&id)?
            }
        };
        Ok(Reply {
            task: Some(task),
            ..Reply::ok(json!({}))
        })
    }

    fn own_task(&self, id: &str) -> Result<TaskRecord, Refused> {
        let task = self
            .gw
            .store
            .tasks
            .get(id, &self.gw.now_iso())
            .map_err(Refused::internal)?;
        task.filter(|t| t.app_id == self.principal.app.id && t.key_id == self.principal.key.id)
            .ok_or_else(|| Failure::new(codes::NOT_FOUND, "Task not found").into())
    }

    /// Records the answers to a parked task's requests; once none is left, the tool runs
    /// again with them, governed again (a policy changed meanwhile applies). Answers to
    /// requests it does not wait on are ignored.
    async fn answer(
        &self,
        task: &TaskRecord,
        responses: Map<String, Value>,
        capabilities: Option<Value>,
        trail: &mut Trail,
    ) -> Result<(), Refused> {
        if task.status != TaskStatus::InputRequired {
            return Ok(());
        }
        let was_pending = task.input_requests.clone().unwrap_or_else(|| json!({}));
        let mut pending = was_pending.as_object().cloned().unwrap_or_default();
        let mut answered = task
            .input_responses
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, response) in responses {
            if pending.remove(&name).is_some() {
                answered.insert(name, response);
            }
        }
        let answers: Vec<&String> = answered.keys().collect();
        trail.details.insert("inputResponses".into(), json!(answers));
        let (pending, answered) = (Value::Object(pending), Value::Object(answered));
        if pending != json!({}) {
            let now = stamp(&self.gw.clock);
            self.gw
                .store
                .tasks
                .answer(&task.id, &was_pending, &pending, &answered, &now)
                .map_err(Refused::internal)?;
            return Ok(());
        }
        // Every request answered: the tool runs again, if it still may.
        let tool = self.gw.catalog().tool(&task.tool).filter(|t| t.is_read()).cloned();
        let governed = match tool {
            Some(tool) => {
                let mut payload = task.payload.clone();
                self.may_use(&tool, Flags::default(), trail)
                    .and_then(|()| self.authorize(&tool, Action::Read, &mut payload, Flags::default(), trail))
                    .map(|(context, _)| (tool, context, payload))
            }
            None => Err(Failure::new(codes::PLUGIN_UNAVAILABLE, "The task's tool is no longer loaded").into()),
        };
        let (tool, context, payload) = match governed {
            Ok(governed) => governed,
            Err(refused) => {
                self.gw.tasks.fail(task, &was_pending, &refused).await?;
                return Err(refused);
            }
        };
        let now = stamp(&self.gw.clock);
        let resumed = self
            .gw
            .store
            .tasks
            .answer(&task.id, &was_pending, &pending, &answered, &now)
            .map_err(Refused::internal)?;
        if resumed {
            let round = Round {
                responses: Some(answered),
                state: task.input_state.clone(),
                client_capabilities: capabilities,
                takes_tasks: true,
                ..Round::default()
            };
            let job = Job {
                owner: self.owner(),
                tool,
                context,
                payload,
                round,
                shape: read::shape,
            };
            self.gw.tasks.resume(&task.id, job);
        }
        Ok(())
    }
}
