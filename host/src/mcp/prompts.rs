//! `prompts/get` on both wires: the request's params as an operation, and its outcome as
//! the revision's answer. (`prompts/list` is the pipeline's list as it is.)

use serde_json::{Map, Value, json};

use super::INVALID_PARAMS;
use super::respond::Responder;
use super::stateless::{META_CAPABILITIES, input_responses};
use crate::outcome::{Refused, Reply};
use crate::pipeline::{Operation, Outbound};
use crate::plugin::interaction::Round;
use crate::protocol::{Failure, codes};

/// `params` as a `prompts/get` operation. `input_rounds`: the revision carries input
/// requests (2026-07-28), so the client's answers and capabilities come with it.
pub fn operation(params: &Value, input_rounds: bool) -> Result<Operation, Failure> {
    let Some(name) = params["name"].as_str() else {
        return Err(Failure::validation(&["params", "name"], "`name` must be a string"));
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => {
            return Err(Failure::validation(
                &["params", "arguments"],
                "`arguments` must be an object",
            ));
        }
    };
    let round = if input_rounds {
        Some(Round {
            responses: input_responses(params)?.map(Value::Object),
            client_capabilities: Some(params["_meta"][META_CAPABILITIES].clone()),
            ..Round::default()
        })
    } else {
        None
    };
    Ok(Operation::Prompt {
        name: name.to_string(),
        arguments,
        round,
    })
}

/// A `prompts/get` outcome: the messages, an input request for missing arguments (on a
/// revision with input rounds; `resultType` marks the revision's results), or an error:
/// an unknown prompt and bad arguments are invalid params.
pub fn answer(reply: &Responder<'_>, id: Value, outcome: Result<Reply, Refused>, typed: bool) -> Outbound {
    match outcome {
        Ok(Reply { asked: Some(ask), .. }) => {
            let result = json!({"resultType": "input_required", "inputRequests": ask.requests});
            reply.result(200, id, result, Vec::new())
        }
        Ok(prompt) => {
            let mut result = prompt.data.into_value();
            if typed {
                result["resultType"] = json!("complete");
            }
            reply.result(200, id, result, Vec::new())
        }
        Err(refused) if [codes::NOT_FOUND, codes::VALIDATION].contains(&refused.failure.code) => {
            reply.error(200, id, INVALID_PARAMS, &refused, Vec::new())
        }
        Err(refused) => reply.refused(id, refused),
    }
}
