//! Configuration: a TOML file read into a raw mirror (`deny_unknown_fields`) and checked
//! into [`Config`] before any port is bound. A bad file is an error that names the key;
//! the binary exits 64 (EX_USAGE).
//!
//! Relative paths are resolved against the directory of the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use std::collections::BTreeMap;

use crate::admission::{Limits, Rate, RateClass};
use crate::disk::DiskBudget;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    store: RawStore,
    #[serde(default)]
    policies: RawPolicies,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    drafts: RawDrafts,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default, rename = "plugin")]
    plugins: Vec<RawPlugin>,
    #[serde(default)]
    mcp: RawMcp,
    #[serde(default)]
    plugin_runtime: RawPluginRuntime,
}

/// `[plugin_runtime]`: bounds every plugin call shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginRuntime {
    /// Linear memory all plugin calls in flight may hold together, in MiB.
    #[serde(default = "default_plugin_memory_mib")]
    memory_budget_mib: u64,
    /// How long a call waits for memory before it is refused.
    #[serde(default = "default_plugin_wait_ms")]
    wait_ms: u64,
    /// Calls one instance may serve within its isolation domain (1: a fresh one each call).
    #[serde(default = "default_reuse_calls")]
    reuse_calls: u32,
    /// How long one instance may serve its isolation domain.
    #[serde(default = "default_reuse_seconds")]
    reuse_seconds: u64,
    /// Names the plugins' compiled functions in `/tmp/perf-PID.map`, for `perf` to profile
    /// inside a guest. Off by default: the file grows with every compiled plugin.
    #[serde(default)]
    perf_map: bool,
    /// Plugin instances that may exist at once, warm ones included.
    #[serde(default = "default_instance_slots")]
    instance_slots: u32,
}

impl Default for RawPluginRuntime {
    fn default() -> Self {
        RawPluginRuntime {
            memory_budget_mib: default_plugin_memory_mib(),
            wait_ms: default_plugin_wait_ms(),
            reuse_calls: default_reuse_calls(),
            reuse_seconds: default_reuse_seconds(),
            perf_map: false,
            instance_slots: default_instance_slots(),
        }
    }
}

fn default_instance_slots() -> u32 {
    crate::plugin::DEFAULT_INSTANCE_SLOTS
}

fn default_plugin_memory_mib() -> u64 {
    1024
}
fn default_plugin_wait_ms() -> u64 {
    500
}
fn default_reuse_calls() -> u32 {
    128
}
fn default_reuse_seconds() -> u64 {
    60
}

/// `[mcp]`: the MCP binding at `/mcp` on the agent listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    /// Local development only, off by default: MCP requests without credentials from a
    /// loopback address act as this app (its scopes, policy and limits). Refused unless
    /// `server.listen` is a loopback address.
    anonymous_app: Option<String>,
    /// `Origin` values accepted besides loopback ones (when listening on loopback).
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// `Host` values accepted besides loopback names (when listening on loopback).
    #[serde(default)]
    allowed_hosts: Vec<String>,
    /// How long (ms) a 2026-07-28 client may cache a list it was given (`ttlMs`).
    #[serde(default = "default_mcp_list_ttl_ms")]
    list_ttl_ms: u64,
}

fn default_mcp_list_ttl_ms() -> u64 {
    30_000
}

impl Default for RawMcp {
    fn default() -> Self {
        RawMcp {
            anonymous_app: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            list_ttl_ms: default_mcp_list_ttl_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    admin_listen: String,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// TLS on both listeners.
    tls: Option<RawTls>,
}

/// `[server.tls]`: PEM files, relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    /// Agents must present a client certificate issued by one of these CAs (mutual TLS,
    /// the agent listener only).
    client_ca: Option<PathBuf>,
}

fn default_max_body_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    /// A PostgreSQL database (`postgres://…`) shared by several nodes instead of the SQLite
    /// file at `path` (whose directory stays this node's data directory).
    #[serde(default)]
    url: Option<String>,
    /// The most the data directory (the store's directory) may hold, in MiB; near it
    /// (95%) agent requests are refused with `503` until it is back under 90%.
    #[serde(default)]
    disk_budget_mib: Option<u64>,
    /// The least free space the data directory's file system must keep, in MiB.
    #[serde(default = "default_min_free_mib")]
    min_free_mib: u64,
}

