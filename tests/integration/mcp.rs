//! The MCP binding, from an MCP client's side: the same governance as REST.

use serde_json::{Value, json};

use crate::support::{Reply, TestGateway};

/// A minimal Streamable HTTP client: one session, JSON responses.
struct Client<'a> {
    gw: &'a TestGateway,
    token: Option<String>,
    session: Option<String>,
    next_id: u64,
}

impl<'a> Client<'a> {
    fn new(gw: &'a TestGateway, token: Option<String>) -> Self {
        Client {
            gw,
            token,
            session: None,
            next_id: 1,
        }
    }

    fn send(&self, message: &Value, extra: &[(&str, &str)]) -> Reply {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        if let Some(session) = &self.session {
            headers.push(("Mcp-Session-Id", session));
            headers.push(("MCP-Protocol-Version", "2025-11-25"));
        }
        headers.extend_from_slice(extra);
        self.gw
            .send_with("POST", "/mcp", &headers, message.to_string().as_bytes())
    }

    fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let reply = self.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
            &[],
        );
        if reply.status == 200 {
            assert_eq!(reply.body["id"], id, "response id: {:#}", reply.body);
        }
        reply
    }

    fn initialize(&mut self) -> Reply {
        let reply = self.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
        );
        assert_eq!(reply.status, 200, "{:#}", reply.body);
        self.session = Some(reply.headers["mcp-session-id"].clone());
        let ack = self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), &[]);
        assert_eq!(ack.status, 202);
        reply
    }

    fn tool_names(&mut self) -> Vec<String> {
        let reply = self.request("tools/list", json!({}));
        assert_eq!(reply.status, 200, "{:#}", reply.body);
        reply.body["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_string())
            .collect()
    }

    fn call(&mut self, name: &str, arguments: Value, meta: Value) -> Value {
        let reply = self.request(
            "tools/call",
            json!({"name": name, "arguments": arguments, "_meta": meta}),
        );
        assert_eq!(reply.status, 200, "{:#}", reply.body);
        reply.body["result"].clone()
    }
}

