//! The command line. Exit codes: 0 success, 1 runtime failure, 64 bad configuration or
//! usage (EX_USAGE).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::authz::Authorizer;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::protocol::codes;
use crate::store::{self, AuditFilter, Store};
use crate::{Server, audit, demo};

const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "openport", version, about = "A governance gateway for AI agents' tool calls")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a demo gateway: SQLite, the ledger plugin, default policies, demo credentials.
    Demo {
        /// Where the demo keeps its data; re-running on the same directory reuses it.
        #[arg(long, default_value = "openport-demo")]
        data_dir: PathBuf,
        /// The agent plane's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The admin plane's address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Keep the state in this PostgreSQL database, shared with other nodes: the first
        /// node seeds it, later ones join it (and write the same credentials file).
        #[arg(long, env = "OPENPORT_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Run the gateway from a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// A PostgreSQL store shared by several nodes (overrides `[store] url`).
        #[arg(long, env = "OPENPORT_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Apply the store's migrations and exit (the gateway also applies them at start,
    /// under a lock, so nodes starting together do not race).
    Migrate {
        #[arg(long, required_unless_present = "database_url")]
        config: Option<PathBuf>,
        #[arg(long, env = "OPENPORT_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Validate a config file, its policies and its plugins, then exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create admin-plane tokens on the config's store, offline (the first operator token
    /// of a new deployment).
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Read and verify the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Validate Cedar policy sets, test scenarios, reload a running gateway's set.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage apps (integrations) through a running gateway's admin plane.
    App {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Load, list and remove plugins of a running gateway.
    Plugin {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Review drafts through a running gateway's admin plane (reviewer token).
    Drafts {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: DraftsCommand,
    },
    /// Resolve executions a crash left indeterminate (operator token).
    Executions {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// Manage keys through a running gateway's admin plane.
    Key {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The benchmark's ceiling: a bare hyper JSON echo with the gateway's server settings
    /// and runtime, and nothing else (`bench/run`).
    #[command(hide = true)]
    BenchCeiling {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
}

/// How to reach the admin plane.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin plane's base URL.
    #[arg(
        long,
        env = "OPENPORT_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    admin_url: String,
    /// An admin bearer token (operator for changes).
    #[arg(long, env = "OPENPORT_ADMIN_TOKEN", global = true, hide_env_values = true)]
    admin_token: Option<String>,
    /// For an `https` admin URL: the CA bundle (PEM) its certificate chains to (default:
    /// the system's bundle).
    #[arg(long, env = "OPENPORT_ADMIN_CA", global = true)]
    admin_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// List apps with their keys.
    List,
    /// Create an app and its first key; the token is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. ledger.read,transaction.read
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, default_value = "org_demo")]
        tenant: String,
        #[arg(long, default_value = "workspace")]
        scope: String,
    },
    /// Change an app: only the options given change; effective on its next request.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The new scope list, comma-separated (replaces the old one).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// A rate class from `[admission.classes]`.
        #[arg(long)]
        rate_class: Option<String>,
    },
    /// Revoke an app and all its keys at once.
    Revoke { id: String },
    /// Restore a revoked app (its old keys stay revoked).
    Restore { id: String },
    /// Delete a revoked app with no pending drafts.
    Delete { id: String },
    /// Replace an app's tags (`department=finance environment=prod`; none clears them).
    /// Cedar policies see them as the app's entity tags.
    Tags { id: String, tags: Vec<String> },
    /// Replace an app's data policy with a JSON object ({network, data, rate_class}).
    Policy { id: String, json: String },
    /// The tools an app can discover.
    Tools { id: String },
}

#[derive(Debug, Subcommand)]
enum ExecutionsCommand {
    /// Record what an indeterminate execution actually did, after checking the application.
    Resolve {
        id: String,
        /// `success` or `failed`.
        #[arg(long)]
        outcome: String,
        /// What you checked.
        #[arg(long)]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
enum DraftsCommand {
    /// Drafts, newest first.
    List {
        #[arg(long)]
        app: Option<String>,
        /// draft, confirmed, canceled, failed, expired or stale
        #[arg(long)]
        status: Option<String>,
        /// low, medium, high or critical
        #[arg(long)]
        risk: Option<String>,
        /// Only drafts at least this many seconds old.
        #[arg(long)]
        min_age_seconds: Option<u64>,
    },
    /// One draft with its impact and latest execution.
    Show { id: String },
    /// Approve (and so execute) a pending draft.
    Approve {
        id: String,
        #[arg(long)]
        note: Option<String>,
        /// The impact hash you reviewed; refused if the draft's differs.
        #[arg(long)]
        impact_hash: Option<String>,
    },
    /// Reject a pending draft.
    Reject {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Upload a plugin (its manifest, the component and the policy files it names, read
    /// here) and make it the active version; it is kept in the gateway's store.
    Add {
        manifest: PathBuf,
        /// The gateway is ready without it when it fails to load at start.
        #[arg(long)]
        optional: bool,
    },
    /// The kept versions of a plugin, oldest first.
    Versions { name: String },
    /// Make an earlier kept version active again (default: the one before the active one).
    Rollback {
        name: String,
        /// A version (`1.2.0`) or the start of a version id.
        #[arg(long)]
        to: Option<String>,
    },
    /// The loaded plugins with their digests, tools, grants and limits.
    List,
    /// Write a new plugin crate, from the template, that builds out of this repository.
    New {
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin crate in DIR for wasm32-wasip2, check that it loads, and write
    /// DIR/dist/NAME.wasm with its manifest DIR/dist/NAME.toml (for `plugin add`).
    Pack {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Remove a plugin and its tools.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Add a key to an app; the token is printed once.
    Create {
        app: String,
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a key; the next call with it fails.
    Revoke { id: String },
    /// An app's keys (prefixes, names, expiry, revocation; never the tokens).
    List { app: String },
    /// Replace a key: a new one with the same name and expiry (its token printed once),
    /// and the old one revoked at once.
    Rotate { id: String },
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The gateway's config file.
    #[arg(long, conflicts_with = "data_dir")]
    config: Option<PathBuf>,
    /// A demo data directory (instead of --config).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Which events to read.
#[derive(Debug, clap::Args)]
struct FilterArgs {
    /// Only events at or after this time: RFC 3339 (2026-11-22T00:00:00Z) or relative
    /// (-30m, -1h, -7d).
    #[arg(long, allow_hyphen_values = true)]
    since: Option<String>,
    /// Only events before this time (as `--since`).
    #[arg(long, allow_hyphen_values = true)]
    until: Option<String>,
    /// Only this tenant (`org_id`).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this integration: its id or its name.
    #[arg(long)]
    app: Option<String>,
    /// Only this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only this reason code (e.g. agent.policy_denied).
    #[arg(long)]
    code: Option<String>,
    /// Only the events of this request (its `X-Request-Id`).
    #[arg(long)]
    request_id: Option<String>,
}

impl FilterArgs {
    /// The store filter, or a message saying which argument means nothing (exit 64):
    /// a time that is not one, a code that does not exist, an app no id or name matches.
    fn filter(&self, store: &Store, limit: usize, ascending: bool) -> Result<AuditFilter, String> {
        let now = crate::clock::Clock::now(&SystemClock);
        let bound = |text: &Option<String>| {
            text.as_deref()
                .map(|t| crate::clock::parse_time_bound(t, now))
                .transpose()
        };
        if let Some(code) = &self.code
            && codes::by_name(code).is_none()
        {
            let mut near: Vec<(f64, &str)> = codes::ALL
                .iter()
                .map(|c| {
                    (
                        strsim::jaro_winkler(code, c.name).max(suffix_match(code, c.name)),
                        c.name,
                    )
                })
                .collect();
            near.sort_by(|a, b| b.0.total_cmp(&a.0));
            let names: Vec<&str> = near.iter().take(3).map(|(_, n)| *n).collect();
            return Err(format!("no reason code `{code}`; the closest are {}", names.join(", ")));
        }
        let app_id = match &self.app {
            None => None,
            Some(app) => Some(resolve_app(store, app)?),
        };
        Ok(AuditFilter {
            org_id: self.tenant.clone(),
            app_id,
            tool: self.tool.clone(),
            code: self.code.clone(),
            request_id: self.request_id.clone(),
            since: bound(&self.since)?,
            until: bound(&self.until)?,
            after_seq: None,
            limit,
            ascending,
        })
    }
}

/// 1 when `code` is the part of `name` after its namespace (`policy_denied`).
fn suffix_match(code: &str, name: &str) -> f64 {
    if name.split_once('.').is_some_and(|(_, rest)| rest == code) {
        1.0
    } else {
        0.0
    }
}

/// An app id, from an id or a unique name.
fn resolve_app(store: &Store, app: &str) -> Result<String, String> {
    let apps = store.apps.list().map_err(|e| e.to_string())?;
    if apps.iter().any(|a| a.id == app) {
        return Ok(app.to_string());
    }
    let named: Vec<_> = apps.iter().filter(|a| a.name == app).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!("no app has the id or name `{app}`")),
        many => Err(format!(
            "{} apps are named `{app}` (in different tenants): give an id, one of {}",
            many.len(),
            many.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the newest events, oldest first, as JSON Lines.
    Tail {
        #[command(flatten)]
        store: StoreArgs,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print the newest matching events, oldest first, as JSON Lines.
    Query {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many events.
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: usize,
    },
    /// Write every matching event, oldest first, as JSON Lines (for a SIEM).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// The output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Re-walk the hash chain and check it against every signed checkpoint (in the store,
    /// in the configured checkpoint log, and in `--checkpoint` files); report the first
    /// broken link, truncation or rewrite. Exit 1 when the trail is not intact.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// A checkpoint log kept elsewhere (JSON Lines, as the gateway appends them).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// The public key to trust (`KEY.pub`); default: the config's `audit.signing_key`.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Create an Ed25519 key for signing audit checkpoints (`FILE` and `FILE.pub`); name
    /// it in the config as `[audit] signing_key`.
    Keygen {
        /// Where to write the secret key; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policies strictly against the schema generated from a config's plugins
    /// (`--config`), or a policy directory against the base schema alone (`--dir`).
    Check {
        /// A policy directory (its schema.cedarschema and *.cedar).
        #[arg(long, conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// A gateway config: its plugins' tools, its policy directory and the policies
        /// its plugins ship.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the Cedar schema generated from a config's plugins: the vocabulary policies
    /// may use, with every tool's arguments.
    Schema {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = SchemaFormat::Cedarschema)]
        format: SchemaFormat,
    },
    /// Decide one request and show why: the decision, the policies that determined it,
    /// and every policy whose conditions hold. The request is a JSON file, or one the
    /// gateway answered, found by its request id in the config's audit trail.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// `{"principal": {...}, "tool": "ticket.create", "action": "propose",
        /// "context": {"args": {...}}}`; see docs/policies.md.
        #[arg(long, required_unless_present = "request_id", conflicts_with = "request_id")]
        request: Option<PathBuf>,
        /// The `request_id` of an answered request: its app, tool, phase, address and time
        /// come from its audit event, its arguments from the event when `[audit] capture =
        /// "redacted"` kept them.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Reload a running gateway's config and policy set (all or nothing).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run scenario files: each scenario's expected decision and determining policies.
    Test {
        /// Scenario files (`scenarios.json`); see `policies/README.md`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Create a token for a role and print it once. Works on an empty store, with or
    /// without the gateway running.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// operator, reviewer or auditor
        #[arg(long)]
        role: String,
        /// Limit the token to one tenant (`org_id`); default: every tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// A name to recognise it by in the store.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaFormat {
    Cedarschema,
    Json,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Demo {
            data_dir,
            listen,
            admin_listen,
            database_url,
        } => demo_command(&data_dir, listen, admin_listen, database_url),
        Command::Serve { config, database_url } => match load_config(&config) {
            Ok(mut config) => {
                if database_url.is_some() {
                    config.database_url = database_url;
                }
                serve(config, None)
            }
            Err(code) => code,
        },
        Command::Migrate { config, database_url } => migrate(config.as_deref(), database_url),
        Command::Check { config } => check(&config),
        Command::AdminToken {
            command:
                AdminTokenCommand::Create {
                    config,
                    role,
                    tenant,
                    name,
                },
        } => admin_token_create(&config, &role, tenant.as_deref(), name),
        Command::BenchCeiling { listen } => match runtime() {
            Ok(rt) => rt.block_on(async move {
                match tokio::net::TcpListener::bind(listen).await {
                    Ok(listener) => {
                        crate::http::serve_ceiling(listener).await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            }),
            Err(code) => code,
        },
        Command::Audit { command } => audit_command(command),
        Command::Policy {
            command: PolicyCommand::Test { files },
        } => policy_test(&files),
        Command::Policy {
            command: PolicyCommand::Reload { admin },
        } => admin_call(&admin, "POST", "policies/reload".into(), Some(serde_json::json!({}))),
        Command::App { admin, command } => app_command(&admin, command),
        Command::Key { admin, command } => key_command(&admin, command),
        Command::Executions {
            admin,
            command: ExecutionsCommand::Resolve { id, outcome, note },
        } => admin_call(
            &admin,
            "POST",
            format!("executions/{id}/resolve"),
            Some(serde_json::json!({"outcome": outcome, "note": note})),
        ),
        Command::Drafts { admin, command } => match command {
            DraftsCommand::List {
                app,
                status,
                risk,
                min_age_seconds,
            } => {
                let query: Vec<String> = [
                    ("appId", app),
                    ("status", status),
                    ("risk", risk),
                    ("minAgeSeconds", min_age_seconds.map(|s| s.to_string())),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                .collect();
                admin_call(&admin, "GET", format!("drafts?{}", query.join("&")), None)
            }
            DraftsCommand::Show { id } => admin_call(&admin, "GET", format!("drafts/{id}"), None),
            DraftsCommand::Approve { id, note, impact_hash } => admin_call(
                &admin,
                "POST",
                format!("drafts/{id}/approve"),
                Some(serde_json::json!({"note": note, "impactHash": impact_hash})),
            ),
            DraftsCommand::Reject { id, note } => admin_call(
                &admin,
                "POST",
                format!("drafts/{id}/reject"),
                Some(serde_json::json!({"note": note})),
            ),
        },
        Command::Plugin { admin, command } => match command {
            PluginCommand::Add { manifest, optional } => match plugin_upload(&manifest) {
                Ok(upload) => admin_call(
                    &admin,
                    "POST",
                    "plugins".into(),
                    Some(serde_json::json!({"upload": upload, "optional": optional})),
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EX_USAGE)
                }
            },
            PluginCommand::Versions { name } => admin_call(&admin, "GET", format!("plugins/{name}/versions"), None),
            PluginCommand::Rollback { name, to } => admin_call(
                &admin,
                "POST",
                format!("plugins/{name}/rollback"),
                Some(serde_json::json!({"to": to})),
            ),
            PluginCommand::List => admin_call(&admin, "GET", "plugins".into(), None),
            PluginCommand::New { name, dir } => match crate::authoring::scaffold(&dir, &name) {
                Ok(made) => {
                    println!("wrote the plugin crate `{}`", made.display());
                    println!("next: cd {} && openport plugin pack .", made.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EX_USAGE)
                }
            },
            PluginCommand::Pack { dir } => plugin_pack(&dir),
            PluginCommand::Remove { name } => admin_call(&admin, "DELETE", format!("plugins/{name}"), None),
        },
        Command::Policy {
            command: PolicyCommand::Check { dir, config },
        } => policy_check(dir.as_deref(), config.as_deref()),
        Command::Policy {
            command: PolicyCommand::Schema { config, format },
        } => policy_schema(config.as_deref(), format),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    request,
                    request_id,
                },
        } => policy_explain(&config, request.as_deref(), request_id.as_deref()),
    }
}

fn init_logging() {
    crate::logging::init(&crate::config::log_filter());
}

/// A plugin's upload body: the manifest's text, the component (base64) and the policy
/// files the manifest names, all read on this machine.
fn plugin_pack(dir: &Path) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::authoring::pack(dir)) {
        Ok(packed) => {
            println!(
                "packed {} ({}, {} tools: {}), sha256 {}",
                packed.component.display(),
                packed.world.as_str(),
                packed.tools.len(),
                packed.tools.join(", "),
                packed.digest
            );
            println!("manifest: {}", packed.manifest.display());
            println!(
                "review its [grants], then: openport plugin add {}",
                packed.manifest.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn plugin_upload(path: &Path) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    let manifest = crate::plugin::PluginManifest::load(path).map_err(|e| e.to_string())?;
    let component = std::fs::read(&manifest.component)
        .map_err(|e| format!("cannot read the component `{}`: {e}", manifest.component.display()))?;
    let policies: serde_json::Map<String, serde_json::Value> = manifest
        .policy_files
        .iter()
        .map(|(name, text)| (name.clone(), text.clone().into()))
        .collect();
    Ok(serde_json::json!({
        "manifest": manifest.text,
        "component": base64::engine::general_purpose::STANDARD.encode(component),
        "policies": policies,
    }))
}

/// `openport admin-token create`: a token straight into the store, printed once.
fn admin_token_create(config: &Path, role: &str, tenant: Option<&str>, name: Option<String>) -> ExitCode {
    let Some(role) = crate::auth::Role::parse(role) else {
        eprintln!("error: --role must be operator, reviewer or auditor, not `{role}`");
        return ExitCode::from(EX_USAGE);
    };
    let config = match load_config(config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(dir) = config.store_path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: cannot create `{}`: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let now = crate::clock::iso(crate::clock::Clock::now(&SystemClock));
    let name = name.unwrap_or_else(|| format!("{}-{now}", role.as_str()));
    let created = Store::open_at(&config.store_location())
        .and_then(|store| crate::apps::create_admin_token(&store, &name, role, tenant, &now));
    match created {
        Ok(token) => {
            eprintln!(
                "created admin token `{name}` ({}{}); it is shown only this once:",
                role.as_str(),
                tenant.map(|t| format!(", tenant {t}")).unwrap_or_default()
            );
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: invalid config `{}`: {e}", path.display());
        ExitCode::from(EX_USAGE)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `openport migrate`: the schema brought up to date, and its version printed.
fn migrate(config: Option<&Path>, database_url: Option<String>) -> ExitCode {
    let location = match (database_url, config) {
        (Some(url), _) => store::Location::Postgres(url),
        (None, Some(path)) => match load_config(path) {
            Ok(config) => config.store_location(),
            Err(code) => return code,
        },
        (None, None) => return ExitCode::from(EX_USAGE),
    };
    match store::migrate_at(&location) {
        Ok(version) => {
            println!("{location}: schema version {version}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot migrate {location}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo_command(
    data_dir: &Path,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    database_url: Option<String>,
) -> ExitCode {
    let clock: SharedClock = Arc::new(SystemClock);
    let database_url = database_url.as_deref();
    let prepared = demo::desk::start()
        .map_err(|e| format!("cannot start the demo support desk: {e}"))
        .and_then(|desk| match database_url {
            Some(url) => demo::join_shared(url, data_dir, desk).map_err(|e| e.to_string()),
            None => Ok(desk),
        })
        .and_then(|desk| {
            demo::write_files(data_dir, listen, admin_listen, database_url, desk).map_err(|e| e.to_string())
        })
        .and_then(|path| {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let creds = demo::seed(&config, data_dir, &clock).map_err(|e| e.to_string())?;
            // The anonymous MCP app exists only now: name it in the config.
            let anonymous = creds.app_ids.get(demo::MCP_LOCAL_APP).map(String::as_str);
            let path = demo::write_config(data_dir, listen, admin_listen, database_url, anonymous)
                .map_err(|e| e.to_string())?;
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            Ok((config, creds))
        });
    match prepared {
        Ok((config, creds)) => serve(config, Some((data_dir.to_path_buf(), creds))),
        Err(e) => {
            eprintln!("error: cannot prepare the demo in `{}`: {e}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, demo: Option<(PathBuf, demo::Credentials)>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        let server = match Server::start(config, clock).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        tracing::info!(agent = %server.agent_addr, admin = %server.admin_addr, "openport listening");
        if matches!(server.gateway.store.apps.has_admin_tokens(), Ok(false)) {
            let config = server
                .gateway
                .config
                .path
                .as_deref()
                .map_or("FILE".into(), |p| p.display().to_string());
            tracing::warn!(
                "no admin token exists, so the admin plane refuses everyone: create the first with \
                 `openport admin-token create --config {config} --role operator`"
            );
        }
        if let Some((dir, creds)) = demo {
            // A closed stdout must not take the gateway down: ignore write errors.
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                demo::banner((server.agent_addr, server.admin_addr), &dir, &creds)
            );
        }
        wait_for_signal(&server.gateway).await;
        tracing::info!("shutting down");
        server.stop().await;
        ExitCode::SUCCESS
    })
}

/// Waits for Ctrl-C or SIGTERM; SIGHUP reloads the config and policies meanwhile.
async fn wait_for_signal(gateway: &crate::Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => match gateway.reload("SIGHUP").await {
                    Ok(summary) => tracing::info!(%summary, "reloaded on SIGHUP"),
                    Err(e) => tracing::warn!(error = %e, "reload on SIGHUP refused; the old settings stay"),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = gateway;
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        match crate::Gateway::start_to_check(config, clock).await {
            Ok(gw) => {
                let unavailable = gw.unavailable_plugins();
                if !unavailable.is_empty() {
                    for (name, error) in &unavailable {
                        eprintln!("error: plugin `{name}` (kept in the store) does not load: {error}");
                    }
                    return ExitCode::from(EX_USAGE);
                }
                let catalog = gw.catalog();
                println!(
                    "config `{}` is valid: {} policies, {} plugins, {} tools",
                    path.display(),
                    gw.authorizer().policy_ids().len(),
                    catalog.plugins().count(),
                    catalog.tools().count()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EX_USAGE)
            }
        }
    })
}

/// The store the audit commands read: the config's (given, or the data directory's, which
/// names a shared database), else the data directory's SQLite file.
fn store_location(args: &StoreArgs) -> Result<store::Location, ExitCode> {
    match (&args.config, &args.data_dir) {
        (Some(config), _) => load_config(config).map(|c| c.store_location()),
        (None, Some(dir)) if dir.join("openport.toml").exists() => {
            load_config(&dir.join("openport.toml")).map(|c| c.store_location())
        }
        (None, Some(dir)) => Ok(store::Location::File(dir.join("openport.db"))),
        (None, None) => {
            eprintln!("error: give --config FILE or --data-dir DIR");
            Err(ExitCode::from(EX_USAGE))
        }
    }
}

fn audit_command(command: AuditCommand) -> ExitCode {
    let args = match &command {
        AuditCommand::Tail { store, .. }
        | AuditCommand::Query { store, .. }
        | AuditCommand::Export { store, .. }
        | AuditCommand::Verify { store, .. } => store,
        AuditCommand::Keygen { out } => {
            return match audit::checkpoint::generate_key(out) {
                Ok(_) => {
                    println!(
                        "wrote `{}` (keep it off the database host's backups) and `{}`",
                        out.display(),
                        audit::checkpoint::public_key_path(out).display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let path = match store_location(args) {
        Ok(path) => path,
        Err(code) => return code,
    };
    if let store::Location::File(file) = &path
        && !file.exists()
    {
        eprintln!("error: no store at `{}`", file.display());
        return ExitCode::from(EX_USAGE);
    }
    match command {
        AuditCommand::Tail { lines, .. } => print_newest(
            &path,
            &AuditFilter {
                limit: lines,
                ..AuditFilter::default()
            },
        ),
        AuditCommand::Query { filter, limit, .. } => match resolved(&path, &filter, limit, false) {
            Ok(filter) => print_newest(&path, &filter),
            Err(code) => code,
        },
        AuditCommand::Export { filter, out, .. } => {
            let filter = match resolved(&path, &filter, 5_000, true) {
                Ok(filter) => filter,
                Err(code) => return code,
            };
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(file) => match std::fs::File::create(file) {
                    Ok(f) => Box::new(std::io::BufWriter::new(f)),
                    Err(e) => {
                        eprintln!("error: cannot write `{}`: {e}", file.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => Box::new(std::io::stdout().lock()),
            };
            match export(&path, &filter, &mut sink) {
                Ok(n) => {
                    if out.is_some() {
                        eprintln!("exported {n} events");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        // Answered above: it needs no store.
        AuditCommand::Keygen { .. } => ExitCode::SUCCESS,
        AuditCommand::Verify {
            store: args,
            checkpoint,
            public_key,
        } => {
            // The config (given, or the demo directory's) names the key and the log.
            let config_path = args
                .config
                .clone()
                .or_else(|| args.data_dir.as_ref().map(|d| d.join("openport.toml")))
                .filter(|p| p.exists());
            let config = match config_path.as_deref().map(load_config).transpose() {
                Ok(config) => config,
                Err(code) => return code,
            };
            let key = public_key.or_else(|| config.as_ref().and_then(|c| c.audit_signing_key.clone()));
            let mut logs: Vec<PathBuf> = config.iter().filter_map(|c| c.audit_checkpoint_log.clone()).collect();
            for file in checkpoint {
                if !file.exists() {
                    eprintln!("error: no checkpoint file `{}`", file.display());
                    return ExitCode::from(EX_USAGE);
                }
                logs.push(file);
            }
            verify_report(&path, key.as_deref(), &logs)
        }
    }
}

/// Verifies every chain of the store at `path` and prints the report as JSON; exit 1
/// unless every chain is intact.
fn verify_report(path: &store::Location, key: Option<&Path>, logs: &[PathBuf]) -> ExitCode {
    if key.is_none() {
        eprintln!("warning: no audit signing key: checked the links only; a truncated tail cannot be detected");
    }
    let checked = Store::open_at(path)
        .map_err(|e| e.to_string())
        .and_then(|store| audit::verify_store(&store, key, logs));
    match checked {
        Ok((intact, report)) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            if intact { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Streams every matching event, oldest first, in pages: on a shared store every node's
/// chain merged in time order.
fn export(path: &store::Location, filter: &AuditFilter, sink: &mut dyn std::io::Write) -> Result<u64, String> {
    let store = Store::open_at(path).map_err(|e| e.to_string())?;
    let mut after: Option<(String, i64)> = None;
    let mut written = 0;
    loop {
        let cursor = after.as_ref().map(|(time, seq)| (time.as_str(), *seq));
        let rows = store.audit.in_time_order(filter, cursor).map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else { break };
        after = Some((last.created_at.clone(), last.seq));
        for row in &rows {
            let line = serde_json::to_string(row).map_err(|e| e.to_string())?;
            writeln!(sink, "{line}").map_err(|e| e.to_string())?;
            written += 1;
        }
    }
    sink.flush().map_err(|e| e.to_string())?;
    Ok(written)
}

/// The tools and policy set of a config, or of a policy directory with no tools.
fn policy_set(
    dir: Option<&Path>,
    config: Option<&Path>,
) -> Result<(Arc<crate::catalog::Catalog>, Authorizer), ExitCode> {
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(EX_USAGE)
    };
    match config {
        Some(path) => {
            let config = load_config(path)?;
            runtime()?
                .block_on(crate::gateway::offline_policies(&config))
                .map_err(|e| failed(&e))
        }
        None => {
            let dirs = dir.map(|d| vec![d.to_path_buf()]).unwrap_or_default();
            let (base, sources) = if dirs.is_empty() {
                (crate::authz::DEFAULT_SCHEMA.to_string(), Vec::new())
            } else {
                Authorizer::read_dirs(&dirs).map_err(|e| failed(&e))?
            };
            let authz = Authorizer::build(&base, &[], sources).map_err(|e| failed(&e))?;
            Ok((Arc::new(crate::catalog::Catalog::default()), authz))
        }
    }
}

fn policy_check(dir: Option<&Path>, config: Option<&Path>) -> ExitCode {
    let dir = match (dir, config) {
        (None, None) => Some(Path::new("policies")),
        _ => dir,
    };
    match policy_set(dir, config) {
        Ok((catalog, authz)) => {
            println!(
                "policy set is valid: {} policies ({} shadow) over {} tools",
                authz.policy_ids().len(),
                authz.shadow_ids().len(),
                catalog.tools().count()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn policy_schema(config: Option<&Path>, format: SchemaFormat) -> ExitCode {
    let (catalog, authz) = match policy_set(None, config) {
        Ok(set) => set,
        Err(code) => return code,
    };
    for tool in catalog.tools() {
        for omitted in &tool.args_omitted {
            eprintln!(
                "warning: tool `{}` argument `{}` is not in the schema: {}",
                tool.name,
                omitted.path.join("."),
                omitted.reason
            );
        }
    }
    let text = match format {
        SchemaFormat::Json => serde_json::to_string_pretty(authz.schema_json()).map_err(|e| e.to_string()),
        SchemaFormat::Cedarschema => authz.schema_text().map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policy_explain(config_path: &Path, request: Option<&Path>, request_id: Option<&str>) -> ExitCode {
    let (catalog, authz) = match policy_set(None, Some(config_path)) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let question = match (request, request_id) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
            .and_then(|text| {
                serde_json::from_str::<crate::authz::scenarios::Question>(&text).map_err(|e| e.to_string())
            }),
        (None, Some(id)) => match load_config(config_path) {
            Ok(config) => question_from_audit(&config, &catalog, id),
            Err(code) => return code,
        },
        (None, None) => Err("give --request FILE or --request-id ID".to_string()),
    };
    if let Ok(q) = &question
        && request_id.is_some()
        && q.context.args.is_none()
        && q.action != "discover"
    {
        eprintln!(
            "warning: the audit event kept no arguments (`[audit] capture = \"redacted\"` keeps them); \
             deciding without them"
        );
    }
    let explained = question.and_then(|question| {
        let tool = catalog
            .tool(&question.tool)
            .ok_or_else(|| format!("no loaded tool is named `{}`", question.tool))?;
        crate::authz::scenarios::explain(&question, tool.facts(), &tool.args, &authz)
    });
    match explained {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

/// The question a request's audit event answers: its app as stored now, its tool and
/// phase, its address, time and channel, and its arguments when the event kept them.
fn question_from_audit(
    config: &Config,
    catalog: &crate::catalog::Catalog,
    request_id: &str,
) -> Result<crate::authz::scenarios::Question, String> {
    use crate::authz::scenarios::{ContextSpec, PrincipalSpec, Question};
    let store = Store::open_at(&config.store_location()).map_err(|e| e.to_string())?;
    let filter = AuditFilter {
        request_id: Some(request_id.to_string()),
        limit: 10,
        ..AuditFilter::default()
    };
    let events = store.audit.query(&filter).map_err(|e| e.to_string())?;
    let event = events
        .iter()
        .find(|e| e.tool.is_some() && e.app_id.is_some())
        .ok_or_else(|| format!("no audit event of request `{request_id}` names an app and a tool"))?;
    let (tool_name, app_id) = (
        event.tool.clone().unwrap_or_default(),
        event.app_id.clone().unwrap_or_default(),
    );
    let tool = catalog
        .tool(&tool_name)
        .ok_or_else(|| format!("no loaded tool is named `{tool_name}`"))?;
    let app = store
        .apps
        .get(&app_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("app `{app_id}` no longer exists"))?;
    let hidden = event.details.get("reason").and_then(|r| r.as_str()) == Some("hidden");
    let action = match (hidden, tool.is_read()) {
        (true, _) => "discover",
        (false, true) => "read",
        (false, false) => "propose",
    };
    Ok(Question {
        principal: PrincipalSpec {
            app: app.id.clone(),
            tenant: app.org_id.clone().unwrap_or_default(),
            name: Some(app.name.clone()),
            scopes: app.scopes.clone(),
            policy: app.policy.clone(),
            tags: app.tags.clone(),
        },
        tool: tool_name,
        action: action.to_string(),
        context: ContextSpec {
            client_ip: event.ip.as_deref().and_then(|ip| ip.parse().ok()),
            time: Some(event.created_at.clone()),
            args: event.details.get("payload").cloned(),
            channel: event.details.get("binding").and_then(|b| b.as_str()).map(String::from),
            ..ContextSpec::default()
        },
    })
}

fn policy_test(files: &[PathBuf]) -> ExitCode {
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        match crate::authz::scenarios::load(file) {
            Ok((scenarios, authz)) => {
                for outcome in crate::authz::scenarios::run(&scenarios, &authz) {
                    match outcome.failure {
                        None => {
                            passed += 1;
                            println!("ok   {}: {}", file.display(), outcome.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!("FAIL {}: {}: {why}", file.display(), outcome.name);
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Sends one admin request and prints its `data` as pretty JSON.
fn admin_call(admin: &AdminArgs, method: &str, path: String, body: Option<serde_json::Value>) -> ExitCode {
    let Some(token) = &admin.admin_token else {
        eprintln!("error: give --admin-token or set OPENPORT_ADMIN_TOKEN");
        return ExitCode::from(EX_USAGE);
    };
    let client = match crate::admin_client::AdminClient::new(&admin.admin_url, token, admin.admin_ca.as_deref()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match client.call(method, &path, body.as_ref()) {
        Ok(data) => {
            println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn app_command(admin: &AdminArgs, command: AppCommand) -> ExitCode {
    use serde_json::json;
    match command {
        AppCommand::List => admin_call(admin, "GET", "apps".into(), None),
        AppCommand::Create {
            name,
            scopes,
            tenant,
            scope,
        } => admin_call(
            admin,
            "POST",
            "apps".into(),
            Some(json!({"name": name, "scopes": scopes, "org_id": tenant, "scope": scope})),
        ),
        AppCommand::Update {
            id,
            name,
            description,
            scopes,
            rate_class,
        } => {
            let mut body = serde_json::Map::new();
            for (field, value) in [
                ("name", name.map(serde_json::Value::from)),
                ("description", description.map(serde_json::Value::from)),
                ("scopes", scopes.map(serde_json::Value::from)),
                ("rate_class", rate_class.map(serde_json::Value::from)),
            ] {
                if let Some(value) = value {
                    body.insert(field.into(), value);
                }
            }
            admin_call(admin, "PATCH", format!("apps/{id}"), Some(body.into()))
        }
        AppCommand::Revoke { id } => admin_call(admin, "POST", format!("apps/{id}/revoke"), Some(json!({}))),
        AppCommand::Restore { id } => admin_call(admin, "POST", format!("apps/{id}/restore"), Some(json!({}))),
        AppCommand::Delete { id } => admin_call(admin, "DELETE", format!("apps/{id}"), None),
        AppCommand::Tags { id, tags } => {
            let mut map = serde_json::Map::new();
            for pair in &tags {
                let Some((key, value)) = pair.split_once('=') else {
                    eprintln!("error: `{pair}` is not KEY=VALUE");
                    return ExitCode::from(EX_USAGE);
                };
                map.insert(key.to_string(), value.into());
            }
            admin_call(
                admin,
                "PUT",
                format!("apps/{id}/tags"),
                Some(serde_json::json!({"tags": map})),
            )
        }
        AppCommand::Policy { id, json: text } => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(policy) => admin_call(admin, "PATCH", format!("apps/{id}/policy"), Some(policy)),
            Err(e) => {
                eprintln!("error: the policy is not JSON: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        AppCommand::Tools { id } => admin_call(admin, "GET", format!("apps/{id}/tools"), None),
    }
}

fn key_command(admin: &AdminArgs, command: KeyCommand) -> ExitCode {
    use serde_json::json;
    match command {
        KeyCommand::Create { app, name, expires_at } => admin_call(
            admin,
            "POST",
            format!("apps/{app}/keys"),
            Some(json!({"name": name, "expiresAt": expires_at})),
        ),
        KeyCommand::Revoke { id } => admin_call(admin, "POST", format!("keys/{id}/revoke"), Some(json!({}))),
        KeyCommand::List { app } => admin_call(admin, "GET", format!("apps/{app}/keys"), None),
        KeyCommand::Rotate { id } => admin_call(admin, "POST", format!("keys/{id}/rotate"), Some(json!({}))),
    }
}

/// The filter of `audit query` or `export`, or the exit code after saying what is wrong.
fn resolved(
    path: &store::Location,
    filter: &FilterArgs,
    limit: usize,
    ascending: bool,
) -> Result<AuditFilter, ExitCode> {
    let store = Store::open_at(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    filter.filter(&store, limit, ascending).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(EX_USAGE)
    })
}

/// Prints the newest matching events, oldest first, as JSON Lines.
fn print_newest(path: &store::Location, filter: &AuditFilter) -> ExitCode {
    match Store::open_at(path).and_then(|s| s.audit.query(filter)) {
        Ok(mut rows) => {
            rows.reverse();
            for row in rows {
                println!("{}", serde_json::to_string(&row).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
