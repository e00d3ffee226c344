//! The plugin manifest an operator writes next to a component (TOML).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::prompt::Prompt;
use crate::tool::Risk;

/// Which contract a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    ToolAdapter,
    StateWitness,
}

impl World {
    /// The WIT world's name, as manifests write it.
    pub fn as_str(self) -> &'static str {
        match self {
            World::ToolAdapter => "tool-adapter",
            World::StateWitness => "state-witness",
        }
    }
}

/// Capabilities granted to a plugin; everything absent is denied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Structured logging through the gateway's log.
    #[serde(default)]
    pub log: bool,
    /// Reading the gateway's clock.
    #[serde(default)]
    pub clock: bool,
    /// A key-value namespace in the store, per tenant.
    #[serde(default)]
    pub kv: bool,
    /// Use another plugin's key-value namespace instead of its own: a state witness reads
    /// the state of the adapter it watches. Granted by the operator, never by the plugin.
    #[serde(default)]
    pub kv_namespace: Option<String>,
    /// Configuration values the plugin may read.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Hosts the plugin may send HTTP requests to: `host` (any port) or `host:port`.
    #[serde(default)]
    pub http: Vec<String>,
}

/// Time, memory and output budgets of one call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// Calls of this plugin in flight at once; more wait briefly, then are refused
    /// (`503 agent.overloaded`).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// The time budget of a call once it runs in the background as a task (`tasks`).
    #[serde(default = "default_task_timeout_ms")]
    pub task_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: default_timeout_ms(),
            memory_mib: default_memory_mib(),
            max_output_bytes: default_max_output_bytes(),
            concurrency: default_concurrency(),
            task_timeout_ms: default_task_timeout_ms(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    2_000
}
fn default_memory_mib() -> u64 {
    64
}
fn default_task_timeout_ms() -> u64 {
    600_000
}
fn default_concurrency() -> u32 {
    8
}
fn default_max_output_bytes() -> usize {
    1 << 20
}

/// Whether a read may run in the background as a task (MCP Tasks extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskSupport {
    /// As a task for a client that takes tasks (when the plugin asks), else inline.
    Optional,
    /// Only as a task: a client that does not take tasks is refused before the call runs.
    Required,
}

impl TaskSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSupport::Optional => "optional",
            TaskSupport::Required => "required",
        }
    }
}

/// Whether a plugin's instances may serve more than one call (issue 18, decision 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// An instance may serve later calls of the same tenant and app (never another's),
    /// except for `high` and `critical` tools.
    #[default]
    PerDomain,
    /// Every call gets a fresh instance.
    PerCall,
}

/// `<name>.toml` beside the component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    pub name: String,
    pub version: String,
    pub world: World,
    /// Path of the component, relative to the manifest's directory.
    pub component: PathBuf,
    /// Lowercase hex sha256 of the component; a mismatch refuses the load.
    pub sha256: String,
    /// The tools the plugin may serve; `describe` may not report others.
    pub tools: Vec<String>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: Limits,
    /// Whether instances are reused within an isolation domain.
    #[serde(default)]
    pub isolation: Isolation,
    /// Result fields the host redacts when an app's data policy disallows sensitive fields.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// Prompts shipped with the plugin (MCP `prompts/*`): message templates, no code.
    #[serde(default)]
    pub prompts: Vec<Prompt>,
    /// Reads that may finish in the background as tasks (`run-as-task`); the rest never do.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSupport>,
    /// Writes that record their effects under `host.execution-id`, so that an execution a
    /// dead gateway node left running may be run again with the same id; an execution of
    /// any other write is left `indeterminate` for an operator (docs/plugin-authoring.md).
    #[serde(default)]
    pub resumable: Vec<String>,
    /// Operator overrides that raise a tool's risk (never lower it).
    #[serde(default)]
    pub risk: BTreeMap<String, Risk>,
    /// Cedar files shipped with the plugin (relative to the manifest), added to the active
    /// policy set while the plugin is loaded: how a plugin applies the app data policy to
    /// its own arguments (docs/policies.md).
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    /// Which arguments the OpenPort v1 app data policy bounds.
    #[serde(default)]
    pub data_policy: DataPolicyArguments,
    /// `(file name, text)` of each of `policies`, read with the manifest.
    #[serde(skip)]
    pub policy_files: Vec<(String, String)>,
    /// The manifest's own text, kept with the version in the store.
    #[serde(skip)]
    pub text: String,
}