fn default_min_free_mib() -> u64 {
    64
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicies {
    /// A directory with `schema.cedarschema` and `*.cedar`; absent: the built-in set.
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    /// The rate class of apps that name none.
    #[serde(default)]
    default: RawClass,
    /// Named classes, chosen per app with `policy.rate_class`.
    #[serde(default)]
    classes: BTreeMap<String, RawClass>,
    /// Refusals before authentication per client address; `requests = 0` turns it off.
    #[serde(default)]
    unauthenticated: Option<RawRate>,
}

impl Default for RawAdmission {
    fn default() -> Self {
        RawAdmission {
            max_in_flight: default_max_in_flight(),
            default: RawClass::default(),
            classes: BTreeMap::new(),
            unauthenticated: None,
        }
    }
}

fn default_max_in_flight() -> usize {
    1024
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    requests: u32,
    window_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    /// Per key and client address.
    #[serde(default = "default_requests")]
    requests: u32,
    #[serde(default = "default_window")]
    window_seconds: u32,
    #[serde(default)]
    per_app: Option<RawRate>,
    #[serde(default)]
    per_tool: Option<RawRate>,
    #[serde(default)]
    per_tenant: Option<RawRate>,
    #[serde(default)]
    quota: Option<RawRate>,
    #[serde(default = "default_concurrency")]
    concurrency: u32,
}

impl Default for RawClass {
    fn default() -> Self {
        RawClass {
            requests: default_requests(),
            window_seconds: default_window(),
            per_app: None,
            per_tool: None,
            per_tenant: None,
            quota: None,
            concurrency: default_concurrency(),
        }
    }
}

fn default_requests() -> u32 {
    Rate::DEFAULT.requests
}
fn default_window() -> u32 {
    Rate::DEFAULT.window_seconds
}
fn default_concurrency() -> u32 {
    64
}

fn rate(key: &str, requests: u32, window_seconds: u32) -> Result<Rate, ConfigError> {
    if requests == 0 {
        return Err(ConfigError::new(&format!("{key}.requests"), "must be at least 1"));
    }
    if window_seconds == 0 || window_seconds > 31 * 86_400 {
        return Err(ConfigError::new(
            &format!("{key}.window_seconds"),
            "must be between 1 and 2678400",
        ));
    }
    Ok(Rate {
        requests,
        window_seconds,
    })
}

fn class(key: &str, raw: &RawClass) -> Result<RateClass, ConfigError> {
    let optional = |name: &str, r: Option<RawRate>| {
        r.map(|r| rate(&format!("{key}.{name}"), r.requests, r.window_seconds))
            .transpose()
    };
    Ok(RateClass {
        per_key: rate(key, raw.requests, raw.window_seconds)?,
        per_app: optional("per_app", raw.per_app)?,
        per_tool: optional("per_tool", raw.per_tool)?,
        per_tenant: optional("per_tenant", raw.per_tenant)?,
        quota: optional("quota", raw.quota)?,
        concurrency: (raw.concurrency > 0).then_some(raw.concurrency),
    })
}

/// What audit events keep of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    /// Only `payload_sha256` (the default).
    Hash,
    /// The hash and the payload with sensitive fields replaced by `[redacted]`.
    Redacted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    /// Days of events to keep; 0 keeps everything.
    #[serde(default)]
    retention_days: u32,
    #[serde(default = "default_capture")]
    capture: Capture,
    /// The Ed25519 key that signs checkpoints of the chain (`openport audit keygen`).
    #[serde(default)]
    signing_key: Option<PathBuf>,
    /// Where signed checkpoints are appended, outside the database.
    #[serde(default)]
    checkpoint_log: Option<PathBuf>,
    /// Events younger than this are never pruned, by retention or by an auditor.
    #[serde(default = "default_min_retention_days")]
    min_retention_days: u32,
    /// Refusals before authentication or admission recorded in full per client address
    /// and code each second; beyond it they are summarized. 0 records every one.
    #[serde(default = "default_coalesce_per_second")]
    coalesce_per_second: u32,
}

fn default_coalesce_per_second() -> u32 {
    20
}

fn default_min_retention_days() -> u32 {
    30
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            retention_days: 0,
            capture: default_capture(),
            signing_key: None,
            checkpoint_log: None,
            min_retention_days: default_min_retention_days(),
            coalesce_per_second: default_coalesce_per_second(),
        }
    }
}

