//! The tools the gateway serves: what each plugin's `describe` reported, checked against
//! its manifest, with compiled input schemas. One immutable snapshot per plugin set;
//! a hot load builds a new one and swaps it in.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::attr::{ArgType, Attr, Omitted};
use crate::authz::ToolVocabulary;
use crate::plugin::Plugin;
use crate::plugin::prompt::Prompt;
use crate::tool::{Descriptor, Effect, Issue, Risk, ToolFacts};

/// One served tool.
pub struct Tool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub effect: Effect,
    pub risk: Risk,
    pub required_scopes: Vec<String>,
    pub requires_confirmation: bool,
    /// For reads: the path under `/api/agent/v1/`.
    pub http_path: Option<String>,
    pub idempotent: bool,
    pub plugin: Arc<Plugin>,
    /// The arguments as Cedar policies see them (`context.args`).
    pub args: ArgType,
    /// Arguments with no Cedar type, left out of `args`.
    pub args_omitted: Vec<Omitted>,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("plugin", &self.plugin.name())
            .finish()
    }
}

impl Tool {
    /// Checks a descriptor and compiles its schema. `risk_floor` is the operator's override.
    pub fn new(d: Descriptor, risk_floor: Option<Risk>, plugin: Arc<Plugin>) -> Result<Tool, String> {
        if !is_tool_name(&d.name) {
            return Err(format!(
                "tool name `{}` is not `domain.verb` (or one word) in lowercase ASCII",
                d.name
            ));
        }
        let input_schema: Value = serde_json::from_str(&d.input_schema)
            .map_err(|e| format!("tool `{}` input schema is not JSON: {e}", d.name))?;
        if input_schema.get("type") != Some(&json!("object")) {
            return Err(format!("tool `{}` input schema must describe an object", d.name));
        }
        let validator = jsonschema::validator_for(&input_schema)
            .map_err(|e| format!("tool `{}` input schema is invalid: {e}", d.name))?;
        let output_schema = match d.output_schema {
            Some(text) => Some(
                serde_json::from_str(&text).map_err(|e| format!("tool `{}` output schema is not JSON: {e}", d.name))?,
            ),
            None => None,
        };
        if let Some(path) = &d.http_path {
            if d.effect != Effect::Read {
                return Err(format!("tool `{}` is a write and cannot declare an http path", d.name));
            }
            if !is_route_segment(path) {
                return Err(format!(
                    "tool `{}` http path `{path}` must be one lowercase segment",
                    d.name
                ));
            }
        }
        if d.required_scopes.is_empty() {
            return Err(format!("tool `{}` declares no required scope", d.name));
        }
        // The plugin's claim is a floor too: the override raises, never lowers.
        let risk = risk_floor.map_or(d.risk, |floor| floor.max(d.risk));
        let (args, args_omitted) = ArgType::of_input_schema(&input_schema);
        Ok(Tool {
            name: d.name,
            description: d.description,
            input_schema,
            output_schema,
            effect: d.effect,
            risk,
            required_scopes: d.required_scopes,
            requires_confirmation: d.requires_confirmation || risk >= Risk::High,
            http_path: d.http_path,
            idempotent: d.idempotent,
            plugin,
            args,
            args_omitted,
            validator,
        })
    }

    /// Validates a payload against the input schema.
    pub fn validate(&self, payload: &Value) -> Result<(), Vec<Issue>> {
        let issues: Vec<Issue> = self
            .validator
            .iter_errors(payload)
            .take(20)
            .map(|e| Issue {
                code: "invalid",
                path: e
                    .instance_path()
                    .as_str()
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                message: e.to_string(),
            })
            .collect();
        if issues.is_empty() { Ok(()) } else { Err(issues) }
    }

