//! `openport demo`: a ready-to-try gateway in one command. It writes a data directory
//! (config, the demo ledger plugin and its manifest, the default policies), seeds the
//! reference's ledger data into the store, creates demo apps with different grants and
//! admin credentials, and writes them to `DIR/demo-credentials.json` before serving.
//! Re-running on the same directory reuses the data and the credentials.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::apps::{self, NewApp};
use crate::auth::Role;
use crate::authz::{DEFAULT_POLICIES, DEFAULT_SCHEMA};

/// The data-policy policies the ledger plugin ships beside its manifest.
const LEDGER_POLICIES: &str = include_str!("../../../plugins/ledger/policies.cedar");
/// The demo's policies over the tickets adapter's and the ledger's own arguments.
const TOOL_ARGUMENT_POLICIES: &str = include_str!("../../../policies/examples/tool-arguments/tool-arguments.cedar");
use crate::clock::{self, SharedClock};
use crate::config::{Config, ConfigError};
use crate::hashing::sha256_hex;
use crate::store::{Store, StoreError};

pub mod desk;

/// The compiled demo plugins.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// The demo tenant and the second tenant that shows isolation.
pub const DEMO_ORG: &str = "org_demo";
pub const OTHER_ORG: &str = "org_other";

/// The file the demo writes its credentials to.
pub const CREDENTIALS_FILE: &str = "demo-credentials.json";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot write `{path}`: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Apps(#[from] apps::AppError),
    #[error("cannot join the shared demo database: {0}")]
    Seed(String),
}

/// What `DIR/demo-credentials.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// App name → agent token, the full-access app first.
    pub agent_tokens: BTreeMap<String, String>,
    /// Role → admin token.
    pub admin_tokens: BTreeMap<String, String>,
    /// App name → app id.
    #[serde(default)]
    pub app_ids: BTreeMap<String, String>,
}

/// The demo apps: name, tenant, scopes. The first has every demo scope.
pub const DEMO_APPS: &[(&str, &str, &[&str])] = &[
    (
        "Demo Integration",
        DEMO_ORG,
        &[
            "ledger.read",
            "transaction.read",
            "transaction.write",
            "transaction.delete",
            "transaction.export",
            "ticket.read",
            "ticket.write",
        ],
    ),
    ("Read-only Reporter", DEMO_ORG, &["ledger.read", "transaction.read"]),
    (
        "Other Tenant",
        OTHER_ORG,
        &["ledger.read", "transaction.read", "transaction.write"],
    ),
    (MCP_LOCAL_APP, DEMO_ORG, &["conformance.read"]),
];

