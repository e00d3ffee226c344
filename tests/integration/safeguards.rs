//! High-risk safeguards under repetition and concurrency: idempotent executes, preflight
//! binding, and a State Witness that fails closed.

use serde_json::json;

use crate::support::{Reply, TestGateway};

fn transactions(gw: &TestGateway) -> u64 {
    gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()))
        .data()["total"]
        .as_u64()
        .expect("total")
}

fn open_writes_window(gw: &TestGateway) {
    gw.set_auto_execute(json!({"writes": {"enabled": true}}))
        .expect(200, "common.success");
}

#[test]
fn a_hundred_identical_executes_make_one_execution_and_ninety_nine_replays() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 1000\n")
        .start();
    open_writes_window(&gw);
    let body = json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "once", "amount_home": 9}, "execute": true, "idempotencyKey": "hundred"});
    let replies: Vec<Reply> = (0..100)
        .map(|_| gw.post("/api/agent/v1/actions", Some(&gw.full()), &body))
        .collect();
    replies[0].expect(200, "common.success");
    assert_eq!(replies[0].data()["status"], "executed");
    let execution = replies[0].data()["execution"]["id"]
        .as_str()
        .expect("execution")
        .to_string();
    for reply in &replies[1..] {
        reply.expect(200, "agent.idempotency_replay");
        assert_eq!(reply.data()["replayed"], true);
        assert_eq!(reply.data()["execution"]["id"], execution.as_str());
    }
    assert_eq!(transactions(&gw), 3, "one effect");
    let events = gw.audit();
    let drafts = events
        .iter()
        .filter(|e| e.action == "agent.action.auto_execute")
        .count();
    let replays = events.iter().filter(|e| e.code == "agent.idempotency_replay").count();
    let executions = events
        .iter()
        .filter(|e| e.action == "agent.action.execute" && e.status == "success")
        .count();
    assert_eq!((drafts, replays, executions), (1, 99, 1));
}

#[test]
fn two_hundred_concurrent_executes_have_exactly_one_effect() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 1000\n")
        .start();
    open_writes_window(&gw);
    let body = json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "storm", "amount_home": 9}, "execute": true, "idempotencyKey": "storm"});
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..25)
                        .map(|_| gw.post("/api/agent/v1/actions", Some(&gw.full()), &body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(replies.len(), 200);
    for r in &replies {
        assert!(
            matches!(
                r.code(),
                "common.success" | "agent.idempotency_replay" | "agent.idempotency_in_progress"
            ),
            "{:#}",
            r.body
        );
    }
    assert_eq!(transactions(&gw), 3, "exactly one effect");
}

#[test]
fn a_payload_swapped_after_preflight_never_executes() {
    let gw = TestGateway::start();
    gw.set_auto_execute(json!({"high_risk": {"enabled": true, "allowed_actions": ["transaction.delete"]}}))
        .expect(200, "common.success");
    let pre = gw.post(
        "/api/agent/v1/preflight",
        Some(&gw.full()),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_1"}}),
    );
    let id = pre.data()["preflightId"].as_str().expect("id").to_string();
    let swapped = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.delete", "preflightId": id, "payload": {"transactionId": "txn_2"}, "execute": true, "idempotencyKey": "swap", "justification": "x"}),
    );
    swapped.expect(400, "agent.preflight_mismatch");
    assert_eq!(transactions(&gw), 2, "nothing deleted");
}

#[test]
fn a_failing_witness_fails_closed() {
    let gw = TestGateway::start();
    // The ledger witness again, without its key-value grant: it cannot capture.
    let text = std::fs::read_to_string(gw.dir.path().join("plugins/ledger-witness.toml")).expect("manifest");
    let broken = gw.dir.path().join("plugins/ledger-witness-broken.toml");
    std::fs::write(&broken, text.replace("kv = true", "kv = false")).expect("write");
    gw.admin_post(
        "/api/agent-admin/v1/plugins",
        Some(&gw.admin_token("operator")),
        &json!({"manifest": broken}),
    )
    .expect(200, "common.success");
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}}),
    );
    reply.expect(503, "agent.witness_unavailable");
    assert!(gw.audit_of(&reply)[0].draft_id.is_none(), "no draft");
    assert_eq!(transactions(&gw), 2);
}

/// A preflight of `transaction.delete` for txn_2, and its id and impact hash.
fn preflight_delete(gw: &TestGateway) -> (String, String) {
    let pre = gw.post(
        "/api/agent/v1/preflight",
        Some(&gw.full()),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}}),
    );
    pre.expect(200, "common.success");
    let field = |name: &str| pre.data()[name].as_str().expect(name).to_string();
    (field("preflightId"), field("impactHash"))
}

fn step_up(gw: &TestGateway, preflight_id: &str, body: &serde_json::Value) -> Reply {
    gw.admin_post(
        &format!("/api/agent-admin/v1/preflights/{preflight_id}/step-up"),
        Some(&gw.admin_token("reviewer")),
        body,
    )
}

