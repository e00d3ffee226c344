//! The stateless wire of MCP 2026-07-28: no `initialize` and no session; every request
//! names its revision in the `MCP-Protocol-Version` header and again in `_meta`, with the
//! client's capabilities, and carries `Mcp-Method` (and `Mcp-Name`) routing headers that
//! must agree with its body. Any node can serve any request.
//!
//! The governance is the session wire's: every request goes through `pipeline::govern`
//! with the same binding, and gets one audit event.

use serde_json::{Map, Value, json};

use super::request_state::{self, Sealer};
use super::session::credential_of;
use super::{
    INVALID_PARAMS, METHOD_NOT_FOUND, Mcp, Responder, SUPPORTED, audit_name, call_body, is_protocol_refusal, refusal,
    tools,
};
use super::{prompts, tasks};
use crate::catalog::Tool;
use crate::gateway::Gateway;
use crate::hashing::jcs_sha256;
use crate::outcome::{Refused, Reply};
use crate::pipeline::{self, Credentials, Inbound, Operation, Outbound, TaskChange};
use crate::plugin::interaction::Round;
use crate::protocol::codes;
use crate::protocol::{ActionBody, Data, Failure, PreflightBody};
use crate::tool::Risk;

/// The revision this wire speaks.
pub const REVISION: &str = "2026-07-28";

/// JSON-RPC errors the revision defines.
const HEADER_MISMATCH: i64 = -32020;
const MISSING_CLIENT_CAPABILITY: i64 = -32021;
const UNSUPPORTED_VERSION: i64 = -32022;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(super) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Methods whose results a client may cache (they carry `ttlMs` and `cacheScope`).
const CACHEABLE: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
];

/// Whether a request speaks this wire: it names a revision the session wire does not
/// know, or carries this wire's `_meta` without naming one.
pub fn speaks(header_version: Option<&str>, legacy: &[&str], method: &str, params: &Value) -> bool {
    match header_version {
        Some(version) => !legacy.contains(&version),
        None => params["_meta"].get(META_VERSION).is_some() || method == "server/discover",
    }
}

/// Everything one request needs to be answered.
pub(super) struct Call<'a> {
    pub gw: &'a Gateway,
    pub sessions: &'a super::Sessions,
    pub sealer: &'a Sealer,
    pub inbound: &'a Inbound,
    pub credentials: Credentials<'a>,
    pub reply: &'a Responder<'a>,
    /// The request's `params` (its `_meta` carries the trace context).
    pub params: &'a Value,
}

/// A refusal of the request's framing: its HTTP status, JSON-RPC code and extra error data.
struct Framing {
    rpc_code: i64,
    message: String,
    data: Map<String, Value>,
}

impl Framing {
    fn new(rpc_code: i64, message: impl Into<String>) -> Self {
        Framing {
            rpc_code,
            message: message.into(),
            data: Map::new(),
        }
    }
}

/// The versions `server/discover` lists, newest first.
fn supported_versions() -> Vec<&'static str> {
    std::iter::once(REVISION).chain(SUPPORTED.iter().copied()).collect()
}

