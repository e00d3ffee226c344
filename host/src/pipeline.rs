//! The one place that fixes the order of the governance steps (SPEC section 4).
//!
//! Every agent request runs, in order: (1) parse and bound the request; (2) bearer token
//! present and well formed; (3) hash lookup, not revoked; (4) not expired; (5) app active;
//! (6) actor and tenant bound; (7) network policy; (8) admission control; (9) tool
//! resolved; (10) scopes; (11) tenant boundary; (12) Cedar (which also enforces the app's
//! data policy); (13) input validation; (14) dispatch. The first failure ends the request
//! with its code; nothing after (8) runs for a refused request; and every request, whatever
//! its outcome, gets exactly one terminal audit event before it is answered.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::admission::{Caller, Limit, Permit, Refusal as RateRefusal};
use crate::audit::{AuditEvent, Status};
use crate::auth::{self, AuthFailure, Principal, network};
use crate::authz::{self, Action, AppFacts, RequestFacts};
use crate::catalog::{Issue, RateHint, Tool};
use crate::gateway::Gateway;
use crate::hashing::{canonical_json, sha256_hex};
use crate::plugin::{CallContext, CallError, Content, GuestError};
use crate::protocol::codes::{self, Code};
use crate::protocol::{Envelope, Failure};
use crate::writes;

/// Why the body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// An agent request as the HTTP layer hands it over: no hyper types past this point.
#[derive(Debug)]
pub struct Inbound {
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The `Idempotency-Key` header, an alias of the body's `idempotencyKey`.
    pub idempotency_key: Option<String>,
    /// The `Cookie` header: only the reviewer page on the admin plane reads it.
    pub cookie: Option<String>,
    /// Headers only the MCP binding reads.
    pub mcp: McpHeaders,
    pub peer: IpAddr,
    pub body: Result<Bytes, BodyError>,
}

/// The request headers the MCP binding needs: DNS-rebinding checks and its session.
#[derive(Debug, Default)]
pub struct McpHeaders {
    pub host: Option<String>,
    pub origin: Option<String>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub accept: Option<String>,
}

/// The response the HTTP layer writes.
#[derive(Debug)]
pub struct Outbound {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What a request asks for, once parsed (step 1). REST requests are parsed here; the MCP
/// binding parses JSON-RPC itself and hands its operation to [`govern`].
#[derive(Debug)]
pub enum Operation {
    Manifest,
    Read {
        route: String,
        query: Option<String>,
    },
    Action(ActionBody),
    Preflight(PreflightBody),
    /// `?wait=N`: wait up to N seconds (at most 30) for a pending draft to change.
    Draft {
        id: String,
        wait_seconds: u64,
    },
    /// A call by tool name (MCP `tools/call`): a read runs as a read, anything else as an
    /// action; `body.action` is the tool and `body.payload` its arguments.
    Call(ActionBody),
    /// An MCP lifecycle request (`initialize`, `ping`, a notification, session end): the
    /// caller is authenticated and admitted, and nothing else happens.
    Session {
        method: String,
    },
}

impl Operation {
    /// The tool a request names, before it is resolved: for per-tool admission limits.
    fn tool_hint(&self) -> Option<&str> {
        match self {
            Operation::Read { route, .. } => Some(route),
            Operation::Action(body) => Some(&body.action),
            Operation::Preflight(body) => Some(&body.action),
            Operation::Call(body) => Some(&body.action),
            Operation::Manifest | Operation::Draft { .. } | Operation::Session { .. } => None,
        }
    }

    fn audit_action(&self) -> String {
        match self {
            Operation::Manifest => "agent.manifest.read".into(),
            Operation::Read { route, .. } => format!("agent.read.{route}"),
            Operation::Action(_) => "agent.action.propose".into(),
            Operation::Preflight(_) => "agent.action.preflight".into(),
            Operation::Draft { .. } => "agent.draft.read".into(),
            Operation::Call(_) => "agent.tool.call".into(),
            Operation::Session { method } => format!("agent.mcp.{method}"),
        }
    }
}

/// `POST /api/agent/v1/actions` body (SPEC section 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionBody {
    pub action: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub preflight_id: Option<String>,
    #[serde(default)]
    pub execute: Option<bool>,
    #[serde(default)]
    pub force_draft: Option<bool>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub justification: Option<String>,
    #[serde(default)]
    pub preflight_hash: Option<String>,
    #[serde(default)]
    pub state_witness_hash: Option<String>,
    /// A reviewer's step-up grant for this preflight (`stp_...`), when policy requires one.
    #[serde(default)]
    pub step_up_token: Option<String>,
}

/// `POST /api/agent/v1/preflight` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightBody {
    pub action: String,
    pub payload: Value,
}

/// A successful result.
#[derive(Debug)]
pub struct Reply {
    pub data: Value,
    pub code: Code,
    /// A read's content blocks, for bindings that render them (MCP); REST sends `data`.
    pub content: Vec<Content>,
}

impl Reply {
    fn ok(data: Value) -> Self {
        Reply {
            data,
            code: codes::SUCCESS,
            content: Vec::new(),
        }
    }
}

