//! Prompts (MCP `prompts/*`): the plugins' message templates, shown to an app that holds
//! their scopes. A prompt runs nothing; an app without its scopes is told it does not exist.

use serde_json::{Map, Value, json};

use super::{Governed, Trail};
use crate::outcome::{Refused, Reply};
use crate::plugin::interaction::{InputAsk, Round};
use crate::plugin::prompt::{Prompt, RenderError};
use crate::protocol::{Failure, codes};

/// The name of the input request for missing arguments, and of its answer.
const ASK: &str = "arguments";

impl Governed<'_> {
    fn holds(&self, prompt: &Prompt) -> bool {
        prompt.scopes.iter().all(|s| self.principal.app.scopes.contains(s))
    }

    pub(super) fn prompts(&self) -> Reply {
        let catalog = self.gw.catalog();
        let listed: Vec<Value> = catalog
            .prompts()
            .filter(|(_, p)| self.holds(p))
            .map(|(_, p)| p.listed())
            .collect();
        Reply::ok(json!({ "prompts": listed }))
    }

    pub(super) fn prompt(
        &self,
        name: &str,
        mut arguments: Map<String, Value>,
        round: Option<Round>,
        trail: &mut Trail,
    ) -> Result<Reply, Refused> {
        trail.details.insert("prompt".into(), name.into());
        let catalog = self.gw.catalog();
        let (plugin, prompt) = catalog
            .prompt(name)
            .filter(|(_, p)| self.holds(p))
            .ok_or_else(|| Failure::new(codes::NOT_FOUND, "Prompt not found"))?;
        trail.details.insert("plugin".into(), plugin.name().into());
        // An earlier round asked for the missing arguments: an accepted answer fills them.
        let answer = round.as_ref().and_then(|r| r.responses.as_ref()).map(|r| &r[ASK]);
        if let Some(answer) = answer.filter(|a| a["action"] == "accept")
            && let Some(given) = answer["content"].as_object()
        {
            for (key, value) in given {
                arguments.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        match prompt.render(&arguments) {
            Ok(messages) => Ok(Reply::ok(
                json!({"description": prompt.description, "messages": messages}),
            )),
            Err(RenderError::Missing(missing)) => {
                let declared = round.as_ref().and_then(|r| r.client_capabilities.as_ref());
                let can_ask = declared.is_some_and(|c| c["elicitation"].is_object()) && answer.is_none();
                if !can_ask {
                    let failure = Failure::validation(
                        &["params", "arguments"],
                        format!("missing required arguments: {}", missing.join(", ")),
                    );
                    return Err(failure.with("missingArguments", json!(missing)).into());
                }
                trail.details.insert("inputRequests".into(), json!([ASK]));
                let requests = Map::from_iter([(ASK.to_string(), prompt.ask_for(&missing))]);
                Ok(Reply {
                    asked: Some(InputAsk { requests, state: None }),
                    ..Reply::ok(Value::Null)
                })
            }
            Err(RenderError::Invalid(message)) => Err(Failure::validation(&["params", "arguments"], message).into()),
        }
    }
}
