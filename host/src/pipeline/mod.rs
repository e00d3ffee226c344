//! The one place that fixes the order of the governance steps (SPEC section 4).
//!
//! Every agent request runs, in order: (1) parse and bound the request (the binding:
//! `rest` or `mcp`); (2) bearer token present and well formed; (3) hash lookup, not
//! revoked; (4) not expired; (5) app active; (6) actor and tenant bound; (7) network
//! policy; (8) admission control; (9) tool resolved; (10) scopes; (11) tenant boundary and
//! data policy; (12) Cedar; (13) input validation; (14) dispatch. The first failure ends
//! the request with its code; nothing after (8) runs for a refused request, and nothing
//! the request names (a preflight, a draft) is read before (12) allowed it (one exception,
//! in `action`: a preflight that *is* the arguments); every request, whatever its outcome,
//! gets exactly one terminal audit event before it is answered.

mod discovery;
mod facts;
mod gate;
mod payload;
mod prompts;
mod read;
mod request;
mod task;
mod trail;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::Caller;
use crate::attr::Attr;
use crate::auth::{self, Principal, network};
use crate::authz::Action;
use crate::catalog::Tool;
use crate::clock::{Stopwatch, unix_ms};
use crate::gateway::Gateway;
use crate::metrics::Stage;
use crate::outcome::{Refused, Reply, auth_refusal, rate_refusal};
use crate::plugin::CallContext;
use crate::protocol::trace::TraceContext;
use crate::protocol::{ActionBody, Failure, PreflightBody, codes};
use crate::tool::Risk;
use crate::writes;

pub use discovery::{Viewer, visible_tools};
pub use payload::unbindable_number;
pub use request::{Binding, BodyError, Credentials, Flags, Inbound, McpHeaders, Operation, Outbound, TaskChange};
pub use trail::{payload_hash, redact};

use payload::{bindable_numbers, bound_dates, invalid_payload, typed_args};
use trail::{Trail, finish};

/// Steps 2 to 14 for an operation, then its terminal audit event. Every binding comes
/// through here, so a call over MCP is governed and audited exactly like one over REST.
/// A refusal from step 1 (`operation` is `Err`) is audited too.
pub async fn govern(
    gw: &Gateway,
    inbound: &Inbound,
    operation: Result<Operation, Refused>,
    binding: &dyn Binding,
    credentials: Credentials<'_>,
) -> Result<Reply, Refused> {
    let started = Stopwatch::start();
    let mut trail = Trail::new(binding.name());
    let trace = binding.trace().or(inbound.trace.as_ref());
    if let Some(trace) = trace {
        trail
            .details
            .insert("traceparent".into(), trace.traceparent.clone().into());
        if let Some(state) = &trace.tracestate {
            trail.details.insert("tracestate".into(), state.clone().into());
        }
    }
    let outcome = match gate::before(gw, inbound, &mut trail) {
        Err(refused) => Err(refused),
        Ok(client) => {
            let outcome = match operation {
                Ok(operation) => steps(gw, inbound, operation, binding, credentials, trace, &mut trail).await,
                Err(refused) => Err(refused),
            };
            gate::after(gw, &client, &mut trail, outcome)
        }
    };
    finish(gw, inbound, trail, outcome, started).await
}

async fn steps(
    gw: &Gateway,
    inbound: &Inbound,
    operation: Operation,
    binding: &dyn Binding,
    credentials: Credentials<'_>,
    trace: Option<&TraceContext>,
    trail: &mut Trail,
) -> Result<Reply, Refused> {
    // (1) The binding parsed and bounded the request.
    trail.action = operation.audit_action();

    // (2)-(6) Token present and well formed, found, not revoked, not expired, app active,
    // actor and tenant bound; then the binding's own check of the caller. Every step below
    // decides at this one reading of the clock, so Cedar's two decisions see the same time.
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
    let authenticated = trail.time(Stage::Authenticate, || match anonymous {
        Some(app_id) => auth::anonymous(&gw.store, app_id),
        None => auth::authenticate(&gw.store, inbound.authorization.as_deref(), now),
    });
    let principal = match authenticated {
        Ok(Ok(principal)) => Arc::new(principal),
        Ok(Err(failure)) => return Err(auth_refusal(failure)),
        Err(e) => return Err(Refused::internal(e)),
    };
    trail.principal = Some(principal.clone());
    binding.check_session()?;

    // (7) Network policy.
    let client_ip = trail.client_ip.unwrap_or(inbound.peer);
    if !network::allowed(client_ip, principal.app.policy.allowed_ips()) {
        trail.coalescable = true;
        let denied = Failure::new(codes::POLICY_DENIED, "IP not allowed for this integration");
        return Err(denied.with("reason", "network_policy").into());
    }
    // An app bound to client certificates is served only over a connection that
    // presented one of them (mutual TLS): a stolen token alone is not enough.
    let bound = principal.app.policy.client_certificates();
    if !bound.is_empty() && !inbound.client_cert.as_ref().is_some_and(|c| bound.contains(c)) {
        trail.coalescable = true;
        let denied = Failure::new(codes::POLICY_DENIED, "This integration requires its client certificate");
        return Err(denied.with("reason", "client_certificate").into());
    }

    // (8) Admission control, before any plugin or Cedar work.
    let client = client_ip.to_string();
    let caller = Caller {
        app_id: &principal.app.id,
        key_id: &principal.key.id,
        tenant: &principal.org_id,
        client: &client,
        tool: operation.tool_hint(),
        class: principal.app.policy.rate_class(),
    };
    match trail.time(Stage::Admission, || gw.admission.admit(&caller, unix_ms(now))) {
        Ok(permit) => trail.permit = Some(permit),
        Err(refusal) => {
            gw.metrics.refusal(refusal.limit.name());
            trail.coalescable = true;
            return Err(rate_refusal(&refusal));
        }
    }

    let request = Governed {
        gw,
        principal: &principal,
        client_ip,
        request_id: &inbound.request_id,
        binding,
        trace,
        data_policy: principal.app.policy.cedar_data_policy(),
        now,
    };
    match operation {
        Operation::Manifest => request.manifest(),
        Operation::Read { route, query } => request.read(&route, query.as_deref(), trail).await,
        Operation::Action(body) => request.action(body, trail).await,
        Operation::Preflight(body) => request.preflight(body, trail).await,
        Operation::Draft { id, wait_seconds } => request.draft(&id, wait_seconds, trail).await,
        Operation::Call(body, round) => request.call(body, round, trail).await,
        Operation::Task { id, change } => request.task(id, change, trail).await,
        Operation::Prompts => Ok(request.prompts()),
        Operation::Prompt { name, arguments, round } => request.prompt(&name, arguments, round, trail),
        Operation::Session { .. } => Ok(Reply::ok(json!({}))),
    }
}

