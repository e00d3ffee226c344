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

#[test]
fn the_chain_verifies_and_an_edit_is_found() {
    let gw = TestGateway::start();
    for _ in 0..5 {
        gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
            .expect(200, "common.success");
    }
    let auditor = gw.admin_token("auditor");
    let verify = gw.admin_post("/api/agent-admin/v1/audit/verify", Some(&auditor), &json!({}));
    verify.expect(200, "common.success");
    assert_eq!(verify.data()["intact"], true);
    assert!(verify.data()["events"].as_u64().is_some_and(|n| n >= 5));

    let conn = rusqlite_connection(&gw);
    conn.execute(
        r#"UPDATE audit_events SET details = '{"tampered":true}' WHERE seq = 3"#,
        [],
    )
    .expect("tamper");
    let verify = gw.admin_post("/api/agent-admin/v1/audit/verify", Some(&auditor), &json!({}));
    assert_eq!(verify.data()["intact"], false);
    assert_eq!(verify.data()["first_broken"]["reason"], "edited");
    assert_eq!(verify.data()["first_broken"]["seq"], 3);
}

fn rusqlite_connection(gw: &TestGateway) -> openport::store::Connection {
    openport::store::connect(gw.server.gateway.store.path()).expect("connect")
}
