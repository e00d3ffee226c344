use serde_json::json;

use crate::support::TestGateway;

#[test]
fn a_used_up_quota_is_quota_exceeded_until_its_window_ends() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 100\nquota = { requests = 2, window_seconds = 86400 }\n")
        .start();
    let token = gw.full();
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(200, "common.success");
    let refused = gw.get("/api/agent/v1/ledgers", Some(&token));
    refused.expect(429, "agent.quota_exceeded");
    let retry: u64 = refused.headers["retry-after"].parse().expect("whole seconds");
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(refused.body["details"]["limit"], "quota");
    // The quota is per app: another app is still admitted.
    gw.get("/api/agent/v1/ledgers", Some(&gw.token("Read-only Reporter")))
        .expect(200, "common.success");
}

#[test]
fn per_tool_limits_leave_other_tools_usable() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 100\nper_tool = { requests = 1, window_seconds = 60 }\n")
        .start();
    let token = gw.full();
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(200, "common.success");
    let refused = gw.get("/api/agent/v1/ledgers", Some(&token));
    refused.expect(429, "agent.rate_limited");
    assert_eq!(refused.body["details"]["limit"], "per-tool");
    assert!(refused.headers["ratelimit-policy"].starts_with("\"per-tool\";q=1;w=60"));
    gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&token))
        .expect(200, "common.success");
}

#[test]
fn a_reload_changes_the_limits_without_a_restart_and_a_bad_file_changes_nothing() {
    let gw = TestGateway::start();
    let token = gw.full();
    let op = gw.admin_token("operator");
    let manifest = gw.get("/api/agent/v1/manifest", Some(&token));
    assert_eq!(manifest.data()["tools"][0]["rateLimitHints"]["requests"], 240);

    let path = gw.dir.path().join("openport.toml");
    let original = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{original}\n[admission.default]\nrequests = 1\n")).expect("write");
    let reload = gw.admin_post("/api/agent-admin/v1/policies/reload", Some(&op), &json!({}));
    reload.expect(200, "common.success");
    gw.get("/api/agent/v1/manifest", Some(&token))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/manifest", Some(&token))
        .expect(429, "agent.rate_limited");

    std::fs::write(&path, format!("{original}\n[admission.default]\nrequests = 0\n")).expect("write");
    let refused = gw.admin_post("/api/agent-admin/v1/policies/reload", Some(&op), &json!({}));
    refused.expect(400, "common.validation");
    assert!(
        refused.body["details"]["issues"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("admission.default.requests")),
        "{:#}",
        refused.body
    );
    let events: Vec<_> = gw
        .audit()
        .into_iter()
        .filter(|e| e.action == "gateway.reload" && e.performed_by_user_id.as_deref() == Some("demo-operator"))
        .collect();
    assert_eq!(
        events.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ["success", "failed"]
    );
}

#[test]
fn metrics_count_requests_stages_and_refusals() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 2\n")
        .start();
    let token = gw.full();
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", Some(&token))
        .expect(429, "agent.rate_limited");
    let auditor = gw.admin_token("auditor");
    let text = gw.admin_text("/api/agent-admin/v1/metrics", &auditor);
    for needle in [
        "openport_requests_total{plane=\"agent\",tool=\"ledger.list\",code=\"common.success\"} 2",
        "openport_admission_refusals_total{limit=\"per-key\"} 1",
        "openport_stage_seconds_count{stage=\"cedar\"} 4",
        "openport_stage_seconds_count{stage=\"audit\"} 3",
        "openport_plugin_seconds_count{plugin=\"ledger\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[test]
fn a_per_app_limit_spans_all_of_the_apps_keys() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 100\nper_app = { requests = 2, window_seconds = 60 }\n")
        .start();
    let store = &gw.server.gateway.store;
    let now = gw.server.gateway.now_iso();
    let app = gw.app_id("Demo Integration");
    let (_, second) =
        openport::apps::create_key(store, &app, openport::apps::NewKey::default(), "test", &now).expect("key");
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", Some(&second))
        .expect(200, "common.success");
    let refused = gw.get("/api/agent/v1/ledgers", Some(&second));
    refused.expect(429, "agent.rate_limited");
    assert_eq!(refused.body["details"]["limit"], "per-app");
}