/// The revision's checks on a request's framing, in its order: the version header, the
/// `_meta` it requires, the two agreeing, the version being one we speak, and the routing
/// headers agreeing with the body.
fn check_framing(inbound: &Inbound, method: &str, params: &Value) -> Result<(), Framing> {
    let Some(header) = inbound.mcp.protocol_version.as_deref().map(str::trim) else {
        return Err(Framing::new(HEADER_MISMATCH, "Missing MCP-Protocol-Version header"));
    };
    let meta = params.get("_meta").and_then(Value::as_object);
    let missing: Vec<&str> = [META_VERSION, META_CAPABILITIES]
        .into_iter()
        .filter(|key| meta.and_then(|m| m.get(*key)).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Framing::new(
            INVALID_PARAMS,
            format!("Invalid params: `_meta` is missing {}", missing.join(", ")),
        ));
    }
    let meta_field = |key: &str| meta.and_then(|m| m.get(key)).unwrap_or(&Value::Null);
    if meta_field(META_VERSION).as_str() != Some(header) {
        return Err(Framing::new(
            HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match `_meta` protocolVersion",
        ));
    }
    if header != REVISION {
        let mut refused = Framing::new(UNSUPPORTED_VERSION, "Unsupported protocol version");
        refused.data.insert("supported".into(), json!(supported_versions()));
        refused.data.insert("requested".into(), json!(header));
        return Err(refused);
    }
    if !meta_field(META_CAPABILITIES).is_object() {
        return Err(Framing::new(
            INVALID_PARAMS,
            "Invalid params: `_meta` clientCapabilities must be an object",
        ));
    }
    match inbound.mcp.method.as_deref().map(str::trim) {
        None => return Err(Framing::new(HEADER_MISMATCH, "Missing Mcp-Method header")),
        Some(named) if named != method => {
            return Err(Framing::new(
                HEADER_MISMATCH,
                "Mcp-Method header does not match the body",
            ));
        }
        Some(_) => {}
    }
    let target = match method {
        "tools/call" | "prompts/get" => params["name"].as_str(),
        "resources/read" => params["uri"].as_str(),
        "tasks/get" | "tasks/update" | "tasks/cancel" => params["taskId"].as_str(),
        _ => None,
    };
    match (target, inbound.mcp.name.as_deref().map(str::trim)) {
        (Some(_), None) => Err(Framing::new(HEADER_MISMATCH, "Missing Mcp-Name header")),
        (Some(target), Some(named)) if named != target => {
            Err(Framing::new(HEADER_MISMATCH, "Mcp-Name header does not match the body"))
        }
        _ => Ok(()),
    }
}

/// `x-mcp-header` (SEP-2243): a tool's argument that its schema marks with
/// `"x-mcp-header": "<Name>"` travels again in an `Mcp-Param-<Name>` header, so that
/// proxies can route on it; the two must agree. A value may be sent as `=?base64?…?=`.
fn check_param_headers(schema: &Value, arguments: &Value, headers: &[(String, String)]) -> Result<(), Framing> {
    let Some(properties) = schema["properties"].as_object() else {
        return Ok(());
    };
    for (property, declared) in properties {
        let Some(name) = declared["x-mcp-header"].as_str() else {
            continue;
        };
        let header = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim());
        let argument = match arguments.get(property) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let agrees = match (argument, header) {
            (None, None) => true,
            (Some(argument), Some(header)) => decode_param(header).is_some_and(|h| h == argument),
            _ => false,
        };
        if !agrees {
            return Err(Framing::new(
                HEADER_MISMATCH,
                format!("Mcp-Param-{name} header does not match the argument `{property}`"),
            ));
        }
    }
    Ok(())
}

/// A header value: `=?base64?<strict, padded base64>?=` decoded, anything else literal.
fn decode_param(value: &str) -> Option<String> {
    use base64::Engine as _;
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_string()),
    }
}

/// The input request that asks a human to acknowledge a write's impact.
const ACKNOWLEDGE: &str = "acknowledge_impact";

/// Whether a call should first have its impact acknowledged: a high-risk write the agent
/// asks to execute with no preflight, from a client that can put a question to its human.
/// Without one, the write would fall back to a draft (`agent.preflight_required`).
fn needs_acknowledgement(tool: &Tool, body: &ActionBody, round: &Round) -> bool {
    !tool.is_read()
        && tool.risk >= Risk::High
        && body.wants_execute()
        && body.preflight_hash.is_none()
        && body.preflight_id.is_none()
        && round
            .client_capabilities
            .as_ref()
            .is_some_and(|c| c["elicitation"].is_object())
}

/// Whether the client's human accepted the acknowledgement.
fn acknowledged(responses: Option<&Value>) -> bool {
    responses.is_some_and(|r| r[ACKNOWLEDGE]["action"] == "accept" && r[ACKNOWLEDGE]["content"]["acknowledge"] == true)
}

