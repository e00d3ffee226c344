use serde_json::{Value, json};

use crate::support::TestGateway;

fn names(reply: &crate::support::Reply) -> Vec<String> {
    reply.data()["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn manifest_lists_the_tools_of_the_app_with_openport_metadata() {
    let gw = TestGateway::start();
    let reply = gw.get("/api/agent/v1/manifest", Some(&gw.full()));
    reply.expect(200, "common.success");
    let data = reply.data();
    assert_eq!(data["app"]["name"], "Demo Integration");
    assert_eq!(data["app"]["orgId"], "org_demo");
    assert_eq!(data["app"]["scope"], "workspace");
    assert_eq!(
        names(&reply),
        [
            "ledger.list",
            "ticket.create",
            "ticket.list",
            "transaction.create",
            "transaction.delete",
            "transaction.hard_delete",
            "transaction.list",
            "transaction.update",
            "transactions.export_csv"
        ]
    );
    let list = data["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "transaction.list"))
        .expect("transaction.list");
    assert_eq!(list["risk"], "low");
    assert_eq!(list["requiredScopes"], json!(["transaction.read"]));
    assert_eq!(list["requiresConfirmation"], false);
    assert_eq!(
        list["http"],
        json!({"method": "GET", "path": "/api/agent/v1/transactions"})
    );
    assert_eq!(list["inputSchema"]["required"], json!(["ledgerId"]));
    assert_eq!(list["rateLimitHints"], json!({"requests": 240, "windowSeconds": 60}));
    let delete = data["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "transaction.delete"))
        .expect("delete");
    assert_eq!(
        (delete["risk"].as_str(), delete["requiresConfirmation"].as_bool()),
        (Some("high"), Some(true))
    );
}

#[test]
fn two_apps_with_different_scopes_see_different_manifests() {
    let gw = TestGateway::start();
    let full = names(
        gw.get("/api/agent/v1/manifest", Some(&gw.full()))
            .expect(200, "common.success"),
    );
    let reader = names(
        gw.get("/api/agent/v1/manifest", Some(&gw.token("Read-only Reporter")))
            .expect(200, "common.success"),
    );
    assert_eq!(reader, ["ledger.list", "transaction.list"]);
    assert_eq!(full.len(), 9);
}

#[test]
fn ledgers_and_transactions_are_read_through_the_wasm_adapter() {
    let gw = TestGateway::start();
    let token = gw.full();
    let ledgers = gw.get("/api/agent/v1/ledgers", Some(&token));
    ledgers.expect(200, "common.success");
    let ids: Vec<&str> = ledgers.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    assert_eq!(ids, ["ledger_main", "ledger_ops"]);

    let txns = gw.get(
        "/api/agent/v1/transactions?ledgerId=ledger_main&pageSize=1",
        Some(&token),
    );
    txns.expect(200, "common.success");
    let data = txns.data();
    assert_eq!(
        (data["total"].as_u64(), data["page"].as_u64(), data["pageSize"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(data["hasMore"], true);
    let item = &data["items"][0];
    assert!(item["id"] == "txn_1" || item["id"] == "txn_2", "{item}");
    assert!(item.get("is_deleted").is_none(), "internal field leaked: {item}");
}

#[test]
fn another_tenants_ledger_answers_exactly_like_a_missing_one() {
    let gw = TestGateway::start();
    let other = gw.token("Other Tenant");
    let own = gw.get("/api/agent/v1/ledgers", Some(&other));
    assert_eq!(own.data()["items"][0]["id"], "ledger_other");
    assert_eq!(own.data()["items"].as_array().map(Vec::len), Some(1));

    let foreign = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&other));
    let missing = gw.get("/api/agent/v1/transactions?ledgerId=ledger_nope", Some(&other));
    foreign.expect(404, "agent.not_found");
    missing.expect(404, "agent.not_found");
    assert_eq!(foreign.body["message"], missing.body["message"]);
    assert_eq!(foreign.body["details"], missing.body["details"]);
}

#[test]
fn an_action_becomes_a_draft_the_app_can_read_back() {
    let gw = TestGateway::start();
    let token = gw.full();
    let payload = json!({"ledgerId": "ledger_main", "kind": "expense", "title": "Conformance Test", "amount_home": 10, "currency_home": "USD", "date": "2026-02-13T00:00:00.000Z"});
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.create", "payload": payload, "execute": true}),
    );
    reply.expect(200, "common.success");
    let data = reply.data();
    assert_eq!(data["status"], "draft");
    assert_eq!(
        data["autoExecuteDeniedCode"], "agent.auto_execute_disabled",
        "no auto-execute policy: disabled"
    );
    assert_eq!(data["review_path"], "/agent-admin/v1/drafts");
    let draft = &data["draft"];
    assert_eq!(
        (draft["status"].as_str(), draft["action_type"].as_str()),
        (Some("draft"), Some("transaction.create"))
    );
    assert_eq!(draft["impact"]["summary"], "Create 1 transaction");
    assert_eq!(draft["payload"], payload);

    let id = draft["id"].as_str().expect("draft id");
    let read = gw.get(&format!("/api/agent/v1/drafts/{id}"), Some(&token));
    read.expect(200, "common.success");
    assert_eq!(read.data()["draft"]["id"], id);
    assert_eq!(read.data()["execution"], Value::Null);

    // Nothing executed: the ledger still has its two transactions.
    let txns = gw.get("/api/agent/v1/transactions?ledgerId=ledger_main", Some(&token));
    assert_eq!(txns.data()["total"], 2);

    // Another app's draft answers like an unknown one.
    gw.get(
        &format!("/api/agent/v1/drafts/{id}"),
        Some(&gw.token("Read-only Reporter")),
    )
    .expect(404, "agent.draft_not_found");
    gw.get("/api/agent/v1/drafts/drf_nope", Some(&token))
        .expect(404, "agent.draft_not_found");
}

#[test]
fn preflight_binds_the_impact_and_actions_accept_its_id() {
    let gw = TestGateway::start();
    let token = gw.full();
    let reply = gw.post(
        "/api/agent/v1/preflight",
        Some(&token),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}}),
    );
    reply.expect(200, "common.success");
    let data = reply.data();
    assert_eq!(data["impact"]["summary"], "Delete 1 transaction");
    assert_eq!(data["impact"]["transaction"]["id"], "txn_2");
    let expected = openport::hashing::jcs_sha256(
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}, "impact": data["impact"]}),
    );
    assert_eq!(data["impactHash"], expected);
    let id = data["preflightId"].as_str().expect("preflight id");

    let action = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.delete", "preflightId": id}),
    );
    action.expect(200, "common.success");
    assert_eq!(action.data()["draft"]["preflight_hash"], expected);

    let other = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.update", "preflightId": id}),
    );
    other.expect(400, "agent.preflight_mismatch");
    // Scopes come before any lookup: an app without the tool's scope is refused there,
    // whatever id it names (tests/integration/steps.rs).
    let foreign = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.token("Other Tenant")),
        &json!({"action": "transaction.delete", "preflightId": id}),
    );
    foreign.expect(403, "agent.scope_denied");
    // Another tenant's app that holds the scope finds no such preflight.
    let created = gw.admin_post(
        "/api/agent-admin/v1/apps",
        Some(&gw.admin_token("operator")),
        &json!({"scope": "workspace", "name": "deleter", "org_id": "org_other", "scopes": ["transaction.delete"]}),
    );
    let deleter = created.data()["token"].as_str().expect("token").to_string();
    gw.post(
        "/api/agent/v1/actions",
        Some(&deleter),
        &json!({"action": "transaction.delete", "preflightId": id}),
    )
    .expect(400, "agent.preflight_not_found");
}