/// The arguments of this plugin's tools that the app data policy speaks about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPolicyArguments {
    /// `[start, end]`: the date arguments an app's `max_days` window bounds. An open end
    /// becomes today and an open start `max_days - 1` days before the end, as in the
    /// reference; the plugin's shipped policies then bound the range.
    #[serde(default)]
    pub date_range: Option<[String; 2]>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read plugin manifest `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("plugin manifest `{path}` is invalid: {message}")]
    Invalid { path: String, message: String },
}

impl PluginManifest {
    /// Reads and checks a manifest; `component` is resolved against its directory, and
    /// the policy files it names are read from there.
    pub fn load(path: &Path) -> Result<PluginManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut manifest = PluginManifest::parse(&text, &path.display().to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        manifest.component = dir.join(&manifest.component);
        for file in &manifest.policies {
            let full = dir.join(file);
            let text = std::fs::read_to_string(&full).map_err(|source| ManifestError::Read {
                path: full.display().to_string(),
                source,
            })?;
            manifest.policy_files.push((file.display().to_string(), text));
        }
        Ok(manifest)
    }

    /// Checks a manifest's text; `origin` names it in errors. Its policy files are not
    /// read: the caller supplies them (from disk, an upload or the store).
    pub fn parse(text: &str, origin: &str) -> Result<PluginManifest, ManifestError> {
        let path = Path::new(origin);
        let invalid = |message: String| ManifestError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut manifest: PluginManifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !is_plugin_name(&manifest.name) {
            return Err(invalid(format!(
                "`name` = `{}` must be lowercase letters, digits and `-`",
                manifest.name
            )));
        }
        if manifest.sha256.len() != 64 || !manifest.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("`sha256` must be 64 hex digits".into()));
        }
        manifest.sha256 = manifest.sha256.to_ascii_lowercase();
        if manifest.limits.timeout_ms == 0 || manifest.limits.timeout_ms > 60_000 {
            return Err(invalid("`limits.timeout_ms` must be between 1 and 60000".into()));
        }
        if manifest.limits.memory_mib == 0 || manifest.limits.memory_mib > 1024 {
            return Err(invalid("`limits.memory_mib` must be between 1 and 1024".into()));
        }
        if manifest.limits.concurrency == 0 || manifest.limits.concurrency > 1024 {
            return Err(invalid("`limits.concurrency` must be between 1 and 1024".into()));
        }
        if manifest.limits.task_timeout_ms < manifest.limits.timeout_ms || manifest.limits.task_timeout_ms > 86_400_000
        {
            return Err(invalid(
                "`limits.task_timeout_ms` must be between `limits.timeout_ms` and 86400000 (a day)".into(),
            ));
        }
        Prompt::check_all(&manifest.prompts).map_err(invalid)?;
        if manifest.world == World::StateWitness && !manifest.prompts.is_empty() {
            return Err(invalid(
                "a state witness serves no prompts: `prompts` belongs to a tool adapter".into(),
            ));
        }
        if let Some(unknown) = manifest.tasks.keys().find(|t| !manifest.tools.contains(t)) {
            return Err(invalid(format!(
                "`tasks` names `{unknown}`, which `tools` does not list"
            )));
        }
        if let Some(unknown) = manifest.resumable.iter().find(|t| !manifest.tools.contains(t)) {
            return Err(invalid(format!(
                "`resumable` names `{unknown}`, which `tools` does not list"
            )));
        }
        manifest.text = text.to_string();
        Ok(manifest)
    }

    /// Attaches policy files given with the manifest (an upload, the store), checking that
    /// they are exactly the ones it names.
    pub fn with_policy_files(mut self, files: Vec<(String, String)>) -> Result<PluginManifest, ManifestError> {
        let named: std::collections::BTreeSet<String> = self.policies.iter().map(|p| p.display().to_string()).collect();
        let given: std::collections::BTreeSet<String> = files.iter().map(|(name, _)| name.clone()).collect();
        if named != given {
            return Err(ManifestError::Invalid {
                path: self.name.clone(),
                message: format!("`policies` names {named:?}, but the files given are {given:?}"),
            });
        }
        self.policy_files = files;
        Ok(self)
    }
}

fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