/// A refusal or failure, with what the audit event and the response need.
#[derive(Debug)]
pub struct Refused {
    pub failure: Failure,
    pub headers: Vec<(&'static str, String)>,
    /// Internal detail for the log and the audit event; never sent to the client.
    pub internal: Option<String>,
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Self {
        Refused {
            failure,
            headers: Vec::new(),
            internal: None,
        }
    }
}

impl Refused {
    /// A failure whose detail goes to the log and audit event, never to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Refused {
            failure: Failure::internal(),
            headers: Vec::new(),
            internal: Some(detail.to_string()),
        }
    }
}

/// What the audit event of a request records beyond the outcome.
#[derive(Debug, Default)]
pub struct Trail {
    pub action: String,
    pub principal: Option<Principal>,
    pub client_ip: Option<IpAddr>,
    pub tool: Option<Arc<Tool>>,
    pub policy_ids: Vec<String>,
    pub draft_id: Option<String>,
    pub details: Map<String, Value>,
    /// Held until the request is answered: it counts the call as in flight.
    pub permit: Option<Permit>,
    /// Time spent per pipeline stage, for the metrics.
    pub stages: Vec<(&'static str, std::time::Duration)>,
}

impl Trail {
    fn time<T>(&mut self, stage: &'static str, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.stages.push((stage, started.elapsed()));
        out
    }
}

/// Which transport a request came through; recorded in its audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    Rest,
    Mcp { session: McpSession<'a> },
}

impl Binding<'_> {
    fn is_mcp(self) -> bool {
        matches!(self, Binding::Mcp { .. })
    }
}

/// An MCP request's session, checked right after authentication (the session is bound to
/// the credential that opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpSession<'a> {
    /// `initialize`: there is none yet.
    Opening,
    /// Every other request: the `Mcp-Session-Id` header, if any.
    Existing(Option<&'a str>),
}

/// How a request may authenticate.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// An `Authorization: Bearer op_...` header.
    Bearer,
    /// No header: act as this app (the MCP binding's loopback-only anonymous integration).
    Anonymous { app_id: &'a str },
}

/// Runs one REST agent request through the pipeline and answers it with an envelope.
pub async fn handle(gw: &Gateway, inbound: Inbound) -> Outbound {
    let operation = parse(&inbound);
    let outcome = govern(gw, &inbound, operation, Binding::Rest, Credentials::Bearer).await;
    envelope_response(&inbound.request_id, outcome)
}

/// Steps 2 to 14 for an operation, then its terminal audit event. Every binding comes
/// through here, so a call over MCP is governed and audited exactly like one over REST.
/// A refusal from step 1 (`operation` is `Err`) is audited too.
pub async fn govern(
    gw: &Gateway,
    inbound: &Inbound,
    operation: Result<Operation, Refused>,
    binding: Binding<'_>,
    credentials: Credentials<'_>,
) -> Result<Reply, Refused> {
    let started = Instant::now();
    let mut trail = Trail {
        action: "agent.request".into(),
        ..Trail::default()
    };
    if binding.is_mcp() {
        trail.details.insert("binding".into(), "mcp".into());
    }
    let outcome = match operation {
        Ok(operation) => steps(gw, inbound, operation, binding, credentials, &mut trail).await,
        Err(refused) => Err(refused),
    };
    finish(gw, inbound, trail, outcome, started).await
}

async fn steps(
    gw: &Gateway,
    inbound: &Inbound,
    operation: Operation,
    binding: Binding<'_>,
    credentials: Credentials<'_>,
    trail: &mut Trail,
) -> Result<Reply, Refused> {
    // (1) The request was parsed and bounded by the binding.
    trail.action = operation.audit_action();

    // (2)-(6) Token present and well formed, found, not revoked, not expired, app active,
    // actor and tenant bound.
    let now = gw.clock.now();
    let anonymous = match credentials {
        Credentials::Anonymous { app_id } if inbound.authorization.is_none() => Some(app_id),
        _ => None,
    };
    if anonymous.is_some() {
        trail
            .details
            .insert("authentication".into(), "anonymous-loopback".into());
    }
    let authenticated = trail.time("authenticate", || match anonymous {
        Some(app_id) => auth::anonymous(&gw.store, app_id),
        None => auth::authenticate(&gw.store, inbound.authorization.as_deref(), now),
    });
    let principal = match authenticated {
        Ok(Ok(principal)) => principal,
        Ok(Err(failure)) => return Err(auth_refusal(failure).into()),
        Err(e) => return Err(Refused::internal(e)),
    };
    trail.principal = Some(principal.clone());
    if let Binding::Mcp {
        session: McpSession::Existing(id),
    } = binding
    {
        crate::mcp::check_session(gw, inbound, id)?;
    }

    // (7) Network policy.
    let client_ip = network::client_ip(
        inbound.peer,
        inbound.forwarded_for.as_deref(),
        &gw.config.trusted_proxies,
    );
    trail.client_ip = Some(client_ip);
    let allowed_ips = string_list(&principal.app.policy["network"]["allowed_ips"]);
    if !network::allowed(client_ip, &allowed_ips) {
        return Err(
            Failure::new(codes::POLICY_DENIED, "IP not allowed for this integration")
                .with("reason", "network_policy")
                .into(),
        );
    }

    // (8) Admission control, before any plugin or Cedar work.
    let client = client_ip.to_string();
    let caller = Caller {
        app_id: &principal.app.id,
        key_id: &principal.key.id,
        tenant: &principal.org_id,
        client: &client,
        tool: operation.tool_hint(),
        class: principal.app.policy["rate_class"].as_str(),
    };
    match trail.time("admission", || gw.admission.admit(&caller, gw.clock.now_ms())) {
        Ok(permit) => trail.permit = Some(permit),
        Err(refusal) => {
            gw.metrics.refusal(refusal.limit.name());
            return Err(rate_refusal(&refusal));
        }
    }

    let request = Governed {
        gw,
        principal: &principal,
        client_ip,
        request_id: &inbound.request_id,
        binding,
    };
    match operation {
        Operation::Manifest => request.manifest(),
        Operation::Read { route, query } => request.read(&route, query.as_deref(), trail).await,
        Operation::Action(body) => request.action(body, trail).await,
        Operation::Preflight(body) => request.preflight(body, trail).await,
        Operation::Draft { id, wait_seconds } => request.draft(&id, wait_seconds, trail).await,
        Operation::Call(body) => request.call(body, trail).await,
        Operation::Session { .. } => Ok(Reply::ok(json!({}))),
    }
}

