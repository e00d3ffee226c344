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

/// Finding 4 of the security issue: an unauthenticated flood is refused per address
/// before authentication, and beyond 20 refusals a second per address and code its audit
/// events are summaries whose counts still add up to every request refused.
#[test]
fn an_unauthenticated_flood_is_limited_per_address_and_coalesced_in_the_trail() {
    let gw = TestGateway::start();
    let first_seq = gw.audit().last().map_or(0, |e| e.seq);
    let long_agent = "x".repeat(2_000);
    let flood = 600;
    let replies: Vec<(u16, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let (gw, long_agent) = (&gw, &long_agent);
                scope.spawn(move || {
                    (0..flood / 6)
                        .map(|i| {
                            let path = format!("/api/agent/v1/no-such-{w}-{i}");
                            let reply = gw.send_with("GET", &path, &[("User-Agent", long_agent)], b"");
                            (reply.status, reply.code().to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    // Unknown routes are refused before authentication (401 without a token, or 404).
    let refused_unauthenticated = replies.iter().filter(|(s, _)| *s == 401 || *s == 404).count();
    let limited = replies
        .iter()
        .filter(|(s, c)| *s == 429 && c == "agent.rate_limited")
        .count();
    assert_eq!(refused_unauthenticated + limited, flood, "{replies:?}");
    assert!(
        (200..flood).contains(&refused_unauthenticated),
        "the address's budget (200, refilling at 20/s) was spent, then refused: {refused_unauthenticated} refused, {limited} limited"
    );
    // Well-behaved clients at the same address are untouched: the budget counts refusals only.
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");

    // Summaries are written once a second.
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    let events: Vec<_> = gw.audit().into_iter().filter(|e| e.seq > first_seq).collect();
    let count_of = |code: &str| -> (usize, u64) {
        let full = events
            .iter()
            .filter(|e| e.code == code && e.action != "agent.refusals.coalesced")
            .count();
        let summarized = events
            .iter()
            .filter(|e| e.code == code && e.action == "agent.refusals.coalesced")
            .map(|e| e.details["count"].as_u64().expect("a count"))
            .sum();
        (full, summarized)
    };
    let mut answered: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (_, code) in &replies {
        *answered.entry(code.as_str()).or_default() += 1;
    }
    let mut summarized_any = false;
    for (code, count) in &answered {
        let (full, summarized) = count_of(code);
        assert_eq!(full as u64 + summarized, *count, "the {code} refusals add up");
        summarized_any |= summarized > 0;
    }
    assert!(
        summarized_any && count_of("agent.rate_limited").1 > 0,
        "the flood was coalesced"
    );
    assert!(
        events.len() < 200,
        "a 600-request flood left {} events, want far fewer",
        events.len()
    );
    let summary = events
        .iter()
        .find(|e| e.action == "agent.refusals.coalesced")
        .expect("a summary");
    assert_eq!(summary.ip.as_deref(), Some("127.0.0.1"));
    for field in ["firstRequestId", "lastRequestId", "firstAt", "lastAt"] {
        assert!(summary.details[field].is_string(), "{field} in {}", summary.details);
    }
    let full = events
        .iter()
        .find(|e| e.code == "agent.rate_limited" && e.action != "agent.refusals.coalesced")
        .expect("a full event");
    assert_eq!(
        full.user_agent.as_deref().map(str::len),
        Some(256),
        "long fields are truncated"
    );
}

/// Finding 4: near the data directory's disk budget, agent requests are refused with 503
/// (never answered without their audit event), while the admin plane keeps serving and
/// says why.
#[test]
fn near_the_disk_budget_agent_requests_are_refused_and_the_admin_plane_says_why() {
    // The demo's data directory (store, compiled plugin cache) holds more than 1 MiB.
    let gw = TestGateway::builder().store_config("disk_budget_mib = 1").start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let reply = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
        if reply.status == 503 || std::time::Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    refused.expect(503, "agent.overloaded");
    assert_eq!(refused.body["details"]["reason"], "disk_budget");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(gw.audit_of(&refused).len(), 1, "the refusal is audited");
    let metrics = gw.admin_text("/api/agent-admin/v1/metrics", &gw.admin_token("auditor"));
    assert!(metrics.contains("openport_disk_budget_exceeded 1"), "{metrics}");
    assert!(metrics.contains("openport_data_dir_bytes "), "{metrics}");
}
