//! Plugins: hot load, replace and remove; refusals that leave the old version serving; and
//! the hostile fixtures, each with the code it must produce while the host keeps serving.

use std::path::{Path, PathBuf};

use openport::demo::artifacts;
use serde_json::json;

use crate::support::TestGateway;

/// Writes a manifest for a built fixture into the test's directory; returns its path.
pub(crate) fn manifest(gw: &TestGateway, name: &str, crate_name: &str, tools: &[&str], extra: &str) -> PathBuf {
    let component = Path::new(artifacts::ARTIFACT_DIR).join(format!("{}.wasm", crate_name.replace('-', "_")));
    let bytes = std::fs::read(&component).unwrap_or_else(|e| panic!("{}: {e}", component.display()));
    let digest = openport::hashing::sha256_hex(&bytes);
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        "name = {name:?}\nversion = \"1.0.0\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = {digest:?}\ntools = [{}]\n{extra}",
        component.display().to_string(),
        tools.join(", ")
    );
    let path = gw.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("manifest");
    path
}

fn add(gw: &TestGateway, path: &Path) -> crate::support::Reply {
    gw.admin_post(
        "/api/agent-admin/v1/plugins",
        Some(&gw.admin_token("operator")),
        &json!({"manifest": path}),
    )
}

/// An app holding the fixtures' scope.
fn hostile_app(gw: &TestGateway) -> String {
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&gw.admin_token("operator")),
        &json!({"scope": "workspace", "name": "hostile", "scopes": ["hostile.use", "ledger.read"]}),
    );
    created.data()["token"].as_str().expect("token").to_string()
}

#[test]
fn every_plugin_crate_is_built_and_every_hostile_fixture_has_a_test() {
    for name in artifacts::ALL {
        let wasm = Path::new(artifacts::ARTIFACT_DIR).join(format!("{}.wasm", name.replace('-', "_")));
        assert!(wasm.exists(), "{name} was not built");
    }
    let this = [include_str!("plugins.rs"), include_str!("cli.rs")].concat();
    for fixture in artifacts::ALL.iter().filter(|n| n.starts_with("test-")) {
        let used =
            this.contains(&format!("\"{fixture}\"")) || this.contains(&format!("{}.wasm", fixture.replace('-', "_")));
        assert!(used, "fixture `{fixture}` has no test");
    }
}