/// Steps 9 to 14 for an authenticated, admitted caller.
struct Governed<'a> {
    gw: &'a Gateway,
    principal: &'a Principal,
    client_ip: std::net::IpAddr,
    request_id: &'a str,
    binding: &'a dyn Binding,
    /// Passed on to the outbound calls plugins make for this request.
    trace: Option<&'a TraceContext>,
    /// The app's data policy as Cedar sees it, built once for the request's decisions.
    data_policy: Attr,
    /// The time the request's decisions are made at.
    now: time::OffsetDateTime,
}

impl Governed<'_> {
    /// Discovery: exactly the tools whose scopes are held and that Cedar lets this app
    /// discover, decided without arguments.
    fn manifest(&self) -> Result<Reply, Refused> {
        let app = &self.principal.app;
        let tools = visible_tools(self.gw, app, self.viewer());
        Ok(Reply::ok(json!({
            "app": {"id": app.id, "name": app.name, "scope": app.scope, "orgId": app.org_id},
            "tools": tools,
        })))
    }

    /// Steps (10) and (12) on the tool alone: the scopes are held, and Cedar lets this app
    /// see the tool (one it may not see answers like one that does not exist). Nothing the
    /// request names has been read yet.
    fn may_use(&self, tool: &Arc<Tool>, flags: Flags, trail: &mut Trail) -> Result<(), Refused> {
        trail.tool = Some(tool.clone());
        // (10) Scopes.
        let scopes = &self.principal.app.scopes;
        let missing: Vec<&String> = tool.required_scopes.iter().filter(|s| !scopes.contains(s)).collect();
        if !missing.is_empty() {
            return Err(Failure::new(codes::SCOPE_DENIED, "Insufficient permissions")
                .with("missingScopes", json!(missing))
                .into());
        }
        // (12) Cedar, without arguments: may this app see the tool at all?
        let authorizer = self.gw.authorizer();
        let discover = self.facts(None, flags);
        let visible = trail.time(Stage::Cedar, || {
            authorizer.decide(&self.app_facts(), Action::Discover, &tool.facts(), &discover)
        });
        trail.record_shadow(&visible, &authorizer, &self.gw.metrics);
        if !visible.allowed {
            trail.policy_ids = visible.policy_ids;
            trail.details.insert("reason".into(), "hidden".into());
            if !visible.errors.is_empty() {
                trail.details.insert("policyErrors".into(), json!(visible.errors));
            }
            return Err(self.binding.hidden_tool(tool).into());
        }
        Ok(())
    }

    /// Steps (11) to (13) on the arguments: the tenant boundary and data policy (which may
    /// shape the payload), Cedar on the call itself, and the tool's schema.
    fn authorize(
        &self,
        tool: &Arc<Tool>,
        action: Action,
        payload: &mut Value,
        flags: Flags,
        trail: &mut Trail,
    ) -> Result<(CallContext, Attr), Refused> {
        // (11) The plugin learns the tenant from the server-verified app, never from the
        // request, and its data is namespaced by it; a `max_days` window bounds date ranges
        // the request leaves open.
        let policy = &self.principal.app.policy;
        bound_dates(
            payload,
            tool.plugin.manifest().data_policy.date_range.as_ref(),
            policy.max_days(),
            self.now.date(),
        )?;
        let context = CallContext {
            tenant: self.principal.org_id.clone(),
            integration: self.principal.app.id.clone(),
            request_id: self.request_id.to_string(),
            actor: self.principal.actor_user_id.clone(),
            allow_sensitive_fields: policy.allows_sensitive_fields(),
            trace: self.trace.cloned(),
            reuse_instance: tool.risk < Risk::High,
            execution_id: None,
        };
        // (12) Cedar on the call, with the data-policy policies.
        bindable_numbers(tool, payload)?;
        let args = typed_args(tool, payload)?;
        let facts = self.facts(Some(&args), flags);
        let authorizer = self.gw.authorizer();
        let decision = trail.time(Stage::Cedar, || {
            authorizer.decide(&self.app_facts(), action, &tool.facts(), &facts)
        });
        trail.record_shadow(&decision, &authorizer, &self.gw.metrics);
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
        if let Err(issues) = trail.time(Stage::Validate, || tool.validate(payload)) {
            return Err(invalid_payload(tool, &issues));
        }
        Ok((context, args))
    }

    /// (9) An action's tool: unknown names and reads are not actions.
    fn action_tool(&self, name: &str) -> Result<Arc<Tool>, Refused> {
        match self.gw.catalog().tool(name) {
            Some(tool) if !tool.is_read() => Ok(tool.clone()),
            found => Err(self.binding.not_an_action(found.map(|t| &**t)).into()),
        }
    }

    async fn action(&self, body: ActionBody, trail: &mut Trail) -> Result<Reply, Refused> {
        let tool = self.action_tool(&body.action)?;
        let flags = Flags {
            idempotency_key: body.idempotency_key.is_some(),
            preflight_hash: body.preflight_hash.is_some() || body.preflight_id.is_some(),
            justification: body.has_justification(),
        };
        if let Some(payload) = &body.payload {
            trail.payload(self.gw, payload);
        }
        self.may_use(&tool, flags, trail)?;
        // Without a payload the arguments are the preflight's: reading it is part of
        // resolving the request, and it answers alike for unknown and other callers' ids.
        let mut preflight = match (&body.payload, &body.preflight_id) {
            (None, Some(id)) => Some(writes::bound_preflight(self.gw, self.principal, id, &body.action)?),
            _ => None,
        };
        let mut payload = match (&body.payload, &preflight) {
            (Some(payload), _) => payload.clone(),
            (None, Some(preflight)) => preflight.payload.clone(),
            (None, None) => return Err(Failure::validation(&["payload"], "payload or preflightId is required").into()),
        };
        if body.payload.is_none() {
            trail.payload(self.gw, &payload);
        }
        let (context, args) = self.authorize(&tool, Action::Propose, &mut payload, flags, trail)?;
        // (14) Dispatch: an action enters the write lifecycle; it is a draft by default.
        if let (None, Some(id)) = (&preflight, &body.preflight_id) {
            preflight = Some(writes::bound_preflight(self.gw, self.principal, id, &body.action)?);
        }
        // Cedar's `auto_execute` permit is one step of the auto-execute gate.
        let auto_execute = if body.wants_execute() {
            let facts = self.facts(Some(&args), flags);
            let authorizer = self.gw.authorizer();
            let decision = authorizer.decide(&self.app_facts(), Action::AutoExecute, &tool.facts(), &facts);
            trail.record_shadow(&decision, &authorizer, &self.gw.metrics);
            trail
                .details
                .insert("autoExecutePolicyIds".into(), json!(decision.policy_ids));
            writes::AutoExecute::Requested {
                cedar_allows: decision.allowed,
            }
        } else {
            writes::AutoExecute::NotRequested
        };
        let proposal = writes::Proposal {
            tool: &tool,
            payload,
            body: &body,
            preflight: preflight.as_ref(),
            auto_execute,
        };
        let outcome = writes::propose(self.gw, self.principal, &context, proposal).await?;
        trail.action = outcome.disposition.audit_action().into();
        trail.draft_id = Some(outcome.draft_id.clone());
        trail.details.extend(outcome.audit_details);
        Ok(Reply {
            code: outcome.code,
            ..Reply::ok(outcome.data)
        })
    }

    async fn preflight(&self, body: PreflightBody, trail: &mut Trail) -> Result<Reply, Refused> {
        let tool = self.action_tool(&body.action)?;
        trail.payload(self.gw, &body.payload);
        self.may_use(&tool, Flags::default(), trail)?;
        if !body.payload.is_object() {
            return Err(Failure::validation(&["payload"], "payload must be an object").into());
        }
        let mut payload = body.payload;
        let (context, _) = self.authorize(&tool, Action::Propose, &mut payload, Flags::default(), trail)?;
        let data = writes::preflight(self.gw, self.principal, &context, &tool, payload).await?;
        Ok(Reply::ok(data))
    }

    /// A draft of this app: the write lifecycle's own view of it.
    async fn draft(&self, id: &str, wait_seconds: u64, trail: &mut Trail) -> Result<Reply, Refused> {
        let data = writes::draft_status(self.gw, &self.principal.app.id, id, wait_seconds).await?;
        trail.draft_id = Some(id.to_string());
        Ok(Reply::ok(data))
    }
}
