use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::TestGateway;

#[test]
fn missing_malformed_unknown_revoked_and_expired_tokens_are_refused() {
    let gw = TestGateway::start();
    let manifest = "/api/agent/v1/manifest";
    let missing = gw.get(manifest, None);
    missing.expect(401, "agent.token_invalid");
    assert_eq!(missing.body["message"], "Missing agent token");
    // A token that was sent says "invalid", whether malformed or unknown (as the reference).
    for sent in [
        "not-a-token".to_string(),
        "op_short".into(),
        format!("op_{}", "A".repeat(43)),
    ] {
        let invalid = gw.get(manifest, Some(&sent));
        invalid.expect(401, "agent.token_invalid");
        assert_eq!(invalid.body["message"], "Invalid agent token", "{sent}");
    }
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
    store.apps.revoke_key(&key.id, &now).expect("revoke");
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
        .apps
        .set_policy(
            &app,
            &policy(json!({"network": {"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}})),
            &now,
        )
        .expect("policy");
    let denied = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
    denied.expect(403, "agent.policy_denied");
    assert_eq!(denied.body["details"]["reason"], "network_policy");
    store
        .apps
        .set_policy(
            &app,
            &policy(json!({"network": {"allowed_ips": ["127.0.0.0/8"]}})),
            &now,
        )
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
        .apps
        .set_policy(
            &app,
            &policy(json!({"data": {"allowed_ledger_ids": ["ledger_ops"]}})),
            &now,
        )
        .expect("policy");
    let denied = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()));
    denied.expect(403, "agent.policy_denied");
    let events = gw.audit_of(&denied);
    assert_eq!(events[0].policy_ids, ["ledger.data-policy.allowed-ledgers"]);
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
    assert_eq!(apps.data()["items"].as_array().map(Vec::len), Some(4));
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

/// Running it for real, item 2: an app's scopes, name and rate class change in place
/// (audited, effective on the next request), and names are unique per tenant.
#[test]
fn an_app_is_updated_in_place_and_its_name_is_unique_in_its_tenant() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "growing", "scopes": ["ledger.read"]}),
    );
    let token = created.data()["token"].as_str().expect("token").to_string();
    let id = created.data()["app"]["id"].as_str().expect("id").to_string();
    let tools = |token: &str| {
        gw.get("/api/agent/v1/manifest", Some(token)).data()["tools"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(tools(&token), 1);
    let patch = |body: serde_json::Value| {
        gw.send_url(
            "PATCH",
            &format!("{}/api/agent-admin/v1/apps/{id}", gw.admin),
            Some(&op),
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    };
    let updated = patch(json!({"scopes": ["ledger.read", "transaction.read"], "name": "grown", "rate_class": "bulk"}));
    updated.expect(200, "common.success");
    assert_eq!(updated.data()["name"], "grown");
    assert_eq!(updated.data()["policy"]["rate_class"], "bulk");
    assert_eq!(tools(&token), 2, "the same token sees the new scope at once");
    let event = gw.audit_of(&updated);
    assert_eq!(event[0].action, "agent_app.update");
    assert_eq!(event[0].details["fields"], json!(["name", "scopes", "rate_class"]));

    // Names are unique per tenant, on create and on rename; a refused change changes nothing.
    gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "grown", "scopes": []}),
    )
    .expect(409, "admin.conflict");
    patch(json!({"name": "Demo Integration", "scopes": []})).expect(409, "admin.conflict");
    assert_eq!(tools(&token), 2);
    gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "grown", "scopes": [], "org_id": "org_other"}),
    )
    .expect(200, "common.success");
    patch(json!({"scopes": ["Not A Scope"]})).expect(400, "common.validation");
    patch(json!({})).expect(400, "common.validation");
    patch(json!({"owner": "me"})).expect(400, "common.validation");
}