/// Steps 9 to 14 for an authenticated, admitted caller.
struct Governed<'a> {
    gw: &'a Gateway,
    principal: &'a Principal,
    client_ip: IpAddr,
    request_id: &'a str,
    binding: Binding<'a>,
}

impl Governed<'_> {
    fn app_facts(&self) -> AppFacts<'_> {
        AppFacts {
            app_id: &self.principal.app.id,
            app_name: &self.principal.app.name,
            org_id: &self.principal.org_id,
            key_id: &self.principal.key.id,
            scopes: &self.principal.app.scopes,
            policy: &self.principal.app.policy,
        }
    }

    fn holds_scopes(&self, tool: &Tool) -> bool {
        tool.required_scopes
            .iter()
            .all(|s| self.principal.app.scopes.contains(s))
    }

    /// The manifest: exactly the tools whose scopes are held and that Cedar lets this
    /// app discover, decided without arguments.
    fn manifest(&self) -> Result<Reply, Refused> {
        let app = &self.principal.app;
        let tools = visible_tools(self.gw, app, &self.principal.key.id, self.client_ip);
        Ok(Reply::ok(json!({
            "app": {"id": app.id, "name": app.name, "scope": app.scope, "orgId": app.org_id},
            "tools": tools,
        })))
    }

    fn facts<'p>(&self, payload: Option<&'p Value>, flags: Flags) -> RequestFacts<'p> {
        RequestFacts {
            client_ip: self.client_ip,
            now: self.gw.clock.now(),
            payload,
            has_idempotency_key: flags.idempotency_key,
            has_preflight_hash: flags.preflight_hash,
            has_justification: flags.justification,
        }
    }

    /// Steps 10 to 13 for one tool and payload. The payload may be shaped by the app's
    /// data policy (step 11) before Cedar and the schema see it.
    fn authorize(
        &self,
        tool: &Arc<Tool>,
        action: Action,
        payload: &mut Value,
        flags: Flags,
        trail: &mut Trail,
    ) -> Result<CallContext, Refused> {
        trail.tool = Some(tool.clone());
        // (10) Scopes.
        if !self.holds_scopes(tool) {
            let missing: Vec<&String> = tool
                .required_scopes
                .iter()
                .filter(|s| !self.principal.app.scopes.contains(s))
                .collect();
            return Err(Failure::new(codes::SCOPE_DENIED, "Insufficient permissions")
                .with("missingScopes", json!(missing))
                .into());
        }
        // (11) Tenant boundary and data policy: the plugin learns the tenant from the
        // server-verified app, never from the request, and its data is namespaced by it;
        // a `max_days` window bounds date ranges the request leaves open.
        let policy = &self.principal.app.policy;
        bound_dates(
            payload,
            &tool.input_schema,
            authz::max_days(policy),
            self.gw.clock.now().date(),
        )?;
        let context = CallContext {
            tenant: self.principal.org_id.clone(),
            integration: self.principal.app.id.clone(),
            request_id: self.request_id.to_string(),
            actor: self.principal.actor_user_id.clone(),
            allow_sensitive_fields: authz::allows_sensitive_fields(policy),
        };
        // (12) Cedar. A tool the app may not discover answers like an unknown one; then
        // the call itself, with the data-policy policies.
        let authorizer = self.gw.authorizer();
        let app = self.app_facts();
        let discover = self.facts(None, flags);
        let visible = trail.time("cedar", || {
            authorizer.decide(&app, Action::Discover, &tool.facts(), &discover)
        });
        if !visible.allowed {
            trail.policy_ids = visible.policy_ids;
            trail.details.insert("reason".into(), "hidden".into());
            if !visible.errors.is_empty() {
                trail.details.insert("policyErrors".into(), json!(visible.errors));
            }
            return Err(unknown_tool(tool, self.binding).into());
        }
        // Numbers the impact hash can bind, before Cedar reads the payload: RFC 8785 hashes
        // numbers as IEEE doubles, so two integers past 2^53 could share a hash (and Cedar
        // has no such integers). They must travel as strings.
        if let Some(path) = unbindable_number(payload) {
            let issue = Issue {
                code: "unsafe_integer",
                path,
                message: "integers beyond ±2^53 cannot be bound by the impact hash; send them as strings".into(),
            };
            return Err(invalid_payload(tool, &[issue]));
        }
        let facts = self.facts(Some(payload), flags);
        let decision = trail.time("cedar", || authorizer.decide(&app, action, &tool.facts(), &facts));
        trail.policy_ids = decision.policy_ids.clone();
        if !decision.allowed {
            if !decision.errors.is_empty() {
                trail.details.insert("policyErrors".into(), json!(decision.errors));
            }
            return Err(Failure::new(codes::POLICY_DENIED, "Denied by policy")
                .with("reason", "policy")
                .into());
        }
        // (13) Input validation against the tool's schema.
        if let Err(issues) = trail.time("validate", || tool.validate(payload)) {
            return Err(invalid_payload(tool, &issues));
        }
        Ok(context)
    }

    async fn read(&self, route: &str, query: Option<&str>, trail: &mut Trail) -> Result<Reply, Refused> {
        // (9) Tool resolved from the route.
        let catalog = self.gw.catalog();
        let tool = catalog
            .tool_for_route(route)
            .cloned()
            .ok_or_else(|| Failure::new(codes::NOT_FOUND, "Route not found"))?;
        trail.action = format!("agent.{}", tool.name);
        let payload = query_payload(query, &tool.input_schema)?;
        self.run_read(&tool, payload, trail).await
    }

    /// A call by tool name: reads run as reads (with the arguments as the payload), the
    /// rest enter the write lifecycle as actions. Unknown names are unknown actions.
    async fn call(&self, body: ActionBody, trail: &mut Trail) -> Result<Reply, Refused> {
        let read = self.gw.catalog().tool(&body.action).filter(|t| t.is_read()).cloned();
        match read {
            Some(tool) => {
                trail.action = format!("agent.{}", tool.name);
                let payload = body.payload.unwrap_or_else(|| json!({}));
                if !payload.is_object() {
                    return Err(Failure::validation(&["arguments"], "arguments must be an object").into());
                }
                self.run_read(&tool, payload, trail).await
            }
            None => self.action(body, trail).await,
        }
    }

    /// Steps 10 to 14 of a read.
    async fn run_read(&self, tool: &Arc<Tool>, payload: Value, trail: &mut Trail) -> Result<Reply, Refused> {
        trail.payload(self.gw, &payload);
        let mut payload = payload;
        let context = self.authorize(tool, Action::Read, &mut payload, Flags::default(), trail)?;
        // (14) Dispatch: a read runs now.
        let started = Instant::now();
        let output = tool
            .plugin
            .invoke(&context, &tool.name, &canonical_json(&payload))
            .await;
        trail.stages.push(("plugin", started.elapsed()));
        self.gw.metrics.plugin(tool.plugin.name(), started.elapsed());
        let output = output.map_err(|e| call_refusal(e, true))?;
        let mut data = output.structured.unwrap_or_else(|| json!({}));
        if !context.allow_sensitive_fields {
            let mut redacted = std::collections::BTreeSet::new();
            redact_fields(&mut data, &tool.plugin.manifest().sensitive_fields, &mut redacted);
            trail.details.insert("redactedFields".into(), json!(redacted));
        }
        if let Some(items) = data.get("items").and_then(Value::as_array) {
            trail.details.insert("resultCount".into(), items.len().into());
        }
        Ok(Reply {
            data,
            code: codes::SUCCESS,
            content: output.content,
        })
    }

    /// Resolves an action's tool (step 9): unknown names and reads are unknown actions.
    fn action_tool(&self, name: &str) -> Result<Arc<Tool>, Refused> {
        let catalog = self.gw.catalog();
        match catalog.tool(name) {
            Some(tool) if !tool.is_read() => Ok(tool.clone()),
            None if self.binding.is_mcp() => Err(unknown_mcp_tool().into()),
            Some(tool) => Err(Failure::new(codes::ACTION_UNKNOWN, "Unknown action")
                .with(
                    "hint",
                    format!(
                        "`{}` is a read: use GET /api/agent/v1/{}",
                        tool.name,
                        tool.http_path.as_deref().unwrap_or("")
                    ),
                )
                .into()),
            None => Err(Failure::new(codes::ACTION_UNKNOWN, "Unknown action").into()),
        }
    }

    async fn action(&self, body: ActionBody, trail: &mut Trail) -> Result<Reply, Refused> {
        let tool = self.action_tool(&body.action)?;
        trail.tool = Some(tool.clone());
        let preflight = match &body.preflight_id {
            Some(id) => Some(writes::bound_preflight(self.gw, self.principal, id, &body.action)?),
            None => None,
        };
        let payload = match (&body.payload, &preflight) {
            (Some(payload), _) => payload.clone(),
            (None, Some(preflight)) => preflight.payload.clone(),
            (None, None) => return Err(Failure::validation(&["payload"], "payload or preflightId is required").into()),
        };
        trail.payload(self.gw, &payload);
        let flags = Flags {
            idempotency_key: body.idempotency_key.is_some(),
            preflight_hash: body.preflight_hash.is_some() || preflight.is_some(),
            justification: body.justification.as_deref().is_some_and(|j| !j.trim().is_empty()),
        };
        let mut payload = payload;
        let context = self.authorize(&tool, Action::Propose, &mut payload, flags, trail)?;
        // (14) Dispatch: an action enters the write lifecycle; it is a draft by default.
        // Cedar's `auto_execute` permit is one step of the auto-execute gate.
        let wants_execute = body.execute == Some(true) && body.force_draft != Some(true);
        let cedar_auto_execute = wants_execute && {
            let facts = self.facts(Some(&payload), flags);
            let decision = self
                .gw
                .authorizer()
                .decide(&self.app_facts(), Action::AutoExecute, &tool.facts(), &facts);
            trail
                .details
                .insert("autoExecutePolicyIds".into(), json!(decision.policy_ids));
            decision.allowed
        };
        let proposal = writes::Proposal {
            tool: &tool,
            payload,
            body: &body,
            preflight: preflight.as_ref(),
            cedar_auto_execute,
        };
        let outcome = writes::propose(self.gw, self.principal, &context, proposal).await?;
        trail.action = if outcome.data["status"] == "executed" && outcome.code == codes::SUCCESS {
            "agent.action.auto_execute".into()
        } else {
            "agent.action.draft.created".into()
        };
        trail.draft_id = Some(outcome.draft_id.clone());
        trail.details.extend(outcome.audit_details);
        Ok(Reply {
            data: outcome.data,
            code: outcome.code,
            content: Vec::new(),
        })
    }

    async fn preflight(&self, body: PreflightBody, trail: &mut Trail) -> Result<Reply, Refused> {
        let tool = self.action_tool(&body.action)?;
        trail.tool = Some(tool.clone());
        if !body.payload.is_object() {
            return Err(Failure::validation(&["payload"], "payload must be an object").into());
        }
        trail.payload(self.gw, &body.payload);
        let mut payload = body.payload;
        let context = self.authorize(&tool, Action::Propose, &mut payload, Flags::default(), trail)?;
        let data = writes::preflight(self.gw, self.principal, &context, &tool, payload).await?;
        Ok(Reply::ok(data))
    }

    async fn draft(&self, id: &str, wait_seconds: u64, trail: &mut Trail) -> Result<Reply, Refused> {
        let mine = || -> Result<crate::store::DraftRecord, Refused> {
            let draft = self.gw.store.draft(id).map_err(Refused::internal)?;
            // Another app's draft answers exactly like a missing one.
            draft
                .filter(|d| d.app_id == self.principal.app.id)
                .ok_or_else(|| Failure::new(codes::DRAFT_NOT_FOUND, "Draft not found").into())
        };
        let mut draft = mine()?;
        // A bounded long-poll: re-read until the draft leaves `draft` or the wait ends.
        let deadline = Instant::now() + std::time::Duration::from_secs(wait_seconds);
        while draft.status == "draft" && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            draft = mine()?;
        }
        trail.draft_id = Some(draft.id.clone());
        let execution = self.gw.store.latest_execution(&draft.id).map_err(Refused::internal)?;
        Ok(Reply::ok(
            json!({"draft": writes::public_draft(&draft), "execution": execution}),
        ))
    }
}

