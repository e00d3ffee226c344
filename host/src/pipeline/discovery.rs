//! Discovery: the tools an app can see. The manifest, MCP `tools/list` and the admin
//! plane's view of an app all list them through here.

use std::net::IpAddr;

use serde_json::Value;

use crate::authz::{Action, AppFacts, RequestFacts};
use crate::catalog::RateHint;
use crate::gateway::Gateway;
use crate::store::AppRecord;

/// Who is asking, as discovery's context needs it.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub key_id: &'a str,
    pub client_ip: IpAddr,
    /// `rest` or `mcp`.
    pub channel: &'a str,
    pub actor: &'a str,
}

/// The tools an app can discover: its scopes held and Cedar's `discover` allowed, without
/// arguments (SPEC 4).
pub fn visible_tools(gw: &Gateway, app: &AppRecord, viewer: Viewer<'_>) -> Vec<Value> {
    let catalog = gw.catalog();
    let authz = gw.authorizer();
    let data_policy = app.policy.cedar_data_policy();
    let facts = AppFacts {
        app_id: &app.id,
        app_name: &app.name,
        org_id: app.org_id.as_deref().unwrap_or(""),
        key_id: viewer.key_id,
        scopes: &app.scopes,
        data_policy: &data_policy,
        tags: &app.tags,
    };
    let request = RequestFacts {
        client_ip: viewer.client_ip,
        now: gw.clock.now(),
        channel: viewer.channel,
        actor: viewer.actor,
        args: None,
        has_idempotency_key: false,
        has_preflight_hash: false,
        has_justification: false,
    };
    let limits = gw.admission.limits();
    let rate = limits.class(app.policy.rate_class()).per_key;
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