#[test]
fn an_infinite_loop_times_out_and_the_host_keeps_serving() {
    let gw = TestGateway::start();
    let path = manifest(
        &gw,
        "loop",
        "test-loop",
        &["hostile.loop"],
        "[limits]\ntimeout_ms = 1500\n",
    );
    add(&gw, &path).expect(200, "common.success");
    let token = hostile_app(&gw);
    std::thread::scope(|scope| {
        let looping = scope.spawn(|| gw.get("/api/agent/v1/hostile-loop", Some(&token)));
        // While it loops, reads of another plugin are answered promptly.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = std::time::Instant::now();
        for _ in 0..5 {
            gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
                .expect(200, "common.success");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        let reply = looping.join().expect("thread");
        reply.expect(504, "agent.plugin_timeout");
    });
}

#[test]
fn a_memory_bomb_huge_output_and_trap_fail_sanitized() {
    let gw = TestGateway::start();
    for (name, krate, tool, extra) in [
        ("memory", "test-memory", "hostile.memory", "[limits]\nmemory_mib = 16\n"),
        (
            "output",
            "test-output",
            "hostile.output",
            "[limits]\nmax_output_bytes = 65536\n",
        ),
        ("trap", "test-trap", "hostile.trap", ""),
    ] {
        let path = manifest(&gw, name, krate, &[tool], extra);
        add(&gw, &path).expect(200, "common.success");
    }
    let token = hostile_app(&gw);
    for route in [
        "hostile-memory",
        "hostile-output",
        "hostile-output?shape=repeated",
        "hostile-output?shape=broken",
        "hostile-trap",
    ] {
        let reply = gw.get(&format!("/api/agent/v1/{route}"), Some(&token));
        reply.expect(502, "agent.execution_failed");
        assert_eq!(reply.body["message"], "The tool failed");
        let text = reply.body.to_string();
        assert!(!text.contains("hunter2") && !text.contains("wasm"), "{text}");
        let event = &gw.audit_of(&reply)[0];
        assert_eq!(event.code, "agent.execution_failed", "{route}");
        assert!(
            !event.details.to_string().contains("hunter2"),
            "secret in the audit trail"
        );
    }
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
}

#[test]
fn a_plugin_that_understates_its_risk_is_raised_by_the_operator() {
    let gw = TestGateway::start();
    let path = manifest(
        &gw,
        "lying",
        "test-lying-risk",
        &["hostile.wipe"],
        "[risk]\n\"hostile.wipe\" = \"critical\"\n",
    );
    add(&gw, &path).expect(200, "common.success");
    let token = hostile_app(&gw);
    let manifest = gw.get("/api/agent/v1/manifest", Some(&token));
    let wipe = manifest.data()["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "hostile.wipe"))
        .cloned()
        .expect("listed");
    assert_eq!(
        (wipe["risk"].as_str(), wipe["requiresConfirmation"].as_bool()),
        (Some("critical"), Some(true))
    );
    assert_eq!(wipe["draftPolicy"], "always");
}

#[test]
fn refused_loads_name_the_reason_and_the_old_version_keeps_serving() {
    let gw = TestGateway::start();
    let good = manifest(&gw, "trap", "test-trap", &["hostile.trap"], "");
    add(&gw, &good).expect(200, "common.success");
    // A digest that does not match the component.
    let text = std::fs::read_to_string(&good).expect("read");
    let bad_digest = gw.dir.path().join("bad-digest.toml");
    let digest_line = text
        .lines()
        .find(|l| l.starts_with("sha256"))
        .expect("sha256 line")
        .to_string();
    std::fs::write(
        &bad_digest,
        text.replace(&digest_line, &format!("sha256 = \"{}\"", "0".repeat(64))),
    )
    .expect("write");
    let refused = add(&gw, &bad_digest);
    refused.expect(400, "common.validation");
    assert!(
        refused.body.to_string().contains("does not match"),
        "{:#}",
        refused.body
    );
    // A failing `describe` (the fixture fails it when configured to).
    let failing = manifest(
        &gw,
        "trap",
        "test-trap",
        &["hostile.trap"],
        "[grants.config]\nfail_describe = \"yes\"\n",
    );
    let refused = add(&gw, &failing);
    refused.expect(400, "common.validation");
    assert!(refused.body.to_string().contains("describe"), "{:#}", refused.body);
    // A tool another plugin already serves.
    let clash = manifest(
        &gw,
        "ledger-copy",
        "ledger",
        &[
            "ledger.list",
            "transaction.list",
            "transaction.create",
            "transaction.update",
            "transaction.delete",
            "transaction.hard_delete",
            "transactions.export_csv",
        ],
        "[grants]\nkv = true\n",
    );
    let refused = add(&gw, &clash);
    refused.expect(400, "common.validation");
    assert!(
        refused.body.to_string().contains("already served"),
        "{:#}",
        refused.body
    );
    // A component that is not a tool adapter (an empty component, in text form).
    let empty = gw.dir.path().join("empty.wat");
    std::fs::write(&empty, "(component)").expect("write");
    let digest = openport::hashing::sha256_hex(b"(component)");
    let not_adapter = gw.dir.path().join("not-adapter.toml");
    std::fs::write(&not_adapter, format!("name = \"empty\"\nversion = \"1\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = {digest:?}\ntools = []\n", empty.display().to_string())).expect("write");
    let refused = add(&gw, &not_adapter);
    refused.expect(400, "common.validation");
    assert!(
        refused
            .body
            .to_string()
            .contains("does not implement the manifest's world"),
        "{:#}",
        refused.body
    );

    // Through all of it the first version serves, and the ledger too.
    let token = hostile_app(&gw);
    gw.get("/api/agent/v1/hostile-trap", Some(&token))
        .expect(502, "agent.execution_failed");
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
    let actions: Vec<String> = gw
        .audit()
        .into_iter()
        .filter(|e| e.action.starts_with("plugin."))
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "plugin.refused").count(),
        4,
        "{actions:?}"
    );
}

