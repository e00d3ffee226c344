use serde_json::json;

use crate::support::TestGateway;

#[test]
fn every_request_gets_exactly_one_terminal_event() {
    let gw = TestGateway::start();
    let token = gw.full();
    let url = format!("{}/api/agent/v1/actions", gw.agent);
    let replies = vec![
        gw.get("/api/agent/v1/manifest", Some(&token)),
        gw.get("/api/agent/v1/manifest", None),
        gw.get("/api/agent/v1/ledgers", Some(&token)),
        gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&token)),
        gw.get("/api/agent/v1/transactions?ledgerId=nope", Some(&token)),
        gw.get("/api/agent/v1/unknown", Some(&token)),
        gw.send_url("POST", &url, Some(&token), Some("application/json"), b"{oops"),
        gw.post("/api/agent/v1/actions", Some(&token), &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "income", "title": "t", "amount_home": 5}})),
        gw.post("/api/agent/v1/actions", Some(&gw.token("Read-only Reporter")), &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_1"}})),
        gw.admin_get("/api/agent-admin/v1/audit", None),
    ];
    let events = gw.audit();
    for reply in &replies {
        let id = reply.request_id();
        let mine: Vec<_> = events
            .iter()
            .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "request {id} ({}) has {} events",
            reply.code(),
            mine.len()
        );
        assert_eq!(mine[0].code, reply.code());
    }
    let read = gw.audit_of(&replies[3]);
    assert_eq!(read[0].action, "agent.transaction.list");
    assert_eq!(read[0].tool.as_deref(), Some("transaction.list"));
    assert_eq!(read[0].plugin.as_deref(), Some("ledger"));
    assert_eq!(read[0].plugin_digest.as_deref().map(str::len), Some(64));
    assert!(
        read[0].details["payload_sha256"].is_string(),
        "payload stored as a hash"
    );
    assert!(
        !read[0].details.to_string().contains("ledger_main"),
        "payload not stored in clear"
    );
    let draft = gw.audit_of(&replies[7]);
    assert_eq!(
        (draft[0].action.as_str(), draft[0].draft_id.is_some()),
        ("agent.action.draft.created", true)
    );
}

/// A gateway with a few events, and an auditor's verify call.
fn verified(gw: &TestGateway) -> serde_json::Value {
    let verify = gw.admin_post(
        "/api/agent-admin/v1/audit/verify",
        Some(&gw.admin_token("auditor")),
        &json!({}),
    );
    verify.expect(200, "common.success");
    verify.data().clone()
}

fn with_events(n: usize) -> TestGateway {
    let gw = TestGateway::start();
    for _ in 0..n {
        gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
            .expect(200, "common.success");
    }
    // Every event in the table (a read indexes the audit journal first), so the tests'
    // edits to the table meet the rows they name.
    assert!(gw.audit().len() >= n);
    gw
}

#[test]
fn the_chain_verifies_and_an_edited_row_is_found() {
    let gw = with_events(5);
    let report = verified(&gw);
    assert_eq!(report["intact"], true);
    assert!(report["events"].as_u64().is_some_and(|n| n >= 5));

    let conn = connection(&gw);
    conn.execute(
        r#"UPDATE audit_events SET details = '{"tampered":true}' WHERE seq = 3"#,
        [],
    )
    .expect("tamper");
    let report = verified(&gw);
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_broken"]["reason"], "edited");
    assert_eq!(report["first_broken"]["seq"], 3);
}

#[test]
fn a_deleted_row_is_found() {
    let gw = with_events(5);
    connection(&gw)
        .execute("DELETE FROM audit_events WHERE seq = 3", [])
        .expect("delete");
    let report = verified(&gw);
    assert_eq!(
        (report["intact"].as_bool(), report["first_broken"]["reason"].as_str()),
        (Some(false), Some("unlinked"))
    );
    assert_eq!(report["first_broken"]["seq"], 4);
}

#[test]
fn reordered_rows_are_found() {
    let gw = with_events(5);
    let conn = connection(&gw);
    // Swap the sequence numbers of events 3 and 4.
    conn.execute_batch(
        "UPDATE audit_events SET seq = -3 WHERE seq = 3;
         UPDATE audit_events SET seq = 3 WHERE seq = 4;
         UPDATE audit_events SET seq = 4 WHERE seq = -3;",
    )
    .expect("reorder");
    let report = verified(&gw);
    assert_eq!(
        (report["intact"].as_bool(), report["first_broken"]["reason"].as_str()),
        (Some(false), Some("unlinked"))
    );
    assert_eq!(report["first_broken"]["seq"], 3);
}