/// Replaces the named fields, at any depth, with `[redacted]`; records which it found.
fn redact_fields(value: &mut Value, fields: &[String], found: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if fields.iter().any(|f| f == key) {
                    if !v.is_null() {
                        *v = Value::String("[redacted]".into());
                    }
                    found.insert(key.clone());
                } else {
                    redact_fields(v, fields, found);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_fields(v, fields, found)),
        _ => {}
    }
}

/// The tools an app can discover: its scopes held and Cedar's `discover` allowed, without
/// arguments. The manifest, MCP `tools/list` and the admin's app view share it.
pub fn visible_tools(gw: &Gateway, app: &crate::store::AppRecord, key_id: &str, client_ip: IpAddr) -> Vec<Value> {
    let catalog = gw.catalog();
    let authz = gw.authorizer();
    let empty = String::new();
    let facts = AppFacts {
        app_id: &app.id,
        app_name: &app.name,
        org_id: app.org_id.as_ref().unwrap_or(&empty),
        key_id,
        scopes: &app.scopes,
        policy: &app.policy,
    };
    let request = RequestFacts {
        client_ip,
        now: gw.clock.now(),
        payload: None,
        has_idempotency_key: false,
        has_preflight_hash: false,
        has_justification: false,
    };
    let limits = gw.admission.limits();
    let rate = limits.class(app.policy["rate_class"].as_str()).per_key;
    let hint = RateHint {
        requests: rate.requests,
        window_seconds: rate.window_seconds,
    };
    catalog
        .tools()
        .filter(|tool| tool.required_scopes.iter().all(|s| app.scopes.contains(s)))
        .filter(|tool| authz.decide(&facts, Action::Discover, &tool.facts(), &request).allowed)
        .map(|tool| tool.describe(&hint))
        .collect()
}