#[test]
fn two_credentials_list_the_tools_their_grants_allow_as_in_the_manifest() {
    let gw = TestGateway::start();
    let mut full = Client::new(&gw, Some(gw.full()));
    let mut reporter = Client::new(&gw, Some(gw.token("Read-only Reporter")));
    let init = full.initialize();
    assert_eq!(init.body["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init.body["result"]["capabilities"]["tools"]["listChanged"], false);
    reporter.initialize();

    let full_tools = full.tool_names();
    let reporter_tools = reporter.tool_names();
    assert_eq!(reporter_tools, ["ledger.list", "transaction.list"]);
    assert!(full_tools.contains(&"transaction.delete".to_string()), "{full_tools:?}");
    let manifest: Vec<String> = gw.get("/api/agent/v1/manifest", Some(&gw.full())).data()["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(full_tools, manifest, "tools/list is the manifest");

    // Annotations and OpenPort metadata come from the tool's declaration.
    let listed = full.request("tools/list", json!({}));
    let tools = listed.body["result"]["tools"].as_array().expect("tools").clone();
    let by_name = |name: &str| tools.iter().find(|t| t["name"] == name).expect("listed").clone();
    let list = by_name("transaction.list");
    assert_eq!(list["annotations"]["readOnlyHint"], true);
    assert_eq!(list["annotations"]["destructiveHint"], false);
    assert_eq!(list["inputSchema"]["type"], "object");
    let delete = by_name("transaction.delete");
    assert_eq!(delete["annotations"]["readOnlyHint"], false);
    assert_eq!(delete["annotations"]["destructiveHint"], true);
    assert_eq!(delete["_meta"]["openport"]["risk"], "high");
    assert_eq!(
        delete["_meta"]["openport"]["requiredScopes"],
        json!(["transaction.delete"])
    );
    assert!(delete["_meta"]["openport"]["rateLimitHints"]["requests"].is_number());
    assert!(delete["_meta"]["openport"]["draftPolicy"].is_string());
}

#[test]
fn a_read_a_draft_a_denial_and_a_rate_limit_over_mcp() {
    let gw = TestGateway::builder()
        .config("\n[admission.default]\nrequests = 8\nwindow_seconds = 60\n")
        .start();
    let mut agent = Client::new(&gw, Some(gw.full()));
    agent.initialize();

    // A read returns the adapter's result as structured content.
    let read = agent.call("transaction.list", json!({"ledgerId": "ledger_main"}), json!({}));
    assert_eq!(read["isError"], false, "{read:#}");
    assert!(
        read["structuredContent"]["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "{read:#}"
    );
    assert!(read["content"][0]["text"].is_string());

    // A write becomes a draft, in the /actions shape.
    let draft = agent.call(
        "transaction.create",
        json!({"ledgerId": "ledger_main", "kind": "expense", "title": "Team lunch", "amount_home": 42}),
        json!({"justification": "monthly team lunch"}),
    );
    assert_eq!(draft["isError"], false, "{draft:#}");
    assert_eq!(draft["structuredContent"]["status"], "draft", "{draft:#}");
    // First a sentence the agent can act on, then the data as JSON text.
    let sentence = draft["content"][0]["text"].as_str().expect("a sentence");
    assert!(
        sentence.starts_with("Draft drf_") && sentence.contains("waits for a human reviewer"),
        "{sentence}"
    );
    let data: serde_json::Value =
        serde_json::from_str(draft["content"][1]["text"].as_str().expect("JSON text")).expect("JSON");
    assert_eq!(data, draft["structuredContent"]);
    let draft_id = draft["structuredContent"]["draft"]["id"]
        .as_str()
        .expect("draft id")
        .to_string();
    let admin = gw.admin_get(
        &format!("/api/agent-admin/v1/drafts/{draft_id}"),
        Some(&gw.admin_token("reviewer")),
    );
    assert_eq!(
        admin.status, 200,
        "the draft is on the reviewer's list: {:#}",
        admin.body
    );

    // A denial is a tool error carrying the code, so the model can react.
    let mut reporter = Client::new(&gw, Some(gw.token("Read-only Reporter")));
    reporter.initialize();
    let denied = reporter.call(
        "transaction.create",
        json!({"ledgerId": "ledger_main", "kind": "expense", "title": "x", "amount_home": 1}),
        json!({}),
    );
    assert_eq!(denied["isError"], true);
    assert_eq!(denied["structuredContent"]["code"], "agent.scope_denied", "{denied:#}");
    assert!(
        denied["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("agent.scope_denied"))
    );

    // An unknown tool is refused like a hidden one.
    let unknown = agent.call("transaction.teleport", json!({}), json!({}));
    assert_eq!(unknown["structuredContent"]["code"], "agent.action_unknown");

    // The per-key limit holds over MCP as over REST: eventually a 429-class refusal.
    let mut refusal = Value::Null;
    for _ in 0..10 {
        let result = agent.call("ledger.list", json!({}), json!({}));
        if result["isError"] == true {
            refusal = result;
            break;
        }
    }
    assert_eq!(
        refusal["structuredContent"]["code"], "agent.rate_limited",
        "{refusal:#}"
    );
    assert!(refusal["structuredContent"]["details"]["retry_after_ms"].is_number());

    // Every MCP request left exactly one audit event, marked with its binding.
    let mcp_events: Vec<_> = gw
        .audit()
        .into_iter()
        .filter(|e| e.details.get("binding").and_then(Value::as_str) == Some("mcp"))
        .collect();
    assert!(mcp_events.iter().any(|e| e.action == "agent.action.draft.created"));
    assert!(mcp_events.iter().any(|e| e.code == "agent.scope_denied"));
    assert!(mcp_events.iter().any(|e| e.code == "agent.rate_limited"));
}

#[test]
fn a_missing_credential_is_401_with_a_pointer_to_the_resource_metadata() {
    let gw = TestGateway::start();
    let mut anonymous = Client::new(&gw, None);
    let reply = anonymous.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    assert_eq!(reply.status, 401);
    let challenge = &reply.headers["www-authenticate"];
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://")
            && challenge.contains("/.well-known/oauth-protected-resource\""),
        "{challenge}"
    );
    assert_eq!(reply.body["error"]["data"]["code"], "agent.token_invalid");
    let metadata = gw.get("/.well-known/oauth-protected-resource", None);
    assert_eq!(metadata.status, 200);
    assert!(metadata.body["resource"].as_str().is_some_and(|r| r.ends_with("/mcp")));
    assert_eq!(metadata.body["bearer_methods_supported"], json!(["header"]));

    let bad = Client::new(&gw, Some("op_notarealtokennotarealtokennotarealtokenxxx".into()));
    let reply = bad.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}), &[]);
    assert_eq!(reply.status, 401);
    assert!(reply.headers["www-authenticate"].contains("error=\"invalid_token\""));
    assert_eq!(gw.audit_of(&reply).len(), 1, "refusals are audited");
}

#[test]
fn the_anonymous_integration_is_off_by_default_and_narrow_when_on() {
    let gw = TestGateway::builder().anonymous_mcp().start();
    let mut local = Client::new(&gw, None);
    local.initialize();
    let tools = local.tool_names();
    assert!(tools.contains(&"test_simple_text".to_string()), "{tools:?}");
    assert!(
        !tools.iter().any(|t| t.starts_with("transaction.")),
        "its own narrow grants: {tools:?}"
    );
    let text = local.call("test_simple_text", json!({}), json!({}));
    assert_eq!(
        text["content"][0]["text"],
        "This is a simple text response for testing."
    );
    let refused = local.call("transaction.list", json!({"ledgerId": "ledger_main"}), json!({}));
    assert_eq!(refused["structuredContent"]["code"], "agent.scope_denied");
    let event = gw
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.tool.as_deref() == Some("test_simple_text"))
        .expect("audited like any other call");
    assert_eq!(event.key_id.as_deref(), Some("anonymous-loopback"));
    assert_eq!(event.details["authentication"], "anonymous-loopback");
    // The REST routes never accept anonymous callers.
    gw.get("/api/agent/v1/manifest", None)
        .expect(401, "agent.token_invalid");

    // Revoking the app turns anonymous access off.
    let app = gw.app_id(openport::demo::MCP_LOCAL_APP);
    gw.admin_post(
        &format!("/api/agent-admin/v1/apps/{app}/revoke"),
        Some(&gw.admin_token("operator")),
        &json!({}),
    );
    let reply = local.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}), &[]);
    assert_eq!(reply.status, 401);
}