#[test]
fn the_data_policy_is_patched_validated_and_enforced() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let app = gw.app_id("Demo Integration");
    let path = format!("{}/api/agent-admin/v1/apps/{app}/policy", gw.admin);
    let patch = |body: serde_json::Value| {
        gw.send_url(
            "PATCH",
            &path,
            Some(&op),
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    };
    // Sensitive fields allowed: the plugin's result is the answer, and the audit event
    // counts what it listed.
    let reply = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()));
    reply.expect(200, "common.success");
    assert_eq!(reply.data()["items"][0]["title"], "Consulting payment");
    let details = &gw.audit_of(&reply)[0].details;
    assert_eq!(details["resultCount"], 2, "{details}");
    assert!(details.get("redactedFields").is_none(), "{details}");

    patch(json!({"network": {"allowed_ips": ["not-an-ip"]}})).expect(400, "common.validation");
    patch(json!({"data": {"max_days": 0}})).expect(400, "common.validation");
    patch(json!({"data": {"allow_sensitive_fields": false, "max_days": 30}})).expect(200, "common.success");

    // Sensitive fields are redacted and the audit event lists which.
    let reply = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&gw.full()));
    reply.expect(200, "common.success");
    let item = &reply.data()["items"][0];
    assert_eq!(item["title"], "[redacted]");
    assert!(item["amount_home"].is_number());
    let details = &gw.audit_of(&reply)[0].details;
    assert_eq!(details["redactedFields"], json!(["notes", "title"]));
    assert_eq!(details["resultCount"], 2, "{details}");

    // max_days: an open range is bounded to the window, a wider one is refused.
    gw.get(
        "/api/agent/v1/transactions?ledgerId=ledger_main&startDate=2020-01-01&endDate=2020-12-31",
        Some(&gw.full()),
    )
    .expect(403, "agent.policy_denied");
    gw.get(
        "/api/agent/v1/transactions?ledgerId=ledger_main&startDate=2020-02-01&endDate=2020-01-01",
        Some(&gw.full()),
    )
    .expect(400, "agent.action_invalid");
    let events = gw.audit();
    assert!(
        events
            .iter()
            .any(|e| e.action == "agent_app.policy.update" && e.status == "success")
    );
}

#[test]
fn three_apps_with_different_grants_see_three_manifests_and_a_hidden_tool_is_unknown() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let mut lists = Vec::new();
    for (i, scopes) in [
        json!(["ledger.read"]),
        json!(["ledger.read", "transaction.read"]),
        json!(["transaction.read", "transaction.write"]),
    ]
    .into_iter()
    .enumerate()
    {
        let created = gw.admin_post(
            "/api/agent-admin/v1/apps",
            Some(&op),
            &json!({"scope": "workspace", "name": format!("m{i}"), "scopes": scopes}),
        );
        let token = created.data()["token"].as_str().expect("token").to_string();
        let manifest = gw.get("/api/agent/v1/manifest", Some(&token));
        let names: Vec<String> = manifest.data()["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or("").into())
            .collect();
        lists.push((token, names));
    }
    assert_eq!(lists[0].1, ["ledger.list"]);
    assert_eq!(lists[1].1, ["ledger.list", "transaction.list"]);
    assert_eq!(
        lists[2].1,
        ["transaction.create", "transaction.list", "transaction.update"]
    );

    // A policy that hides a tool: the tool leaves the manifest and answers like an unknown one.
    let policies = gw.dir.path().join("policies");
    std::fs::write(
        policies.join("hide.cedar"),
        "@id(\"hide-update\")\nforbid (principal, action, resource == OpenPort::Tool::\"transaction.update\");\n",
    )
    .expect("write");
    gw.admin_post("/api/agent-admin/v1/policies/reload", Some(&op), &json!({}))
        .expect(200, "common.success");
    let token = &lists[2].0;
    let manifest = gw.get("/api/agent/v1/manifest", Some(token));
    assert!(!manifest.body.to_string().contains("transaction.update"));
    let hidden = gw.post(
        "/api/agent/v1/actions",
        Some(token),
        &json!({"action": "transaction.update", "payload": {"transactionId": "txn_1"}}),
    );
    let unknown = gw.post(
        "/api/agent/v1/actions",
        Some(token),
        &json!({"action": "transaction.nope", "payload": {"transactionId": "txn_1"}}),
    );
    hidden.expect(400, "agent.action_unknown");
    unknown.expect(400, "agent.action_unknown");
    assert_eq!(hidden.body["message"], unknown.body["message"]);
    assert_eq!(hidden.body["details"], unknown.body["details"]);
    assert_eq!(gw.audit_of(&hidden)[0].policy_ids, ["hide-update"]);

    // A set that fails validation is refused and the old one keeps serving.
    std::fs::write(
        policies.join("broken.cedar"),
        "permit (principal, action, resource) when { principal.nope };",
    )
    .expect("write");
    gw.admin_post("/api/agent-admin/v1/policies/reload", Some(&op), &json!({}))
        .expect(400, "common.validation");
    std::fs::remove_file(policies.join("broken.cedar")).expect("rm");
    assert_eq!(
        gw.get("/api/agent/v1/manifest", Some(token)).data()["tools"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn apps_are_restored_without_their_old_keys_and_deleted_only_when_revoked() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "r", "scopes": ["ledger.read"]}),
    );
    let id = created.data()["app"]["id"].as_str().expect("id").to_string();
    let old = created.data()["token"].as_str().expect("token").to_string();
    let delete = format!("/api/agent-admin/v1/apps/{id}");
    gw.admin_delete(&delete, Some(&op)).expect(400, "common.validation");
    gw.admin_post(&format!("/api/agent-admin/v1/apps/{id}/revoke"), Some(&op), &json!({}))
        .expect(200, "common.success");
    gw.admin_post(&format!("/api/agent-admin/v1/apps/{id}/restore"), Some(&op), &json!({}))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/manifest", Some(&old))
        .expect(401, "agent.token_invalid");
    let key = gw.admin_post(
        &format!("/api/agent-admin/v1/apps/{id}/keys"),
        Some(&op),
        &json!({"name": "second"}),
    );
    key.expect(200, "common.success");
    let new = key.data()["token"].as_str().expect("token").to_string();
    gw.get("/api/agent/v1/manifest", Some(&new))
        .expect(200, "common.success");
    let tools = gw.admin_get(&format!("/api/agent-admin/v1/apps/{id}/tools"), Some(&op));
    assert_eq!(tools.data()["items"][0]["name"], "ledger.list");
    gw.admin_post(&format!("/api/agent-admin/v1/apps/{id}/revoke"), Some(&op), &json!({}))
        .expect(200, "common.success");
    gw.admin_delete(&delete, Some(&op)).expect(200, "common.success");
    gw.admin_get("/api/agent-admin/v1/apps", Some(&op)).data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .for_each(|a| assert_ne!(a["id"], id.as_str()));
    let validate = gw.admin_post(
        "/api/agent-admin/v1/policies/validate",
        Some(&op),
        &json!({"policies": {"x.cedar": "forbid (principal, action, resource) when { resource.nope };"}}),
    );
    assert_eq!(validate.data()["valid"], false);
}