#[test]
fn bad_input_gets_its_code_and_never_a_500() {
    let gw = TestGateway::start();
    let token = gw.full();
    let url = format!("{}/api/agent/v1/actions", gw.agent);
    let post = |ct: Option<&str>, body: &[u8]| gw.send_url("POST", &url, Some(&token), ct, body);

    post(Some("application/json"), b"{not json").expect(400, "common.validation");
    post(Some("text/plain"), br#"{"action":"transaction.create","payload":{}}"#).expect(400, "common.validation");
    post(
        Some("application/json"),
        br#"{"action":"transaction.create","payload":{},"surprise":1}"#,
    )
    .expect(400, "common.validation");
    post(Some("application/json"), br#"{"action":"no.such_action","payload":{}}"#).expect(400, "agent.action_unknown");
    post(Some("application/json"), br#"{"action":"ledger.list","payload":{}}"#).expect(400, "agent.action_unknown");
    post(Some("application/json"), br#"{"action":"transaction.create"}"#).expect(400, "common.validation");
    let invalid = post(
        Some("application/json"),
        br#"{"action":"transaction.create","payload":{"ledgerId":"ledger_main"}}"#,
    );
    invalid.expect(400, "agent.action_invalid");
    assert!(
        invalid.body["details"]["issues"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    );
    // A body over the limit is refused from its Content-Length, before it is read.
    let (status, body) = raw_exchange(
        &gw.agent,
        &format!(
            "POST /api/agent/v1/actions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
        ),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("agent.request_too_large"), "{body}");
    // So is one that streams past the limit without declaring its length.
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
    let (status, body) = raw_exchange(
        &gw.agent,
        &format!(
            "POST /api/agent/v1/actions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
        ),
    );
    assert_eq!(status, 413, "{body}");

    gw.get("/api/agent/v1/no-such-route", Some(&token))
        .expect(404, "agent.not_found");
    gw.get("/nowhere", Some(&token)).expect(404, "agent.not_found");
    gw.get("/api/agent/v1/transactions", Some(&token))
        .expect(400, "common.validation");
    let not_a_number = gw.get(
        "/api/agent/v1/transactions?ledgerId=ledger_main&page=zero",
        Some(&token),
    );
    not_a_number.expect(400, "common.validation");
    let issue = &not_a_number.body["details"]["issues"][0];
    assert_eq!(issue["path"], json!(["page"]), "{:#}", not_a_number.body);
    assert_eq!(
        issue["message"], "expected an integer, got a string",
        "{:#}",
        not_a_number.body
    );
    gw.get("/api/agent/v1/transactions?ledgerId=a&ledgerId=b", Some(&token))
        .expect(400, "common.validation");
    gw.get(&format!("/api/agent/v1/ledgers?access_token={token}"), None)
        .expect(400, "common.validation");
}

/// Writes a raw request and reads the status and body of the answer.
fn raw_exchange(base: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before it read everything: ignore write errors.
    let _ = stream.write_all(request.as_bytes());
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn probes_answer_without_credentials() {
    let gw = TestGateway::start();
    let health = gw.get("/healthz", None);
    health.expect(200, "common.success");
    assert_eq!(health.data()["status"], "ok");
    let ready = gw.get("/readyz", None);
    ready.expect(200, "common.success");
    assert_eq!(ready.data()["tools"], 36);
}

#[test]
fn preflight_and_drafts_carry_the_state_witness_and_a_stale_hash_is_refused() {
    let gw = TestGateway::start();
    let token = gw.full();
    let pre = gw.post(
        "/api/agent/v1/preflight",
        Some(&token),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}}),
    );
    pre.expect(200, "common.success");
    let witness = &pre.data()["stateWitness"];
    assert_eq!(witness["kind"], "resource_version");
    assert_eq!(
        (witness["id"].as_str(), witness["is_deleted"].as_bool()),
        (Some("txn_2"), Some(false))
    );
    let hash = pre.data()["stateWitnessHash"].as_str().expect("hash").to_string();
    assert_eq!(hash, openport::hashing::jcs_sha256(witness));

    let stale = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}, "stateWitnessHash": "0".repeat(64)}),
    );
    stale.expect(409, "agent.precondition_failed");
    assert_eq!(stale.body["details"]["reason"], "state_witness_mismatch");
    assert!(gw.audit_of(&stale)[0].draft_id.is_none(), "no draft");

    let good = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.delete", "payload": {"transactionId": "txn_2"}, "stateWitnessHash": hash}),
    );
    good.expect(200, "common.success");
    assert_eq!(good.data()["draft"]["preflight_state_witness_hash"], hash);

    // A tool no witness watches cannot promise a state.
    let unsupported = gw.post(
        "/api/agent/v1/actions",
        Some(&token),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "income", "title": "t", "amount_home": 1}, "stateWitnessHash": hash}),
    );
    unsupported.expect(409, "agent.precondition_failed");
    assert_eq!(unsupported.body["details"]["reason"], "state_witness_unsupported");
}

