//! Policy scenario files: principal, action, resource and context, with the expected
//! decision and determining policies. `openport policy test` and the test suite run them.
//!
//! ```json
//! {
//!   "description": "what the set is for",
//!   "policy_dirs": ["..", "."],
//!   "tools": {"ticket.list": {"effect": "read", "input_schema": {"type": "object", "properties": {}}}},
//!   "scenarios": [{
//!     "name": "a desk agent may file a low-priority ticket",
//!     "principal": {"app": "app_desk", "tenant": "org_demo", "scopes": ["ticket.write"]},
//!     "action": "propose",
//!     "resource": {"tool": "ticket.create", "risk": "medium", "required_scopes": ["ticket.write"],
//!                  "effect": "write",
//!                  "input_schema": {"type": "object", "properties": {"priority": {"type": "string"}}}},
//!     "context": {"time": "2026-01-05T10:00:00Z", "args": {"priority": "low"}},
//!     "expect": {"decision": "allow", "reasons": ["base.scoped-tools"]}
//!   }]
//! }
//! ```
//! `policy_dirs` are relative to the file; the base schema is the first directory's
//! `schema.cedarschema` (else the built-in one). The tools of the generated schema are the
//! scenarios' resources and the file's `tools`, typed by their `input_schema` (a resource's
//! own, else the file's; none is an object without arguments). `policy_files` adds single
//! files, such as the policies a plugin ships. Arguments that do not fit the tool's types
//! are a denial, as the gateway refuses them before Cedar.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Action, AppFacts, Authorizer, PolicySource, RequestFacts, ToolVocabulary};
use crate::app_policy::AppPolicy;
use crate::attr::{ArgType, Attr};
use crate::tool::{Effect, Risk, ToolFacts};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub description: String,
    pub policy_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub policy_files: Vec<PathBuf>,
    /// Tools of the generated schema beyond those the scenarios name (such as every tool
    /// a shipped policy names), and input schemas for resources that give none.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolSpec>,
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
    /// The app's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
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
    /// The tool's JSON Schema, from which `context.args` is typed.
    #[serde(default)]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// `read`, `write` or `delete`.
    pub effect: String,
    #[serde(default)]
    pub input_schema: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// RFC 3339; default Monday 2026-01-05 10:00 UTC.
    #[serde(default)]
    pub time: Option<String>,
    /// The tool's arguments (`payload` is accepted for older files).
    #[serde(default, alias = "payload")]
    pub args: Option<Value>,
    #[serde(default)]
    pub channel: Option<String>,
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
    Action::from_name(name).ok_or_else(|| format!("unknown action `{name}`"))
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
    let fail = |e: &dyn std::fmt::Display| format!("`{}`: {e}", path.display());
    let (schema, mut sources) = Authorizer::read_dirs(&dirs).map_err(|e| fail(&e))?;
    for extra in &file.policy_files {
        let full = base.join(extra);
        let text =
            std::fs::read_to_string(&full).map_err(|e| fail(&format!("cannot read `{}`: {e}", full.display())))?;
        sources.push(PolicySource::new(extra.display().to_string(), text));
    }
    let tools = scenario_tools(&file)?;
    let vocabulary: Vec<ToolVocabulary<'_>> = tools
        .iter()
        .map(|(name, (is_read, args))| ToolVocabulary {
            name,
            is_read: *is_read,
            args,
        })
        .collect();
    let authz = Authorizer::build(&schema, &vocabulary, sources).map_err(|e| fail(&e))?;
    Ok((file, authz))
}

/// The tools the scenarios name: whether each is a read, and its argument type.
fn scenario_tools(file: &ScenarioFile) -> Result<BTreeMap<String, (bool, ArgType)>, String> {
    let mut tools = BTreeMap::new();
    for s in &file.scenarios {
        if tools.contains_key(&s.resource.tool) {
            continue;
        }
        let is_read = effect(s.resource.effect.as_deref())? == Effect::Read;
        let schema = input_schema(file, s);
        let (args, _) = ArgType::of_input_schema(&schema);
        tools.insert(s.resource.tool.clone(), (is_read, args));
    }
    for (name, spec) in &file.tools {
        if !tools.contains_key(name) {
            let is_read = effect(Some(&spec.effect))? == Effect::Read;
            let schema = spec.input_schema.clone().unwrap_or_else(no_arguments);
            tools.insert(name.clone(), (is_read, ArgType::of_input_schema(&schema).0));
        }
    }
    Ok(tools)
}

/// Runs every scenario of a file. Each is decided twice, on the request's slice and on
/// the whole set, and the two must agree.
pub fn run(file: &ScenarioFile, authz: &Authorizer) -> Vec<Outcome> {
    file.scenarios
        .iter()
        .map(|s| Outcome {
            name: s.name.clone(),
            failure: check(file, s, authz).err(),
        })
        .collect()
}

impl PrincipalSpec {
    fn facts<'a>(&'a self, key_id: &'a str, data_policy: &'a Attr) -> AppFacts<'a> {
        AppFacts {
            app_id: &self.app,
            app_name: self.name.as_deref().unwrap_or(&self.app),
            org_id: &self.tenant,
            key_id,
            scopes: &self.scopes,
            data_policy,
            tags: &self.tags,
        }
    }
}

impl ContextSpec {
    /// The arguments typed as Cedar sees them: none for discovery, an empty record when
    /// the scenario gives none.
    fn typed_args(&self, action: Action, arg_type: &ArgType) -> Result<Option<Attr>, crate::attr::Mismatch> {
        match (&self.args, action) {
            (_, Action::Discover) => Ok(None),
            (Some(value), _) => arg_type.value_of(value).map(Some),
            (None, _) => Ok(Some(Attr::Record(BTreeMap::new()))),
        }
    }