/// The longest `GET /drafts/{id}?wait=` allowed.
const MAX_DRAFT_WAIT_SECONDS: u64 = 30;

/// Request flags Cedar sees in its context.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    idempotency_key: bool,
    preflight_hash: bool,
    justification: bool,
}

/// Over MCP, a name that does not exist and one the caller may not see answer alike.
fn unknown_mcp_tool() -> Failure {
    Failure::new(codes::ACTION_UNKNOWN, "Unknown tool")
}

/// The answer for a tool the app may not see: the same as for a tool that does not exist.
/// Over MCP every tool is called by name, so every unknown one is an unknown tool.
fn unknown_tool(tool: &Tool, binding: Binding<'_>) -> Failure {
    if binding.is_mcp() {
        unknown_mcp_tool()
    } else if tool.is_read() {
        Failure::new(codes::NOT_FOUND, "Route not found")
    } else {
        Failure::new(codes::ACTION_UNKNOWN, "Unknown action")
    }
}

/// Applies a `max_days` window to a payload whose schema has `startDate`/`endDate`: an
/// open end becomes today (UTC) and an open start `max_days - 1` days before the end, as
/// the reference does. Cedar's `base.data-policy.max-days` then bounds the range.
fn bound_dates(payload: &mut Value, schema: &Value, max_days: i64, today: time::Date) -> Result<(), Refused> {
    let has = |field: &str| schema["properties"].get(field).is_some();
    if max_days <= 0 || !has("startDate") || !has("endDate") {
        return Ok(());
    }
    let Some(map) = payload.as_object_mut() else {
        return Ok(());
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(|s| time::Date::parse(s.get(..10).unwrap_or(s), &format))
    };
    let end = match parse(map.get("endDate")) {
        Some(Ok(date)) => date,
        Some(Err(_)) => return Err(Failure::validation(&["endDate"], "`endDate` must be a date (YYYY-MM-DD)").into()),
        None => today,
    };
    let start = match parse(map.get("startDate")) {
        Some(Ok(date)) => date,
        Some(Err(_)) => {
            return Err(Failure::validation(&["startDate"], "`startDate` must be a date (YYYY-MM-DD)").into());
        }
        None => end.checked_sub(time::Duration::days(max_days - 1)).unwrap_or(end),
    };
    if start > end {
        return Err(Failure::new(codes::ACTION_INVALID, "Invalid date range").into());
    }
    let text = |d: time::Date| d.format(&format).unwrap_or_default();
    map.insert("startDate".into(), text(start).into());
    map.insert("endDate".into(), text(end).into());
    Ok(())
}