#[test]
fn an_oversized_head_gets_the_envelope_and_one_audit_event() {
    let gw = TestGateway::start();
    let token = format!("Bearer {}", gw.full());
    let long = "x".repeat(40 * 1024);
    let reply = gw.send_with(
        "GET",
        "/api/agent/v1/ledgers",
        &[("Authorization", token.as_str()), ("X-Padding", long.as_str())],
        b"",
    );
    reply.expect(413, "agent.request_too_large");
    let events = gw.audit_of(&reply);
    assert_eq!(events.len(), 1);
    assert!(
        !events[0].details.to_string().contains(&long[..100]),
        "the oversized value is not kept"
    );

    let names: Vec<String> = (0..150).map(|i| format!("X-Many-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    headers.push(("Authorization", token.as_str()));
    let reply = gw.send_with("GET", "/api/agent/v1/ledgers", &headers, b"");
    reply.expect(413, "agent.request_too_large");
    assert_eq!(gw.audit_of(&reply).len(), 1);
}

#[test]
fn numbers_policies_cannot_see_are_invalid_input_never_a_policy_denial() {
    let gw = TestGateway::start();
    for amount in [json!(1e20), json!(-1e16), json!(9007199254740993_u64)] {
        let reply = gw.post(
            "/api/agent/v1/actions",
            Some(&gw.full()),
            &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "big", "amount_home": amount}}),
        );
        reply.expect(400, "agent.action_invalid");
        let code = reply.body["details"]["issues"][0]["code"].as_str().unwrap_or("");
        assert!(
            matches!(code, "out_of_range" | "unsafe_integer"),
            "{amount}: {:#}",
            reply.body
        );
    }
}

