use serde_json::json;

use crate::support::TestGateway;

#[test]
fn missing_malformed_unknown_revoked_and_expired_tokens_are_refused() {
    let gw = TestGateway::start();
    let manifest = "/api/agent/v1/manifest";
    gw.get(manifest, None).expect(401, "agent.token_invalid");
    gw.get(manifest, Some("not-a-token")).expect(401, "agent.token_invalid");
    gw.get(manifest, Some(&format!("op_{}", "A".repeat(43))))
        .expect(401, "agent.token_invalid");
    // Same prefix as a real token, different secret: still the one answer.
    let real = gw.full();
    let forged = format!("{}{}", &real[..12], "B".repeat(real.len() - 12));
    gw.get(manifest, Some(&forged)).expect(401, "agent.token_invalid");

    let store = &gw.server.gateway.store;
    let now = gw.server.gateway.now_iso();
    let app_id = gw.app_id("Read-only Reporter");
    let (key, token) =
        openport::apps::create_key(store, &app_id, openport::apps::NewKey::default(), "test", &now).expect("key");
    gw.get(manifest, Some(&token)).expect(200, "common.success");
    store.revoke_key(&key.id, &now).expect("revoke");
    gw.get(manifest, Some(&token)).expect(401, "agent.token_invalid");

    let expired = openport::apps::NewKey {
        name: None,
        expires_at: Some("2020-01-01T00:00:00.000Z".into()),
    };
    let (_, token) = openport::apps::create_key(store, &app_id, expired, "test", &now).expect("key");
    gw.get(manifest, Some(&token)).expect(401, "agent.token_expired");
}

#[test]
fn a_missing_scope_is_scope_denied_and_nothing_runs() {
    let gw = TestGateway::start();
    let reader = gw.token("Read-only Reporter");
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&reader),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "x", "amount_home": 1}}),
    );
    reply.expect(403, "agent.scope_denied");
    assert_eq!(reply.body["details"]["missingScopes"], json!(["transaction.write"]));
    let events = gw.audit_of(&reply);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].status.as_str(), events[0].draft_id.as_deref()),
        ("denied", None)
    );
}

#[test]
fn the_network_allow_list_takes_cidrs_and_denies_other_addresses() {
    let gw = TestGateway::start();
    let store = &gw.server.gateway.store;
    let now = gw.server.gateway.now_iso();
    let app = gw.app_id("Demo Integration");
    store
        .set_app_policy(
            &app,
            &json!({"network": {"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}}),
            &now,
        )
        .expect("policy");
    let denied = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
    denied.expect(403, "agent.policy_denied");
    assert_eq!(denied.body["details"]["reason"], "network_policy");
    store
        .set_app_policy(&app, &json!({"network": {"allowed_ips": ["127.0.0.0/8"]}}), &now)
        .expect("policy");
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
}

#[test]
fn cedar_enforces_the_data_policy_and_the_audit_names_the_policy() {
    let gw = TestGateway::start();
    let store = &gw.server.gateway.store;
    let app = gw.app_id("Demo Integration");
    let now = gw.server.gateway.now_iso();
    store
        .set_app_policy(&app, &json!({"data": {"allowed_ledger_ids": ["ledger_ops"]}}), &now)
        .expect("policy");
    let denied = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()));
    denied.expect(403, "agent.policy_denied");
    let events = gw.audit_of(&denied);
    assert_eq!(events[0].policy_ids, ["base.data-policy.allowed-ledgers"]);
    let allowed = gw.get("/api/agent/v1/transactions?ledgerId=ledger_ops", Some(&gw.full()));
    allowed.expect(200, "common.success");
    assert_eq!(gw.audit_of(&allowed)[0].policy_ids, ["base.scoped-tools"]);
}

#[test]
fn a_burst_is_refused_with_retry_after_and_ratelimit_headers_and_no_side_effect() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 3\nwindow_seconds = 60\n")
        .start();
    let token = gw.full();
    for _ in 0..3 {
        gw.get("/api/agent/v1/ledgers", Some(&token))
            .expect(200, "common.success");
    }
    let create = json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "x", "amount_home": 1}});
    let refused = gw.post("/api/agent/v1/actions", Some(&token), &create);
    refused.expect(429, "agent.rate_limited");
    assert_eq!(refused.headers.get("retry-after").map(String::as_str), Some("20"));
    let retry_after_ms = refused.body["details"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!((19_000..=20_000).contains(&retry_after_ms), "{retry_after_ms}");
    assert_eq!(refused.body["details"]["retryable"], true);
    assert!(refused.headers.contains_key("ratelimit-policy") && refused.headers.contains_key("ratelimit"));
    let events = gw.audit_of(&refused);
    assert_eq!(
        (events.len(), events[0].draft_id.as_deref(), events[0].tool.as_deref()),
        (1, None, None)
    );
    assert_eq!(events[0].policy_ids, Vec::<String>::new(), "Cedar never ran");
    // Another key has its own bucket.
    gw.get("/api/agent/v1/ledgers", Some(&gw.token("Read-only Reporter")))
        .expect(200, "common.success");
}

#[test]
fn the_admin_plane_has_its_own_credentials_and_roles() {
    let gw = TestGateway::start();
    gw.admin_get("/api/agent-admin/v1/apps", None)
        .expect(401, "admin.unauthorized");
    gw.admin_get("/api/agent-admin/v1/apps", Some(&gw.full()))
        .expect(401, "admin.unauthorized");
    gw.admin_get("/api/agent-admin/v1/apps", Some(&gw.admin_token("reviewer")))
        .expect(403, "admin.forbidden");
    let apps = gw.admin_get("/api/agent-admin/v1/apps", Some(&gw.admin_token("operator")));
    apps.expect(200, "common.success");
    assert_eq!(apps.data()["items"].as_array().map(Vec::len), Some(3));
    assert!(
        !apps.body.to_string().contains("token_hash"),
        "hashes never leave the store"
    );
    // Admin routes are not on the agent plane.
    gw.get("/api/agent-admin/v1/apps", Some(&gw.admin_token("operator")))
        .expect(404, "agent.not_found");
}

#[test]
fn a_new_app_works_at_once_and_revocation_is_immediate() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "tester", "scopes": ["ledger.read"]}),
    );
    created.expect(200, "common.success");
    let token = created.data()["token"].as_str().expect("token").to_string();
    let id = created.data()["app"]["id"].as_str().expect("id").to_string();
    assert_eq!(created.data()["key"]["token_prefix"].as_str(), Some(&token[..12]));
    let manifest = gw.get("/api/agent/v1/manifest", Some(&token));
    manifest.expect(200, "common.success");
    assert_eq!(manifest.data()["tools"].as_array().map(Vec::len), Some(1));
    gw.admin_post(&format!("/api/agent-admin/v1/apps/{id}/revoke"), Some(&op), &json!({}))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/manifest", Some(&token))
        .expect(401, "agent.token_invalid");
    gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "galaxy", "name": "x"}),
    )
    .expect(400, "common.validation");
}