#[test]
fn only_an_auditor_prunes_only_old_events_and_the_signed_chain_still_verifies() {
    let clock = std::sync::Arc::new(openport::clock::ManualClock::new(time::OffsetDateTime::now_utc()));
    let gw = TestGateway::builder().clock(clock.clone()).start();
    for _ in 0..4 {
        gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
            .expect(200, "common.success");
    }
    let old = gw.audit().len();
    // Forty days on, the first events are past the 30-day minimum retention.
    clock.advance_ms(40 * 24 * 3600 * 1000);
    let now = gw.server.gateway.now_iso();
    let days_ago = |days: i64| openport::clock::iso(gw.server.gateway.clock.now() - time::Duration::days(days));
    let prune = |role: &str, before: &str| {
        gw.admin_post(
            "/api/agent-admin/v1/audit/prune",
            Some(&gw.admin_token(role)),
            &json!({"before": before}),
        )
    };
    prune("operator", &days_ago(35)).expect(403, "admin.forbidden");
    prune("auditor", "2999-01-01T00:00:00Z").expect(400, "common.validation");
    prune("auditor", &now).expect(400, "common.validation");
    let inside = prune("auditor", &days_ago(29));
    inside.expect(400, "common.validation");
    assert!(
        inside.body["details"]["issues"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("30 days")),
        "{:#}",
        inside.body
    );
    assert_eq!(
        gw.audit().len(),
        old + 4,
        "refused prunes removed nothing (and were audited)"
    );

    let done = prune("auditor", &days_ago(35));
    done.expect(200, "common.success");
    assert_eq!(done.data()["removed"].as_u64(), Some(old as u64));
    let events = gw.audit();
    let cut = events
        .iter()
        .find(|e| e.action == "audit.retention.checkpoint")
        .expect("the retention checkpoint event");
    let upto = cut.details["upto_seq"].as_i64().expect("upto_seq");
    assert!(
        events.iter().all(|e| e.seq > upto) && cut.seq > upto,
        "positions go on after the cut, never from 1 again"
    );
    let report = verified(&gw);
    assert_eq!(report["intact"], true, "{report}");
    assert!(
        report["checkpoints"].as_u64() > Some(0),
        "signed checkpoints checked: {report}"
    );

    // Cutting more rows without a checkpoint event is caught.
    connection(&gw)
        .execute(
            "DELETE FROM audit_events WHERE action = 'audit.retention.checkpoint'",
            [],
        )
        .expect("delete");
    let report = verified(&gw);
    assert_eq!(report["intact"], false, "{report}");
}

#[test]
fn redacted_capture_keeps_the_payload_without_its_sensitive_fields() {
    let gw = TestGateway::builder().audit_config("capture = \"redacted\"").start();
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "Secret dinner", "amount_home": 3}}),
    );
    reply.expect(200, "common.success");
    let event = &gw.audit_of(&reply)[0];
    assert_eq!(event.details["payload"]["ledgerId"], "ledger_main");
    assert_eq!(event.details["payload"]["title"], "[redacted]");
    assert!(!event.details.to_string().contains("Secret dinner"));
}

/// Every request is accounted for exactly once: by its own terminal event, or (a refusal
/// before authentication beyond 20 a second from one address) in a summary's count.
#[test]
fn concurrent_load_leaves_exactly_one_terminal_event_per_request() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 150\n")
        .start();
    let tokens = [gw.full(), gw.token("Read-only Reporter"), "op_invalid".to_string()];
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..6 {
            let (gw, tokens, ids) = (&gw, &tokens, &ids);
            scope.spawn(move || {
                for i in 0..50 {
                    let token = &tokens[(worker + i) % tokens.len()];
                    let reply = match i % 3 {
                        0 => gw.get("/api/agent/v1/ledgers", Some(token)),
                        1 => gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(token)),
                        _ => gw.post(
                            "/api/agent/v1/actions",
                            Some(token),
                            &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_1"}}),
                        ),
                    };
                    ids.lock()
                        .expect("lock")
                        .push((reply.request_id(), reply.code().to_string()));
                }
            });
        }
    });
    let sent = ids.into_inner().expect("ids");
    assert_eq!(sent.len(), 300);
    let events = gw.audit();
    let mut counts = std::collections::HashMap::new();
    for e in &events {
        if let Some(id) = &e.request_id {
            *counts.entry(id.clone()).or_insert(0) += 1;
        }
    }
    // Summaries of the last second are written within a second.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let events = gw.audit();
    let summarized: u64 = events
        .iter()
        .filter(|e| e.action == "agent.refusals.coalesced")
        .map(|e| {
            assert_eq!(
                e.code, "agent.token_invalid",
                "only the bad token's refusals are coalesced"
            );
            e.details["count"].as_u64().expect("count")
        })
        .sum();
    let mut unaccounted = 0;
    for (id, code) in &sent {
        match counts.get(id) {
            Some(n) => assert_eq!(*n, 1, "request {id}"),
            None => {
                assert_eq!(code, "agent.token_invalid", "request {id} has no event");
                unaccounted += 1;
            }
        }
    }
    assert_eq!(
        unaccounted, summarized,
        "the summaries count exactly the requests without an event"
    );
    assert_eq!(verified(&gw)["intact"], true);
}

fn connection(gw: &TestGateway) -> openport::store::Connection {
    openport::store::connect(gw.server.gateway.store.path().expect("a SQLite store")).expect("connect")
}

#[test]
fn a_store_failure_is_a_500_without_internals_and_is_audited_with_them() {
    let gw = TestGateway::start();
    // Break the drafts table behind the gateway's back, as a failing disk would.
    let conn = rusqlite::Connection::open(gw.dir.path().join("openport.db")).expect("open");
    conn.execute_batch("ALTER TABLE drafts RENAME TO drafts_elsewhere")
        .expect("rename");
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "x", "amount_home": 1}}),
    );
    reply.expect(500, "common.internal_error");
    assert!(
        !reply.body.to_string().contains("drafts"),
        "no internals: {}",
        reply.body
    );
    let events = gw.audit_of(&reply);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].code, "common.internal_error");
    assert!(
        events[0].details["error"]
            .as_str()
            .is_some_and(|e| e.contains("drafts")),
        "the detail is in the audit event for the operator: {}",
        events[0].details
    );
}
