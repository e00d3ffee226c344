//! What passes between a read and its client during one call, beside the payload: input
//! the plugin asks the client for (MCP 2026-07-28 `input_required`) and progress it reports.
//! The binding that carries them (MCP) brings a [`Round`] in and takes an [`InputAsk`] and
//! [`Progress`] out; the plugin sees them through the `host` interface.

use serde_json::{Map, Value};

use crate::protocol::Failure;

/// Largest `requests` document and `state` a plugin may pass to `require-input`.
const MAX_REQUESTS_BYTES: usize = 64 * 1024;
const MAX_STATE_BYTES: usize = 16 * 1024;
/// Progress reports kept per call; later ones are dropped.
const MAX_PROGRESS: usize = 100;

/// The input requests a client may be asked, and the client capability each needs.
const INPUT_METHODS: &[(&str, &str)] = &[
    ("elicitation/create", "elicitation"),
    ("sampling/createMessage", "sampling"),
    ("roots/list", "roots"),
];

/// Whether a call may go on in the background as a task (`run-as-task`).
#[derive(Debug, Default)]
pub enum TaskSwitch {
    /// It may not: the client or the tool does not take tasks.
    #[default]
    Unavailable,
    /// It may: asking sends a sender on which the binding answers, once the task is
    /// durable, whether the call now runs as one.
    Offered(tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<bool>>),
    /// It already does.
    Running,
}

/// What the client brings to one round of a call.
#[derive(Debug, Default)]
pub struct Round {
    /// The client's answers to the previous round's requests (a JSON object), if any.
    pub responses: Option<Value>,
    /// The plugin's state from the previous round, already verified by the binding.
    pub state: Option<String>,
    /// The client's declared capabilities (a JSON object), if it declared any.
    pub client_capabilities: Option<Value>,
    /// Whether the client asked for progress reports.
    pub wants_progress: bool,
    /// Whether the client takes tasks (it declared the MCP Tasks extension).
    pub takes_tasks: bool,
    /// Whether the call may become a task; the runner of background reads sets it.
    pub task: TaskSwitch,
    /// Why the round itself is refused (a `requestState` that does not verify): the
    /// pipeline answers it once the caller is authenticated and admitted, so that an
    /// unauthenticated caller learns nothing from it.
    pub refused: Option<Box<Failure>>,
}

/// A plugin's request for input, instead of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct InputAsk {
    /// Named MCP input requests: `{"name": {"method": ..., "params": {...}}}`.
    pub requests: Map<String, Value>,
    /// State for the next round, sealed by the binding before the client sees it.
    pub state: Option<String>,
}

impl InputAsk {
    /// Checks what a plugin passed to `require-input`.
    pub fn parse(requests: &str, state: Option<String>) -> Result<InputAsk, String> {
        if requests.len() > MAX_REQUESTS_BYTES {
            return Err(format!("input requests are at most {MAX_REQUESTS_BYTES} bytes"));
        }
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return Err(format!("input state is at most {MAX_STATE_BYTES} bytes"));
        }
        let Ok(Value::Object(requests)) = serde_json::from_str::<Value>(requests) else {
            return Err("input requests must be a JSON object of named requests".into());
        };
        if requests.is_empty() {
            return Err("input requests must name at least one request".into());
        }
        for (name, request) in &requests {
            let method = request["method"].as_str().unwrap_or_default();
            if !INPUT_METHODS.iter().any(|(m, _)| *m == method) {
                return Err(format!("input request `{name}` has no supported `method`"));
            }
            if !request.get("params").is_none_or(Value::is_object) {
                return Err(format!("input request `{name}` has `params` that is not an object"));
            }
        }
        Ok(InputAsk { requests, state })
    }

    /// The client capabilities these requests need, each once, in a stable order.
    pub fn required_capabilities(&self) -> Vec<&'static str> {
        INPUT_METHODS
            .iter()
            .filter(|(method, _)| self.requests.values().any(|r| r["method"] == *method))
            .map(|(_, capability)| *capability)
            .collect()
    }

    /// The required capabilities the client did not declare.
    pub fn missing_capabilities(&self, declared: Option<&Value>) -> Vec<&'static str> {
        self.required_capabilities()
            .into_iter()
            .filter(|c| declared.and_then(|d| d.get(c)).is_none_or(|v| !v.is_object()))
            .collect()
    }
}

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// One call's side of the exchange: the round in, what the plugin asked and reported out.
#[derive(Debug, Default)]
pub struct Interaction {
    pub round: Round,
    pub asked: Option<InputAsk>,
    pub progress: Vec<Progress>,
}

impl Interaction {
    pub fn new(round: Round) -> Self {
        Interaction {
            round,
            asked: None,
            progress: Vec::new(),
        }
    }

    pub fn report(&mut self, progress: Progress) {
        if self.round.wants_progress && self.progress.len() < MAX_PROGRESS && progress.progress.is_finite() {
            self.progress.push(progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_requests_name_a_known_method_each() {
        let ok = InputAsk::parse(
            r#"{"a": {"method": "elicitation/create", "params": {}}, "b": {"method": "roots/list"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(ok.required_capabilities(), ["elicitation", "roots"]);
        assert!(InputAsk::parse("{}", None).is_err());
        assert!(InputAsk::parse("[]", None).is_err());
        assert!(InputAsk::parse(r#"{"a": {"method": "tools/call"}}"#, None).is_err());
        assert!(InputAsk::parse(r#"{"a": {"method": "roots/list", "params": 1}}"#, None).is_err());
        assert!(
            InputAsk::parse(
                r#"{"a": {"method": "roots/list"}}"#,
                Some("x".repeat(MAX_STATE_BYTES + 1))
            )
            .is_err()
        );
    }

    #[test]
    fn a_capability_is_missing_unless_declared_as_an_object() {
        let ask = InputAsk::parse(r#"{"q": {"method": "sampling/createMessage", "params": {}}}"#, None).unwrap();
        assert_eq!(ask.missing_capabilities(None), ["sampling"]);
        assert_eq!(
            ask.missing_capabilities(Some(&json!({"elicitation": {}}))),
            ["sampling"]
        );
        assert_eq!(ask.missing_capabilities(Some(&json!({"sampling": true}))), ["sampling"]);
        assert!(ask.missing_capabilities(Some(&json!({"sampling": {}}))).is_empty());
    }

    #[test]
    fn progress_is_kept_only_when_asked_for() {
        let report = Progress {
            progress: 1.0,
            total: None,
            message: None,
        };
        let mut silent = Interaction::default();
        silent.report(report.clone());
        assert!(silent.progress.is_empty());
        let mut asked = Interaction::new(Round {
            wants_progress: true,
            ..Round::default()
        });
        asked.report(report);
        assert_eq!(asked.progress.len(), 1);
    }
}
