//! Reads: a route (REST) or a call by name (MCP) to a read tool, steps 10 to 14, and the
//! input a read may ask its client for before it answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::payload::{query_payload, redact_fields};
use super::{Flags, Governed, Trail};
use crate::authz::Action;
use crate::catalog::Tool;
use crate::clock::Stopwatch;
use crate::hashing::canonical_json;
use crate::metrics::Stage;
use crate::outcome::{Refused, Reply, call_refusal};
use crate::plugin::interaction::Round;
use crate::plugin::{CallContext, LISTING, TaskSupport, ToolOutput};
use crate::protocol::{ActionBody, Data, Failure, codes};
use crate::tasks::{Job, Owner, Started};

impl Governed<'_> {
    /// A read over a route. Its binding (REST) cannot carry input requests.
    pub(super) async fn read(&self, route: &str, query: Option<&str>, trail: &mut Trail) -> Result<Reply, Refused> {
        // (9) Tool resolved from the route.
        let tool = self.gw.catalog().tool_for_route(route).cloned();
        let tool = tool.ok_or_else(|| Failure::new(codes::NOT_FOUND, "Route not found"))?;
        trail.action = ["agent.", &tool.name].concat();
        let payload = query_payload(query, &tool.input_schema)?;
        self.run_read(&tool, payload, None, trail).await
    }

    /// A call by tool name: reads run as reads (with the arguments as the payload) in the
    /// round the client brings, the rest enter the write lifecycle as actions. Unknown
    /// names are unknown actions.
    pub(super) async fn call(
        &self,
        body: ActionBody,
        round: Option<Round>,
        trail: &mut Trail,
    ) -> Result<Reply, Refused> {
        if let Some(refused) = round.as_ref().and_then(|r| r.refused.clone()) {
            return Err((*refused).into());
        }
        let read = self.gw.catalog().tool(&body.action).filter(|t| t.is_read()).cloned();
        let Some(tool) = read else {
            return self.action(body, trail).await;
        };
        trail.action = ["agent.", &tool.name].concat();
        let payload = body.payload.unwrap_or_else(|| json!({}));
        if !payload.is_object() {
            return Err(Failure::validation(&["arguments"], "arguments must be an object").into());
        }
        self.run_read(&tool, payload, round, trail).await
    }

    /// Steps 10 to 14 of a read. `round` is `None` when the binding cannot carry input
    /// requests; a plugin that asks anyway is refused.
    async fn run_read(
        &self,
        tool: &Arc<Tool>,
        mut payload: Value,
        round: Option<Round>,
        trail: &mut Trail,
    ) -> Result<Reply, Refused> {
        trail.payload(self.gw, &payload);
        self.may_use(tool, Flags::default(), trail)?;
        let (context, _) = self.authorize(tool, Action::Read, &mut payload, Flags::default(), trail)?;
        // (14) Dispatch: a read runs now, or, for a client that takes tasks, may go on in
        // the background as a task if its manifest allows it and the plugin asks.
        let support = tool.plugin.manifest().tasks.get(&tool.name).copied();
        let takes_tasks = round.as_ref().is_some_and(|r| r.takes_tasks);
        if support == Some(TaskSupport::Required) && !takes_tasks {
            let refused = Failure::new(
                codes::INPUT_REQUIRED,
                "This tool runs only as a task, and this client does not take tasks",
            );
            return Err(refused.with("reason", "tasks").into());
        }
        let started = Stopwatch::start();
        let carries_input = round.is_some();
        let declared = round.as_ref().and_then(|r| r.client_capabilities.clone());
        let output = if support.is_some() && takes_tasks {
            let job = Job {
                owner: self.owner(),
                tool: tool.clone(),
                context: context.clone(),
                payload,
                round: round.unwrap_or_default(),
                shape,
            };
            match self.gw.tasks.run(job).await? {
                Started::Inline(output) => *output,
                Started::Task(task) => {
                    trail.stages.push((Stage::Plugin, started.elapsed()));
                    trail.details.insert("taskId".into(), task.id.clone().into());
                    return Ok(Reply {
                        task: Some(*task),
                        ..Reply::ok(json!({}))
                    });
                }
            }
        } else {
            let payload = canonical_json(&payload);
            tool.plugin
                .invoke(&context, &tool.name, &payload, round.unwrap_or_default())
                .await
        };
        let ran = started.elapsed();
        trail.stages.push((Stage::Plugin, ran));
        self.gw.metrics.plugin(tool.plugin.name(), ran);
        let output = output.map_err(|e| call_refusal(e, true))?;
        if let Some(ask) = output.asked {
            let names: Vec<&String> = ask.requests.keys().collect();
            trail.details.insert("inputRequests".into(), json!(names));
            let missing = ask.missing_capabilities(declared.as_ref());
            if !carries_input || !missing.is_empty() {
                let reason = if carries_input { "client_capability" } else { "binding" };
                let refused = Failure::new(codes::INPUT_REQUIRED, "The tool needs input this client cannot give")
                    .with("reason", reason)
                    .with("requiredCapabilities", json!(ask.required_capabilities()))
                    .with("missingCapabilities", json!(missing));
                return Err(refused.into());
            }
            return Ok(Reply {
                asked: Some(ask),
                progress: output.progress,
                ..Reply::ok(Value::Null)
            });
        }
        let (reply, details) = shaped(tool, &context, output);
        trail.details.extend(details);
        Ok(reply)
    }

    /// Whom a task this request starts belongs to.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            org_id: self.principal.org_id.clone(),
            app_id: self.principal.app.id.clone(),
            key_id: self.principal.key.id.clone(),
            actor_user_id: self.principal.actor_user_id.clone(),
        }
    }
}

/// A read's answer from its output: sensitive fields redacted where the app's data policy
/// says so. Background tasks shape their results with it too ([`crate::tasks::Shape`]).
pub(super) fn shape(tool: &Tool, context: &CallContext, output: ToolOutput) -> Reply {
    shaped(tool, context, output).0
}

/// [`shape`], with what the audit event records of it. A result with nothing to redact
/// goes out as the plugin wrote it, never parsed into a tree.
fn shaped(tool: &Tool, context: &CallContext, output: ToolOutput) -> (Reply, Map<String, Value>) {
    let mut details = Map::new();
    let sensitive = &tool.plugin.manifest().sensitive_fields;
    let redact = !context.allow_sensitive_fields;
    let mut redacted = BTreeSet::new();
    let data = match output.structured {
        Some(text) if redact && !sensitive.is_empty() => {
            // Checked text is JSON; `null` would only answer a serde_json bug.
            let mut data = serde_json::from_str(&text).unwrap_or(Value::Null);
            redact_fields(&mut data, sensitive, &mut redacted);
            Data::Value(data)
        }
        Some(text) => Data::checked(text),
        None => Data::Value(json!({})),
    };
    if redact {
        details.insert("redactedFields".into(), json!(redacted));
    }
    let listed = match &data {
        Data::Value(value) => value.get(LISTING).and_then(Value::as_array).map(Vec::len),
        Data::Json(_) => output.listed,
    };
    if let Some(count) = listed {
        details.insert("resultCount".into(), count.into());
    }
    let reply = Reply {
        content: output.content,
        progress: output.progress,
        ..Reply::ok(data)
    };
    (reply, details)
}