fn default_capture() -> Capture {
    Capture::Hash
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrafts {
    #[serde(default = "default_review_window")]
    review_window_seconds: u64,
    /// How long an idempotency key is remembered.
    #[serde(default = "default_idempotency_ttl")]
    idempotency_ttl_seconds: u64,
}

fn default_idempotency_ttl() -> u64 {
    24 * 3600
}

impl Default for RawDrafts {
    fn default() -> Self {
        RawDrafts {
            review_window_seconds: default_review_window(),
            idempotency_ttl_seconds: default_idempotency_ttl(),
        }
    }
}

fn default_review_window() -> u64 {
    7 * 24 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    manifest: PathBuf,
}

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The log filter to start with: `OPENPORT_LOG`, or `info`.
#[expect(clippy::disallowed_methods, reason = "the environment is read here, in config")]
pub fn log_filter() -> String {
    std::env::var("OPENPORT_LOG").unwrap_or_else(|_| "info".into())
}

impl Config {
    /// The newest modification time among the config file and the policy directory's
    /// files: what a reload reads.
    pub fn files_changed_at(&self) -> Option<std::time::SystemTime> {
        let mut paths: Vec<PathBuf> = self.path.iter().cloned().collect();
        if let Some(dir) = &self.policies_dir {
            paths.push(dir.clone());
            if let Ok(entries) = std::fs::read_dir(dir) {
                paths.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
        paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Where the store lives: the PostgreSQL database if one is named, else the SQLite file.
    pub fn store_location(&self) -> crate::store::Location {
        match &self.database_url {
            Some(url) => crate::store::Location::Postgres(url.clone()),
            None => crate::store::Location::File(self.store_path.clone()),
        }
    }

    /// This node's data directory: the store file's directory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.store_path.parent()
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// TLS on both listeners; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    pub max_body_bytes: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub store_path: PathBuf,
    /// A shared PostgreSQL store (`[store] url`, `--database-url`, `OPENPORT_DATABASE_URL`);
    /// `None`: the SQLite file at `store_path`.
    pub database_url: Option<String>,
    pub policies_dir: Option<PathBuf>,
    pub admission: Limits,
    /// Days of audit events to keep; `None` keeps everything.
    pub audit_retention_days: Option<u32>,
    pub audit_capture: Capture,
    /// The key that signs audit checkpoints; `None`: checkpoints are not signed.
    pub audit_signing_key: Option<PathBuf>,
    /// The append-only file signed checkpoints also go to (default: beside the store).
    pub audit_checkpoint_log: Option<PathBuf>,
    /// Events younger than this many days are never pruned.
    pub audit_min_retention_days: u32,
    /// Refusals recorded in full per client address, code and second (0: all).
    pub audit_coalesce_per_second: u32,
    pub disk: DiskBudget,
    /// Linear memory all plugin calls may hold together.
    pub plugin_memory_budget_bytes: usize,
    /// How long a plugin call waits for memory.
    pub plugin_wait: std::time::Duration,
    /// How plugin instances are reused within an isolation domain.
    pub plugin_reuse: crate::plugin::Reuse,
    /// Whether `perf` can name the plugins' compiled functions, and the instance pool's size.
    pub plugin_engine: crate::plugin::EngineSettings,
    /// The file this was read from, for reloads.
    pub path: Option<PathBuf>,
    pub draft_review_window_seconds: u64,
    pub idempotency_ttl_seconds: u64,
    pub plugin_manifests: Vec<PathBuf>,
    /// Where compiled plugin code is cached.
    pub cache_dir: Option<PathBuf>,
    pub mcp: McpConfig,
}

/// Where the TLS certificate chain, key and (for mutual TLS) client CAs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The MCP binding's settings (`[mcp]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpConfig {
    /// The app that unauthenticated loopback MCP requests act as; `None` (the default)
    /// means every MCP request needs a credential.
    pub anonymous_app: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// The `ttlMs` on lists (2026-07-28): how stale a client's cached tool list may be
    /// after a policy reload or plugin load. Calls are always authorized afresh.
    pub list_ttl_ms: u64,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", format!("cannot read `{}`: {e}", path.display())))?;
        // Paths in the file are relative to it; anchor them to an absolute directory so a
        // relative `--config` (or demo data directory) works from any working directory.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::parse(&text, &base)?;
        config.path = Some(absolute);
        Ok(config)
    }

    /// Validates config text; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_else(|| "config".into());
            ConfigError::new(&key, e.message().to_string())
        })?;
        let addr = |key: &str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::new(key, format!("`{value}` is not an address like 127.0.0.1:8080")))
        };
        let listen = addr("server.listen", &raw.server.listen)?;
        let admin_listen = addr("server.admin_listen", &raw.server.admin_listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::new(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        if !(1024..=64 << 20).contains(&raw.server.max_body_bytes) {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let mut trusted_proxies = Vec::new();
        for entry in &raw.server.trusted_proxies {
            let net = crate::auth::network::parse_entry(entry).ok_or_else(|| {
                ConfigError::new("server.trusted_proxies", format!("`{entry}` is not an address or CIDR"))
            })?;
            trusted_proxies.push(net);
        }
        if raw.admission.max_in_flight == 0 {
            return Err(ConfigError::new("admission.max_in_flight", "must be at least 1"));
        }
        let mut classes = BTreeMap::new();
        for (name, raw_class) in &raw.admission.classes {
            classes.insert(name.clone(), class(&format!("admission.classes.{name}"), raw_class)?);
        }
        let admission = Limits {
            default: class("admission.default", &raw.admission.default)?,
            classes,
            max_in_flight: raw.admission.max_in_flight,
            unauthenticated: match raw.admission.unauthenticated {
                None => Some(Limits::DEFAULT_UNAUTHENTICATED),
                Some(r) if r.requests == 0 => None,
                Some(r) => Some(rate("admission.unauthenticated", r.requests, r.window_seconds)?),
            },
        };
        if raw.plugin_runtime.memory_budget_mib < 16 {
            return Err(ConfigError::new(
                "plugin_runtime.memory_budget_mib",
                "must be at least 16",
            ));
        }
        if raw.plugin_runtime.reuse_calls == 0 || raw.plugin_runtime.reuse_seconds > 3600 {
            return Err(ConfigError::new(
                "plugin_runtime.reuse_calls",
                "reuse_calls must be at least 1 and reuse_seconds at most 3600",
            ));
        }
        if raw.plugin_runtime.instance_slots == 0 {
            return Err(ConfigError::new("plugin_runtime.instance_slots", "must be at least 1"));
        }
        if raw.plugin_runtime.wait_ms > 60_000 {
            return Err(ConfigError::new("plugin_runtime.wait_ms", "must be at most 60000"));
        }
        if raw.drafts.review_window_seconds < 60 {
            return Err(ConfigError::new("drafts.review_window_seconds", "must be at least 60"));
        }
        if raw.mcp.anonymous_app.is_some() && !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "mcp.anonymous_app",
                "anonymous MCP access is a local-development feature: server.listen must be a loopback address",
            ));
        }
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let store_path = resolve(&raw.store.path);
        if let Some(url) = &raw.store.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new("store.url", "must be a postgres:// URL"));
        }
        if raw.audit.min_retention_days == 0 {
            return Err(ConfigError::new("audit.min_retention_days", "must be at least 1"));
        }
        if raw.audit.retention_days > 0 && raw.audit.retention_days < raw.audit.min_retention_days {
            return Err(ConfigError::new(
                "audit.retention_days",
                format!(
                    "must be at least audit.min_retention_days ({})",
                    raw.audit.min_retention_days
                ),
            ));
        }
        if raw.audit.checkpoint_log.is_some() && raw.audit.signing_key.is_none() {
            return Err(ConfigError::new(
                "audit.checkpoint_log",
                "checkpoints are written only when `audit.signing_key` names a key",
            ));
        }
        let audit_signing_key = raw.audit.signing_key.as_deref().map(resolve);
        let audit_checkpoint_log = match (&raw.audit.checkpoint_log, &audit_signing_key) {
            (Some(log), _) => Some(resolve(log)),
            (None, Some(_)) => store_path.parent().map(|dir| dir.join("audit-checkpoints.log")),
            (None, None) => None,
        };
        let tls = raw.server.tls.as_ref().map(|t| TlsFiles {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
            client_ca: t.client_ca.as_deref().map(resolve),
        });
        Ok(Config {
            listen,
            admin_listen,
            tls,
            max_body_bytes: raw.server.max_body_bytes,
            trusted_proxies,
            cache_dir: store_path.parent().map(|dir| dir.join("cache")),
            store_path,
            database_url: raw.store.url.clone(),
            policies_dir: raw.policies.dir.as_deref().map(resolve),
            admission,
            audit_retention_days: (raw.audit.retention_days > 0).then_some(raw.audit.retention_days),
            audit_capture: raw.audit.capture,
            audit_signing_key,
            audit_checkpoint_log,
            audit_min_retention_days: raw.audit.min_retention_days,
            audit_coalesce_per_second: raw.audit.coalesce_per_second,
            disk: DiskBudget {
                budget_bytes: raw.store.disk_budget_mib.map(|m| m.saturating_mul(1 << 20)),
                min_free_bytes: raw.store.min_free_mib.saturating_mul(1 << 20),
            },
            plugin_memory_budget_bytes: usize::try_from(raw.plugin_runtime.memory_budget_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            plugin_wait: std::time::Duration::from_millis(raw.plugin_runtime.wait_ms),
            plugin_reuse: crate::plugin::Reuse {
                max_calls: raw.plugin_runtime.reuse_calls,
                max_age: std::time::Duration::from_secs(raw.plugin_runtime.reuse_seconds),
                ..crate::plugin::Reuse::default()
            },
            plugin_engine: crate::plugin::EngineSettings {
                profiler: if raw.plugin_runtime.perf_map {
                    crate::plugin::Profiler::PerfMap
                } else {
                    crate::plugin::Profiler::Off
                },
                instance_slots: raw.plugin_runtime.instance_slots,
            },
            path: None,
            draft_review_window_seconds: raw.drafts.review_window_seconds,
            idempotency_ttl_seconds: raw.drafts.idempotency_ttl_seconds,
            plugin_manifests: raw.plugins.iter().map(|p| resolve(&p.manifest)).collect(),
            mcp: McpConfig {
                anonymous_app: raw.mcp.anonymous_app,
                allowed_origins: raw.mcp.allowed_origins,
                allowed_hosts: raw.mcp.allowed_hosts,
                list_ttl_ms: raw.mcp.list_ttl_ms,
            },
        })
    }
}