    fn facts<'a>(&'a self, actor: &'a str, args: Option<&'a Attr>) -> Result<RequestFacts<'a>, String> {
        let time = self.time.as_deref().unwrap_or("2026-01-05T10:00:00Z");
        let now = crate::clock::parse_iso(time).ok_or(format!("`time` = `{time}` is not RFC 3339"))?;
        Ok(RequestFacts {
            client_ip: self.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            now,
            channel: self.channel.as_deref().unwrap_or("rest"),
            actor,
            args,
            has_idempotency_key: self.has_idempotency_key,
            has_preflight_hash: self.has_preflight_hash,
            has_justification: self.has_justification,
        })
    }
}

/// The input schema of a tool that takes no arguments.
fn no_arguments() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// A scenario's tool schema: its own, the file's, or an object without arguments.
fn input_schema(file: &ScenarioFile, s: &Scenario) -> Value {
    s.resource
        .input_schema
        .clone()
        .or_else(|| file.tools.get(&s.resource.tool).and_then(|t| t.input_schema.clone()))
        .unwrap_or_else(no_arguments)
}

fn check(file: &ScenarioFile, s: &Scenario, authz: &Authorizer) -> Result<(), String> {
    let action = action(&s.action)?;
    let data_policy = s.principal.policy.cedar_data_policy();
    let app = s.principal.facts("key_scenario", &data_policy);
    let (arg_type, _) = ArgType::of_input_schema(&input_schema(file, s));
    let args = match s.context.typed_args(action, &arg_type) {
        Ok(args) => args,
        // The gateway refuses such arguments before Cedar: a denial.
        Err(m) => return expect_decision(s, false, &[], &[format!("args.{}: {}", m.path.join("."), m.message)]),
    };
    let tool = ToolFacts {
        name: &s.resource.tool,
        risk: s.resource.risk,
        effect: effect(s.resource.effect.as_deref())?,
        required_scopes: &s.resource.required_scopes,
        plugin: s.resource.plugin.as_deref().unwrap_or("scenario"),
    };
    let facts = s.context.facts("user_scenario", args.as_ref())?;
    let sliced = authz.decide(&app, action, &tool, &facts);
    let whole = authz.decide_unsliced(&app, action, &tool, &facts);
    // A failure shows the request as Cedar received it, so the author sees what the
    // policies saw (a missing argument, a typed value, the action's name).
    let received =
        || serde_json::to_string_pretty(&Authorizer::request_json(&app, action, &tool, &facts)).unwrap_or_default();
    if sliced != whole {
        return Err(format!(
            "the slice decided {sliced:?} but the whole set {whole:?}\nCedar received: {}",
            received()
        ));
    }
    expect_decision(s, sliced.allowed, &sliced.policy_ids, &sliced.errors)
        .map_err(|why| format!("{why}\nCedar received: {}", received()))
}

fn expect_decision(s: &Scenario, allowed: bool, policy_ids: &[String], errors: &[String]) -> Result<(), String> {
    let got = if allowed { "allow" } else { "deny" };
    if got != s.expect.decision {
        return Err(format!(
            "decision {got}, want {} (policies {policy_ids:?}, errors {errors:?})",
            s.expect.decision
        ));
    }
    if let Some(want) = &s.expect.reasons {
        let mut have = policy_ids.to_vec();
        have.sort();
        let mut want = want.clone();
        want.sort();
        if have != want {
            return Err(format!("determined by {have:?}, want {want:?}"));
        }
    }
    Ok(())
}

/// A request to explain: who asks, which tool in which phase, with what context.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub principal: PrincipalSpec,
    pub tool: String,
    pub action: String,
    #[serde(default)]
    pub context: ContextSpec,
}

/// The decision on a question and why: the determining policies, every policy whose
/// conditions hold (each decided alone), errors, and the shadow decision.
pub fn explain(q: &Question, tool: ToolFacts<'_>, arg_type: &ArgType, authz: &Authorizer) -> Result<Value, String> {
    let action = action(&q.action)?;
    let data_policy = q.principal.policy.cedar_data_policy();
    let app = q.principal.facts("key_explain", &data_policy);
    let args = q
        .context
        .typed_args(action, arg_type)
        .map_err(|m| format!("args.{}: {} ({})", m.path.join("."), m.message, m.code))?;
    let facts = q.context.facts("user_explain", args.as_ref())?;
    let decision = authz.decide_unsliced(&app, action, &tool, &facts);
    let matched = authz.matching_policies(&app, action, &tool, &facts)?;
    let why = match (decision.allowed, decision.policy_ids.is_empty()) {
        (true, _) => "allowed: a permit holds and no forbid does",
        (false, false) => "denied by the forbid policies listed in determiningPolicies",
        (false, true) if !decision.errors.is_empty() => "denied: evaluation failed (see errors)",
        (false, true) => "denied by default: no permit holds",
    };
    Ok(serde_json::json!({
        "decision": if decision.allowed { "allow" } else { "deny" },
        "why": why,
        "action": super::schema::action_id(tool.name, action),
        "determiningPolicies": decision.policy_ids,
        "matchingPolicies": matched
            .iter()
            .map(|(id, permit)| serde_json::json!({"id": id, "effect": if *permit { "permit" } else { "forbid" }, "shadow": authz.shadow_ids().contains(id)}))
            .collect::<Vec<_>>(),
        "errors": decision.errors,
        "shadow": decision.shadow.map(|s| serde_json::json!({"decision": if s.allowed { "allow" } else { "deny" }, "policies": s.policy_ids})),
    }))
}
