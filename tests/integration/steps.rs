//! The step order of SPEC section 4 holds on every route: a caller refused at scopes, at
//! the tenant boundary or by Cedar gets the same answer whatever preflight, draft or object
//! id it names (its own, another tenant's, or none that exists), and nothing is written
//! for it but its one audit event.

use serde_json::{Value, json};

use crate::support::{Reply, TestGateway};

/// A reply without what differs between any two requests (the request id).
fn answer(reply: &Reply) -> (u16, Value) {
    let mut body = reply.body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("request_id");
    }
    (reply.status, body)
}

fn create(ledger: &str) -> Value {
    json!({"ledgerId": ledger, "kind": "expense", "title": "steps", "amount_home": 5})
}

/// A live preflight of `token`'s app for `transaction.create` on `ledger`.
fn preflight(gw: &TestGateway, token: &str, ledger: &str) -> String {
    let reply = gw.post(
        "/api/agent/v1/preflight",
        Some(token),
        &json!({"action": "transaction.create", "payload": create(ledger)}),
    );
    reply.expect(200, "common.success");
    reply.data()["preflightId"].as_str().expect("preflightId").to_string()
}

fn draft_count(gw: &TestGateway) -> usize {
    let op = gw.admin_token("operator");
    let reply = gw.admin_get("/api/agent-admin/v1/drafts?limit=1000", Some(&op));
    reply.data()["items"].as_array().map_or(0, Vec::len)
}

/// Sends one request per id and asserts every answer is `status`/`code` and identical,
/// that each request has exactly one audit event with that code, and that no draft was
/// written.
fn refused_alike(gw: &TestGateway, ids: &[String], status: u16, code: &str, send: impl Fn(&str) -> Reply) {
    let drafts = draft_count(gw);
    let replies: Vec<Reply> = ids.iter().map(|id| send(id)).collect();
    for (id, reply) in ids.iter().zip(&replies) {
        reply.expect(status, code);
        assert_eq!(
            answer(reply),
            answer(&replies[0]),
            "the answer for `{id}` differs from the answer for `{}`",
            ids[0]
        );
        let events = gw.audit_of(reply);
        assert_eq!(events.len(), 1, "one audit event for `{id}`");
        assert_eq!(events[0].code, code);
    }
    assert_eq!(draft_count(gw), drafts, "a refused request wrote a draft");
}

#[test]
fn actions_refused_at_scopes_answer_alike_whatever_preflight_they_name() {
    let gw = TestGateway::start();
    let ids = [
        preflight(&gw, &gw.full(), "ledger_main"),
        preflight(&gw, &gw.token("Other Tenant"), "ledger_other"),
        "pf_does_not_exist".to_string(),
    ];
    let reporter = gw.token("Read-only Reporter");
    for with_payload in [true, false] {
        refused_alike(&gw, &ids, 403, "agent.scope_denied", |id| {
            let mut body = json!({"action": "transaction.create", "preflightId": id, "idempotencyKey": "steps-1"});
            if with_payload {
                body["payload"] = create("ledger_main");
            }
            gw.post("/api/agent/v1/actions", Some(&reporter), &body)
        });
    }
}

#[test]
fn actions_refused_by_cedar_answer_alike_whatever_preflight_they_name() {
    let gw = TestGateway::start();
    let ids = [
        preflight(&gw, &gw.full(), "ledger_main"),
        preflight(&gw, &gw.token("Other Tenant"), "ledger_other"),
        "pf_does_not_exist".to_string(),
    ];
    // The app may now touch `ledger_ops` only: Cedar's data policy refuses `ledger_main`.
    let op = gw.admin_token("operator");
    let path = format!("/api/agent-admin/v1/apps/{}/policy", gw.app_id("Demo Integration"));
    let body = json!({"data": {"allowed_ledger_ids": ["ledger_ops"]}}).to_string();
    gw.send_url(
        "PATCH",
        &format!("{}{path}", gw.admin),
        Some(&op),
        Some("application/json"),
        body.as_bytes(),
    )
    .expect(200, "common.success");
    refused_alike(&gw, &ids, 403, "agent.policy_denied", |id| {
        gw.post(
            "/api/agent/v1/actions",
            Some(&gw.full()),
            &json!({"action": "transaction.create", "payload": create("ledger_main"), "preflightId": id, "execute": true}),
        )
    });
}

#[test]
fn preflights_refused_at_scopes_answer_alike_whatever_object_they_name() {
    let gw = TestGateway::start();
    let ids = ["txn_1".to_string(), "txn_9".to_string(), "txn_nope".to_string()];
    let reporter = gw.token("Read-only Reporter");
    refused_alike(&gw, &ids, 403, "agent.scope_denied", |id| {
        gw.post(
            "/api/agent/v1/preflight",
            Some(&reporter),
            &json!({"action": "transaction.delete", "payload": {"transactionId": id}}),
        )
    });
}

#[test]
fn reads_refused_at_scopes_answer_alike_whatever_object_they_name() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "ledgers only", "scopes": ["ledger.read"]}),
    );
    let token = created.data()["token"].as_str().expect("token").to_string();
    let ids = [
        "ledger_main".to_string(),
        "ledger_other".to_string(),
        "ledger_nope".to_string(),
    ];
    refused_alike(&gw, &ids, 403, "agent.scope_denied", |id| {
        gw.get(&format!("/api/agent/v1/transactions?ledgerId={id}"), Some(&token))
    });
}

#[test]
fn another_apps_draft_answers_like_one_that_does_not_exist() {
    let gw = TestGateway::start();
    let mine = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": create("ledger_main")}),
    );
    mine.expect(200, "common.success");
    let theirs = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.token("Other Tenant")),
        &json!({"action": "transaction.create", "payload": create("ledger_other")}),
    );
    let ids = [
        mine.data()["draft"]["id"].as_str().expect("draft id").to_string(),
        theirs.data()["draft"]["id"].as_str().expect("draft id").to_string(),
        "drf_does_not_exist".to_string(),
    ];
    let reporter = gw.token("Read-only Reporter");
    refused_alike(&gw, &ids, 404, "agent.draft_not_found", |id| {
        gw.get(&format!("/api/agent/v1/drafts/{id}"), Some(&reporter))
    });
}