    /// What Cedar sees of the tool.
    pub fn facts(&self) -> ToolFacts<'_> {
        ToolFacts {
            name: &self.name,
            risk: self.risk,
            effect: self.effect,
            required_scopes: &self.required_scopes,
            plugin: self.plugin.name(),
        }
    }

    pub fn is_read(&self) -> bool {
        self.effect == Effect::Read
    }

    /// What the generated Cedar schema needs of the tool.
    pub fn vocabulary(&self) -> ToolVocabulary<'_> {
        ToolVocabulary {
            name: &self.name,
            is_read: self.is_read(),
            args: &self.args,
        }
    }

    /// The arguments as Cedar sees them; a value that does not fit its type is refused
    /// as invalid input, never passed on partly. The issue says what is wrong with the
    /// value ("expected an integer, got a string"), as the schema check would: Cedar runs
    /// first only because the pipeline orders it so.
    pub fn typed_args(&self, payload: &Value) -> Result<Attr, Issue> {
        self.args.value_of(payload).map_err(|m| Issue {
            code: m.code,
            path: m.path,
            message: m.message,
        })
    }

    /// Whether an execution of this write that a dead node left running may be run again
    /// with the same execution id (the plugin records its effects under it).
    pub fn resumable(&self) -> bool {
        !self.is_read() && self.plugin.manifest().resumable.contains(&self.name)
    }

    /// The tool as the manifest and MCP `tools/list` describe it.
    pub fn describe(&self, rate_limit: &RateHint) -> Value {
        let mut described = self.described(rate_limit);
        if let Some(support) = self.plugin.manifest().tasks.get(&self.name) {
            described["taskSupport"] = json!(support.as_str());
        }
        described
    }

    fn described(&self, rate_limit: &RateHint) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "requiredScopes": self.required_scopes,
            "risk": self.risk,
            "requiresConfirmation": self.requires_confirmation,
            "kind": if self.is_read() { "read" } else { "action" },
            "effect": self.effect.as_str(),
            "idempotent": self.idempotent,
            "inputSchema": self.input_schema,
            "outputSchema": self.output_schema,
            "http": match &self.http_path {
                Some(path) => json!({"method": "GET", "path": format!("/api/agent/v1/{path}")}),
                None if self.is_read() => Value::Null,
                None => json!({"method": "POST", "path": "/api/agent/v1/actions"}),
            },
            "draftPolicy": if self.is_read() { "none" } else if self.risk == Risk::Critical { "always" } else { "default" },
            "rateLimitHints": {"requests": rate_limit.requests, "windowSeconds": rate_limit.window_seconds},
        })
    }
}

/// The per-key limit agents should plan for, shown in the manifest.
#[derive(Debug, Clone, Copy)]
pub struct RateHint {
    pub requests: u32,
    pub window_seconds: u32,
}

/// `domain.verb` in lowercase ASCII, or one lowercase word such as `test_simple_text`:
/// MCP clients and suites name tools without a domain (see docs/deviations.md).
fn is_tool_name(name: &str) -> bool {
    let segment = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let mut parts = name.split('.');
    let first = parts.next().is_some_and(segment);
    first && parts.next().is_none_or(segment) && parts.next().is_none()
}

fn is_route_segment(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 64
        && path
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !matches!(path, "manifest" | "actions" | "preflight" | "drafts")
}

/// An immutable snapshot of every loaded plugin and the tools they serve.
#[derive(Debug, Default)]
pub struct Catalog {
    plugins: BTreeMap<String, Arc<Plugin>>,
    tools: BTreeMap<String, Arc<Tool>>,
    routes: HashMap<String, String>,
    /// Tool name → the state witness that watches it.
    witnesses: HashMap<String, Arc<Plugin>>,
}

impl Catalog {
    /// A catalog with one more (or a replaced) plugin. Refuses tool or route clashes with
    /// other plugins; the current catalog stays untouched either way.
    pub fn with_plugin(&self, plugin: Arc<Plugin>, tools: Vec<Tool>) -> Result<Catalog, String> {
        let name = plugin.name().to_string();
        let mut next = self.without_plugin(&name);
        for prompt in &plugin.manifest().prompts {
            if let Some((other, _)) = next.prompt(&prompt.name) {
                return Err(format!(
                    "prompt `{}` is already served by plugin `{}`",
                    prompt.name,
                    other.name()
                ));
            }
        }
        for tool in tools {
            if tool.is_read() && plugin.manifest().resumable.contains(&tool.name) {
                return Err(format!(
                    "`resumable` names `{}`, a read: only writes have executions to resume",
                    tool.name
                ));
            }
            if let Some(other) = next.tools.get(&tool.name) {
                return Err(format!(
                    "tool `{}` is already served by plugin `{}`",
                    tool.name,
                    other.plugin.name()
                ));
            }
            if let Some(path) = &tool.http_path {
                if let Some(other) = next.routes.get(path) {
                    return Err(format!(
                        "route `/api/agent/v1/{path}` is already served by tool `{other}`"
                    ));
                }
                next.routes.insert(path.clone(), tool.name.clone());
            }
            next.tools.insert(tool.name.clone(), Arc::new(tool));
        }
        next.plugins.insert(name, plugin);
        Ok(next)
    }

