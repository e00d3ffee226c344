//! Human review: approval executes a draft exactly once; every other transition is refused
//! with a stable code; the State Witness is re-checked before any effect.

use serde_json::json;

use crate::support::{Reply, TestGateway};

fn propose(gw: &TestGateway, action: &str, payload: serde_json::Value) -> String {
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": action, "payload": payload}),
    );
    reply.expect(200, "common.success");
    reply.data()["draft"]["id"].as_str().expect("draft id").to_string()
}

fn create_draft(gw: &TestGateway) -> String {
    propose(
        gw,
        "transaction.create",
        json!({"ledgerId": "ledger_main", "kind": "expense", "title": "Team lunch", "amount_home": 42}),
    )
}

fn review(gw: &TestGateway, id: &str, verb: &str, body: serde_json::Value) -> Reply {
    gw.admin_post(
        &format!("/api/agent-admin/v1/drafts/{id}/{verb}"),
        Some(&gw.admin_token("reviewer")),
        &body,
    )
}

fn transactions(gw: &TestGateway) -> u64 {
    gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()))
        .data()["total"]
        .as_u64()
        .expect("total")
}

#[test]
fn approval_executes_the_draft_once() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    let listed = gw.admin_get(
        "/api/agent-admin/v1/drafts?status=draft",
        Some(&gw.admin_token("reviewer")),
    );
    assert!(
        listed.data()["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|d| d["id"] == id.as_str())
    );
    let approved = review(&gw, &id, "approve", json!({"note": "fine"}));
    approved.expect(200, "common.success");
    assert_eq!(approved.data()["draftStatus"], "confirmed");
    assert_eq!(approved.data()["execution"]["status"], "success");
    assert_eq!(
        approved.data()["execution"]["result"]["transaction"]["title"],
        "Team lunch"
    );
    assert_eq!(transactions(&gw), 3);

    let read = gw.get(&format!("/api/agent/v1/drafts/{id}"), Some(&gw.full()));
    assert_eq!(read.data()["draft"]["status"], "confirmed");
    assert_eq!(read.data()["execution"]["status"], "success");

    review(&gw, &id, "approve", json!({})).expect(400, "agent.draft_already_final");
    review(&gw, &id, "reject", json!({})).expect(400, "agent.draft_already_final");
    assert_eq!(transactions(&gw), 3, "nothing ran twice");
    let actions: Vec<String> = gw
        .audit()
        .into_iter()
        .filter(|e| e.draft_id.as_deref() == Some(id.as_str()))
        .map(|e| e.action)
        .collect();
    for expected in [
        "agent.action.draft.created",
        "agent.draft.approve",
        "agent.action.execute",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[test]
fn a_rejected_draft_never_executes() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    let rejected = review(&gw, &id, "reject", json!({"note": "no"}));
    rejected.expect(200, "common.success");
    assert_eq!(rejected.data()["draft"]["status"], "canceled");
    review(&gw, &id, "approve", json!({})).expect(400, "agent.draft_already_final");
    assert_eq!(transactions(&gw), 2);
}

#[test]
fn racing_approvals_execute_once() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| review(&gw, &id, "approve", json!({}))))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let won = replies.iter().filter(|r| r.status == 200).count();
    let lost = replies
        .iter()
        .filter(|r| r.code() == "agent.draft_already_final")
        .count();
    assert_eq!((won, lost), (1, 7));
    assert_eq!(transactions(&gw), 3);
}

#[test]
fn a_changed_transaction_makes_an_approved_delete_stale_and_untouched() {
    let gw = TestGateway::start();
    let delete = propose(&gw, "transaction.delete", json!({"transactionId": "txn_2"}));
    // Another reviewed write changes txn_2 after the delete draft captured its witness.
    let update = propose(
        &gw,
        "transaction.update",
        json!({"transactionId": "txn_2", "title": "Software (renewed)"}),
    );
    review(&gw, &update, "approve", json!({})).expect(200, "common.success");
    let refused = review(&gw, &delete, "approve", json!({}));
    refused.expect(409, "agent.precondition_failed");
    assert_eq!(refused.body["details"]["reason"], "state_witness_mismatch");
    let read = gw.get(&format!("/api/agent/v1/drafts/{delete}"), Some(&gw.full()));
    assert_eq!(read.data()["draft"]["status"], "stale");
    assert_eq!(read.data()["execution"], serde_json::Value::Null, "nothing executed");
    assert_eq!(transactions(&gw), 2, "txn_2 is still there");
    review(&gw, &delete, "approve", json!({})).expect(400, "agent.draft_already_final");
    assert!(
        gw.audit()
            .iter()
            .any(|e| e.action == "agent.draft.stale" && e.status == "denied")
    );
}