/// Two loads of one plugin at once: the first is a load, the second a replacement, as if
/// they had come one after the other.
#[test]
fn two_loads_of_one_plugin_at_once_are_audited_as_a_load_and_a_replacement() {
    let gw = TestGateway::start();
    let trap = manifest(&gw, "trap", "test-trap", &["hostile.trap"], "");
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..2).map(|_| scope.spawn(|| add(&gw, &trap))).collect();
        for load in loads {
            load.join().expect("load").expect(200, "common.success");
        }
    });
    let mut actions: Vec<String> = gw
        .audit()
        .into_iter()
        .filter(|e| e.plugin.as_deref() == Some("trap"))
        .map(|e| e.action)
        .collect();
    actions.sort();
    assert_eq!(actions, ["plugin.load", "plugin.replace"]);
}

#[test]
fn a_plugin_is_replaced_and_removed_while_serving_and_remembered_across_restarts() {
    let gw = TestGateway::start();
    let token = hostile_app(&gw);
    let v1 = manifest(&gw, "trap", "test-trap", &["hostile.trap"], "");
    add(&gw, &v1).expect(200, "common.success");
    let v2 = gw.dir.path().join("trap-v2.toml");
    std::fs::write(
        &v2,
        std::fs::read_to_string(&v1)
            .expect("read")
            .replace("version = \"1.0.0\"", "version = \"2.0.0\""),
    )
    .expect("write");
    let replaced = add(&gw, &v2);
    replaced.expect(200, "common.success");
    assert_eq!(replaced.data()["plugin"]["version"], "2.0.0");
    let listed = gw.admin_get("/api/agent-admin/v1/plugins", Some(&gw.admin_token("auditor")));
    assert_eq!(
        listed.data()["items"].as_array().map(Vec::len),
        Some(5),
        "ledger, its witness, tickets, mcp-conformance and trap"
    );
    // Each plugin shows its world and every grant it holds.
    let items = listed.data()["items"].as_array().expect("items").clone();
    let worlds: std::collections::BTreeSet<&str> = items.iter().filter_map(|p| p["world"].as_str()).collect();
    assert_eq!(worlds, ["state-witness", "tool-adapter"].into_iter().collect());
    assert!(
        items
            .iter()
            .any(|p| p["grants"]["http"].as_array().is_some_and(|h| !h.is_empty())),
        "{items:#?}"
    );

    // The gateway remembers it: a second gateway on (a copy of) the data directory loads it.
    let copy = gw.copy_of_data_dir();
    let config = openport::Config::load(&copy.path().join("openport.toml")).expect("config");
    let clock: openport::clock::SharedClock = std::sync::Arc::new(openport::clock::SystemClock);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let again = runtime
        .block_on(openport::Gateway::start(config, clock))
        .expect("starts");
    assert!(
        again
            .catalog()
            .plugins()
            .any(|p| p.name() == "trap" && p.version() == "2.0.0")
    );
    drop(again);

    let op = gw.admin_token("operator");
    gw.admin_delete("/api/agent-admin/v1/plugins/trap", Some(&op))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/hostile-trap", Some(&token))
        .expect(404, "agent.not_found");
    gw.admin_delete("/api/agent-admin/v1/plugins/trap", Some(&op))
        .expect(404, "agent.not_found");
    let actions: Vec<String> = gw
        .audit()
        .into_iter()
        .filter(|e| e.action.starts_with("plugin."))
        .map(|e| e.action)
        .collect();
    assert!(
        actions.ends_with(&["plugin.load".into(), "plugin.replace".into(), "plugin.remove".into()])
            || actions.contains(&"plugin.remove".to_string()),
        "{actions:?}"
    );
}