/// Step 1: route and body. Everything here is decided without credentials.
pub(crate) fn parse(inbound: &Inbound) -> Result<Operation, Refused> {
    let body = match &inbound.body {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return Err(Failure::new(codes::REQUEST_TOO_LARGE, "Request body too large").into()),
        Err(BodyError::Unreadable) => return Err(Failure::validation(&[], "request body could not be read").into()),
    };
    if let Some(query) = &inbound.query
        && form_urlencoded::parse(query.as_bytes()).any(|(k, _)| is_credential_param(&k))
    {
        return Err(Failure::validation(
            &["query"],
            "credentials are not accepted in the query string; use the Authorization header",
        )
        .into());
    }
    let Some(rest) = inbound.path.strip_prefix("/api/agent/v1/") else {
        return Err(not_found());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (inbound.method.as_str(), segments.as_slice()) {
        ("GET", ["manifest"]) => {
            no_body(body)?;
            Ok(Operation::Manifest)
        }
        ("GET", ["drafts", id]) if !id.is_empty() => {
            no_body(body)?;
            let wait = form_urlencoded::parse(inbound.query.as_deref().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "wait")
                .map(|(_, v)| v.parse::<u64>())
                .transpose()
                .map_err(|_| {
                    Refused::from(Failure::validation(
                        &["wait"],
                        "`wait` must be whole seconds (at most 30)",
                    ))
                })?
                .unwrap_or(0);
            if wait > MAX_DRAFT_WAIT_SECONDS {
                return Err(Failure::validation(&["wait"], "`wait` must be whole seconds (at most 30)").into());
            }
            Ok(Operation::Draft {
                id: (*id).to_string(),
                wait_seconds: wait,
            })
        }
        ("POST", ["actions"]) => {
            let mut action: ActionBody = json_body(inbound, body)?;
            match (&action.idempotency_key, &inbound.idempotency_key) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Failure::validation(
                        &["idempotencyKey"],
                        "the `Idempotency-Key` header and `idempotencyKey` differ",
                    )
                    .into());
                }
                (None, Some(header)) => action.idempotency_key = Some(header.clone()),
                _ => {}
            }
            Ok(Operation::Action(action))
        }
        ("POST", ["preflight"]) => Ok(Operation::Preflight(json_body(inbound, body)?)),
        ("GET", [route]) if is_route(route) => {
            no_body(body)?;
            Ok(Operation::Read {
                route: (*route).to_string(),
                query: inbound.query.clone(),
            })
        }
        _ => Err(not_found()),
    }
}

fn not_found() -> Refused {
    Failure::new(codes::NOT_FOUND, "Route not found").into()
}

fn is_route(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_credential_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "authorization",
        "bearer",
    ]
    .contains(&name.as_str())
}

fn no_body(body: &Bytes) -> Result<(), Refused> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Failure::validation(&[], "this route takes no request body").into())
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(inbound: &Inbound, body: &Bytes) -> Result<T, Refused> {
    let is_json = inbound.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(Failure::validation(&["content-type"], "content type must be application/json").into());
    }
    // serde also reads a struct from a JSON array; a request body must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::validation(&[], "body must be a JSON object").into());
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = if e.is_syntax() || e.is_eof() {
            format!("body is not valid JSON: {e}")
        } else {
            format!("body does not match the request schema: {e}")
        };
        Failure::validation(&[], message).into()
    })
}