#[test]
fn the_reviewed_impact_hash_must_match_and_expired_drafts_never_execute() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    review(&gw, &id, "approve", json!({"impactHash": "0".repeat(64)})).expect(400, "agent.preflight_mismatch");
    let conn = openport::store::connect(gw.server.gateway.store.path().expect("a SQLite store")).expect("conn");
    conn.execute(
        "UPDATE drafts SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?1",
        [&id],
    )
    .expect("expire");
    review(&gw, &id, "approve", json!({})).expect(410, "agent.draft_expired");
    let read = gw.get(&format!("/api/agent/v1/drafts/{id}"), Some(&gw.full()));
    assert_eq!(read.data()["draft"]["status"], "expired");
    assert_eq!(transactions(&gw), 2);
}

#[test]
fn a_reviewer_of_one_tenant_cannot_see_or_act_on_anothers_drafts() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    let store = &gw.server.gateway.store;
    let other = openport::apps::create_admin_token(
        store,
        "other-reviewer",
        openport::auth::Role::Reviewer,
        Some("org_other"),
        &gw.server.gateway.now_iso(),
    )
    .expect("token");
    gw.admin_get(&format!("/api/agent-admin/v1/drafts/{id}"), Some(&other))
        .expect(404, "agent.draft_not_found");
    gw.admin_post(
        &format!("/api/agent-admin/v1/drafts/{id}/approve"),
        Some(&other),
        &json!({}),
    )
    .expect(404, "agent.draft_not_found");
    let listed = gw.admin_get("/api/agent-admin/v1/drafts", Some(&other));
    assert_eq!(listed.data()["items"].as_array().map(Vec::len), Some(0));
    // Only reviewers approve.
    gw.admin_post(
        &format!("/api/agent-admin/v1/drafts/{id}/approve"),
        Some(&gw.admin_token("operator")),
        &json!({}),
    )
    .expect(403, "admin.forbidden");
    assert_eq!(transactions(&gw), 2);
}

#[test]
fn an_idempotency_key_returns_the_same_draft_replays_its_execution_and_refuses_another_request() {
    let gw = TestGateway::start();
    let token = gw.full();
    let body = json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "idem", "amount_home": 1}, "idempotencyKey": "k-1"});
    let first = gw.post("/api/agent/v1/actions", Some(&token), &body);
    first.expect(200, "common.success");
    let id = first.data()["draft"]["id"].as_str().expect("id").to_string();
    // The header is an alias of the body field.
    let url = format!("{}/api/agent/v1/actions", gw.agent);
    let mut via_header = body.clone();
    via_header.as_object_mut().expect("object").remove("idempotencyKey");
    let again = {
        let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = client
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", "k-1")
            .header("Content-Type", "application/json")
            .send(via_header.to_string().as_bytes())
            .expect("sent");
        serde_json::from_str::<serde_json::Value>(&r.body_mut().read_to_string().expect("body")).expect("json")
    };
    assert_eq!(again["data"]["draft"]["id"], id.as_str());
    assert_eq!(again["data"]["replayed"], true);

    let mut other = body.clone();
    other["payload"]["title"] = json!("other");
    gw.post("/api/agent/v1/actions", Some(&token), &other)
        .expect(409, "agent.idempotency_mismatch");

    review(&gw, &id, "approve", json!({})).expect(200, "common.success");
    let replay = gw.post("/api/agent/v1/actions", Some(&token), &body);
    replay.expect(200, "agent.idempotency_replay");
    assert_eq!(
        (replay.data()["status"].as_str(), replay.data()["replayed"].as_bool()),
        (Some("executed"), Some(true))
    );
    assert_eq!(replay.data()["execution"]["status"], "success");
    assert_eq!(transactions(&gw), 3, "one effect");

    // The same key of another app is another key.
    let other_app = gw.post("/api/agent/v1/actions", Some(&gw.token("Other Tenant")), &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_other", "kind": "expense", "title": "idem", "amount_home": 1}, "idempotencyKey": "k-1"}));
    other_app.expect(200, "common.success");
    assert_ne!(other_app.data()["draft"]["id"], id.as_str());
}