#[test]
fn the_ticket_desk_adapter_reaches_its_app_over_granted_http() {
    let gw = TestGateway::start();
    let port = openport::demo::desk::start().expect("desk").port();
    let grants =
        format!("[grants]\nhttp = [\"127.0.0.1:{port}\"]\n[grants.config]\nbase_url = \"http://127.0.0.1:{port}\"\n");
    // The demo already serves a `tickets` plugin; this replaces it with one for this desk.
    let path = manifest(&gw, "tickets", "tickets", &["ticket.list", "ticket.create"], &grants);
    add(&gw, &path).expect(200, "common.success");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&gw.admin_token("operator")),
        &json!({"scope": "workspace", "name": "desk agent", "scopes": ["ticket.read", "ticket.write"]}),
    );
    let token = created.data()["token"].as_str().expect("token").to_string();
    let list = gw.get("/api/agent/v1/tickets", Some(&token));
    list.expect(200, "common.success");
    assert_eq!(list.data()["items"][0]["id"], "T-1");
    let draft = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "ticket.create", "payload": {"title": "Coffee machine", "priority": "urgent"}}),
    );
    draft.expect(200, "common.success");
    assert_eq!(draft.data()["draft"]["impact"]["open_tickets"], 1);
    assert_eq!(draft.data()["draft"]["impact"]["summary"], "Open 1 support ticket");

    // The same adapter granted another port cannot reach the desk.
    let wrong = manifest(
        &gw,
        "tickets",
        "tickets",
        &["ticket.list", "ticket.create"],
        &grants.replacen(&format!("127.0.0.1:{port}\"]"), "127.0.0.1:1\"]", 1),
    );
    add(&gw, &wrong).expect(200, "common.success");
    let refused = gw.get("/api/agent/v1/tickets", Some(&token));
    refused.expect(503, "agent.plugin_unavailable");
    assert!(
        gw.audit_of(&refused)[0].details["error"]
            .as_str()
            .is_some_and(|e| e.contains("not granted"))
    );
}

#[test]
fn a_request_to_an_ungranted_host_is_refused_before_connecting() {
    let gw = TestGateway::start();
    let path = manifest(&gw, "ssrf", "test-http-denied", &["hostile.ssrf"], "");
    add(&gw, &path).expect(200, "common.success");
    let token = hostile_app(&gw);
    let started = std::time::Instant::now();
    let reply = gw.get("/api/agent/v1/hostile-ssrf", Some(&token));
    reply.expect(503, "agent.plugin_unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "no connection was attempted"
    );
    assert!(
        !reply.body.to_string().contains("169.254"),
        "the agent learns nothing about the refusal"
    );
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
}

#[test]
fn the_template_plugin_loads_and_serves_as_the_authoring_guide_says() {
    let gw = TestGateway::start();
    let path = manifest(&gw, "template", "template", &["hello.greet"], "");
    add(&gw, &path).expect(200, "common.success");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&gw.admin_token("operator")),
        &json!({"scope": "workspace", "name": "greeter", "scopes": ["hello.read"]}),
    );
    let token = created.data()["token"].as_str().expect("token").to_string();
    let reply = gw.get("/api/agent/v1/hello?name=Ada", Some(&token));
    reply.expect(200, "common.success");
    assert_eq!(reply.data()["greeting"], "Hello, Ada!");
    assert_eq!(
        reply.data()["tenant"],
        "org_demo",
        "the tenant comes from the app, not the request"
    );
    gw.get("/api/agent/v1/hello", Some(&token))
        .expect(400, "common.validation");
}

#[test]
fn a_replacement_lets_calls_in_flight_finish_on_the_old_version() {
    let gw = TestGateway::start();
    let token = hostile_app(&gw);
    let v1 = manifest(
        &gw,
        "swap",
        "test-loop",
        &["hostile.loop"],
        "[limits]\ntimeout_ms = 1500\n",
    );
    add(&gw, &v1).expect(200, "common.success");
    std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| gw.get("/api/agent/v1/hostile-loop", Some(&token)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Version 2 of plugin `swap` serves a different tool.
        let v2 = manifest(&gw, "swap", "template", &["hello.greet"], "");
        add(&gw, &v2).expect(200, "common.success");
        // New calls see version 2 at once ...
        gw.get("/api/agent/v1/hostile-loop", Some(&token))
            .expect(404, "agent.not_found");
        // ... while the call already running finishes on version 1, at its own deadline.
        let reply = in_flight.join().expect("thread");
        reply.expect(504, "agent.plugin_timeout");
        assert_eq!(gw.audit_of(&reply)[0].tool.as_deref(), Some("hostile.loop"));
    });
}