    /// A catalog with one more (or a replaced) state witness. Refuses a tool another
    /// witness already watches.
    pub fn with_witness(&self, plugin: Arc<Plugin>, witnessed: Vec<String>) -> Result<Catalog, String> {
        let name = plugin.name().to_string();
        let mut next = self.without_plugin(&name);
        for tool in witnessed {
            if let Some(other) = next.witnesses.get(&tool) {
                return Err(format!(
                    "tool `{tool}` is already witnessed by plugin `{}`",
                    other.name()
                ));
            }
            next.witnesses.insert(tool, plugin.clone());
        }
        next.plugins.insert(name, plugin);
        Ok(next)
    }

    /// The state witness of a tool, if one is loaded.
    pub fn witness(&self, tool: &str) -> Option<&Arc<Plugin>> {
        self.witnesses.get(tool)
    }

    /// The tools a plugin serves or witnesses.
    pub fn tools_of(&self, plugin: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .tools
            .values()
            .filter(|t| t.plugin.name() == plugin)
            .map(|t| t.name.as_str())
            .collect();
        out.extend(
            self.witnesses
                .iter()
                .filter(|(_, p)| p.name() == plugin)
                .map(|(t, _)| t.as_str()),
        );
        out.sort();
        out
    }

    /// A catalog without the named plugin and its tools.
    pub fn without_plugin(&self, name: &str) -> Catalog {
        let tools: BTreeMap<_, _> = self
            .tools
            .iter()
            .filter(|(_, t)| t.plugin.name() != name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let routes = self
            .routes
            .iter()
            .filter(|(_, t)| tools.contains_key(*t))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut plugins = self.plugins.clone();
        plugins.remove(name);
        let witnesses = self
            .witnesses
            .iter()
            .filter(|(_, p)| p.name() != name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Catalog {
            plugins,
            tools,
            routes,
            witnesses,
        }
    }

    pub fn tool(&self, name: &str) -> Option<&Arc<Tool>> {
        self.tools.get(name)
    }

    /// The read tool bound to `GET /api/agent/v1/<path>`.
    pub fn tool_for_route(&self, path: &str) -> Option<&Arc<Tool>> {
        self.routes.get(path).and_then(|name| self.tools.get(name))
    }

    pub fn tools(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.tools.values()
    }

    /// Every scope some loaded tool requires, sorted.
    pub fn scopes(&self) -> Vec<&str> {
        let scopes: std::collections::BTreeSet<&str> = self
            .tools
            .values()
            .flat_map(|t| t.required_scopes.iter().map(String::as_str))
            .collect();
        scopes.into_iter().collect()
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Every prompt the loaded plugins ship, with its plugin, by plugin then prompt.
    pub fn prompts(&self) -> impl Iterator<Item = (&Arc<Plugin>, &Prompt)> {
        self.plugins
            .values()
            .flat_map(|plugin| plugin.manifest().prompts.iter().map(move |p| (plugin, p)))
    }

    pub fn prompt(&self, name: &str) -> Option<(&Arc<Plugin>, &Prompt)> {
        self.prompts().find(|(_, p)| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_domain_dot_verb_or_one_word() {
        assert!(is_tool_name("transaction.list"));
        assert!(is_tool_name("transactions.export_csv"));
        // One word is allowed too: MCP clients and the MCP conformance suite use such names.
        assert!(is_tool_name("test_simple_text"));
        for bad in [
            "",
            "a.b.c",
            "Transaction.list",
            "tx.lіst",
            "../etc.passwd",
            ".list",
            "a.",
        ] {
            assert!(!is_tool_name(bad), "{bad} accepted");
        }
    }

    #[test]
    fn risk_overrides_only_raise() {
        assert_eq!(Some(Risk::High).map_or(Risk::Low, |f| f.max(Risk::Low)), Risk::High);
        assert_eq!(Some(Risk::Low).map_or(Risk::High, |f| f.max(Risk::High)), Risk::High);
    }
}