#[test]
fn a_hundred_identical_requests_make_one_draft() {
    let gw = TestGateway::start();
    let token = gw.full();
    let body = json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "storm", "amount_home": 1}, "idempotencyKey": "storm"});
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..25)
                        .map(|_| gw.post("/api/agent/v1/actions", Some(&token), &body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    let drafts: std::collections::HashSet<String> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.data()["draft"]["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(drafts.len(), 1, "{drafts:?}");
    for r in &replies {
        assert!(
            r.status == 200 || r.code() == "agent.idempotency_in_progress",
            "{:#}",
            r.body
        );
    }
    let created = gw
        .audit()
        .iter()
        .filter(|e| e.action == "agent.action.draft.created" && e.details.get("replayed").is_none())
        .count();
    assert_eq!(created, 1);
}

fn act(gw: &TestGateway, body: serde_json::Value) -> Reply {
    gw.post("/api/agent/v1/actions", Some(&gw.full()), &body)
}

#[test]
fn the_auto_execute_gate_falls_back_to_a_draft_with_each_steps_code() {
    let gw = TestGateway::start();
    let delete = |extra: serde_json::Value| {
        let mut body = json!({"action": "transaction.delete", "payload": {"transactionId": "txn_1"}, "execute": true});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let denied = |reply: &Reply| {
        reply.data()["autoExecuteDeniedCode"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };
    assert_eq!(denied(&act(&gw, delete(json!({})))), "agent.auto_execute_disabled");
    gw.set_auto_execute(json!({"high_risk": {"enabled": true, "expires_at": "2000-01-01T00:00:00Z"}}))
        .expect(200, "common.success");
    assert_eq!(denied(&act(&gw, delete(json!({})))), "agent.auto_execute_expired");
    gw.set_auto_execute(json!({"high_risk": {"enabled": true, "allowed_actions": ["transaction.update"]}}))
        .expect(200, "common.success");
    assert_eq!(denied(&act(&gw, delete(json!({})))), "agent.auto_execute_denied");
    gw.set_auto_execute(json!({"high_risk": {"enabled": true, "allowed_actions": ["transaction.delete"]}}))
        .expect(200, "common.success");
    assert_eq!(denied(&act(&gw, delete(json!({})))), "agent.action_invalid");
    assert_eq!(
        denied(&act(&gw, delete(json!({"justification": "cleanup"})))),
        "agent.idempotency_required"
    );
    assert_eq!(
        denied(&act(
            &gw,
            delete(json!({"justification": "cleanup", "idempotencyKey": "a"}))
        )),
        "agent.preflight_required"
    );
    assert_eq!(
        denied(&act(
            &gw,
            delete(json!({"justification": "cleanup", "idempotencyKey": "b", "preflightHash": "0".repeat(64)}))
        )),
        "agent.preflight_mismatch"
    );
    assert_eq!(transactions(&gw), 2, "every fallback is a draft; nothing ran");

    // All steps pass: the delete runs now, once.
    let pre = gw.post(
        "/api/agent/v1/preflight",
        Some(&gw.full()),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_1"}}),
    );
    let hash = pre.data()["impactHash"].as_str().expect("hash").to_string();
    let body = delete(json!({"justification": "cleanup", "idempotencyKey": "c", "preflightHash": hash}));
    let ran = act(&gw, body.clone());
    ran.expect(200, "common.success");
    assert_eq!(ran.data()["status"], "executed");
    assert_eq!(ran.data()["execution"]["status"], "success");
    assert_eq!(transactions(&gw), 1);
    let replay = act(&gw, body);
    replay.expect(200, "agent.idempotency_replay");
    assert_eq!(transactions(&gw), 1);
}

#[test]
fn medium_risk_writes_run_inside_their_window_and_bad_policies_are_refused() {
    let gw = TestGateway::start();
    gw.set_auto_execute(json!({"writes": {"enabled": "yes", "expires_at": "soon"}}))
        .expect(400, "common.validation");
    gw.set_auto_execute(json!({"writes": {"enabled": true, "expires_at": "2999-01-01T00:00:00Z"}}))
        .expect(200, "common.success");
    let ran = act(
        &gw,
        json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "income", "title": "auto", "amount_home": 5}, "execute": true}),
    );
    ran.expect(200, "common.success");
    assert_eq!(ran.data()["status"], "executed");
    assert_eq!(transactions(&gw), 3);
    // forceDraft wins over execute.
    let drafted = act(
        &gw,
        json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "income", "title": "later", "amount_home": 5}, "execute": true, "forceDraft": true}),
    );
    assert_eq!(drafted.data()["status"], "draft");
    assert_eq!(transactions(&gw), 3);
    assert!(
        gw.audit()
            .iter()
            .any(|e| e.action == "agent_app.auto_execute.update" && e.status == "success")
    );
}