#[test]
fn ambiguous_input_is_refused_duplicate_credentials_and_duplicate_keys_at_every_layer() {
    let gw = TestGateway::start();
    let full = format!("Bearer {}", gw.full());
    let other = format!("Bearer {}", gw.token("Read-only Reporter"));
    gw.send_with(
        "GET",
        "/api/agent/v1/ledgers",
        &[("Authorization", full.as_str()), ("Authorization", other.as_str())],
        b"",
    )
    .expect(401, "agent.token_invalid");

    let json = [("Authorization", full.as_str()), ("Content-Type", "application/json")];
    for body in [
        r#"{"action": "transaction.create", "action": "transaction.delete", "payload": {}}"#,
        r#"{"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "t", "amount_home": 1, "amount_home": 1000000}}"#,
    ] {
        let reply = gw.send_with("POST", "/api/agent/v1/actions", &json, body.as_bytes());
        reply.expect(400, "common.validation");
        assert!(reply.body.to_string().contains("duplicate key"), "{:#}", reply.body);
    }
    let mcp = gw.send_with(
        "POST",
        "/mcp",
        &json,
        br#"{"jsonrpc": "2.0", "id": 1, "method": "ping", "method": "tools/list"}"#,
    );
    assert_eq!(mcp.status, 400, "{:#}", mcp.body);
    assert_eq!(mcp.body["error"]["code"], -32600);
}

#[test]
fn the_review_sign_in_refuses_a_form_posted_from_elsewhere() {
    let gw = TestGateway::start();
    let reviewer = gw.admin_token("reviewer");
    let body = format!("token={reviewer}");
    let login = format!("{}/review/login", gw.admin);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    // A login-CSRF page elsewhere: no form token, a foreign Origin.
    let (status, _, page) = gw.send_url_text(
        "POST",
        &login,
        &[form, ("Origin", "http://evil.example")],
        body.as_bytes(),
    );
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains("Signed in as"));
    // Our own form: the page's token, echoed by its cookie (and `Origin: null`, as a
    // browser sends it from a `no-referrer` page).
    let (_, headers, _) = gw.send_url_text("GET", &format!("{}/review", gw.admin), &[], b"");
    let cookie = headers.get("set-cookie").expect("a sign-in cookie");
    let pair = cookie.split(';').next().expect("name=value").to_string();
    let csrf = pair.split_once('=').expect("=").1.to_string();
    let (status, headers, page) = gw.send_url_text(
        "POST",
        &login,
        &[form, ("Cookie", pair.as_str()), ("Origin", "null")],
        format!("login_csrf={csrf}&{body}").as_bytes(),
    );
    assert_eq!(status, 303, "signed in and sent to the drafts: {page}");
    assert!(
        headers
            .get("set-cookie")
            .is_some_and(|c| c.starts_with("openport_review=")),
        "a session: {headers:?}"
    );
}
