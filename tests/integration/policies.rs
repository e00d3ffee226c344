//! The shipped policy sets and their scenarios: every example is exercised.

use std::path::{Path, PathBuf};

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Every `scenarios.json` under `policies/`.
fn scenario_files() -> Vec<PathBuf> {
    let mut files = vec![policies().join("scenarios.json")];
    for entry in std::fs::read_dir(policies().join("examples")).expect("examples") {
        let dir = entry.expect("entry").path();
        let file = dir.join("scenarios.json");
        assert!(file.exists(), "example `{}` has no scenarios.json", dir.display());
        files.push(file);
    }
    files
}

#[test]
fn every_shipped_scenario_holds_on_the_slice_and_the_whole_set() {
    let files = scenario_files();
    assert!(files.len() >= 7, "the base set and six examples");
    let mut count = 0;
    for file in files {
        let (scenarios, authz) = openport::authz::scenarios::load(&file).unwrap_or_else(|e| panic!("{e}"));
        for outcome in openport::authz::scenarios::run(&scenarios, &authz) {
            assert!(
                outcome.failure.is_none(),
                "{}: {}: {:?}",
                file.display(),
                outcome.name,
                outcome.failure
            );
            count += 1;
        }
    }
    assert!(count >= 20, "{count} scenarios");
}

#[test]
fn the_policy_test_command_reports_each_scenario() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args(["policy", "test"])
        .args(scenario_files())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.lines().last().is_some_and(|l| l.ends_with("passed, 0 failed")),
        "{stdout}"
    );
}

#[test]
fn a_scenario_that_expects_the_wrong_decision_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let text = std::fs::read_to_string(policies().join("scenarios.json")).expect("read");
    let mut file_json: serde_json::Value = serde_json::from_str(&text).expect("json");
    // The same file elsewhere: its directories made absolute, one expectation flipped.
    file_json["policy_dirs"] = serde_json::json!([policies()]);
    file_json["policy_files"] = serde_json::json!([policies().join("../plugins/ledger/policies.cedar")]);
    let first_allow = file_json["scenarios"]
        .as_array_mut()
        .expect("scenarios")
        .iter_mut()
        .find(|s| s["expect"]["decision"] == "allow")
        .expect("an allowed scenario");
    first_allow["expect"]["decision"] = "deny".into();
    let file = dir.path().join("scenarios.json");
    std::fs::write(&file, file_json.to_string()).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args(["policy", "test"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("decision allow, want deny"), "{stdout}");
    assert!(
        stdout.contains("passed, 1 failed"),
        "only the flipped scenario fails: {stdout}"
    );
    // The failure shows the request as Cedar received it (running it for real, item 5).
    for part in [
        "Cedar received",
        "\"principal\": \"OpenPort::App::",
        "\"action\": \"OpenPort::Action::",
        "\"context\"",
    ] {
        assert!(stdout.contains(part), "{part} in {stdout}");
    }
}

mod arguments {
    use serde_json::json;

    use crate::support::TestGateway;

    #[test]
    fn a_warning_passes_only_with_an_operators_reason_which_the_audit_keeps() {
        let gw = TestGateway::start();
        let policy = |annotation: &str| {
            format!(
                "{annotation}\n@id(\"export-freeze\")\n\
                 forbid (principal, action in OpenPort::Action::\"ticket.create\", resource) when {{ false }};\n"
            )
        };
        let refused = gw.reload_with_policy("freeze.cedar", &policy(""));
        refused.expect(400, "common.validation");
        assert!(refused.body.to_string().contains("export-freeze"), "{:#}", refused.body);
        let accepted = gw.reload_with_policy(
            "freeze.cedar",
            &policy("@allow_warning(\"frozen until the export review\")"),
        );
        accepted.expect(200, "common.success");
        let event = gw
            .audit()
            .into_iter()
            .rev()
            .find(|e| e.action == "gateway.reload")
            .expect("the reload is audited");
        assert_eq!(event.details["allowedWarnings"][0]["policy"], "export-freeze");
        assert_eq!(
            event.details["allowedWarnings"][0]["reason"],
            "frozen until the export review"
        );
    }