#[test]
fn high_risk_auto_execute_can_require_a_single_use_step_up_grant_bound_to_one_preflight() {
    let gw = TestGateway::start();
    gw.set_auto_execute(
        json!({"high_risk": {"enabled": true, "allowed_actions": ["transaction.delete"], "require_step_up": true}}),
    )
    .expect(200, "common.success");
    let (preflight, hash) = preflight_delete(&gw);
    let execute = |key: &str, token: Option<&str>, preflight: &str| {
        let mut body = json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}, "execute": true,
                              "idempotencyKey": key, "justification": "duplicate charge", "preflightHash": hash,
                              "preflightId": preflight});
        if let Some(token) = token {
            body["stepUpToken"] = json!(token);
        }
        gw.post("/api/agent/v1/actions", Some(&gw.full()), &body)
    };

    // Without a grant: refused outright, nothing drafted or executed.
    let refused = execute("k1", None, &preflight);
    refused.expect(403, "agent.step_up_required");
    assert_eq!(transactions(&gw), 2);

    // Only a reviewer issues grants; an operator or the agent cannot.
    gw.admin_post(
        &format!("/api/agent-admin/v1/preflights/{preflight}/step-up"),
        Some(&gw.admin_token("operator")),
        &json!({}),
    )
    .expect(403, "admin.forbidden");
    step_up(&gw, "pfl_unknown", &json!({})).expect(400, "agent.preflight_not_found");
    step_up(&gw, &preflight, &json!({"ttlSeconds": 0})).expect(400, "common.validation");
    let issued = step_up(
        &gw,
        &preflight,
        &json!({"ttlSeconds": 120, "note": "checked with finance"}),
    );
    issued.expect(200, "common.success");
    let token = issued.data()["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("stp_"));
    assert_eq!(issued.data()["stepUp"]["impactHash"], hash.as_str());

    // A grant for another preflight, or a made-up one, is invalid.
    let (other_preflight, _) = preflight_delete(&gw);
    execute("k2", Some(&token), &other_preflight).expect(403, "agent.step_up_invalid");
    execute("k3", Some("stp_madeup"), &preflight).expect(403, "agent.step_up_invalid");

    // The right grant executes once; it cannot be used again.
    let done = execute("k4", Some(&token), &preflight);
    done.expect(200, "common.success");
    assert_eq!(done.data()["status"], "executed", "{:#}", done.body);
    assert_eq!(transactions(&gw), 1);
    let store = &gw.server.gateway.store;
    let now = openport::clock::iso(time::OffsetDateTime::now_utc());
    let hash = openport::hashing::sha256_hex(token.as_bytes());
    let app = gw.app_id("Demo Integration");
    assert!(
        !store
            .preflights
            .use_step_up(&hash, &app, &preflight, &now)
            .expect("store"),
        "a grant is used once"
    );

    // The token never reaches the audit trail.
    let trail = serde_json::to_string(&gw.audit().iter().map(|e| &e.details).collect::<Vec<_>>()).expect("json");
    assert!(!trail.contains(&token), "step-up token in the audit trail");
}

#[test]
fn a_thousand_parallel_distinct_creates_store_a_thousand_records_each_with_its_own_data() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 100000\nconcurrency = 1000\n")
        .start();
    open_writes_window(&gw);
    let (threads, each) = (16, 63);
    let acknowledged: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let gw = &gw;
                scope.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let title = format!("parallel-{thread}-{i}");
                            let reply = gw.post(
                                "/api/agent/v1/actions",
                                Some(&gw.full()),
                                &json!({"action": "transaction.create", "execute": true, "idempotencyKey": title,
                                        "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": title, "amount_home": 1}}),
                            );
                            reply.expect(200, "common.success");
                            assert_eq!(reply.data()["status"], "executed", "{:#}", reply.body);
                            let id = reply.data()["execution"]["result"]["transaction"]["id"]
                                .as_str()
                                .expect("the created id")
                                .to_string();
                            (title, id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(acknowledged.len(), threads * each);
    let mut stored = std::collections::HashMap::new();
    for page in 1.. {
        let read = || {
            gw.get(
                &format!("/api/agent/v1/transactions?ledgerId=ledger_main&page={page}&pageSize=200"),
                Some(&gw.full()),
            )
        };
        // The demo list reads every record for each page: right after a thousand writes
        // (each forgets its cached key) a debug build's first read of them can pass the
        // plugin's 2 s deadline. The timeout is retryable, and the reads it did warm the
        // cache, so the client's retry answers; what the test checks is what is stored.
        let mut reply = read();
        for _ in 0..3 {
            if reply.code() != "agent.plugin_timeout" {
                break;
            }
            reply = read();
        }
        reply.expect(200, "common.success");
        for t in reply.data()["items"].as_array().expect("items") {
            let (id, title) = (t["id"].as_str().expect("id"), t["title"].as_str().unwrap_or(""));
            assert!(
                stored.insert(id.to_string(), title.to_string()).is_none(),
                "`{id}` listed twice"
            );
        }
        if reply.data()["hasMore"] != true {
            break;
        }
    }
    for (title, id) in &acknowledged {
        assert_eq!(
            stored.get(id),
            Some(title),
            "acknowledged `{id}` does not hold its own draft's data"
        );
    }
    assert_eq!(stored.len(), threads * each + 2, "the seeded two and every create");
}
