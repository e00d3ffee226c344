//! Policy scenario files: principal, action, resource and context, with the expected
//! decision and determining policies. `openport policy test` and the test suite run them.
//!
//! ```json
//! {
//!   "description": "what the set is for",
//!   "policy_dirs": ["..", "."],
//!   "scenarios": [{
//!     "name": "a reporter may list transactions",
//!     "principal": {"app": "app_reporter", "tenant": "org_demo", "scopes": ["transaction.read"]},
//!     "action": "read",
//!     "resource": {"tool": "transaction.list", "risk": "low", "required_scopes": ["transaction.read"]},
//!     "context": {"time": "2026-01-05T10:00:00Z", "payload": {"ledgerId": "ledger_main"}},
//!     "expect": {"decision": "allow", "reasons": ["base.scoped-tools"]}
//!   }]
//! }
//! ```
//! `policy_dirs` are relative to the file; the schema is the first directory's
//! `schema.cedarschema`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Action, AppFacts, Authorizer, RequestFacts};
use crate::app_policy::AppPolicy;
use crate::tool::{Effect, Risk, ToolFacts};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub description: String,
    pub policy_dirs: Vec<PathBuf>,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub principal: PrincipalSpec,
    pub action: String,
    pub resource: ResourceSpec,
    #[serde(default)]
    pub context: ContextSpec,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    pub app: String,
    pub tenant: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The app's data policy (`{network, data}`).
    #[serde(default)]
    pub policy: AppPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub tool: String,
    pub risk: Risk,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    #[serde(default)]
    pub effect: Option<String>,
    #[serde(default)]
    pub plugin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// RFC 3339; default Monday 2026-01-05 10:00 UTC.
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub has_idempotency_key: bool,
    #[serde(default)]
    pub has_preflight_hash: bool,
    #[serde(default)]
    pub has_justification: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow` or `deny`.
    pub decision: String,
    /// The determining policy ids, when the scenario pins them.
    #[serde(default)]
    pub reasons: Option<Vec<String>>,
}

/// One scenario's outcome: `None` when it held.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub failure: Option<String>,
}

fn action(name: &str) -> Result<Action, String> {
    Ok(match name {
        "discover" => Action::Discover,
        "read" => Action::Read,
        "propose" => Action::Propose,
        "auto_execute" => Action::AutoExecute,
        "execute" => Action::Execute,
        other => return Err(format!("unknown action `{other}`")),
    })
}

fn effect(name: Option<&str>) -> Result<Effect, String> {
    Ok(match name.unwrap_or("read") {
        "read" => Effect::Read,
        "write" => Effect::Write,
        "delete" => Effect::Delete,
        other => return Err(format!("unknown effect `{other}`")),
    })
}

/// Loads a scenario file and its policy set.
pub fn load(path: &Path) -> Result<(ScenarioFile, Authorizer), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let file: ScenarioFile = serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let dirs: Vec<PathBuf> = file.policy_dirs.iter().map(|d| base.join(d)).collect();
    let authz = Authorizer::from_dirs(&dirs).map_err(|e| format!("`{}`: {e}", path.display()))?;
    Ok((file, authz))
}

/// Runs every scenario of a file. Each is decided twice, on the request's slice and on
/// the whole set, and the two must agree.
pub fn run(file: &ScenarioFile, authz: &Authorizer) -> Vec<Outcome> {
    file.scenarios
        .iter()
        .map(|s| Outcome {
            name: s.name.clone(),
            failure: check(s, authz).err(),
        })
        .collect()
}

fn check(s: &Scenario, authz: &Authorizer) -> Result<(), String> {
    let action = action(&s.action)?;
    let app = AppFacts {
        app_id: &s.principal.app,
        app_name: s.principal.name.as_deref().unwrap_or(&s.principal.app),
        org_id: &s.principal.tenant,
        key_id: "key_scenario",
        scopes: &s.principal.scopes,
        policy: &s.principal.policy,
    };
    let tool = ToolFacts {
        name: &s.resource.tool,
        risk: s.resource.risk,
        effect: effect(s.resource.effect.as_deref())?,
        required_scopes: &s.resource.required_scopes,
        plugin: s.resource.plugin.as_deref().unwrap_or("scenario"),
    };
    let time = s.context.time.as_deref().unwrap_or("2026-01-05T10:00:00Z");
    let now = crate::clock::parse_iso(time).ok_or(format!("`time` = `{time}` is not RFC 3339"))?;
    let facts = RequestFacts {
        client_ip: s.context.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        now,
        payload: s.context.payload.as_ref(),
        has_idempotency_key: s.context.has_idempotency_key,
        has_preflight_hash: s.context.has_preflight_hash,
        has_justification: s.context.has_justification,
    };
    let sliced = authz.decide(&app, action, &tool, &facts);
    let whole = authz.decide_unsliced(&app, action, &tool, &facts);
    if sliced != whole {
        return Err(format!("the slice decided {sliced:?} but the whole set {whole:?}"));
    }
    let got = if sliced.allowed { "allow" } else { "deny" };
    if got != s.expect.decision {
        return Err(format!(
            "decision {got}, want {} (policies {:?}, errors {:?})",
            s.expect.decision, sliced.policy_ids, sliced.errors
        ));
    }
    if let Some(want) = &s.expect.reasons {
        let mut have = sliced.policy_ids.clone();
        have.sort();
        let mut want = want.clone();
        want.sort();
        if have != want {
            return Err(format!("determined by {have:?}, want {want:?}"));
        }
    }
    Ok(())
}