/// The dotted key whose line contains byte `offset`, from the nearest table header.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[')).then(|| l.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .unwrap_or_default();
    let field = line.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), field.is_empty() || field.starts_with('[')) {
        (true, true) => "config".into(),
        (true, false) => field.into(),
        (false, true) => table,
        (false, false) => format!("{table}.{field}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"

[store]
path = "data/openport.db"
"#;

    #[test]
    fn a_minimal_config_gets_defaults_and_resolved_paths() {
        let c = Config::parse(GOOD, Path::new("/etc/openport")).expect("valid");
        assert_eq!(c.store_path, PathBuf::from("/etc/openport/data/openport.db"));
        assert_eq!(c.admission, Limits::default());
        assert!(c.policies_dir.is_none());
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = Config::parse(&GOOD.replace("[store]", "[store]\ncolour = 1"), Path::new("/")).expect_err("refused");
        assert_eq!(err.key, "store.colour", "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn anonymous_mcp_is_refused_off_loopback() {
        let config = format!("{GOOD}\n[mcp]\nanonymous_app = \"app_x\"\n");
        let on_loopback = Config::parse(&config, Path::new("/")).expect("valid on loopback");
        assert_eq!(on_loopback.mcp.anonymous_app.as_deref(), Some("app_x"));
        let exposed = config.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
        let err = Config::parse(&exposed, Path::new("/")).expect_err("refused");
        assert_eq!(err.key, "mcp.anonymous_app");
        assert!(
            Config::parse(GOOD, Path::new("/"))
                .expect("valid")
                .mcp
                .anonymous_app
                .is_none()
        );
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = Config::parse(&GOOD.replace("127.0.0.1:8081", "nowhere"), Path::new("/")).expect_err("refused");
        assert_eq!(err.key, "server.admin_listen");
        let err = Config::parse(&format!("{GOOD}\n[admission.default]\nrequests = 0\n"), Path::new("/"))
            .expect_err("refused");
        assert_eq!(err.key, "admission.default.requests");
        let err = Config::parse(
            &format!("{GOOD}\n[plugin_runtime]\ninstance_slots = 0\n"),
            Path::new("/"),
        )
        .expect_err("refused");
        assert_eq!(err.key, "plugin_runtime.instance_slots");
        let slots = Config::parse(
            &format!("{GOOD}\n[plugin_runtime]\ninstance_slots = 4\n"),
            Path::new("/"),
        )
        .expect("valid");
        assert_eq!(slots.plugin_engine.instance_slots, 4);
    }
}