/// Query parameters as the read tool's payload, typed by its input schema.
fn query_payload(query: Option<&str>, schema: &Value) -> Result<Value, Refused> {
    let mut payload = Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let kind = schema["properties"][key.as_ref()]["type"].as_str();
        let typed = match kind {
            Some("integer") => value
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(value.to_string())),
            Some("number") => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(value.to_string())),
            Some("boolean") => match value.as_ref() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(value.to_string()),
            },
            _ => Value::String(value.to_string()),
        };
        if payload.insert(key.to_string(), typed).is_some() {
            return Err(Failure::validation(&[key.as_ref()], format!("query parameter `{key}` is repeated")).into());
        }
    }
    Ok(Value::Object(payload))
}

/// A payload refused by validation: `common.validation` for reads, `agent.action_invalid`
/// for actions (the reference's codes).
fn invalid_payload(tool: &Tool, issues: &[Issue]) -> Refused {
    let (code, message) = if tool.is_read() {
        (codes::VALIDATION, "Validation failed")
    } else {
        (codes::ACTION_INVALID, "Invalid payload for the action")
    };
    Failure::new(code, message).with("issues", issues_json(issues)).into()
}

/// The path of the first number an IEEE double cannot hold exactly, if any.
pub fn unbindable_number(value: &Value) -> Option<Vec<String>> {
    const SAFE: u64 = (1 << 53) - 1;
    match value {
        Value::Number(n) => {
            let unsafe_int =
                n.as_u64().is_some_and(|u| u > SAFE) || n.as_i64().is_some_and(|i| i.unsigned_abs() > SAFE);
            unsafe_int.then(Vec::new)
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            unbindable_number(v).map(|mut path| {
                path.insert(0, i.to_string());
                path
            })
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            unbindable_number(v).map(|mut path| {
                path.insert(0, k.clone());
                path
            })
        }),
        _ => None,
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value.as_array().map_or_else(Vec::new, |a| {
        a.iter().filter_map(|v| v.as_str().map(String::from)).collect()
    })
}

fn issues_json(issues: &[Issue]) -> Value {
    serde_json::to_value(issues).unwrap_or_else(|_| json!([]))
}

/// Payloads are stored in the audit trail as this hash, and in clear only when the config
/// asks for redacted capture.
pub fn payload_hash(payload: &Value) -> String {
    sha256_hex(canonical_json(payload).as_bytes())
}

/// Keys whose values never reach the audit trail, even with redacted capture.
const SENSITIVE_KEYS: &[&str] = &[
    "title",
    "notes",
    "description",
    "password",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "email",
];