impl Call<'_> {
    /// Governs an operation. There is no session to check: the binding is the one
    /// `initialize` uses on the session wire.
    async fn govern(&self, operation: Operation) -> Result<Reply, Refused> {
        let binding = Mcp::opening(self.sessions, self.inbound).traced(self.params);
        pipeline::govern(self.gw, self.inbound, Ok(operation), &binding, self.credentials).await
    }

    /// An error the revision defines, audited like any refusal, with the request's id.
    async fn framing_error(&self, id: Value, status: u16, framing: Framing) -> Outbound {
        let failure = Failure::validation(&["_meta"], framing.message).with("reason", "mcp_framing");
        let refused = refusal(self.gw, self.sessions, self.inbound, failure.into(), self.credentials).await;
        self.reply
            .error_with(status, id, framing.rpc_code, &refused, framing.data, Vec::new())
    }

    /// A result of this revision: `resultType`, and caching hints where they apply. Lists
    /// depend on the caller's grants, so they are never shared between credentials.
    fn complete(&self, id: Value, method: &str, mut result: Value) -> Outbound {
        result["resultType"] = json!("complete");
        if CACHEABLE.contains(&method) {
            result["ttlMs"] = json!(self.gw.config.mcp.list_ttl_ms);
            result["cacheScope"] = json!("private");
        }
        self.reply.result(200, id, result, Vec::new())
    }

    /// One request of this wire, already parsed (its params are `self.params`).
    pub async fn request(&self, id: Value, method: &str) -> Outbound {
        let params = self.params;
        if let Err(framing) = check_framing(self.inbound, method, params) {
            return self.framing_error(id, 400, framing).await;
        }
        match method {
            "server/discover" => match self.govern(session_operation(method)).await {
                Ok(_) => self.complete(id, method, discover()),
                Err(refused) => self.reply.refused(id, refused),
            },
            "tools/list" => match self.govern(Operation::Manifest).await {
                Ok(manifest) => self.complete(id, method, tools::list(&manifest.data.into_value())),
                Err(refused) => self.reply.refused(id, refused),
            },
            "prompts/list" => match self.govern(Operation::Prompts).await {
                Ok(listed) => self.complete(id, method, listed.data.into_value()),
                Err(refused) => self.reply.refused(id, refused),
            },
            "prompts/get" => match prompts::operation(params, true) {
                Ok(operation) => {
                    let outcome = self.govern(operation).await;
                    prompts::answer(self.reply, id, outcome, true)
                }
                Err(failure) => self.invalid_params(id, failure).await,
            },
            // No resources are offered: the lists are empty (and cacheable).
            "resources/list" | "resources/templates/list" => match self.govern(session_operation(method)).await {
                Ok(_) => {
                    let key = if method == "resources/list" {
                        "resources"
                    } else {
                        "resourceTemplates"
                    };
                    self.complete(id, method, json!({ key: [] }))
                }
                Err(refused) => self.reply.refused(id, refused),
            },
            "resources/read" => {
                let failure = Failure::new(codes::NOT_FOUND, "No such resource");
                let refused = refusal(self.gw, self.sessions, self.inbound, failure.into(), self.credentials).await;
                // The revision asks a missing resource's error to name it.
                let named: Map<String, Value> = params
                    .get("uri")
                    .map(|uri| ("uri".to_string(), uri.clone()))
                    .into_iter()
                    .collect();
                self.reply
                    .error_with(200, id, INVALID_PARAMS, &refused, named, Vec::new())
            }
            "tools/call" => self.call(id, params).await,
            "tasks/get" | "tasks/update" | "tasks/cancel" => self.task(id, method, params).await,
            // Everything else, the session wire's `initialize`, `ping` and
            // `logging/setLevel` included, is not a method of this revision here.
            other => {
                let failure = Failure::new(codes::NOT_FOUND, format!("Method not found: {other}"))
                    .with("reason", "mcp_method_not_found");
                let refused = refusal(self.gw, self.sessions, self.inbound, failure.into(), self.credentials).await;
                self.reply.error(404, id, METHOD_NOT_FOUND, &refused, Vec::new())
            }
        }
    }

    /// `tools/call`, with the input round the client brings (`inputResponses`,
    /// `requestState`): a read that asks for input answers `input_required`, and so does a
    /// high-risk write asked to execute without a preflight, for the impact to be
    /// acknowledged first.
    async fn call(&self, id: Value, params: &Value) -> Outbound {
        let mut body = match call_body(params) {
            Ok(body) => body,
            Err(message) => return self.invalid_params(id, Failure::validation(&["params"], message)).await,
        };
        let tool = self.gw.catalog().tool(&body.action).cloned();
        if let Some(tool) = &tool
            && let Err(framing) = check_param_headers(
                &tool.input_schema,
                body.payload.as_ref().unwrap_or(&Value::Null),
                &self.inbound.mcp.params,
            )
        {
            return self.framing_error(id, 400, framing).await;
        }
        let arguments = jcs_sha256(body.payload.as_ref().unwrap_or(&Value::Null));
        let sealed_for = request_state::Binding {
            credential: credential_of(self.inbound.authorization.as_deref()),
            tool: body.action.clone(),
            arguments,
        };
        let (round, carried) = match self.round(params, &sealed_for) {
            Ok(round) => round,
            Err(failure) => return self.invalid_params(id, failure).await,
        };
        match carried.and_then(|c| c.gateway) {
            // The second round of an acknowledgement: the preflight the client saw binds
            // the call, if its human accepted and the idempotency key is the one asked
            // about (so a replayed state replays the execution, never repeats it); if not,
            // the call goes on without it and becomes a draft, as any high-risk write
            // without a preflight does.
            Some(pending)
                if acknowledged(round.responses.as_ref())
                    && pending["idempotencyKey"].as_str() == body.idempotency_key.as_deref() =>
            {
                body.preflight_hash = pending["preflightHash"].as_str().map(String::from);
            }
            Some(_) => {}
            None if round.refused.is_none()
                && tool.as_ref().is_some_and(|t| needs_acknowledgement(t, &body, &round)) =>
            {
                return self.acknowledge(id, &body, &sealed_for).await;
            }
            None => {}
        }
        let mut reply = match self.govern(Operation::Call(body, Some(round))).await {
            Ok(reply) => reply,
            Err(refused) => return self.call_refused(id, refused),
        };
        if let Some(ask) = reply.asked.take() {
            let carried = request_state::Opened {
                plugin: ask.state,
                gateway: None,
            };
            let state = self.sealer.seal(&sealed_for, carried, self.gw.clock.now_ms());
            let result = json!({
                "resultType": "input_required",
                "inputRequests": ask.requests,
                "requestState": state,
            });
            return self.reply.result(200, id, result, Vec::new());
        }
        if let Some(task) = reply.task.take() {
            return self.reply.result(200, id, tasks::read_created(&task), Vec::new());
        }
        if tasks::opted_in(&params["_meta"][META_CAPABILITIES])
            && let Data::Value(data) = &reply.data
            && let Some(task) = tasks::created(data)
        {
            return self.reply.result(200, id, task, Vec::new());
        }
        let token = params["_meta"].get("progressToken").cloned();
        let notifications = tools::progress_notifications(token.as_ref(), &reply);
        let mut result = tools::call_result(reply, self.reply.request_id);
        result.result_type = Some("complete");
        self.reply.result_after(id, result, notifications)
    }

    /// The first round of an acknowledgement: the write's preflight (impact and, where
    /// witnessed, state), shown to the client's human, its binding sealed for round two.
    async fn acknowledge(&self, id: Value, body: &ActionBody, sealed_for: &request_state::Binding) -> Outbound {
        let preflight = PreflightBody {
            action: body.action.clone(),
            payload: body.payload.clone().unwrap_or_else(|| json!({})),
        };
        let data = match self.govern(Operation::Preflight(preflight)).await {
            Ok(reply) => reply.data.into_value(),
            Err(refused) => return self.call_refused(id, refused),
        };
        let summary = data["impact"]["summary"]
            .as_str()
            .unwrap_or("This write changes state.");
        let carried = request_state::Opened {
            plugin: None,
            gateway: Some(json!({
                "preflightId": data["preflightId"],
                "preflightHash": data["impactHash"],
                "idempotencyKey": body.idempotency_key,
            })),
        };
        let state = self.sealer.seal(sealed_for, carried, self.gw.clock.now_ms());
        let result = json!({
            "resultType": "input_required",
            "inputRequests": {
                ACKNOWLEDGE: {
                    "method": "elicitation/create",
                    "params": {
                        "message": format!("{summary} ({}, risk {}). Run it now?", body.action, data["risk"].as_str().unwrap_or("high")),
                        "requestedSchema": {
                            "type": "object",
                            "properties": {"acknowledge": {"type": "boolean", "title": "I have read the impact; run it"}},
                            "required": ["acknowledge"]
                        }
                    }
                }
            },
            "requestState": state,
        });
        self.reply.result(200, id, result, Vec::new())
    }

    /// A refused call: input the client cannot give is `-32021`, a refusal of the request
    /// an error, any other a tool result with `isError`.
    fn call_refused(&self, id: Value, refused: Refused) -> Outbound {
        if refused.failure.code == codes::INPUT_REQUIRED
            && refused.failure.details.get("reason") == Some(&json!("tasks"))
        {
            let data = Map::from_iter([("requiredCapabilities".to_string(), tasks::required_capabilities())]);
            return self
                .reply
                .error_with(400, id, MISSING_CLIENT_CAPABILITY, &refused, data, Vec::new());
        }
        if refused.failure.code == codes::INPUT_REQUIRED {
            let required: Map<String, Value> = refused
                .failure
                .details
                .get("missingCapabilities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|c| (c.to_string(), json!({})))
                .collect();
            let data = Map::from_iter([("requiredCapabilities".to_string(), Value::Object(required))]);
            return self
                .reply
                .error_with(400, id, MISSING_CLIENT_CAPABILITY, &refused, data, Vec::new());
        }
        if refused.failure.code == codes::REQUEST_STATE_INVALID {
            return self.reply.error(400, id, INVALID_PARAMS, &refused, Vec::new());
        }
        if is_protocol_refusal(&refused) {
            return self.reply.refused(id, refused);
        }
        let headers = refused.headers.clone();
        let mut result = tools::refusal_result(&refused, self.reply.request_id);
        result["resultType"] = json!("complete");
        self.reply.result(200, id, result, headers)
    }

    /// The round a `tools/call` brings: its answers, checked for shape, and what its
    /// `requestState` carries, once the seal, expiry and binding hold (a state that does
    /// not verify carries nothing, and the round is refused after authentication).
    fn round(
        &self,
        params: &Value,
        sealed_for: &request_state::Binding,
    ) -> Result<(Round, Option<request_state::Opened>), Failure> {
        let responses = input_responses(params)?.map(Value::Object);
        let mut refused = None;
        let carried = match params.get("requestState") {
            None => None,
            Some(Value::String(token)) => match self.sealer.open(token, sealed_for, self.gw.clock.now_ms()) {
                Ok(carried) => Some(carried),
                // Answered by the pipeline after authentication (see `Round::refused`).
                Err(invalid) => {
                    refused = Some(Box::new(
                        Failure::new(codes::REQUEST_STATE_INVALID, invalid.to_string())
                            .with("reason", invalid.reason()),
                    ));
                    None
                }
            },
            Some(_) => {
                return Err(Failure::validation(
                    &["params", "requestState"],
                    "`requestState` must be a string",
                ));
            }
        };
        let meta = &params["_meta"];
        let round = Round {
            responses,
            state: carried.as_ref().and_then(|c| c.plugin.clone()),
            client_capabilities: Some(meta[META_CAPABILITIES].clone()),
            wants_progress: meta
                .get("progressToken")
                .is_some_and(|t| t.is_string() || t.is_number()),
            takes_tasks: tasks::opted_in(&meta[META_CAPABILITIES]),
            refused,
            ..Round::default()
        };
        Ok((round, carried))
    }

    /// `tasks/get`, `tasks/update` and `tasks/cancel`, for a request that opted in to the
    /// extension: on a background read's task, or a draft's. A reviewer, not the agent,
    /// answers a draft's input request, so there `tasks/update` only acknowledges.
    async fn task(&self, id: Value, method: &str, params: &Value) -> Outbound {
        if !tasks::opted_in(&params["_meta"][META_CAPABILITIES]) {
            let failure = Failure::validation(&["_meta"], "this request did not declare the tasks extension")
                .with("reason", "mcp_tasks_not_declared");
            let refused = refusal(self.gw, self.sessions, self.inbound, failure.into(), self.credentials).await;
            let data = Map::from_iter([("requiredCapabilities".to_string(), tasks::required_capabilities())]);
            return self
                .reply
                .error_with(400, id, MISSING_CLIENT_CAPABILITY, &refused, data, Vec::new());
        }
        let Some(task_id) = params["taskId"].as_str() else {
            let failure = Failure::validation(&["params", "taskId"], "`taskId` must be a string");
            return self.invalid_params(id, failure).await;
        };
        let change = match method {
            "tasks/get" => TaskChange::Read,
            "tasks/cancel" => TaskChange::Cancel,
            _ => match input_responses(params) {
                Ok(Some(responses)) => TaskChange::Answer {
                    responses,
                    capabilities: Some(params["_meta"][META_CAPABILITIES].clone()),
                },
                Ok(None) => {
                    let failure =
                        Failure::validation(&["params", "inputResponses"], "`tasks/update` needs `inputResponses`");
                    return self.invalid_params(id, failure).await;
                }
                Err(failure) => return self.invalid_params(id, failure).await,
            },
        };
        let operation = Operation::Task {
            id: task_id.to_string(),
            change,
        };
        match self.govern(operation).await {
            Ok(reply) if method == "tasks/get" => {
                let task = match &reply.task {
                    Some(task) => tasks::read_detailed(task, self.reply.request_id),
                    None => tasks::detailed(&reply.data.into_value(), &self.gw.review_url()),
                };
                self.reply.result(200, id, task, Vec::new())
            }
            Ok(_) => self
                .reply
                .result(200, id, json!({"resultType": "complete"}), Vec::new()),
            // An unknown task, and another key's, are invalid params alike.
            Err(refused) if [codes::DRAFT_NOT_FOUND, codes::NOT_FOUND].contains(&refused.failure.code) => {
                self.reply.error(400, id, INVALID_PARAMS, &refused, Vec::new())
            }
            Err(refused) => self.reply.refused(id, refused),
        }
    }

    async fn invalid_params(&self, id: Value, failure: Failure) -> Outbound {
        let refused = refusal(self.gw, self.sessions, self.inbound, failure.into(), self.credentials).await;
        self.reply.error(400, id, INVALID_PARAMS, &refused, Vec::new())
    }
}