    #[test]
    fn a_typo_is_refused_at_reload_naming_file_line_policy_and_field_and_the_old_set_keeps_serving() {
        let gw = TestGateway::start();
        let before = gw.server.gateway.authorizer().policy_ids().to_vec();
        let refused = gw.reload_with_policy(
            "typo.cedar",
            "@id(\"typo\")\nforbid (principal, action in OpenPort::Action::\"ticket.create\", resource)\n\
             when { context has args && context.args.priorty == \"urgent\" };\n",
        );
        refused.expect(400, "common.validation");
        let message = refused.body["details"]["issues"][0]["message"]
            .as_str()
            .expect("message")
            .to_string();
        for needle in ["typo.cedar", "line 3", "`typo`", "priorty", "did you mean `priority`?"] {
            assert!(message.contains(needle), "`{needle}` in {message}");
        }
        assert_eq!(
            gw.server.gateway.authorizer().policy_ids(),
            before,
            "the old set serves"
        );
        let audit = gw.audit();
        let event = audit
            .iter()
            .rev()
            .find(|e| e.action == "gateway.reload")
            .expect("audited");
        assert_eq!(event.code, "common.validation");
    }

    #[test]
    fn a_plugin_whose_tool_a_policy_names_is_not_removed_and_a_shadow_policy_is_recorded_never_enforced() {
        let gw = TestGateway::start();
        let operator = gw.admin_token("operator");
        // The demo's `tool-arguments.cedar` names ticket.create.
        let removal = gw.admin_delete("/api/agent-admin/v1/plugins/tickets", Some(&operator));
        assert_ne!(removal.status, 200, "{:#}", removal.body);
        assert!(removal.body.to_string().contains("ticket.create"), "{:#}", removal.body);
        assert!(
            gw.server.gateway.catalog().tool("ticket.create").is_some(),
            "still served"
        );

        // `demo.ledger.large-transactions` is a shadow forbid: the call is a draft, and
        // the audit event and the metric say the policy would have refused it.
        let big = gw.post(
            "/api/agent/v1/actions",
            Some(&gw.full()),
            &json!({"action": "transaction.create", "idempotencyKey": "big",
                    "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": "big", "amount_home": 50000}}),
        );
        big.expect(200, "common.success");
        let event = gw.audit_of(&big).into_iter().last().expect("event");
        assert_eq!(event.details["shadow"]["allowed"], false, "{:#}", event.details);
        assert_eq!(
            event.details["shadow"]["policyIds"],
            json!(["demo.ledger.large-transactions"])
        );
        let metrics = gw.admin_text("/api/agent-admin/v1/metrics", &operator);
        assert!(
            metrics.contains("openport_policy_shadow_disagreements_total{policy=\"demo.ledger.large-transactions\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn policy_schema_and_explain_show_a_tools_arguments() {
        let gw = TestGateway::start();
        let config = gw.dir.path().join("openport.toml");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
                .args(args)
                .output()
                .expect("run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let config = config.to_str().expect("utf-8");
        let schema = run(&["policy", "schema", "--config", config]);
        assert!(
            schema.contains("action \"ticket.create/propose\" in [Action::\"ticket.create\", Action::\"propose\"]"),
            "{schema}"
        );
        assert!(schema.contains("priority?: __cedar::String"), "{schema}");
        let json_schema: serde_json::Value =
            serde_json::from_str(&run(&["policy", "schema", "--config", config, "--format", "json"])).expect("json");
        assert!(json_schema["OpenPort"]["actions"]["transaction.create/propose"].is_object());
        let question = gw.dir.path().join("question.json");
        std::fs::write(
            &question,
            json!({"principal": {"app": "app_x", "tenant": "org_demo", "scopes": ["ticket.write"]},
                   "tool": "ticket.create", "action": "propose",
                   "context": {"args": {"title": "my password is hunter2"}}})
            .to_string(),
        )
        .expect("question");
        let report: serde_json::Value = serde_json::from_str(&run(&[
            "policy",
            "explain",
            "--config",
            config,
            "--request",
            question.to_str().expect("utf-8"),
        ]))
        .expect("json");
        assert_eq!(report["decision"], "deny");
        assert_eq!(
            report["determiningPolicies"],
            json!(["demo.tickets.no-secrets-in-titles"])
        );
        let matching: Vec<&str> = report["matchingPolicies"]
            .as_array()
            .expect("list")
            .iter()
            .map(|p| p["id"].as_str().expect("id"))
            .collect();
        assert!(
            matching.contains(&"base.scoped-tools") && matching.contains(&"demo.tickets.no-secrets-in-titles"),
            "{report:#}"
        );
    }

    #[test]
    fn app_tags_set_over_the_admin_api_are_seen_by_policies() {
        let gw = TestGateway::start();
        let operator = gw.admin_token("operator");
        let app = gw.app_id("Demo Integration");
        gw.reload_with_policy(
            "sandbox.cedar",
            "@id(\"sandbox-apps-do-not-write\")\nforbid (principal, action in OpenPort::Action::\"propose\", resource)\n\
             when { principal.hasTag(\"environment\") && principal.getTag(\"environment\") == \"sandbox\" };\n",
        )
        .expect(200, "common.success");
        let propose = |key: &str| {
            gw.post(
                "/api/agent/v1/actions",
                Some(&gw.full()),
                &json!({"action": "ticket.create", "payload": {"title": "t"}, "idempotencyKey": key}),
            )
        };
        propose("untagged").expect(200, "common.success");
        let set = gw.send_url(
            "PUT",
            &format!("{}/api/agent-admin/v1/apps/{app}/tags", gw.admin),
            Some(&operator),
            Some("application/json"),
            json!({"tags": {"environment": "sandbox", "department": "support"}})
                .to_string()
                .as_bytes(),
        );
        set.expect(200, "common.success");
        assert_eq!(set.data()["tags"]["environment"], "sandbox");
        let refused = propose("tagged");
        refused.expect(403, "agent.policy_denied");
        assert_eq!(gw.audit_of(&refused)[0].policy_ids, ["sandbox-apps-do-not-write"]);
        // A bad tag is refused and changes nothing.
        let bad = gw.send_url(
            "PUT",
            &format!("{}/api/agent-admin/v1/apps/{app}/tags", gw.admin),
            Some(&operator),
            Some("application/json"),
            json!({"tags": {"Bad Key": "x"}}).to_string().as_bytes(),
        );
        assert_eq!(bad.status, 400, "{:#}", bad.body);
        propose("still-tagged").expect(403, "agent.policy_denied");
    }

    #[test]
    fn explain_by_request_id_replays_an_answered_request_from_its_audit_event() {
        let gw = TestGateway::builder().audit_config("capture = \"redacted\"").start();
        gw.reload_with_policy(
            "urgent.cedar",
            "@id(\"no-urgent-tickets\")\nforbid (principal, action in OpenPort::Action::\"ticket.create\", resource)\n\
             when { context has args && context.args has priority && context.args.priority == \"urgent\" };\n",
        )
        .expect(200, "common.success");
        let refused = gw.post(
            "/api/agent/v1/actions",
            Some(&gw.full()),
            &json!({"action": "ticket.create", "payload": {"title": "t", "priority": "urgent"}, "idempotencyKey": "x"}),
        );
        refused.expect(403, "agent.policy_denied");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
            .args(["policy", "explain", "--config"])
            .arg(gw.dir.path().join("openport.toml"))
            .args(["--request-id", &refused.request_id()])
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["decision"], "deny", "{report:#}");
        assert_eq!(report["action"], "ticket.create/propose");
        assert_eq!(report["determiningPolicies"], json!(["no-urgent-tickets"]));
    }
}