/// The payload with sensitive values replaced by `[redacted]`, at any depth.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let sensitive = SENSITIVE_KEYS.iter().any(|s| k.to_ascii_lowercase().contains(s));
                    (
                        k.clone(),
                        if sensitive {
                            Value::String("[redacted]".into())
                        } else {
                            redact(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

impl Trail {
    /// Records a payload as the config says: its hash, and a redacted copy if enabled.
    fn payload(&mut self, gw: &Gateway, payload: &Value) {
        self.details
            .insert("payload_sha256".into(), payload_hash(payload).into());
        if gw.config.audit_capture == crate::config::Capture::Redacted {
            self.details.insert("payload".into(), redact(payload));
        }
    }
}

fn auth_refusal(failure: AuthFailure) -> Failure {
    match failure {
        AuthFailure::Missing => Failure::new(codes::TOKEN_INVALID, "Missing agent token"),
        AuthFailure::Invalid => Failure::new(codes::TOKEN_INVALID, "Invalid agent token"),
        AuthFailure::Expired => Failure::new(codes::TOKEN_EXPIRED, "Agent token expired"),
        AuthFailure::Misconfigured => Failure::new(codes::FORBIDDEN, "Agent app is misconfigured"),
    }
}

fn rate_refusal(refusal: &RateRefusal) -> Refused {
    let (code, message) = match refusal.limit {
        Limit::PerKey | Limit::PerApp | Limit::PerTool | Limit::PerTenant => {
            (codes::RATE_LIMITED, "Rate limit exceeded")
        }
        Limit::Quota => (codes::QUOTA_EXCEEDED, "Quota exceeded"),
        Limit::Concurrency => (codes::CONCURRENCY_LIMITED, "Too many calls in flight"),
        Limit::Overloaded => (codes::OVERLOADED, "The gateway is overloaded"),
    };
    let failure = Failure::new(code, message)
        .with("retry_after_ms", refusal.retry_after_ms)
        .with("limit", refusal.limit.name());
    let mut headers = vec![("Retry-After", refusal.retry_after_seconds().to_string())];
    headers.extend(refusal.headers());
    Refused {
        failure,
        headers,
        internal: None,
    }
}

/// Maps a failed plugin call. Messages the agent sees are fixed strings or the plugin's
/// own words for its documented input and not-found cases; everything else is sanitized.
pub fn call_refusal(error: CallError, read: bool) -> Refused {
    let internal = Some(error.to_string());
    let failure = match error {
        CallError::Timeout => Failure::new(codes::PLUGIN_TIMEOUT, "The tool did not answer in time"),
        CallError::Guest(GuestError::InvalidInput(message)) => {
            let code = if read { codes::VALIDATION } else { codes::ACTION_INVALID };
            Failure::new(code, sanitize(&message))
        }
        CallError::Guest(GuestError::NotFound(message)) => Failure::new(codes::NOT_FOUND, sanitize(&message)),
        CallError::Guest(GuestError::Conflict(message)) => Failure::new(codes::ACTION_INVALID, sanitize(&message)),
        CallError::Guest(GuestError::Unavailable(_))
        | CallError::Guest(GuestError::UnknownTool(_))
        | CallError::Instantiate(_) => Failure::new(codes::PLUGIN_UNAVAILABLE, "The tool is unavailable"),
        CallError::Guest(GuestError::Internal(_))
        | CallError::Trap(_)
        | CallError::OutOfMemory
        | CallError::OutputTooLarge { .. } => Failure::new(codes::EXECUTION_FAILED, "The tool failed"),
    };
    Refused {
        failure,
        headers: Vec::new(),
        internal,
    }
}

/// Plugin text shown to agents: one short line, no control characters.
fn sanitize(message: &str) -> String {
    message.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Writes the terminal audit event and hands the outcome back. If the event cannot be
/// made durable, the outcome becomes an internal error instead of an unaudited answer.
async fn finish(
    gw: &Gateway,
    inbound: &Inbound,
    mut trail: Trail,
    outcome: Result<Reply, Refused>,
    started: Instant,
) -> Result<Reply, Refused> {
    let (status_class, code, http_status) = match &outcome {
        Ok(reply) => (Status::Success, reply.code, 200),
        Err(refused) => {
            let code = refused.failure.code;
            let class = match code.status {
                401 | 403 | 409 | 429 => Status::Denied,
                _ => Status::Failed,
            };
            (class, code, code.status)
        }
    };
    let mut event = AuditEvent::new(&trail.action, status_class, code.name, gw.now_iso());
    event.request_id = Some(inbound.request_id.clone());
    event.ip = Some(trail.client_ip.unwrap_or(inbound.peer).to_string());
    event.user_agent = inbound.user_agent.as_ref().map(|ua| ua.chars().take(256).collect());
    if let Some(p) = &trail.principal {
        event.org_id = Some(p.org_id.clone());
        event.app_id = Some(p.app.id.clone());
        event.key_id = Some(p.key.id.clone());
        event.actor_user_id = Some(p.actor_user_id.clone());
    }
    if let Some(tool) = &trail.tool {
        event.tool = Some(tool.name.clone());
        event.risk = Some(tool.risk.as_str().into());
        event.plugin = Some(tool.plugin.name().into());
        event.plugin_digest = Some(tool.plugin.digest().into());
    }
    event.policy_ids = std::mem::take(&mut trail.policy_ids);
    event.draft_id = trail.draft_id.take();
    event.details = std::mem::take(&mut trail.details);
    event.details.insert("method".into(), inbound.method.clone().into());
    event
        .details
        .insert("path".into(), inbound.path.chars().take(512).collect::<String>().into());
    if let Err(refused) = &outcome
        && let Some(internal) = &refused.internal
    {
        tracing::warn!(request_id = %inbound.request_id, error = %internal, code = code.name, "request failed");
        event.details.insert("error".into(), internal.clone().into());
    }
    event.latency_us = Some(i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX));
    let tool_name = event.tool.clone();

    let audit_started = Instant::now();
    let recorded = gw.audit.record(event).await;
    gw.metrics.stage("audit", audit_started.elapsed());
    for (stage, elapsed) in &trail.stages {
        gw.metrics.stage(stage, *elapsed);
    }
    gw.metrics
        .request("agent", tool_name.as_deref(), code.name, started.elapsed());
    tracing::info!(
        target: "openport::access",
        request_id = %inbound.request_id,
        method = %inbound.method,
        path = %inbound.path,
        status = http_status,
        code = code.name,
        tool = tool_name.as_deref().unwrap_or(""),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    drop(trail.permit);
    if let Err(e) = recorded {
        tracing::error!(request_id = %inbound.request_id, error = %e, "audit event not durable; refusing to answer");
        return Err(Failure::internal().into());
    }
    outcome
}

/// The REST answer: the SPEC's envelope, with the code's HTTP status.
fn envelope_response(request_id: &str, outcome: Result<Reply, Refused>) -> Outbound {
    match outcome {
        Ok(reply) => respond(
            200,
            Envelope::success_with(reply.code, reply.data, request_id),
            Vec::new(),
            request_id,
        ),
        Err(refused) => respond(
            refused.failure.code.status,
            Envelope::failure(&refused.failure, request_id),
            refused.headers,
            request_id,
        ),
    }
}

/// An envelope response with the headers every response carries.
pub fn respond(status: u16, envelope: Envelope, extra: Vec<(&'static str, String)>, request_id: &str) -> Outbound {
    respond_json(status, envelope.to_bytes(), extra, request_id)
}

/// A JSON body with the headers every response carries (the envelope, or JSON-RPC).
pub fn respond_json(status: u16, body: Vec<u8>, extra: Vec<(&'static str, String)>, request_id: &str) -> Outbound {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Request-Id", request_id.to_string()),
        ("Cache-Control", "no-store".to_string()),
    ];
    headers.extend(extra);
    Outbound { status, headers, body }
}