#[test]
fn dns_rebinding_sessions_and_protocol_faults_get_stable_answers() {
    let gw = TestGateway::start();
    let mut agent = Client::new(&gw, Some(gw.full()));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    // A page on another origin, or a rebound host name, is refused before anything runs.
    let evil = agent.send(&init, &[("Origin", "http://evil.example.com")]);
    assert_eq!(evil.status, 403);
    assert_eq!(
        evil.body["error"]["data"]["details"]["reason"],
        "dns_rebinding_protection"
    );
    let rebound = agent.send(&init, &[("Host", "evil.example.com")]);
    assert_eq!(rebound.status, 403);
    let local = agent.send(&init, &[("Origin", "http://localhost:3000")]);
    assert_eq!(local.status, 200);
    assert_eq!(
        local.body["result"]["protocolVersion"], "2025-06-18",
        "the client's version is kept"
    );

    // Requests after initialize need the session; an unknown one is 404.
    let no_session = agent.request("tools/list", json!({}));
    assert_eq!(no_session.status, 400);
    agent.session = Some("mcs_00000000000000000000000000".into());
    assert_eq!(agent.request("tools/list", json!({})).status, 404);
    agent.session = None;
    agent.initialize();
    let other = Client {
        gw: &gw,
        token: Some(gw.token("Read-only Reporter")),
        session: agent.session.clone(),
        next_id: 1,
    };
    let stolen = other.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}), &[]);
    assert_eq!(stolen.status, 404, "a session belongs to the credential that opened it");

    // Protocol faults are JSON-RPC errors.
    let parse = gw.send_with("POST", "/mcp", &[("Content-Type", "application/json")], b"{not json");
    assert_eq!(
        (parse.status, parse.body["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let unknown = agent.request("resources/list", json!({}));
    assert_eq!(unknown.body["error"]["code"], -32601);
    let bad_params = agent.request("tools/call", json!({"arguments": {}}));
    assert_eq!(bad_params.body["error"]["code"], -32602);
    assert_eq!(agent.request("ping", json!({})).body["result"], json!({}));

    // GET opens no server stream here; DELETE ends the session.
    let get = gw.send_with("GET", "/mcp", &[], b"");
    assert_eq!(get.status, 405);
    let session = agent.session.clone().expect("session");
    let auth = format!("Bearer {}", gw.full());
    let ended = gw.send_with(
        "DELETE",
        "/mcp",
        &[("Authorization", &auth), ("Mcp-Session-Id", &session)],
        b"",
    );
    assert_eq!(ended.status, 204);
    assert_eq!(agent.request("ping", json!({})).status, 404);
}

#[test]
fn a_call_refused_at_scopes_answers_alike_whatever_preflight_it_names() {
    let gw = TestGateway::start();
    let payload = json!({"ledgerId": "ledger_main", "kind": "expense", "title": "steps", "amount_home": 5});
    let own = gw.post(
        "/api/agent/v1/preflight",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": payload}),
    );
    let own = own.data()["preflightId"].as_str().expect("preflightId").to_string();
    let mut reporter = Client::new(&gw, Some(gw.token("Read-only Reporter")));
    reporter.initialize();
    let results: Vec<Value> = [own.as_str(), "pf_does_not_exist"]
        .iter()
        .map(|id| {
            let mut result = reporter.call("transaction.create", payload.clone(), json!({"preflightId": id}));
            assert_eq!(result["isError"], true, "{result:#}");
            assert_eq!(result["structuredContent"]["code"], "agent.scope_denied", "{result:#}");
            // What differs between any two requests: their ids.
            if let Some(envelope) = result["structuredContent"].as_object_mut() {
                envelope.remove("request_id");
            }
            if let Some(meta) = result["_meta"]["openport"].as_object_mut() {
                meta.remove("requestId");
            }
            result
        })
        .collect();
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_policy_over_a_tools_arguments_hot_reloaded_refuses_over_rest_and_mcp_alike() {
    let gw = TestGateway::start();
    let full = gw.full();
    let urgent = json!({"title": "printer down", "priority": "urgent"});
    let create = |key: &str, payload: &Value| {
        gw.post(
            "/api/agent/v1/actions",
            Some(&full),
            &json!({"action": "ticket.create", "payload": payload, "idempotencyKey": key}),
        )
    };
    create("before", &urgent).expect(200, "common.success");
    gw.reload_with_policy(
        "urgent.cedar",
        "@id(\"no-urgent-tickets\")\nforbid (principal, action in OpenPort::Action::\"ticket.create\", resource)\n\
         when { context has args && context.args has priority && context.args.priority == \"urgent\" };\n",
    )
    .expect(200, "common.success");

    let refused = create("after", &urgent);
    refused.expect(403, "agent.policy_denied");
    assert!(
        !refused.body.to_string().contains("no-urgent-tickets"),
        "the agent is not told the policy"
    );
    assert_eq!(gw.audit_of(&refused)[0].policy_ids, ["no-urgent-tickets"]);
    create("low", &json!({"title": "printer down", "priority": "low"})).expect(200, "common.success");

    let mut client = Client::new(&gw, Some(full.clone()));
    client.initialize();
    let result = client.call("ticket.create", urgent, json!({}));
    assert_eq!(result["isError"], true, "{result:#}");
    assert_eq!(result["structuredContent"]["code"], "agent.policy_denied", "{result:#}");
    let event = gw
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.tool.as_deref() == Some("ticket.create"))
        .expect("the MCP call's event");
    assert_eq!(event.policy_ids, ["no-urgent-tickets"]);
    assert_eq!(event.details["binding"], "mcp");
}

/// A request on the 2026-07-28 stateless wire: no session, the revision in the header and
/// in `_meta` with the client's capabilities, and the routing headers.
fn stateless(gw: &TestGateway, id: u64, method: &str, params: Value, capabilities: Value) -> Reply {
    stateless_as(gw, None, id, method, params, capabilities)
}

fn stateless_as(
    gw: &TestGateway,
    token: Option<&str>,
    id: u64,
    method: &str,
    mut params: Value,
    capabilities: Value,
) -> Reply {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    let name = params["name"]
        .as_str()
        .or(params["taskId"].as_str())
        .unwrap_or_default()
        .to_string();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if !name.is_empty() {
        headers.push(("Mcp-Name", &name));
    }
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    gw.send_with("POST", "/mcp", &headers, message.to_string().as_bytes())
}

#[test]
fn a_read_asks_for_input_over_two_rounds_with_sealed_state_and_every_round_is_audited() {
    let clock = std::sync::Arc::new(openport::clock::ManualClock::new(time::OffsetDateTime::now_utc()));
    let gw = TestGateway::builder().anonymous_mcp().clock(clock.clone()).start();
    let elicit = json!({"elicitation": {}});
    let tool = "test_input_required_result_multi_round";
    let call = |id, extra: Value| {
        let mut params = json!({"name": tool, "arguments": {}});
        if let Value::Object(extra) = extra {
            params.as_object_mut().expect("object").extend(extra);
        }
        stateless(&gw, id, "tools/call", params, elicit.clone())
    };

    let first = call(1, json!({}));
    assert_eq!(first.status, 200, "{:#}", first.body);
    let result = &first.body["result"];
    assert_eq!(result["resultType"], "input_required");
    assert_eq!(result["inputRequests"]["step1"]["method"], "elicitation/create");
    let step1 = result["requestState"].as_str().expect("a sealed state").to_string();
    let event = gw.audit_of(&first).pop().expect("round 1 audited");
    assert_eq!(event.tool.as_deref(), Some(tool));
    assert_eq!(event.details["inputRequests"], json!(["step1"]));

    let answer = |key: &str, content: Value| json!({key: {"action": "accept", "content": content}});
    let second = call(
        2,
        json!({"inputResponses": answer("step1", json!({"name": "Alice"})), "requestState": step1}),
    );
    let step2 = second.body["result"]["requestState"]
        .as_str()
        .expect("round 2 asks again");
    assert_ne!(step2, step1, "each round seals its own state");
    assert_eq!(
        gw.audit_of(&second).pop().expect("round 2 audited").details["inputRequests"],
        json!(["step2"])
    );

    // The state cannot be altered, nor carried to other arguments, a later time or past
    // its expiry.
    let tampered = call(
        3,
        json!({"inputResponses": answer("step2", json!({"color": "blue"})), "requestState": format!("{step2}x")}),
    );
    assert_eq!(tampered.status, 400);
    assert_eq!(tampered.body["error"]["code"], -32602);
    assert_eq!(tampered.body["error"]["data"]["code"], "agent.request_state_invalid");
    let refusal = gw.audit_of(&tampered).pop().expect("the refusal is audited");
    assert_eq!(refusal.code, "agent.request_state_invalid");
    assert_eq!(refusal.status, "denied");
    // Only an authenticated caller is told about the state: anyone else gets the 401.
    let stranger = stateless_as(
        &gw,
        Some("op_not_a_token"),
        6,
        "tools/call",
        json!({"name": tool, "arguments": {}, "requestState": format!("{step2}x")}),
        elicit.clone(),
    );
    assert_eq!(stranger.status, 401, "{:#}", stranger.body);

    let third = call(
        4,
        json!({"inputResponses": answer("step2", json!({"color": "blue"})), "requestState": step2}),
    );
    assert_eq!(third.body["result"]["resultType"], "complete", "{:#}", third.body);
    assert_eq!(third.body["result"]["content"][0]["text"], "Alice likes blue.");

    clock.advance_ms(11 * 60 * 1000);
    let late = call(
        5,
        json!({"inputResponses": answer("step2", json!({"color": "red"})), "requestState": step2}),
    );
    assert_eq!(late.body["error"]["data"]["details"]["reason"], "request_state_expired");
}

#[test]
fn the_stateless_wire_refuses_bad_framing_as_the_revision_says_and_streams_progress() {
    let gw = TestGateway::builder().anonymous_mcp().start();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let listed = stateless(
        &gw,
        1,
        "tools/list",
        json!({"_meta": {"traceparent": traceparent}}),
        json!({}),
    );
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.body["result"]["cacheScope"], "private",
        "lists depend on the credential"
    );
    assert!(listed.body["result"]["ttlMs"].as_u64().is_some());
    let event = gw.audit_of(&listed).pop().expect("audited");
    assert_eq!(
        event.details["traceparent"], traceparent,
        "the trace joins the audit trail"
    );
    // Over REST the W3C header does the same; a malformed one is ignored.
    let read = gw.get_with("/api/agent/v1/ledgers", &gw.full(), &[("traceparent", traceparent)]);
    assert_eq!(
        gw.audit_of(&read).pop().expect("audited").details["traceparent"],
        traceparent
    );
    let bad = gw.get_with("/api/agent/v1/ledgers", &gw.full(), &[("traceparent", "00-zz")]);
    bad.expect(200, "common.success");
    assert!(
        gw.audit_of(&bad)
            .pop()
            .expect("audited")
            .details
            .get("traceparent")
            .is_none()
    );

    // A routing header that disagrees with the body is refused and audited.
    let message = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = [
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
    ];
    let mismatch = gw.send_with("POST", "/mcp", &headers, message.to_string().as_bytes());
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.body["id"], 7);
    assert_eq!(mismatch.body["error"]["code"], -32020);
    let event = gw.audit_of(&mismatch).pop().expect("audited");
    assert_eq!(event.details["reason"], "mcp_framing");

    // A read that needs input the client did not declare it can give is -32021.
    let needs = stateless(
        &gw,
        2,
        "tools/call",
        json!({"name": "test_missing_capability", "arguments": {}}),
        json!({}),
    );
    assert_eq!(needs.status, 400);
    assert_eq!(needs.body["error"]["code"], -32021);
    assert_eq!(
        needs.body["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}})
    );

    // Progress, for a client that gave a token and accepts a stream, precedes the result.
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "test_tool_with_progress", "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "p1"}}});
    let (status, headers, text) = gw.send_url_text(
        "POST",
        &format!("{}/mcp", gw.agent),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "test_tool_with_progress"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    let progress: Vec<f64> = events
        .iter()
        .filter(|e| e["method"] == "notifications/progress")
        .map(|e| e["params"]["progress"].as_f64().expect("progress"))
        .collect();
    assert_eq!(progress, [0.0, 50.0, 100.0]);
    assert_eq!(events.last().expect("a result")["id"], 3);
}

#[test]
fn a_write_that_becomes_a_draft_is_a_durable_task_of_its_key_until_a_reviewer_decides() {
    let gw = TestGateway::start();
    let token = gw.full();
    let tasks = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let propose = |id, title: &str| {
        let params = json!({
            "name": "transaction.create",
            "arguments": {"ledgerId": "ledger_main", "kind": "expense", "title": title, "amount_home": 42},
            "_meta": {"justification": "monthly team lunch"},
        });
        stateless_as(&gw, Some(&token), id, "tools/call", params, tasks.clone())
    };
    let task_call = |token: &str, id, method: &str, task: &str, capabilities: Value| {
        stateless_as(&gw, Some(token), id, method, json!({"taskId": task}), capabilities)
    };

    let created = propose(1, "Team lunch");
    assert_eq!(created.status, 200, "{:#}", created.body);
    let task = &created.body["result"];
    assert_eq!(task["resultType"], "task", "{task:#}");
    assert_eq!(task["status"], "input_required");
    let task_id = task["taskId"].as_str().expect("a task id").to_string();
    assert!(task_id.starts_with("drf_"), "the task is the draft: {task_id}");

    let pending = task_call(&token, 2, "tasks/get", &task_id, tasks.clone());
    let pending = &pending.body["result"];
    assert_eq!(pending["status"], "input_required");
    let review = &pending["inputRequests"]["review"]["params"];
    assert_eq!(review["mode"], "url");
    assert!(
        review["url"].as_str().is_some_and(|u| u.ends_with("/review")),
        "{review:#}"
    );

    // Only the key that proposed it sees it; a client that did not opt in is told what it lacks.
    let op = gw.admin_token("operator");
    let app = gw.app_id("Demo Integration");
    let other = gw.admin_post(
        &format!("/api/agent-admin/v1/apps/{app}/keys"),
        Some(&op),
        &json!({"name": "other"}),
    );
    let other = other.data()["token"].as_str().expect("token").to_string();
    let foreign = task_call(&other, 3, "tasks/get", &task_id, tasks.clone());
    assert_eq!(foreign.body["error"]["code"], -32602, "{:#}", foreign.body);
    let undeclared = task_call(&token, 4, "tasks/get", &task_id, json!({}));
    assert_eq!(undeclared.body["error"]["code"], -32021);
    assert_eq!(
        undeclared.body["error"]["data"]["requiredCapabilities"],
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    );

    // The reviewer approves: the task completes with the execution as its result.
    gw.admin_post(
        &format!("/api/agent-admin/v1/drafts/{task_id}/approve"),
        Some(&gw.admin_token("reviewer")),
        &json!({}),
    )
    .expect(200, "common.success");
    let done = task_call(&token, 5, "tasks/get", &task_id, tasks.clone());
    let done = &done.body["result"];
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["result"]["isError"], false);
    assert_eq!(done["result"]["structuredContent"]["execution"]["status"], "success");

    // The agent withdraws a second draft: it is cancelled, audited, and no longer reviewable.
    let second = propose(6, "Second lunch");
    let second_id = second.body["result"]["taskId"].as_str().expect("a task").to_string();
    let cancel = task_call(&token, 7, "tasks/cancel", &second_id, tasks.clone());
    assert_eq!(cancel.body["result"], json!({"resultType": "complete"}));
    assert_eq!(
        gw.audit_of(&cancel).pop().expect("audited").action,
        "agent.draft.withdraw"
    );
    let cancelled = task_call(&token, 8, "tasks/get", &second_id, tasks.clone());
    assert_eq!(cancelled.body["result"]["status"], "cancelled");
    gw.admin_post(
        &format!("/api/agent-admin/v1/drafts/{second_id}/approve"),
        Some(&gw.admin_token("reviewer")),
        &json!({}),
    )
    .expect(400, "agent.draft_already_final");
    // Cancelling a decided task only acknowledges.
    let again = task_call(&token, 9, "tasks/cancel", &task_id, tasks);
    assert_eq!(again.body["result"]["resultType"], "complete");
}

#[test]
fn a_high_risk_write_asked_to_run_has_its_impact_acknowledged_by_the_clients_human_first() {
    let gw = TestGateway::start();
    gw.set_auto_execute(json!({"high_risk": {"enabled": true, "allowed_actions": ["transaction.delete"]}}))
        .expect(200, "common.success");
    let token = gw.full();
    let call = |id, key: &str, transaction: &str, capabilities: Value, extra: Value| {
        let mut params = json!({
            "name": "transaction.delete",
            "arguments": {"transactionId": transaction},
            "_meta": {"execute": true, "idempotencyKey": key, "justification": "duplicate charge"},
        });
        if let Value::Object(extra) = extra {
            params.as_object_mut().expect("object").extend(extra);
        }
        stateless_as(&gw, Some(&token), id, "tools/call", params, capabilities)
    };
    let elicit = json!({"elicitation": {}});
    let accept = json!({"acknowledge_impact": {"action": "accept", "content": {"acknowledge": true}}});

    // Round one: the impact, computed by the gateway, for the human to acknowledge.
    let first = call(1, "ack-1", "txn_2", elicit.clone(), json!({}));
    let asked = &first.body["result"];
    assert_eq!(asked["resultType"], "input_required", "{asked:#}");
    let question = &asked["inputRequests"]["acknowledge_impact"];
    assert_eq!(question["method"], "elicitation/create");
    assert!(
        question["params"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("Run it now?"))
    );
    assert_eq!(
        gw.audit_of(&first).pop().expect("audited").action,
        "agent.action.preflight"
    );
    let state = asked["requestState"].as_str().expect("sealed").to_string();

    // The state binds these arguments: it cannot acknowledge another transaction's delete.
    let moved = call(
        2,
        "ack-1",
        "txn_1",
        elicit.clone(),
        json!({"inputResponses": accept.clone(), "requestState": state}),
    );
    assert_eq!(moved.body["error"]["data"]["code"], "agent.request_state_invalid");

    // ... nor another idempotency key's: without the acknowledgement it becomes a draft.
    let rekeyed = call(
        7,
        "ack-other",
        "txn_2",
        elicit.clone(),
        json!({"inputResponses": accept.clone(), "requestState": state}),
    );
    assert_eq!(rekeyed.body["result"]["structuredContent"]["status"], "draft");

    // Round two, accepted: the call runs, bound to the preflight the human saw.
    let second = call(
        3,
        "ack-1",
        "txn_2",
        elicit.clone(),
        json!({"inputResponses": accept, "requestState": state}),
    );
    let ran = &second.body["result"];
    assert_eq!(ran["resultType"], "complete");
    assert_eq!(ran["structuredContent"]["status"], "executed", "{ran:#}");

    // Declined, nothing runs: the write is a draft for a reviewer, as without a preflight.
    let again = call(4, "ack-2", "txn_1", elicit, json!({}));
    let state = again.body["result"]["requestState"]
        .as_str()
        .expect("sealed")
        .to_string();
    let declined = call(
        5,
        "ack-2",
        "txn_1",
        json!({"elicitation": {}}),
        json!({"inputResponses": {"acknowledge_impact": {"action": "decline"}}, "requestState": state}),
    );
    assert_eq!(
        declined.body["result"]["structuredContent"]["status"], "draft",
        "{:#}",
        declined.body
    );

    // A client that cannot ask its human gets the draft at once.
    let silent = call(6, "ack-3", "txn_1", json!({}), json!({}));
    assert_eq!(silent.body["result"]["structuredContent"]["status"], "draft");
}

#[test]
fn a_long_read_goes_on_as_a_task_of_its_key_that_asks_answers_and_cancels_audited() {
    let gw = TestGateway::builder().anonymous_mcp().start();
    let tasks = json!({"elicitation": {}, "extensions": {"io.modelcontextprotocol/tasks": {}}});
    let call = |id, name: &str, arguments: Value, capabilities: &Value| {
        stateless(
            &gw,
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
            capabilities.clone(),
        )
    };
    let on_task = |id, method: &str, params: Value| stateless(&gw, id, method, params, tasks.clone());
    let settled = |task: &str| -> Value {
        for attempt in 0..100 {
            let got = on_task(1000 + attempt, "tasks/get", json!({"taskId": task}));
            let status = got.body["result"]["status"].as_str().unwrap_or_default().to_string();
            if ["completed", "failed", "cancelled", "input_required"].contains(&status.as_str()) {
                return got.body["result"].clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("task {task} did not settle");
    };

    // The manifest lists it, so tools/list says so.
    let listed = stateless(&gw, 1, "tools/list", json!({}), tasks.clone());
    let slow = listed.body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "slow_compute")
        .expect("slow_compute listed")
        .clone();
    assert_eq!(slow["execution"]["taskSupport"], "optional");

    // A client that takes tasks gets one, stored before it is answered, and its result.
    let created = call(2, "slow_compute", json!({"seconds": 1, "label": "report"}), &tasks);
    let task = &created.body["result"];
    assert_eq!(task["resultType"], "task", "{:#}", created.body);
    assert_eq!(task["status"], "working");
    assert!(task.get("result").is_none() && task.get("requestState").is_none());
    let id = task["taskId"].as_str().expect("an id").to_string();
    assert!(id.starts_with("tsk_"), "{id}");
    assert_eq!(
        gw.audit_of(&created).pop().expect("audited").details["taskId"],
        id.as_str()
    );
    let at_once = on_task(3, "tasks/get", json!({"taskId": id}));
    assert_eq!(at_once.body["result"]["taskId"], id.as_str());
    let done = settled(&id);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["result"]["content"][0]["text"], "Computed report in 1 s.");
    assert!(
        done["result"]
            .get("_meta")
            .is_some_and(|m| m.get("io.modelcontextprotocol/related-task").is_none())
    );

    // A client that does not take tasks gets the answer inline; a tool that runs only as a
    // task is refused before it runs.
    let plain = json!({});
    let inline = call(4, "slow_compute", json!({"seconds": 0}), &plain);
    assert_eq!(inline.body["result"]["resultType"], "complete");
    let refused = call(5, "failing_job", json!({}), &plain);
    assert_eq!(refused.body["error"]["code"], -32021, "{:#}", refused.body);
    assert_eq!(
        refused.body["error"]["data"]["requiredCapabilities"],
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    );

    // The tool's own error completes the task with an error result; a crash fails it.
    let failing = call(6, "failing_job", json!({}), &tasks);
    let failing = settled(failing.body["result"]["taskId"].as_str().expect("a task"));
    assert_eq!(failing["status"], "completed");
    assert_eq!(failing["result"]["isError"], true);
    let crash = call(7, "protocol_error_job", json!({}), &tasks);
    let crash = settled(crash.body["result"]["taskId"].as_str().expect("a task"));
    assert_eq!(crash["status"], "failed", "{crash:#}");
    assert_eq!(crash["error"]["data"]["code"], "agent.execution_failed");
    assert!(crash.get("result").is_none());

    // A task that asks waits for every answer, then runs again with them.
    let asks = call(8, "multi_input", json!({}), &tasks);
    let asks = asks.body["result"]["taskId"].as_str().expect("a task").to_string();
    let parked = settled(&asks);
    assert_eq!(parked["status"], "input_required");
    let mut pending: Vec<&String> = parked["inputRequests"].as_object().expect("requests").keys().collect();
    pending.sort();
    assert_eq!(pending, ["confirm", "name"]);
    let answer = |id, key: &str, content: Value| {
        on_task(
            id,
            "tasks/update",
            json!({"taskId": asks, "inputResponses": {key: {"action": "accept", "content": content},
                                                     "not_asked": {"action": "accept"}}}),
        )
    };
    let ack = answer(9, "name", json!({"name": "Ada"}));
    assert_eq!(ack.body["result"], json!({"resultType": "complete"}));
    assert_eq!(gw.audit_of(&ack).pop().expect("audited").action, "agent.task.update");
    let half = on_task(10, "tasks/get", json!({"taskId": asks}));
    assert_eq!(half.body["result"]["status"], "input_required");
    assert_eq!(
        half.body["result"]["inputRequests"]
            .as_object()
            .expect("requests")
            .keys()
            .collect::<Vec<_>>(),
        ["confirm"]
    );
    answer(11, "confirm", json!({"confirm": true}));
    let answered = settled(&asks);
    assert_eq!(
        answered["result"]["content"][0]["text"],
        "Ada answered; confirmed: true."
    );

    // Only its key sees a task; cancelling stops it, and a finished one only acknowledges.
    let long = call(12, "slow_compute", json!({"seconds": 60}), &tasks);
    let long = long.body["result"]["taskId"].as_str().expect("a task").to_string();
    let foreign = stateless_as(
        &gw,
        Some(&gw.full()),
        13,
        "tasks/get",
        json!({"taskId": long}),
        tasks.clone(),
    );
    assert_eq!(foreign.body["error"]["code"], -32602, "{:#}", foreign.body);
    let cancel = on_task(14, "tasks/cancel", json!({"taskId": long}));
    assert_eq!(cancel.body["result"], json!({"resultType": "complete"}));
    assert_eq!(settled(&long)["status"], "cancelled");
    let again = on_task(15, "tasks/cancel", json!({"taskId": id}));
    assert_eq!(again.body["result"], json!({"resultType": "complete"}));
    assert_eq!(settled(&id)["status"], "completed");

    // A task that asks for input its client did not declare it can give fails at once.
    let no_elicitation = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    let mute = call(15, "confirm_delete", json!({"filename": "x"}), &no_elicitation);
    let mute = settled(mute.body["result"]["taskId"].as_str().expect("a task"));
    assert_eq!(mute["status"], "failed", "{mute:#}");
    assert_eq!(mute["error"]["data"]["code"], "agent.input_required");

    // A call blocked in a host call (a WASI sleep) is stopped at its deadline anyway.
    let started = std::time::Instant::now();
    let slept = call(16, "slow_compute", json!({"seconds": 30}), &plain);
    assert_eq!(
        slept.body["result"]["structuredContent"]["code"],
        "agent.plugin_timeout"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // One key runs at most 4 tasks at once: a fifth call goes on inline (here, past its
    // 1 s budget).
    let running: Vec<String> = (0..4)
        .map(|i| {
            let created = call(20 + i, "slow_compute", json!({"seconds": 60}), &tasks);
            created.body["result"]["taskId"].as_str().expect("a task").to_string()
        })
        .collect();
    let fifth = call(30, "slow_compute", json!({"seconds": 60}), &tasks);
    assert_eq!(fifth.body["result"]["resultType"], "complete", "{:#}", fifth.body);
    assert_eq!(
        fifth.body["result"]["structuredContent"]["code"],
        "agent.plugin_timeout"
    );
    for task in &running {
        on_task(31, "tasks/cancel", json!({"taskId": task}));
    }

    // Every transition is in the audit trail.
    let actions: Vec<String> = gw
        .audit()
        .into_iter()
        .filter(|e| {
            e.details
                .get("taskId")
                .is_some_and(|t| t == id.as_str() || t == asks.as_str())
        })
        .map(|e| e.action)
        .collect();
    for action in ["agent.task.completed", "agent.task.input_required", "agent.task.update"] {
        assert!(actions.iter().any(|a| a == action), "{action} in {actions:?}");
    }
}

#[test]
fn a_plugins_prompts_are_listed_by_scope_filled_in_and_a_missing_argument_is_asked_for() {
    let gw = TestGateway::builder().anonymous_mcp().start();
    let elicit = json!({"elicitation": {}});
    let get = |id, params: Value, capabilities: &Value| stateless(&gw, id, "prompts/get", params, capabilities.clone());

    let listed = stateless(&gw, 1, "prompts/list", json!({}), elicit.clone());
    let names: Vec<&str> = listed.body["result"]["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"test_prompt_with_arguments"), "{names:?}");
    assert_eq!(listed.body["result"]["cacheScope"], "private");

    let filled = get(
        2,
        json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "hello", "arg2": "world"}}),
        &elicit,
    );
    assert_eq!(
        filled.body["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='hello', arg2='world'"
    );
    let event = gw.audit_of(&filled).pop().expect("audited");
    assert_eq!(event.action, "agent.prompt.get");
    assert_eq!(event.details["prompt"], "test_prompt_with_arguments");

    // A required argument left out is asked for, once; without elicitation it is invalid.
    let asked = get(3, json!({"name": "test_input_required_result_prompt"}), &elicit);
    let asked = &asked.body["result"];
    assert_eq!(asked["resultType"], "input_required", "{asked:#}");
    let question = &asked["inputRequests"]["arguments"]["params"];
    assert_eq!(question["message"], "What context should the prompt use?");
    let answered = get(
        4,
        json!({"name": "test_input_required_result_prompt",
               "inputResponses": {"arguments": {"action": "accept", "content": {"context": "Q3 close"}}}}),
        &elicit,
    );
    assert_eq!(
        answered.body["result"]["messages"][0]["content"]["text"],
        "Use this context: Q3 close"
    );
    let declined = get(
        5,
        json!({"name": "test_input_required_result_prompt",
               "inputResponses": {"arguments": {"action": "decline"}}}),
        &elicit,
    );
    assert_eq!(declined.body["error"]["code"], -32602, "{:#}", declined.body);
    let blind = get(6, json!({"name": "test_input_required_result_prompt"}), &json!({}));
    assert_eq!(
        blind.body["error"]["data"]["details"]["missingArguments"],
        json!(["context"])
    );
    let unknown_argument = get(
        7,
        json!({"name": "test_simple_prompt", "arguments": {"x": "y"}}),
        &elicit,
    );
    assert_eq!(unknown_argument.body["error"]["code"], -32602);

    // An app without the prompts' scope neither lists nor gets them.
    let reporter = gw.token("Read-only Reporter");
    let hidden = stateless_as(&gw, Some(&reporter), 8, "prompts/list", json!({}), elicit.clone());
    assert_eq!(hidden.body["result"]["prompts"], json!([]), "{:#}", hidden.body);
    let denied = stateless_as(
        &gw,
        Some(&reporter),
        9,
        "prompts/get",
        json!({"name": "test_simple_prompt"}),
        elicit.clone(),
    );
    assert_eq!(denied.body["error"]["code"], -32602);
    assert_eq!(denied.body["error"]["data"]["code"], "agent.not_found");

    // The session wire serves them too, and refuses a missing argument.
    let mut client = Client::new(&gw, None);
    client.initialize();
    let simple = client.request("prompts/get", json!({"name": "test_simple_prompt"}));
    assert_eq!(
        simple.body["result"]["messages"][0]["content"]["text"],
        "This is a simple prompt for testing."
    );
    let missing = client.request("prompts/get", json!({"name": "test_prompt_with_arguments"}));
    assert_eq!(missing.body["error"]["code"], -32602);
}