#[test]
fn forwarded_for_counts_only_from_a_trusted_proxy() {
    for (trusted, want) in [(false, 403), (true, 200)] {
        let builder = TestGateway::builder();
        let gw = if trusted {
            builder.server_config("trusted_proxies = [\"127.0.0.1/32\"]")
        } else {
            builder
        }
        .start();
        let store = &gw.server.gateway.store;
        let now = gw.server.gateway.now_iso();
        store
            .apps
            .set_policy(
                &gw.app_id("Demo Integration"),
                &policy(json!({"network": {"allowed_ips": ["203.0.113.0/24", "2001:db8::/32"]}})),
                &now,
            )
            .expect("policy");
        let reply = gw.get_with(
            "/api/agent/v1/ledgers",
            &gw.full(),
            &[("X-Forwarded-For", "198.51.100.1, 203.0.113.7")],
        );
        assert_eq!(reply.status, want, "trusted proxy {trusted}: {:#}", reply.body);
        let v6 = gw.get_with(
            "/api/agent/v1/ledgers",
            &gw.full(),
            &[("X-Forwarded-For", "2001:db8::42")],
        );
        assert_eq!(v6.status, want, "IPv6 through trusted proxy {trusted}");
        // Without the header the peer (127.0.0.1) is the client: not on the list.
        gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
            .expect(403, "agent.policy_denied");
        let event = &gw.audit_of(&reply)[0];
        assert_eq!(
            event.ip.as_deref(),
            Some(if trusted { "203.0.113.7" } else { "127.0.0.1" })
        );
    }
}

/// An app policy as the admin plane would store it.
fn policy(value: serde_json::Value) -> openport::app_policy::AppPolicy {
    serde_json::from_value(value).expect("a valid app policy")
}