/// A request's `inputResponses`: absent, or an object of named answers, each an object.
pub(super) fn input_responses(params: &Value) -> Result<Option<Map<String, Value>>, Failure> {
    match params.get("inputResponses") {
        None => Ok(None),
        Some(Value::Object(answers)) => {
            if let Some((name, _)) = answers.iter().find(|(_, answer)| !answer.is_object()) {
                return Err(Failure::validation(
                    &["params", "inputResponses", name],
                    "each input response must be an object",
                ));
            }
            Ok(Some(answers.clone()))
        }
        Some(_) => Err(Failure::validation(
            &["params", "inputResponses"],
            "`inputResponses` must be an object",
        )),
    }
}

fn session_operation(method: &str) -> Operation {
    Operation::Session {
        method: audit_name(method),
    }
}

/// `server/discover`: the versions spoken, the capabilities offered, who we are.
fn discover() -> Value {
    json!({
        "supportedVersions": supported_versions(),
        "capabilities": {
            "tools": {},
            "prompts": {},
            "resources": {},
            "extensions": {tasks::EXTENSION: {}},
        },
        "instructions": super::INSTRUCTIONS,
        "_meta": {
            META_SERVER_INFO: super::server_info(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_param_header_mirrors_its_argument_literally_or_in_base64() {
        let schema = json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "other": {}}});
        let headers = |v: &str| vec![("region".to_string(), v.to_string())];
        let args = json!({"region": "Hello"});
        assert!(check_param_headers(&schema, &args, &headers("Hello")).is_ok());
        assert!(check_param_headers(&schema, &args, &headers(" =?base64?SGVsbG8=?= ")).is_ok());
        assert!(check_param_headers(&schema, &args, &headers("=?base64?SGVsbG8?=")).is_err());
        assert!(check_param_headers(&schema, &args, &headers("=?base64?SGVs!!!bG8=?=")).is_err());
        assert!(check_param_headers(&schema, &args, &[]).is_err());
        assert!(check_param_headers(&schema, &json!({}), &headers("Hello")).is_err());
        assert!(check_param_headers(&schema, &json!({}), &[]).is_ok());
        let literal = json!({"region": "=?base64?SGVsbG8="});
        assert!(check_param_headers(&schema, &literal, &headers("=?base64?SGVsbG8=")).is_ok());
    }

    #[test]
    fn the_wire_is_chosen_by_the_revision_named() {
        let legacy = ["2025-11-25", "2025-06-18"];
        let plain = json!({});
        let modern = json!({"_meta": {META_VERSION: REVISION}});
        assert!(speaks(Some(REVISION), &legacy, "tools/list", &plain));
        assert!(speaks(Some("v999"), &legacy, "tools/list", &plain));
        assert!(!speaks(Some("2025-11-25"), &legacy, "tools/list", &modern));
        assert!(speaks(None, &legacy, "tools/list", &modern));
        assert!(speaks(None, &legacy, "server/discover", &plain));
        assert!(!speaks(None, &legacy, "initialize", &plain));
    }
}