#[test]
fn a_capability_the_manifest_does_not_grant_is_refused() {
    let gw = TestGateway::start();
    // The demo's ledger again, without its `kv` grant: it can no longer read its data.
    let tools = [
        "ledger.list",
        "transaction.list",
        "transaction.create",
        "transaction.update",
        "transaction.delete",
        "transaction.hard_delete",
        "transactions.export_csv",
    ];
    let path = manifest(&gw, "ledger", "ledger", &tools, "[grants]\nclock = true\n");
    add(&gw, &path).expect(200, "common.success");
    let reply = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
    reply.expect(503, "agent.plugin_unavailable");
    let event = &gw.audit_of(&reply)[0];
    assert!(
        event.details["error"]
            .as_str()
            .is_some_and(|e| e.contains("capability `kv` is not granted")),
        "{:?}",
        event.details
    );
}

#[test]
fn a_plugin_version_that_breaks_a_loaded_policy_is_refused_and_the_old_version_keeps_serving() {
    let gw = TestGateway::start();
    let v1 = manifest(&gw, "fixture", "test-trap", &["hostile.trap"], "");
    add(&gw, &v1).expect(200, "common.success");
    gw.reload_with_policy(
        "fixture.cedar",
        "@id(\"no-trap-proposals\")\nforbid (principal, action in OpenPort::Action::\"hostile.trap\", resource);\n",
    )
    .expect(200, "common.success");
    // The same plugin name, a version without the tool the policy names.
    let v2 = manifest(&gw, "fixture", "test-output", &["hostile.output"], "");
    let refused = add(&gw, &v2);
    refused.expect(400, "common.validation");
    let message = refused.body.to_string();
    assert!(
        message.contains("no-trap-proposals") && message.contains("hostile.trap"),
        "{message}"
    );
    let catalog = gw.server.gateway.catalog();
    assert!(catalog.tool("hostile.trap").is_some(), "the old version serves");
    assert!(catalog.tool("hostile.output").is_none());
    let refusal = gw
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.action == "plugin.refused")
        .expect("audited");
    assert_eq!(refusal.plugin.as_deref(), Some("fixture"));
}

/// Finding 5 of the security issue: plugin memory is bounded for the whole process. A
/// call that cannot get memory from the shared budget waits briefly, then is refused with
/// a stable code; the memory comes back and the next call is served.
#[test]
fn a_call_that_cannot_get_memory_from_the_shared_budget_is_refused_as_overloaded() {
    let gw = TestGateway::builder()
        .config("\n[plugin_runtime]\nmemory_budget_mib = 16\nwait_ms = 100\n")
        .start();
    // Its own limit (64 MiB) is above what the whole process may give plugins.
    let path = manifest(
        &gw,
        "memory",
        "test-memory",
        &["hostile.memory"],
        "[limits]\nmemory_mib = 64\n",
    );
    add(&gw, &path).expect(200, "common.success");
    let token = hostile_app(&gw);
    let refused = gw.get("/api/agent/v1/hostile-memory", Some(&token));
    refused.expect(503, "agent.overloaded");
    assert_eq!(refused.body["details"]["reason"], "plugin_memory");
    assert_eq!(refused.headers["retry-after"], "1");
    // Everything the hostile call held is back: another plugin's call is served.
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
    let metrics = gw.admin_text("/api/agent-admin/v1/metrics", &gw.admin_token("auditor"));
    assert!(
        metrics.contains("openport_plugin_budget_refusals_total{plugin=\"memory\",budget=\"memory\"} 1"),
        "{metrics}"
    );
    // Nothing of the refused call is still reserved: what is, is the served call's
    // instance, kept for that app's next call (a few pages, not the budget).
    let reserved: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("openport_plugin_memory_reserved_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the reserved-memory metric");
    assert!(reserved < 4 << 20, "{reserved} bytes still reserved");
}