/// Running it for real, item 2: keys are listed without their tokens, and a rotation
/// issues the new token once and revokes the old one at once.
#[test]
fn a_key_is_rotated_and_the_old_token_stops_working_at_once() {
    let gw = TestGateway::start();
    let op = gw.admin_token("operator");
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&op),
        &json!({"scope": "workspace", "name": "rotating", "scopes": ["ledger.read"]}),
    );
    let old_token = created.data()["token"].as_str().expect("token").to_string();
    let app = created.data()["app"]["id"].as_str().expect("id").to_string();
    let old_key = created.data()["key"]["id"].as_str().expect("key").to_string();
    let rotated = gw.admin_post(
        &format!("/api/agent-admin/v1/keys/{old_key}/rotate"),
        Some(&op),
        &json!({}),
    );
    rotated.expect(200, "common.success");
    let new_token = rotated.data()["token"].as_str().expect("token").to_string();
    gw.get("/api/agent/v1/ledgers", Some(&new_token))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", Some(&old_token))
        .expect(401, "agent.token_invalid");
    let keys = gw.admin_get(&format!("/api/agent-admin/v1/apps/{app}/keys"), Some(&op));
    keys.expect(200, "common.success");
    let items = keys.data()["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|k| k.get("token_hash").is_none() && k["name"] == "Default key")
    );
    assert!(
        items
            .iter()
            .any(|k| k["id"] == old_key.as_str() && k["revoked_at"].is_string())
    );
    assert!(!keys.body.to_string().contains(&new_token), "tokens are never listed");
    gw.admin_post(
        &format!("/api/agent-admin/v1/keys/{old_key}/rotate"),
        Some(&op),
        &json!({}),
    )
    .expect(400, "common.validation");
    let event = gw.audit_of(&rotated);
    assert_eq!(event[0].action, "agent_key.rotate");
}

/// A policy reload, and a plugin added or removed, compile the policy set off the request
/// workers: on a gateway with a single worker, agent reads are answered within a fraction of
/// the time a large set takes to compile, rather than after it.
#[test]
fn agent_reads_go_on_while_a_large_policy_set_compiles() {
    // The demo's 240 reads a minute would refuse the loops below before the set compiled.
    let gw = TestGateway::builder()
        .one_worker()
        .config("\n[admission.default]\nrequests = 100000\nwindow_seconds = 1\n")
        .start();
    let op = gw.admin_token("operator");
    let mut large = String::new();
    for i in 0..3000 {
        large.push_str(&format!(
            "@id(\"large.p{i}\")\nforbid (principal == OpenPort::App::\"app_{}\", action in OpenPort::Action::\"transaction.create\", resource) when {{ context has args && context.args has amount_home && context.args.amount_home.greaterThan(decimal(\"{i}.0\")) }};\n",
            i % 100
        ));
    }
    std::fs::write(gw.dir.path().join("policies").join("large.cedar"), large).expect("write");
    reads_go_on_during(&gw, "the reload", || {
        gw.admin_post("/api/agent-admin/v1/policies/reload", Some(&op), &json!({}))
            .expect(200, "common.success");
    });
    let trap = crate::plugins::manifest(&gw, "trap", "test-trap", &["hostile.trap"], "");
    reads_go_on_during(&gw, "adding a plugin", || {
        gw.admin_post("/api/agent-admin/v1/plugins", Some(&op), &json!({"manifest": trap}))
            .expect(200, "common.success");
    });
    reads_go_on_during(&gw, "removing a plugin", || {
        gw.admin_delete("/api/agent-admin/v1/plugins/trap", Some(&op))
            .expect(200, "common.success");
    });
}

/// Runs `change` while reading the ledger in a loop; no read may wait half as long as the
/// change took.
fn reads_go_on_during(gw: &TestGateway, what: &str, change: impl FnOnce() + Send) {
    let token = gw.token("Demo Integration");
    let read = "/api/agent/v1/transactions?ledgerId=ledger_main";
    let (took, slowest) = std::thread::scope(|scope| {
        let changing = scope.spawn(|| {
            let started = Instant::now();
            change();
            started.elapsed()
        });
        let mut slowest = Duration::ZERO;
        while !changing.is_finished() {
            let started = Instant::now();
            gw.get(read, Some(&token)).expect(200, "common.success");
            slowest = slowest.max(started.elapsed());
        }
        (changing.join().expect(what), slowest)
    });
    assert!(
        took >= Duration::from_millis(200),
        "{what} took {took:?}: too fast to tell a held-up worker from a free one"
    );
    assert!(
        slowest < took / 2,
        "a read waited {slowest:?} while {what} took {took:?}"
    );
}