/// The app that credential-less MCP requests from this machine act as (`[mcp]
/// anonymous_app`): it holds only the MCP conformance suite's test tools.
pub const MCP_LOCAL_APP: &str = "Local MCP Client (anonymous, loopback only)";

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DemoError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    }
    std::fs::write(path, bytes).map_err(|source| DemoError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `plugins/NAME.wasm` and `plugins/NAME.toml`: a comment, the identity lines (name,
/// world, component file and its sha256), then `rest` (tools, grants, limits).
fn write_plugin(
    data_dir: &Path,
    (name, world, component): (&str, &str, &[u8]),
    comment: &str,
    rest: &str,
) -> Result<(), DemoError> {
    write_file(&data_dir.join(format!("plugins/{name}.wasm")), component)?;
    let manifest = format!(
        "{comment}\nname = \"{name}\"\nversion = \"0.1.0\"\nworld = \"{world}\"\ncomponent = \"{name}.wasm\"\n\
         sha256 = \"{}\"\n{rest}",
        sha256_hex(component)
    );
    write_file(&data_dir.join(format!("plugins/{name}.toml")), manifest.as_bytes())
}

/// Writes the demo's files and returns its config path. `desk` is the support desk the
/// tickets adapter fronts.
pub fn write_files(
    data_dir: &Path,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    database_url: Option<&str>,
    desk: SocketAddr,
) -> Result<PathBuf, DemoError> {
    write_plugin(
        data_dir,
        ("ledger", "tool-adapter", artifacts::LEDGER),
        "# The demo ledger adapter (the OpenPort reference's domain).",
        r#"tools = ["ledger.list", "transaction.list", "transaction.create", "transaction.update",
         "transaction.delete", "transaction.hard_delete", "transactions.export_csv"]

sensitive_fields = ["title", "notes"]

# Every ledger write records its result under its execution id: one a dead node left
# running is run again with that id instead of becoming indeterminate.
resumable = ["transaction.create", "transaction.update", "transaction.delete", "transaction.hard_delete"]

# How the app data policy applies to the ledger's arguments: the policies below name the
# ledger argument, and `max_days` bounds this date range.
policies = ["ledger.policies.cedar"]

[data_policy]
date_range = ["startDate", "endDate"]

[grants]
log = true
clock = true
kv = true

[limits]
timeout_ms = 2000
memory_mib = 32
max_output_bytes = 1048576
"#,
    )?;
    write_plugin(
        data_dir,
        ("ledger-witness", "state-witness", artifacts::LEDGER_WITNESS),
        "# The ledger's State Witness: re-checked before a reviewed write executes.",
        r#"tools = ["transaction.update", "transaction.delete", "transaction.hard_delete"]

[grants]
kv = true
kv_namespace = "ledger"

[limits]
timeout_ms = 1000
memory_mib = 16
"#,
    )?;
    write_plugin(
        data_dir,
        ("tickets", "tool-adapter", artifacts::TICKETS),
        "# The example support-desk adapter: it calls the desk's HTTP API.",
        &format!(
            r#"tools = ["ticket.list", "ticket.create"]

[grants]
log = true
http = ["{desk}"]

[grants.config]
base_url = "http://{desk}"

[limits]
timeout_ms = 3000
memory_mib = 32
"#
        ),
    )?;
    write_plugin(
        data_dir,
        ("mcp-conformance", "tool-adapter", artifacts::MCP_CONFORMANCE),
        "# The tools the official MCP conformance suite calls (scope `conformance.read`).",
        r#"tools = ["test_simple_text", "test_image_content", "test_audio_content", "test_embedded_resource",
         "test_multiple_content_types", "test_error_handling", "json_schema_2020_12_tool",
         "test_region_header", "test_tool_with_progress", "test_logging_tool", "test_input_required_result_elicitation",
         "test_input_required_result_request_state", "test_input_required_result_multiple_inputs",
         "test_input_required_result_multi_round", "test_input_required_result_tampered_state",
         "test_input_required_result_capabilities", "test_input_required_result_sampling",
         "test_input_required_result_list_roots", "test_streaming_elicitation", "test_missing_capability",
         "greet", "slow_compute", "failing_job", "protocol_error_job", "confirm_delete", "multi_input",
         "test_tool_with_task"]

# Reads that may finish in the background for a client that takes tasks (MCP Tasks).
[tasks]
slow_compute = "optional"
failing_job = "required"
protocol_error_job = "optional"
confirm_delete = "optional"
multi_input = "optional"
test_tool_with_task = "required"

# Prompts the suite gets (MCP prompts/*): templates, filled in with the client's arguments.
[[prompts]]
name = "test_simple_prompt"
description = "A prompt without arguments."
scopes = ["conformance.read"]
messages = [{ role = "user", content = { type = "text", text = "This is a simple prompt for testing." } }]

[[prompts]]
name = "test_prompt_with_arguments"
description = "A prompt with two required arguments."
scopes = ["conformance.read"]
arguments = [{ name = "arg1", description = "First test argument", required = true },
             { name = "arg2", description = "Second test argument", required = true }]
messages = [{ role = "user", content = { type = "text", text = "Prompt with arguments: arg1='{{arg1}}', arg2='{{arg2}}'" } }]

[[prompts]]
name = "test_prompt_with_embedded_resource"
description = "A prompt that embeds the resource it is given."
scopes = ["conformance.read"]
arguments = [{ name = "resourceUri", description = "URI of the resource to embed", required = true }]
messages = [
  { role = "user", content = { type = "resource", resource = { uri = "{{resourceUri}}", mimeType = "text/plain", text = "Embedded resource content for testing." } } },
  { role = "user", content = { type = "text", text = "Please process the embedded resource above." } },
]

[[prompts]]
name = "test_prompt_with_image"
description = "A prompt with an image."
scopes = ["conformance.read"]
messages = [
  { role = "user", content = { type = "image", mimeType = "image/png", data = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==" } },
  { role = "user", content = { type = "text", text = "Please analyze the image above." } },
]

[[prompts]]
name = "test_input_required_result_prompt"
description = "A prompt whose required argument is asked for when it is left out."
scopes = ["conformance.read"]
arguments = [{ name = "context", description = "What context should the prompt use?", required = true }]
messages = [{ role = "user", content = { type = "text", text = "Use this context: {{context}}" } }]

[grants]
log = true

[limits]
timeout_ms = 1000
memory_mib = 16
"#,
    )?;
    write_file(
        &data_dir.join("plugins/ledger.policies.cedar"),
        LEDGER_POLICIES.as_bytes(),
    )?;
    // Policies are the operator's to edit: written once, never overwritten.
    for (name, text) in [
        ("schema.cedarschema", DEFAULT_SCHEMA),
        ("base.cedar", DEFAULT_POLICIES),
        ("tool-arguments.cedar", TOOL_ARGUMENT_POLICIES),
    ] {
        let path = data_dir.join("policies").join(name);
        if !path.exists() {
            write_file(&path, text.as_bytes())?;
        }
    }
    // The audit signing key lives beside the database, never in it; made once.
    let key = data_dir.join(AUDIT_KEY_FILE);
    if !key.exists() {
        crate::audit::checkpoint::generate_key(&key).map_err(|e| DemoError::Write {
            path: key.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    write_config(data_dir, listen, admin_listen, database_url, None)
}

/// The demo's audit signing key, in the data directory (its public half beside it).
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";

/// Writes the demo's `openport.toml` and returns its path. `anonymous_app` turns on the
/// loopback-only anonymous MCP integration (only when listening on loopback).
pub fn write_config(
    data_dir: &Path,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    database_url: Option<&str>,
    anonymous_app: Option<&str>,
) -> Result<PathBuf, DemoError> {
    let shared = match database_url {
        // Debug-quoted: a TOML basic string accepts Rust's escapes of a URL's characters.
        Some(url) => format!("\n# Shared with the other demo nodes (`--database-url`).\nurl = {url:?}"),
        None => String::new(),
    };
    let mcp = match anonymous_app {
        Some(app) if listen.ip().is_loopback() => format!(
            "\n# Local development: MCP clients on this machine may connect without a token and\n\
             # act as the \"{MCP_LOCAL_APP}\" app (the MCP conformance suite's tools only).\n\
             [mcp]\nanonymous_app = \"{app}\"\n"
        ),
        _ => String::new(),
    };
    let config = format!(
        r#"# Written by `openport demo`; rewritten on every demo start.
[server]
listen = "{listen}"
admin_listen = "{admin_listen}"

[store]
path = "openport.db"{shared}

[policies]
dir = "policies"

# Checkpoints of the audit chain are signed with this key, kept outside the database, and
# appended to the log as well: `openport audit verify` then notices a deleted tail or a
# rewrite with recomputed hashes.
[audit]
signing_key = "audit-signing.key"
checkpoint_log = "audit-checkpoints.log"

# Apps whose policy names `rate_class = "trial"` get a small daily quota and one call in
# flight at a time (the default class: 240 requests a minute per key).
[admission.classes.trial]
requests = 100
window_seconds = 60
quota = {{ requests = 20, window_seconds = 86400 }}
concurrency = 1

[[plugin]]
manifest = "plugins/ledger.toml"

[[plugin]]
manifest = "plugins/ledger-witness.toml"

[[plugin]]
manifest = "plugins/tickets.toml"

[[plugin]]
manifest = "plugins/mcp-conformance.toml"
{mcp}"#
    );
    let path = data_dir.join("openport.toml");
    write_file(&path, config.as_bytes())?;
    Ok(path)
}

/// Seeds the store (once) and returns the credentials, minting new ones when the
/// credentials file is gone. On a shared (PostgreSQL) store the first node seeds it and
/// every later node joins it with the same credentials.
pub fn seed(config: &Config, data_dir: &Path, clock: &SharedClock) -> Result<Credentials, DemoError> {
    let store = Store::open_at(&config.store_location())?;
    let now = clock::iso(clock.now());
    let path = data_dir.join(CREDENTIALS_FILE);
    if store.is_shared() {
        let creds = seed_shared(&store, &now)?;
        write_credentials(&path, &creds)?;
        return Ok(creds);
    }
    if store.meta.get("demo_seeded")?.is_some() {
        if let Some(existing) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Credentials>(&b).ok())
        {
            return Ok(existing);
        }
    } else {
        seed_ledgers(&store, &now)?;
    }
    // New credentials: the apps are created the first time, and on a re-run without the
    // credentials file the old apps are revoked and replaced.
    for app in store.apps.list()? {
        if app.created_by.as_deref() == Some("demo") && app.status == "active" {
            apps::revoke_app(&store, &app.id, &now)?;
        }
    }
    let creds = mint_credentials(&store, &now)?;
    write_credentials(&path, &creds)?;
    store.meta.set("demo_seeded", &now)?;
    Ok(creds)
}

/// What every node of a shared demo must have alike, settled through the database by the
/// first node: the support desk they front (it stands for one external system; each
/// node's own would hold different tickets; it lives in the first node's process) and the
/// audit signing key (each node's chain is checked under the one key). Returns the desk.
///
/// A demo only: a deployment distributes its key file itself and never puts it in the
/// database, where whoever can rewrite the trail could also re-sign it.
pub fn join_shared(database_url: &str, data_dir: &Path, own_desk: SocketAddr) -> Result<SocketAddr, DemoError> {
    let store = Store::open_at(&crate::store::Location::Postgres(database_url.to_string()))?;
    let desk = store.meta.get_or_insert("demo_desk", &own_desk.to_string())?;
    let key = data_dir.join(AUDIT_KEY_FILE);
    let public = crate::audit::checkpoint::public_key_path(&key);
    if !key.exists() {
        std::fs::create_dir_all(data_dir).map_err(|source| DemoError::Write {
            path: data_dir.display().to_string(),
            source,
        })?;
        crate::audit::checkpoint::generate_key(&key).map_err(|e| DemoError::Write {
            path: key.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| DemoError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    let own = serde_json::json!([read(&key)?, read(&public)?]).to_string();
    let shared = store.meta.get_or_insert("demo_audit_key", &own)?;
    if shared != own {
        let (secret, public_text): (String, String) =
            serde_json::from_str(&shared).map_err(|e| DemoError::Seed(format!("the stored demo audit key: {e}")))?;
        write_file(&key, secret.as_bytes())?;
        restrict_permissions(&key);
        write_file(&public, public_text.as_bytes())?;
    }
    desk.parse()
        .map_err(|e| DemoError::Seed(format!("the stored demo desk address `{desk}`: {e}")))
}

/// How long a joining node waits for the first node to finish seeding a shared store.
const SEED_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The first node to claim a shared store seeds it and keeps the demo's credentials in it,
/// so every node prints the same ones. (Tokens in the database, readable by whoever reads
/// the database: acceptable for a demo only; a real deployment mints its tokens over the
/// admin API and keeps none.)
fn seed_shared(store: &Store, now: &str) -> Result<Credentials, DemoError> {
    let claim = ulid::Ulid::new().to_string();
    if store.meta.get_or_insert("demo_seed_owner", &claim)? == claim {
        seed_ledgers(store, now)?;
        let creds = mint_credentials(store, now)?;
        let text = serde_json::to_string(&creds).unwrap_or_default();
        store.meta.set("demo_credentials", &text)?;
        store.meta.set("demo_seeded", now)?;
        return Ok(creds);
    }
    let waited = crate::clock::Stopwatch::start();
    loop {
        if let Some(text) = store.meta.get("demo_credentials")? {
            return serde_json::from_str(&text).map_err(|e| DemoError::Seed(format!("stored demo credentials: {e}")));
        }
        if waited.elapsed() > SEED_WAIT {
            return Err(DemoError::Seed(
                "another node claimed the shared demo database but did not finish seeding it".into(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn mint_credentials(store: &Store, now: &str) -> Result<Credentials, DemoError> {
    let mut creds = Credentials {
        agent_tokens: BTreeMap::new(),
        admin_tokens: BTreeMap::new(),
        app_ids: BTreeMap::new(),
    };
    for (name, org, scopes) in DEMO_APPS {
        let created = apps::create_app(
            store,
            NewApp {
                scope: "workspace".into(),
                name: (*name).into(),
                description: Some("Created by `openport demo`".into()),
                org_id: Some((*org).into()),
                user_id: None,
                service_user_id: None,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                policy: None,
            },
            "demo",
            now,
        )?;
        creds.agent_tokens.insert((*name).into(), created.token);
        creds.app_ids.insert((*name).into(), created.app.id);
    }
    for role in [Role::Operator, Role::Reviewer, Role::Auditor] {
        let token = apps::create_admin_token(store, &format!("demo-{}", role.as_str()), role, None, now)?;
        creds.admin_tokens.insert(role.as_str().into(), token);
    }
    Ok(creds)
}

fn write_credentials(path: &Path, creds: &Credentials) -> Result<(), DemoError> {
    let text = serde_json::to_vec_pretty(creds).unwrap_or_default();
    write_file(path, &text)?;
    restrict_permissions(path);
    Ok(())
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

/// The reference's demo data, in the ledger plugin's key-value namespace (public for the
/// plugin benchmark, which runs the ledger on it).
pub fn seed_ledgers(store: &Store, now: &str) -> Result<(), StoreError> {
    let ledger = |id: &str, name: &str, tz: &str, org: &str| json!({"id": id, "name": name, "currency_home": "USD", "tz": tz, "organization_id": org});
    let txn = |id: &str, ledger_id: &str, kind: &str, title: &str, amount: i64, notes: Value| {
        json!({
            "id": id, "ledger_id": ledger_id, "kind": kind, "title": title, "amount_home": amount,
            "currency_home": "USD", "date": now, "notes": notes, "is_deleted": false,
            "created_at": now, "updated_at": now,
        })
    };
    let rows = [
        (
            DEMO_ORG,
            "ledger/ledger_main",
            ledger("ledger_main", "Main Ledger", "America/Los_Angeles", DEMO_ORG),
        ),
        (
            DEMO_ORG,
            "ledger/ledger_ops",
            ledger("ledger_ops", "Ops Ledger", "America/New_York", DEMO_ORG),
        ),
        (
            DEMO_ORG,
            "txn/txn_1",
            txn(
                "txn_1",
                "ledger_main",
                "income",
                "Consulting payment",
                1200,
                Value::Null,
            ),
        ),
        (
            DEMO_ORG,
            "txn/txn_2",
            txn(
                "txn_2",
                "ledger_main",
                "expense",
                "Software subscription",
                80,
                json!("annual plan"),
            ),
        ),
        (
            OTHER_ORG,
            "ledger/ledger_other",
            ledger("ledger_other", "Other Org Ledger", "Europe/Berlin", OTHER_ORG),
        ),
        (
            OTHER_ORG,
            "txn/txn_9",
            txn("txn_9", "ledger_other", "expense", "Office rent", 2500, Value::Null),
        ),
    ];
    for (org, key, value) in rows {
        store.kv.set("ledger", org, key, &value.to_string())?;
    }
    Ok(())
}

/// The banner printed when the demo starts: tokens once, and lines to paste.
/// The addresses are the bound ones, so `--listen 127.0.0.1:0` prints the real ports.
pub fn banner(
    (agent, admin): (std::net::SocketAddr, std::net::SocketAddr),
    data_dir: &Path,
    creds: &Credentials,
) -> String {
    let agent = format!("http://{agent}");
    let admin = format!("http://{admin}");
    let full = creds.agent_tokens.get(DEMO_APPS[0].0).cloned().unwrap_or_default();
    let narrow = creds.agent_tokens.get(DEMO_APPS[1].0).cloned().unwrap_or_default();
    let auditor = creds.admin_tokens.get("auditor").cloned().unwrap_or_default();
    format!(
        r#"
OpenPort demo is running.
  agent plane  {agent}
  admin plane  {admin}
  data         {dir}
  credentials  {creds_path}

Demo token (app "{full_name}", every demo scope):
  {full}

Try it:
  export OPENPORT_TOKEN={full}
  curl -s {agent}/api/agent/v1/manifest -H "Authorization: Bearer $OPENPORT_TOKEN"
  curl -s {agent}/api/agent/v1/ledgers -H "Authorization: Bearer $OPENPORT_TOKEN"
  curl -s "{agent}/api/agent/v1/transactions?ledgerId=ledger_main" -H "Authorization: Bearer $OPENPORT_TOKEN"
  curl -s {agent}/api/agent/v1/tickets -H "Authorization: Bearer $OPENPORT_TOKEN"   # the tickets adapter calls a desk over HTTP
  curl -s -X POST {agent}/api/agent/v1/actions -H "Authorization: Bearer $OPENPORT_TOKEN" -H "Content-Type: application/json" \
       -d '{{"action":"transaction.create","payload":{{"ledgerId":"ledger_main","kind":"expense","title":"Team lunch","amount_home":42}}}}'
  # a denied call: the read-only app may not create transactions (agent.scope_denied)
  curl -s -X POST {agent}/api/agent/v1/actions -H "Authorization: Bearer {narrow}" -H "Content-Type: application/json" \
       -d '{{"action":"transaction.create","payload":{{"ledgerId":"ledger_main","kind":"expense","title":"x","amount_home":1}}}}'
  # the audit trail
  curl -s "{admin}/api/agent-admin/v1/audit?limit=5" -H "Authorization: Bearer {auditor}"
  {exe} audit tail --data-dir {dir}
"#,
        exe = std::env::current_exe().map_or_else(|_| "openport".to_string(), |p| p.display().to_string()),
        dir = data_dir.display(),
        creds_path = data_dir.join(CREDENTIALS_FILE).display(),
        full_name = DEMO_APPS[0].0,
    )
}