/// Finding 5: each plugin has a cap on calls in flight; more queue up to the plugin's own
/// time budget, then are refused, while other plugins keep serving.
#[test]
fn a_plugin_past_its_concurrency_cap_queues_then_is_refused_and_others_keep_serving() {
    let gw = TestGateway::start();
    let path = manifest(
        &gw,
        "loop",
        "test-loop",
        &["hostile.loop"],
        "[limits]\ntimeout_ms = 1000\nconcurrency = 1\n",
    );
    add(&gw, &path).expect(200, "common.success");
    let token = hostile_app(&gw);
    std::thread::scope(|scope| {
        // One loops for its second, then keeps its slot another second (it misbehaved);
        // the others queue for up to a second and are refused.
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let (gw, token) = (&gw, &token);
                scope.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(150 * i));
                    gw.get("/api/agent/v1/hostile-loop", Some(token))
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(400));
        gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
            .expect(200, "common.success");
        let replies: Vec<_> = calls.into_iter().map(|c| c.join().expect("thread")).collect();
        replies[0].expect(504, "agent.plugin_timeout");
        for refused in &replies[1..] {
            refused.expect(503, "agent.overloaded");
            assert_eq!(refused.body["details"]["reason"], "plugin_concurrency");
        }
    });
}

/// Running it for real, item 3: the store keeps every version of a plugin, so a component
/// rebuilt in place on disk changes nothing after a restart, any kept version can be
/// rolled back to, a plugin can be uploaded from anywhere, and a remembered plugin that
/// does not load makes the gateway not ready.
#[test]
fn plugin_versions_are_kept_in_the_store_uploaded_and_rolled_back() {
    use base64::Engine as _;
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let token = hostile_app(&gw);
    // A copy of the component beside the manifest, so the test can "rebuild" it in place.
    let built = Path::new(artifacts::ARTIFACT_DIR).join("test_trap.wasm");
    let component = gw.dir.path().join("trap.wasm");
    std::fs::copy(&built, &component).expect("copy");
    let digest = openport::hashing::sha256_hex(&std::fs::read(&component).expect("read"));
    let text = |version: &str| {
        format!(
            "name = \"trap\"\nversion = \"{version}\"\nworld = \"tool-adapter\"\ncomponent = \"trap.wasm\"\nsha256 = \"{digest}\"\ntools = [\"hostile.trap\"]\n"
        )
    };
    let v1 = gw.dir.path().join("trap-v1.toml");
    std::fs::write(&v1, text("1.0.0")).expect("write");
    add(&gw, &v1).expect(200, "common.success");
    // Version 2 arrives as an upload: manifest text and component, no path on the host.
    let uploaded = gw.admin_post(
        "/api/agent-admin/v1/plugins",
        Some(&op),
        &json!({"upload": {
            "manifest": text("2.0.0"),
            "component": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&component).expect("read")),
        }}),
    );
    uploaded.expect(200, "common.success");
    assert_eq!(uploaded.data()["plugin"]["version"], "2.0.0");

    let versions = gw.admin_get("/api/agent-admin/v1/plugins/trap/versions", Some(&op));
    versions.expect(200, "common.success");
    let listed: Vec<(String, bool)> = versions.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| (v["version"].as_str().expect("version").to_string(), v["active"] == true))
        .collect();
    assert_eq!(listed, [("1.0.0".to_string(), false), ("2.0.0".to_string(), true)]);

    // Rebuilt in place: the file on disk is junk now; a restart loads the kept version.
    std::fs::write(&component, b"not a component").expect("overwrite");
    let copy = gw.copy_of_data_dir();
    let config = openport::Config::load(&copy.path().join("openport.toml")).expect("config");
    let clock: openport::clock::SharedClock = std::sync::Arc::new(openport::clock::SystemClock);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let again = runtime
        .block_on(openport::Gateway::start(config, clock.clone()))
        .expect("starts");
    assert!(
        again
            .catalog()
            .plugins()
            .any(|p| p.name() == "trap" && p.version() == "2.0.0")
    );
    assert!(again.unavailable_plugins().is_empty());
    drop(again);

    // Rollback: to the version before the active one, then to a named one.
    let rollback =
        |body: serde_json::Value| gw.admin_post("/api/agent-admin/v1/plugins/trap/rollback", Some(&op), &body);
    let back = rollback(json!({}));
    back.expect(200, "common.success");
    assert_eq!(back.data()["active"]["version"], "1.0.0");
    let listed = gw.admin_get("/api/agent-admin/v1/plugins", Some(&op));
    let trap = listed.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["name"] == "trap")
        .cloned()
        .expect("trap listed");
    assert_eq!(trap["version"], "1.0.0");
    rollback(json!({"to": "2.0.0"})).expect(200, "common.success");
    rollback(json!({"to": "9.9.9"})).expect(404, "agent.not_found");
    gw.get("/api/agent/v1/hostile-trap", Some(&token))
        .expect(502, "agent.execution_failed");
    let actions: Vec<String> = gw.audit().into_iter().map(|e| e.action).collect();
    assert_eq!(actions.iter().filter(|a| *a == "plugin.rollback").count(), 2);

    // A remembered plugin whose active version is gone from the store: not ready, and
    // `openport check` says which.
    let db = openport::store::connect(&gw.dir.path().join("openport.db")).expect("connect");
    db.execute_batch("PRAGMA foreign_keys = OFF; UPDATE plugins SET version_id = 'gone' WHERE name = 'trap';")
        .expect("break it");
    let copy = gw.copy_of_data_dir();
    let config = openport::Config::load(&copy.path().join("openport.toml")).expect("config");
    let again = runtime
        .block_on(openport::Gateway::start(config, clock))
        .expect("starts anyway");
    assert!(
        again.unavailable_plugins().contains_key("trap"),
        "{:?}",
        again.unavailable_plugins()
    );
    drop(again);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args(["check", "--config"])
        .arg(gw.dir.path().join("openport.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin `trap`"));
}