#[test]
fn a_long_poll_returns_when_the_reviewer_decides_and_the_cli_reviews() {
    let gw = TestGateway::start();
    let id = create_draft(&gw);
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let started = std::time::Instant::now();
            (
                gw.get(&format!("/api/agent/v1/drafts/{id}?wait=20"), Some(&gw.full())),
                started.elapsed(),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
            .args(["drafts", "approve", &id, "--note", "via cli"])
            .env("OPENPORT_ADMIN_URL", &gw.admin)
            .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("reviewer"))
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (reply, waited) = waiting.join().expect("thread");
        reply.expect(200, "common.success");
        assert_eq!(reply.data()["draft"]["status"], "confirmed");
        assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    });
    gw.get(&format!("/api/agent/v1/drafts/{id}?wait=31"), Some(&gw.full()))
        .expect(400, "common.validation");
}

#[test]
fn a_draft_expires_exactly_at_the_end_of_its_review_window() {
    let clock = std::sync::Arc::new(openport::clock::ManualClock::new(time::OffsetDateTime::now_utc()));
    let gw = TestGateway::builder().clock(clock.clone()).start();
    // Two drafts created at the same instant share their expiry.
    let first = create_draft(&gw);
    let second = create_draft(&gw);
    let window_ms = 7 * 24 * 3600 * 1000;
    // One millisecond before the window ends: still reviewable, and it executes.
    clock.advance_ms(window_ms - 1);
    review(&gw, &first, "approve", json!({})).expect(200, "common.success");
    // At the end of the window: expired, never executed, even with no sweeper.
    clock.advance_ms(1);
    review(&gw, &second, "approve", json!({})).expect(410, "agent.draft_expired");
    let read = gw.get(&format!("/api/agent/v1/drafts/{second}"), Some(&gw.full()));
    assert_eq!(read.data()["draft"]["status"], "expired");
    assert_eq!(read.data()["execution"], serde_json::Value::Null);
    assert_eq!(transactions(&gw), 3, "only the first draft ran");
}

/// Running it for real, item 9: the `review_path` a draft answer names is a route that
/// exists: it leads the reviewer to the review page.
#[test]
fn the_review_path_of_a_draft_answer_leads_to_the_review_page() {
    let gw = TestGateway::start();
    let drafted = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "Paper", "amount_home": 4}}),
    );
    drafted.expect(200, "common.success");
    let path = drafted.data()["review_path"].as_str().expect("review_path").to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let answer = agent.get(format!("{}{path}", gw.admin)).call().expect("answered");
    assert_eq!(answer.status().as_u16(), 303);
    let location = answer.headers()["location"].to_str().expect("location").to_string();
    assert_eq!(location, "/review");
    let mut page = agent.get(format!("{}{location}", gw.admin)).call().expect("answered");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.body_mut().read_to_string().expect("body").contains("Sign in"));
}