#[test]
fn a_reused_instance_serves_only_its_own_tenant_and_app_and_a_trap_starts_over() {
    let gw = TestGateway::start();
    let path = manifest(&gw, "hoard", "test-hoard", &["hostile.hoard", "hostile.hoard_high"], "");
    add(&gw, &path).expect(200, "common.success");
    // Four domains: two apps in each of two tenants.
    let apps: Vec<(String, String)> = [
        ("org_demo", "a"),
        ("org_demo", "b"),
        ("org_other", "c"),
        ("org_other", "d"),
    ]
    .into_iter()
    .map(|(org, name)| {
        let created = gw.admin_post(
            "/api/agent-admin/v1/apps",
            Some(&gw.admin_token("operator")),
            &json!({"scope": "workspace", "name": name, "org_id": org, "scopes": ["hostile.use"]}),
        );
        let token = created.data()["token"].as_str().expect("token").to_string();
        (name.to_string(), token)
    })
    .collect();
    let seen = |token: &str, route: &str, marker: &str| -> Vec<String> {
        let reply = gw.get(&format!("/api/agent/v1/{route}?marker={marker}"), Some(token));
        reply.expect(200, "common.success");
        reply.data()["seen"]
            .as_array()
            .expect("seen")
            .iter()
            .map(|p| p.as_str().expect("a payload").to_string())
            .collect()
    };

    // Under concurrent load, every payload an instance hands back is its own domain's.
    let reused = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for (name, token) in &apps {
            for worker in 0..3 {
                let (seen, reused) = (&seen, &reused);
                scope.spawn(move || {
                    for call in 0..25 {
                        let marker = format!("{name}-{worker}-{call}");
                        let payloads = seen(token, "hostile-hoard", &marker);
                        assert!(payloads.iter().any(|p| p.contains(&marker)), "{payloads:?}");
                        for payload in &payloads {
                            assert!(
                                payload.contains(&format!("\"{name}-")),
                                "app {name} was handed {payload}, another domain's"
                            );
                        }
                        if payloads.len() > 1 {
                            reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    });
    assert!(
        reused.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no instance was reused: the test would prove nothing"
    );

    // A high-risk tool always gets a fresh instance.
    let (_, token) = &apps[0];
    assert_eq!(seen(token, "hostile-hoard_high", "high-1").len(), 1);
    assert_eq!(seen(token, "hostile-hoard_high", "high-2").len(), 1);

    // After a trap, the next call starts from a fresh instance.
    let trapped = gw.get("/api/agent/v1/hostile-hoard?trap=true", Some(token));
    assert!(trapped.status >= 500, "{:#}", trapped.body);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after = seen(token, "hostile-hoard", "after-trap");
    assert!(
        after.iter().all(|p| !p.contains("\"trap\"")),
        "the trapped instance came back: {after:?}"
    );
}
