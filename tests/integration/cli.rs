use std::process::Command;

use serde_json::json;

use crate::support::{TestGateway, copy_data_dir};

fn openport() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openport"))
}

#[test]
fn a_bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\nport = 9\n[store]\npath = \"x.db\"\n",
    )
    .expect("write");
    let out = openport().args(["check", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.port") && stderr.contains("unknown field"),
        "{stderr}"
    );
}

#[test]
fn check_validates_config_policies_and_plugins() {
    let gw = TestGateway::start();
    let config = gw.dir.path().join("openport.toml");
    let out = openport()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 plugins, 36 tools"));

    std::fs::write(
        gw.dir.path().join("policies/broken.cedar"),
        "permit (principal, action, resource) when { nonsense };",
    )
    .expect("write");
    let out = openport()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn audit_tail_and_verify_read_the_store() {
    let gw = TestGateway::start();
    let reply = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
    let out = openport()
        .args(["audit", "tail", "-n", "1", "--data-dir"])
        .arg(gw.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["request_id"].as_str(), Some(reply.request_id().as_str()));
    let out = openport()
        .args(["audit", "verify", "--data-dir"])
        .arg(gw.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn audit_query_filters_and_export_writes_json_lines() {
    let gw = TestGateway::start();
    gw.get("/api/agent/v1/ledgers", Some(&gw.full()))
        .expect(200, "common.success");
    gw.get("/api/agent/v1/ledgers", None).expect(401, "agent.token_invalid");
    let out = openport()
        .args(["audit", "query", "--code", "agent.token_invalid", "--data-dir"])
        .arg(gw.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["code"], "agent.token_invalid");

    let file = gw.dir.path().join("export.jsonl");
    let out = openport()
        .args(["audit", "export", "--tool", "ledger.list", "--out"])
        .arg(&file)
        .arg("--data-dir")
        .arg(gw.dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).expect("export");
    let tools: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line")["tool"].to_string())
        .collect();
    assert_eq!(tools, ["\"ledger.list\""]);
}

/// Running it for real, item 6: audit query arguments that mean nothing exit 64 with a
/// message; times may be relative; `--app` takes a name.
#[test]
fn audit_query_refuses_meaningless_filters_and_takes_relative_times_and_app_names() {
    let gw = TestGateway::start();
    let reply = gw.get("/api/agent/v1/ledgers", Some(&gw.full()));
    reply.expect(200, "common.success");
    let query = |args: &[&str]| {
        openport()
            .args(["audit", "query"])
            .args(args)
            .arg("--data-dir")
            .arg(gw.dir.path())
            .output()
            .expect("run")
    };
    for (args, says) in [
        (&["--since", "yesterday"][..], "RFC 3339"),
        (&["--until", "last week"][..], "-1h"),
        (&["--code", "policy_denied"][..], "agent.policy_denied"),
        (&["--app", "No Such App"][..], "no app has the id or name"),
    ] {
        let out = query(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let lines = |out: std::process::Output| -> Vec<serde_json::Value> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    let recent = lines(query(&[
        "--since",
        "-1h",
        "--app",
        "Demo Integration",
        "--tool",
        "ledger.list",
    ]));
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["request_id"].as_str(), Some(reply.request_id().as_str()));
    assert!(lines(query(&["--until", "-1h", "--tool", "ledger.list"])).is_empty());
}

/// `openport demo` as a child process on free loopback ports, ready to serve.
struct DemoProcess {
    child: std::process::Child,
    dir: tempfile::TempDir,
    agent: String,
    admin: String,
}

impl DemoProcess {
    fn start() -> DemoProcess {
        DemoProcess::start_in(tempfile::tempdir().expect("dir"))
    }

    /// Starts the demo on an existing data directory (a restart).
    fn start_in(dir: tempfile::TempDir) -> DemoProcess {
        let data_dir = dir.path().to_path_buf();
        DemoProcess::spawn(dir, &data_dir, None)
    }

    /// Starts `openport demo --data-dir DATA_DIR` (resolved against `cwd` when given) and
    /// waits until it answers; `dir` lives as long as the process.
    fn spawn(dir: tempfile::TempDir, data_dir: &std::path::Path, cwd: Option<&std::path::Path>) -> DemoProcess {
        // A port found free here can be taken by another test's process before the demo
        // binds it: the demo then exits, and another gateway may answer on the agent port.
        // So the demo counts as started only while it runs and both of its ports answer;
        // one that exited is started again on other ports.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port()
        };
        let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        for _ in 0..5 {
            let (a, b) = (free(), free());
            let mut command = openport();
            if let Some(cwd) = cwd {
                command.current_dir(cwd);
            }
            let mut child = command
                .args(["demo", "--data-dir"])
                .arg(data_dir)
                .args([
                    "--listen",
                    &format!("127.0.0.1:{a}"),
                    "--admin-listen",
                    &format!("127.0.0.1:{b}"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn");
            let agent = format!("http://127.0.0.1:{a}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                if child.try_wait().expect("child").is_some() {
                    break;
                }
                if client.get(&format!("{agent}/healthz")).call().is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", b)).is_ok()
                {
                    return DemoProcess {
                        child,
                        dir,
                        agent,
                        admin: format!("http://127.0.0.1:{b}"),
                    };
                }
                assert!(std::time::Instant::now() < deadline, "the demo did not start");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        panic!("the demo exited on start five times");
    }

    fn credential(&self, kind: &str, name: &str) -> String {
        let creds: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("demo-credentials.json")).expect("creds"))
                .expect("json");
        creds[kind][name].as_str().expect("credential").to_string()
    }

    /// SIGKILL, then hand back the data directory.
    fn crash(mut self) -> tempfile::TempDir {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.dir, dir)
    }

    fn store(&self) -> openport::store::Store {
        openport::store::Store::open(&self.dir.path().join("openport.db")).expect("store")
    }

    /// Every event of the audit trail (the tests' trails are small).
    fn audit_events(&self) -> Vec<openport::store::AuditRow> {
        self.store()
            .audit
            .query(&openport::store::AuditFilter {
                limit: 10_000,
                ..Default::default()
            })
            .expect("events")
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn acknowledged_events_survive_a_crash() {
    let mut demo = DemoProcess::start();
    let dir = demo.dir.path().to_path_buf();
    let a = demo.agent.clone();
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("demo-credentials.json")).expect("creds")).expect("json");
    let token = creds["agent_tokens"]["Demo Integration"]
        .as_str()
        .expect("token")
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut acknowledged = Vec::new();
    for _ in 0..40 {
        let response = agent
            .get(&format!("{a}/api/agent/v1/ledgers"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("answered");
        acknowledged.push(response.headers()["x-request-id"].to_str().expect("id").to_string());
    }
    demo.child.kill().expect("SIGKILL");
    demo.child.wait().expect("reaped");
    let events = demo.audit_events();
    for id in &acknowledged {
        assert!(
            events.iter().any(|e| e.request_id.as_deref() == Some(id.as_str())),
            "acknowledged {id} lost"
        );
    }
    let out = openport()
        .args(["audit", "verify", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn apps_and_keys_are_managed_from_the_cli_through_the_admin_plane() {
    let gw = TestGateway::start();
    let run = |args: &[&str]| {
        let out = openport()
            .args(args)
            .env("OPENPORT_ADMIN_URL", &gw.admin)
            .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("operator"))
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "app",
        "create",
        "--name",
        "cli-app",
        "--scopes",
        "ledger.read,transaction.read",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let (id, token) = (
        created["app"]["id"].as_str().expect("id"),
        created["token"].as_str().expect("token"),
    );
    gw.get("/api/agent/v1/ledgers", Some(token))
        .expect(200, "common.success");
    let (code, _, stderr) = run(&["app", "policy", id, r#"{"data": {"max_days": 99999}}"#]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("common.validation") && stderr.contains("max_days"),
        "{stderr}"
    );
    let (code, _, _) = run(&["app", "revoke", id]);
    assert_eq!(code, Some(0));
    gw.get("/api/agent/v1/ledgers", Some(token))
        .expect(401, "agent.token_invalid");
    let out = openport()
        .args(["app", "list"])
        .env("OPENPORT_ADMIN_URL", &gw.admin)
        .env("OPENPORT_ADMIN_TOKEN", "opa_wrong")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.unauthorized"));
}

#[test]
fn a_changed_policy_file_is_picked_up_without_a_call() {
    let gw = TestGateway::start();
    let token = gw.full();
    let before = gw.get("/api/agent/v1/manifest", Some(&token)).data()["tools"]
        .as_array()
        .map(Vec::len);
    std::fs::write(
        gw.dir.path().join("policies/block.cedar"),
        "@id(\"block-export\")\nforbid (principal, action, resource == OpenPort::Tool::\"transactions.export_csv\");\n",
    )
    .expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = gw.get("/api/agent/v1/manifest", Some(&token)).data()["tools"]
            .as_array()
            .map(Vec::len);
        if now == before.map(|n| n - 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the policy change was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        gw.audit()
            .iter()
            .any(|e| e.action == "gateway.reload" && e.performed_by_user_id.as_deref() == Some("file-watch"))
    );
}

/// A policy file an operator has reloaded is not reloaded again by the file watcher: one
/// change, one reload (and one compile of the set, which takes about 280 ms with 1,000
/// policies).
#[test]
fn a_policy_file_an_operator_reloaded_is_not_reloaded_again() {
    let gw = TestGateway::start();
    let watcher = || {
        crate::support::block_on(gw.server.gateway.reload_changed_files("test"))
            .map(|reloaded| reloaded.map_err(|e| e.to_string()))
    };
    assert_eq!(watcher(), None, "nothing changed since the start");
    std::fs::write(
        gw.dir.path().join("policies/block.cedar"),
        "@id(\"block-export\")\nforbid (principal, action, resource == OpenPort::Tool::\"transactions.export_csv\");\n",
    )
    .expect("write");
    gw.admin_post(
        "/api/agent-admin/v1/policies/reload",
        Some(&gw.admin_token("operator")),
        &json!({}),
    )
    .expect(200, "common.success");
    assert_eq!(watcher(), None, "the operator's reload read the changed file");
}

#[test]
fn sighup_reloads_a_running_gateway() {
    let demo = DemoProcess::start();
    let status = Command::new("kill")
        .args(["-HUP", &demo.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let store = demo.store();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = store
            .audit
            .query(&openport::store::AuditFilter {
                limit: 1000,
                ..Default::default()
            })
            .expect("events");
        if events
            .iter()
            .any(|e| e.action == "gateway.reload" && e.performed_by_user_id.as_deref() == Some("SIGHUP"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload after SIGHUP");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A JSON request to a demo process; returns (status, body).
fn call(method: &str, url: &str, token: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default().into_bytes())
        .expect("request");
    let mut response = agent.run(request).expect("answered");
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json"),
    )
}

/// Loads the slow-write fixture (`plugins/test-slow-write`: one write that loops, one that
/// loops after its effect and resumes) and makes an app that may use it; returns its token.
fn load_slow_writes(demo: &DemoProcess) -> String {
    let operator = demo.credential("admin_tokens", "operator");
    let component = std::path::Path::new(openport::demo::artifacts::ARTIFACT_DIR).join("test_slow_write.wasm");
    let digest = openport::hashing::sha256_hex(&std::fs::read(&component).expect("component"));
    let manifest = demo.dir.path().join("slow.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"slow\"\nversion = \"1\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = {digest:?}\n\
             tools = [\"hostile.slow_write\", \"hostile.resumable_write\"]\nresumable = [\"hostile.resumable_write\"]\n\
             [grants]\nkv = true\n[limits]\ntimeout_ms = 30000\n",
            component.display().to_string()
        ),
    )
    .expect("manifest");
    let (status, body) = call(
        "POST",
        &format!("{}/api/agent-admin/v1/plugins", demo.admin),
        &operator,
        Some(json!({"manifest": manifest})),
    );
    assert_eq!(status, 200, "{body}");
    let (_, app) = call(
        "POST",
        &format!("{}/api/agent-admin/v1/apps", demo.admin),
        &operator,
        Some(json!({"scope": "workspace", "name": "w", "scopes": ["hostile.use"]})),
    );
    app["data"]["token"].as_str().expect("token").to_string()
}

/// Drafts a call of one of the slow-write fixture's tools; returns the app's token, the
/// action (to repeat it) and the draft's id.
fn draft_slow_write(demo: &DemoProcess, tool: &str, key: &str) -> (String, serde_json::Value, String) {
    let token = load_slow_writes(demo);
    let action = json!({"action": tool, "payload": {}, "idempotencyKey": key});
    let (status, drafted) = call(
        "POST",
        &format!("{}/api/agent/v1/actions", demo.agent),
        &token,
        Some(action.clone()),
    );
    assert_eq!(status, 200, "{drafted}");
    let draft_id = drafted["data"]["draft"]["id"].as_str().expect("draft").to_string();
    (token, action, draft_id)
}

/// Sends an action again with its idempotency key; asserts that it was replayed.
fn replayed(demo: &DemoProcess, token: &str, action: serde_json::Value) -> serde_json::Value {
    let (status, replay) = call(
        "POST",
        &format!("{}/api/agent/v1/actions", demo.agent),
        token,
        Some(action),
    );
    assert_eq!(
        (status, replay["code"].as_str()),
        (200, Some("agent.idempotency_replay")),
        "{replay}"
    );
    replay
}

/// Approves a draft in the background and, once its execution runs and `ready` holds of it,
/// kills the gateway (SIGKILL) and starts it again on the same data. Returns the new process
/// and the execution as the killed one left it.
fn crash_during_execution(
    demo: DemoProcess,
    draft_id: &str,
    ready: impl Fn(&openport::store::Store, &openport::store::ExecutionRecord) -> bool,
) -> (DemoProcess, openport::store::ExecutionRecord) {
    let reviewer = demo.credential("admin_tokens", "reviewer");
    let approve_url = format!("{}/api/agent-admin/v1/drafts/{draft_id}/approve", demo.admin);
    let approving = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let _ = agent
            .post(&approve_url)
            .header("Authorization", &format!("Bearer {reviewer}"))
            .send("{}");
    });
    let store = demo.store();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let execution = loop {
        let latest = store.drafts.latest_execution(draft_id).expect("read");
        if let Some(e) = latest.filter(|e| e.status == openport::store::ExecutionStatus::Running && ready(&store, e)) {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "the execution never got there");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(store);
    let dir = demo.crash();
    let _ = approving.join();
    (DemoProcess::start_in(dir), execution)
}

#[test]
fn a_crash_during_an_execution_leaves_it_indeterminate_until_an_operator_resolves_it() {
    let demo = DemoProcess::start();
    // A write that runs until it is killed, of a plugin that does not record its effects
    // by execution id.
    let (token, action, draft_id) = draft_slow_write(&demo, "hostile.slow_write", "crash-1");
    let (demo, _) = crash_during_execution(demo, &draft_id, |_, _| true);

    // The next start marks it indeterminate and never runs it again.
    let (_, read) = call(
        "GET",
        &format!("{}/api/agent/v1/drafts/{draft_id}", demo.agent),
        &token,
        None,
    );
    assert_eq!(read["data"]["execution"]["status"], "indeterminate", "{read}");
    let execution_id = read["data"]["execution"]["id"].as_str().expect("id").to_string();
    let (status, again) = call(
        "POST",
        &format!("{}/api/agent/v1/actions", demo.agent),
        &token,
        Some(action.clone()),
    );
    assert_eq!(
        (status, again["code"].as_str()),
        (500, Some("agent.execution_indeterminate")),
        "{again}"
    );
    let events = demo.audit_events();
    assert!(events.iter().any(
        |e| e.action == "agent.execution.indeterminate" && e.execution_id.as_deref() == Some(execution_id.as_str())
    ));

    // An operator checks the application and records the outcome.
    let out = openport()
        .args([
            "executions",
            "resolve",
            &execution_id,
            "--outcome",
            "failed",
            "--note",
            "no write reached the app",
        ])
        .env("OPENPORT_ADMIN_URL", &demo.admin)
        .env("OPENPORT_ADMIN_TOKEN", demo.credential("admin_tokens", "operator"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replay = replayed(&demo, &token, action);
    assert_eq!(
        replay["data"]["execution"]["status"], "failed",
        "a failure replays as a failure"
    );
}

#[test]
fn a_crash_after_a_resumable_writes_effect_runs_it_again_with_the_same_execution_id_and_one_effect() {
    let demo = DemoProcess::start();
    let (token, action, draft_id) = draft_slow_write(&demo, "hostile.resumable_write", "resume-1");
    let tenant = demo.store().drafts.get(&draft_id).expect("read").expect("draft").org_id;
    // Killed after the plugin made its effect and recorded it, before it answered. Read
    // through a store opened for each look: a store caches key-value reads, a miss too,
    // and this one is not the writer, so it would never see the record appear.
    let db = demo.dir.path().join("openport.db");
    let recorded = |_: &openport::store::Store, e: &openport::store::ExecutionRecord| {
        openport::store::Store::open(&db)
            .expect("store")
            .kv
            .get("slow", &tenant, &format!("done/{}", e.id))
            .expect("kv")
            .is_some()
    };
    let (demo, killed) = crash_during_execution(demo, &draft_id, recorded);
    assert_eq!(killed.attempts, 1);

    // The next start ran it again, with the same execution id: the plugin answered from its
    // record, so the effect was made once.
    let (_, read) = call(
        "GET",
        &format!("{}/api/agent/v1/drafts/{draft_id}", demo.agent),
        &token,
        None,
    );
    let execution = &read["data"]["execution"];
    assert_eq!(execution["status"], "success", "{read}");
    assert_eq!(execution["id"], killed.id.as_str(), "{read}");
    assert_eq!(execution["attempts"], 2, "{read}");
    assert_eq!(
        execution["result"],
        json!({"executionId": killed.id, "effect": 1}),
        "{read}"
    );
    let store = demo.store();
    let kv = |key: &str| store.kv.get("slow", &tenant, key).expect("kv");
    assert_eq!(kv("effects").as_deref(), Some("1"), "one effect");
    assert_eq!(
        kv(&format!("calls/{}", killed.id)).as_deref(),
        Some("2"),
        "the plugin was called twice"
    );
    let events = demo.audit_events();
    let of_execution: Vec<_> = events
        .iter()
        .filter(|e| e.execution_id.as_deref() == Some(killed.id.as_str()))
        .map(|e| (e.action.as_str(), e.code.as_str(), e.details.get("attempt").cloned()))
        .collect();
    assert!(
        of_execution.contains(&("agent.execution.resumed", "common.success", Some(json!(2)))),
        "{of_execution:?}"
    );
    assert!(
        of_execution.contains(&("agent.action.execute", "common.success", None)),
        "{of_execution:?}"
    );
    assert!(
        !of_execution
            .iter()
            .any(|(action, _, _)| *action == "agent.execution.indeterminate"),
        "{of_execution:?}"
    );
    // The agent's retry with the same key replays the one execution.
    let replay = replayed(&demo, &token, action);
    assert_eq!(replay["data"]["execution"]["id"], killed.id.as_str(), "{replay}");
    assert_eq!(kv("effects").as_deref(), Some("1"));
}

#[test]
fn the_demo_starts_with_a_relative_data_directory() {
    // Regression: a relative `--data-dir` (the README's default, `openport-demo`) made the
    // compiled-code cache path relative, which wasmtime refuses.
    let cwd = tempfile::tempdir().expect("dir");
    let root = cwd.path().to_path_buf();
    let demo = DemoProcess::spawn(cwd, std::path::Path::new("relative-demo"), Some(&root));
    assert!(root.join("relative-demo/demo-credentials.json").exists());
    drop(demo);
}

/// How many ledger transactions carry this title, as the agent sees them.
fn transactions_titled(demo: &DemoProcess, token: &str, title: &str) -> usize {
    let (status, listed) = call(
        "GET",
        &format!(
            "{}/api/agent/v1/transactions?ledgerId=ledger_main&pageSize=200",
            demo.agent
        ),
        token,
        None,
    );
    assert_eq!(status, 200, "{listed}");
    listed["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["title"] == title)
        .count()
}

#[test]
fn sigkill_at_any_point_of_an_execution_never_makes_two_effects() {
    let mut demo = DemoProcess::start();
    let operator = demo.credential("admin_tokens", "operator");
    let (_, app) = call(
        "POST",
        &format!("{}/api/agent-admin/v1/apps", demo.admin),
        &operator,
        Some(
            json!({"scope": "workspace", "name": "crashy", "scopes": ["transaction.read", "transaction.write"],
                    "policy": {"data": {"allow_sensitive_fields": true}}}),
        ),
    );
    let token = app["data"]["token"].as_str().expect("token").to_string();
    let app_id = app["data"]["app"]["id"].as_str().expect("app").to_string();
    let (status, _) = call(
        "PATCH",
        &format!("{}/api/agent-admin/v1/apps/{app_id}/auto-execute", demo.admin),
        &operator,
        Some(json!({"writes": {"enabled": true}})),
    );
    assert_eq!(status, 200);
    // Kill points from before the request is read to after it is answered: the store's
    // reservation, the draft, the execution record, the plugin call and the outcome all
    // fall somewhere in between.
    let mut outcomes = std::collections::BTreeMap::new();
    for (round, delay_us) in [
        0_u64, 150, 300, 450, 600, 800, 1000, 1300, 1700, 2500, 4000, 8000, 20_000,
    ]
    .into_iter()
    .enumerate()
    {
        let title = format!("crash round {round}");
        let body = json!({"action": "transaction.create", "execute": true, "idempotencyKey": format!("crash-{round}"),
                          "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": title, "amount_home": 5}});
        let url = format!("{}/api/agent/v1/actions", demo.agent);
        let sender = {
            let (token, body) = (token.clone(), body.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let _ = agent
                    .post(&url)
                    .header("Authorization", &format!("Bearer {token}"))
                    .send_json(&body);
            })
        };
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        let dir = demo.crash();
        let _ = sender.join();
        demo = DemoProcess::start_in(dir);

        // The same request again, with the same key, after the restart.
        let (status, again) = call(
            "POST",
            &format!("{}/api/agent/v1/actions", demo.agent),
            &token,
            Some(body),
        );
        let effects = transactions_titled(&demo, &token, &title);
        let code = again["code"].as_str().unwrap_or("").to_string();
        match (status, code.as_str()) {
            // Nothing had been stored: it runs now, once.
            (200, "common.success") if again["data"]["replayed"] != true => {
                assert_eq!(again["data"]["status"], "executed", "round {round}: {again}");
                assert_eq!(effects, 1, "round {round}: {again}");
            }
            // Killed after the draft was stored, before its execution was claimed: the same
            // draft comes back (SPEC 6), pending review, and nothing ran.
            (200, "common.success") => {
                assert_eq!(again["data"]["status"], "draft", "round {round}: {again}");
                assert_eq!(again["data"]["draft"]["status"], "draft", "round {round}: {again}");
                assert_eq!(effects, 0, "round {round}: {again}");
            }
            // It had run before the kill (one effect); or it was killed mid-execution and the
            // restart ran it again with its execution id (one effect: the ledger records its
            // effects by execution id, `resumable`); or the kill came between the approval
            // and the write (a failed execution, no effect): replayed as it ended.
            (200, "agent.idempotency_replay") => {
                assert_eq!(again["data"]["status"], "executed", "round {round}: {again}");
                let ran = again["data"]["execution"]["status"] == "success";
                assert_eq!(effects, usize::from(ran), "round {round}: {again}");
            }
            other => panic!("round {round}: unexpected answer {other:?}: {again}"),
        }
        // Whatever the first answer was, asking once more changes nothing.
        let (_, third) = call(
            "POST",
            &format!("{}/api/agent/v1/actions", demo.agent),
            &token,
            Some(
                json!({"action": "transaction.create", "execute": true, "idempotencyKey": format!("crash-{round}"),
                        "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": title, "amount_home": 5}}),
            ),
        );
        assert_eq!(
            transactions_titled(&demo, &token, &title),
            effects,
            "round {round}: {third}"
        );
        let replayed = if again["data"]["replayed"] == true {
            " (replayed)"
        } else {
            ""
        };
        *outcomes.entry(format!("{code}{replayed}")).or_insert(0) += 1;
    }
    // The kill points must have landed on both sides of the execution at least once.
    eprintln!("answers after each kill and restart: {outcomes:?}");
    assert!(outcomes.len() >= 2, "every kill landed in the same place: {outcomes:?}");
}

/// `openport audit verify --data-dir DIR [args]`: its exit code and JSON report.
fn verify_dir(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, serde_json::Value) {
    let out = openport()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("run");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn audit_verify_catches_truncation_wipes_and_rehashed_rewrites_against_signed_checkpoints() {
    // 600 cheap events, one per refused request: no coalescing, no per-address budget.
    let gw = TestGateway::builder()
        .audit_config("coalesce_per_second = 0")
        .config("\n[admission.unauthenticated]\nrequests = 0\nwindow_seconds = 1\n")
        .start();
    for _ in 0..600 {
        gw.get("/api/agent/v1/ledgers", None).expect(401, "agent.token_invalid");
    }
    // The writer signs the head at least every second while events flow: wait for the
    // checkpoint of the last event, in the log outside the database.
    // Through the gateway's store, which indexes its audit journal before it reads: the
    // table alone may still lack the last events.
    let head = || -> i64 {
        let newest = gw
            .server
            .gateway
            .store
            .audit
            .query(&openport::store::AuditFilter {
                limit: 1,
                ..Default::default()
            })
            .expect("head");
        newest.first().map_or(0, |e| e.seq)
    };
    let log = gw.dir.path().join("audit-checkpoints.log");
    let signed = || -> i64 {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|c| c["seq"].as_i64())
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while signed() < head() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of the head within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let last = head();
    assert!(last >= 600, "{last} events");

    let work = tempfile::tempdir().expect("dir");
    let tampered = |name: &str, sql: &str| -> std::path::PathBuf {
        let dir = work.path().join(name);
        copy_data_dir(gw.dir.path(), &dir);
        openport::store::connect(&dir.join("openport.db"))
            .expect("connect")
            .execute_batch(sql)
            .expect("tamper");
        dir
    };

    let (code, report) = verify_dir(&tampered("intact", ""), &[]);
    assert_eq!((code, &report["intact"]), (Some(0), &json!(true)), "{report}");
    assert!(report["checkpoints"].as_u64() > Some(0), "{report}");

    let broken = |report: &serde_json::Value| {
        (
            report["intact"].clone(),
            report["first_broken"]["reason"].clone(),
            report["first_broken"]["seq"].clone(),
        )
    };
    let (code, report) = verify_dir(
        &tampered("last", &format!("DELETE FROM audit_events WHERE seq = {last}")),
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        broken(&report),
        (json!(false), json!("truncated"), json!(last)),
        "{report}"
    );

    let (_, report) = verify_dir(
        &tampered("tail", &format!("DELETE FROM audit_events WHERE seq > {}", last - 500)),
        &[],
    );
    assert_eq!(
        broken(&report),
        (json!(false), json!("truncated"), json!(last - 499)),
        "{report}"
    );

    let (_, report) = verify_dir(&tampered("wiped", "DELETE FROM audit_events"), &[]);
    assert_eq!(
        broken(&report),
        (json!(false), json!("truncated"), json!(1)),
        "{report}"
    );

    // An edit with every later hash recomputed links perfectly; only a signed head sees it.
    let rehashed = tampered("rehashed", "");
    let chain = openport::store::Store::open(&rehashed.join("openport.db"))
        .and_then(|store| store.chain_reader(""))
        .expect("open");
    let mut rows = chain.page(9, 100_000).expect("rows");
    let conn = openport::store::connect(&rehashed.join("openport.db")).expect("connect");
    let mut prev = rows[0].prev_event_hash.clone();
    rows[0].details = json!({"rewritten": true});
    for row in &mut rows {
        row.prev_event_hash = prev.clone();
        row.event_hash = openport::audit::event_hash(row);
        prev = row.event_hash.clone();
        conn.execute(
            "UPDATE audit_events SET details = ?1, prev_event_hash = ?2, event_hash = ?3 WHERE seq = ?4",
            rusqlite::params![row.details.to_string(), row.prev_event_hash, row.event_hash, row.seq],
        )
        .expect("rewrite");
    }
    let (_, report) = verify_dir(&rehashed, &[]);
    assert_eq!(report["first_broken"]["reason"], "rewritten", "{report}");
    let first_bad = report["first_broken"]["seq"].as_i64().expect("seq");
    let detected = report["first_broken"]["detected_at"].as_i64().expect("detected_at");
    assert!(first_bad <= 10 && detected >= 10, "{report}");

    // The attacker also empties the database's checkpoints and the log beside it: a copy of
    // the log kept elsewhere still shows the truncation.
    let elsewhere = work.path().join("kept-elsewhere.log");
    std::fs::copy(&log, &elsewhere).expect("copy the log");
    let thorough = tampered(
        "thorough",
        &format!(
            "DELETE FROM audit_events WHERE seq > {}; DELETE FROM audit_signed_checkpoints;",
            last - 5
        ),
    );
    std::fs::write(thorough.join("audit-checkpoints.log"), "").expect("empty the log");
    let (code, report) = verify_dir(&thorough, &[]);
    assert_eq!(
        code,
        Some(0),
        "with nothing signed left, the links alone hold: {report}"
    );
    let (code, report) = verify_dir(&thorough, &["--checkpoint".as_ref(), elsewhere.as_os_str()]);
    assert_eq!(code, Some(1));
    assert_eq!(
        broken(&report),
        (json!(false), json!("truncated"), json!(last - 4)),
        "{report}"
    );
}

/// Running it for real, item 1: a deployment that is not the demo gets its first admin
/// token offline, on an empty store, and `serve` accepts it.
#[test]
fn the_first_admin_token_is_made_offline_and_serve_accepts_it() {
    let dir = tempfile::tempdir().expect("dir");
    let any = "127.0.0.1:0".parse().expect("addr");
    // The demo's files without its seed: an empty store.
    let config = openport::demo::write_files(dir.path(), any, any, None, any).expect("files");
    let out = openport()
        .args(["admin-token", "create", "--role", "operator", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("opa_"), "only the token on stdout: {token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown only this once"));
    let bad = openport()
        .args(["admin-token", "create", "--role", "root", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(64));

    // A new deployment has no signing key yet either: the first start makes it.
    let key = dir.path().join("audit-signing.key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(dir.path().join("audit-signing.key.pub"));
    let config_path = config.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = openport::Config::load(&config).expect("config");
    let clock: openport::clock::SharedClock = std::sync::Arc::new(openport::clock::SystemClock);
    let server = runtime
        .block_on(openport::Server::start(config, clock))
        .expect("serves");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let answer = |token: &str| {
        agent
            .get(format!("http://{}/api/agent-admin/v1/apps", server.admin_addr))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("answered")
            .status()
            .as_u16()
    };
    assert_eq!(answer(&token), 200);
    assert_eq!(answer("opa_not_a_token_at_all_000000"), 401);
    runtime.block_on(server.stop());
    assert!(key.exists(), "the first start made the signing key");
    // Once the trail has events, a missing key is an error, never a new key.
    std::fs::remove_file(&key).expect("remove the key");
    let again = openport::Config::load(&config_path).expect("config");
    let clock: openport::clock::SharedClock = std::sync::Arc::new(openport::clock::SystemClock);
    let refused = runtime.block_on(openport::Server::start(again, clock));
    assert!(refused.is_err(), "started without its signing key");
}

/// Running it for real, item 3, as an operator types it: `plugin add` uploads from this
/// machine, `versions` lists what the store keeps, `rollback` goes back one.
#[test]
fn plugin_add_uploads_and_rollback_goes_back_from_the_command_line() {
    let gw = TestGateway::start();
    let built = std::path::Path::new(openport::demo::artifacts::ARTIFACT_DIR).join("test_trap.wasm");
    let digest = openport::hashing::sha256_hex(&std::fs::read(&built).expect("read"));
    let manifest = |version: &str| {
        let path = gw.dir.path().join(format!("trap-{version}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"trap\"\nversion = \"{version}\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = \"{digest}\"\ntools = [\"hostile.trap\"]\n",
                built.display().to_string()
            ),
        )
        .expect("write");
        path
    };
    let cli = |args: &[&str]| {
        let out = openport()
            .args(["plugin"])
            .args(args)
            .env("OPENPORT_ADMIN_URL", &gw.admin)
            .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("operator"))
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    for version in ["1.0.0", "2.0.0"] {
        let path = manifest(version);
        cli(&["add", path.to_str().expect("utf-8")]);
    }
    let versions = cli(&["versions", "trap"]);
    assert_eq!(versions["items"].as_array().map(Vec::len), Some(2), "{versions}");
    let back = cli(&["rollback", "trap"]);
    assert_eq!(back["active"]["version"], "1.0.0", "{back}");
    let help = openport().args(["plugin", "rollback", "--help"]).output().expect("run");
    assert!(help.status.success());
}

/// Running it for real, item 7: the log level changes while running, over the admin API
/// (operator), and a filter that is not one is refused without changing anything.
#[test]
fn the_log_level_changes_at_run_time_over_the_admin_api() {
    let demo = DemoProcess::start();
    let op = demo.credential("admin_tokens", "operator");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/api/agent-admin/v1/log-level", demo.admin);
    let read = || -> serde_json::Value {
        agent
            .get(&url)
            .header("Authorization", &format!("Bearer {op}"))
            .call()
            .expect("answered")
            .body_mut()
            .read_json()
            .expect("json")
    };
    let set = |filter: &str| {
        agent
            .put(&url)
            .header("Authorization", &format!("Bearer {op}"))
            .header("Content-Type", "application/json")
            .send(json!({"filter": filter}).to_string())
            .expect("answered")
            .status()
            .as_u16()
    };
    let before = read()["data"]["filter"].as_str().expect("a filter").to_string();
    assert_eq!(set("debug,openport::access=off"), 200);
    assert_eq!(read()["data"]["filter"], "debug,openport::access=off");
    assert_eq!(set("[[not a filter"), 400);
    assert_eq!(read()["data"]["filter"], "debug,openport::access=off");
    assert_eq!(set(&before), 200);
}

#[test]
fn an_app_team_scaffolds_packs_and_loads_a_plugin_built_out_of_tree() {
    let gw = TestGateway::start();
    let work = tempfile::tempdir().expect("dir");
    let new = openport()
        .args(["plugin", "new", "crm", "--dir"])
        .arg(work.path())
        .output()
        .expect("run");
    assert!(new.status.success(), "{}", String::from_utf8_lossy(&new.stderr));
    let crate_dir = work.path().join("crm");
    assert!(
        crate_dir.join("wit/plugin.wit").exists(),
        "the contract travels with the crate"
    );
    let again = openport()
        .args(["plugin", "new", "crm", "--dir"])
        .arg(work.path())
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(64), "an existing crate is never overwritten");

    // The crate builds on its own (its own workspace and lock file); the shared target
    // directory only saves compiling the same pinned dependencies again.
    let plugins_target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins");
    let pack = openport()
        .args(["plugin", "pack"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", plugins_target)
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&pack.stdout);
    assert!(pack.status.success(), "{}", String::from_utf8_lossy(&pack.stderr));
    assert!(said.contains("tool-adapter, 1 tools: hello.greet"), "{said}");
    let manifest = crate_dir.join("dist/crm.toml");
    let text = std::fs::read_to_string(&manifest).expect("a manifest");
    let digest = openport::hashing::sha256_hex(&std::fs::read(crate_dir.join("dist/crm.wasm")).expect("wasm"));
    assert!(text.contains(&format!("sha256 = \"{digest}\"")), "{text}");

    let add = openport()
        .args(["plugin", "add"])
        .arg(&manifest)
        .env("OPENPORT_ADMIN_URL", &gw.admin)
        .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("operator"))
        .output()
        .expect("run");
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let tools = gw.admin_get("/api/agent-admin/v1/plugins", Some(&gw.admin_token("operator")));
    let crm = tools.data()["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["name"] == "crm"))
        .cloned()
        .expect("the plugin is loaded");
    assert_eq!(crm["sha256"], digest.as_str());
    assert_eq!(crm["tools"], json!(["hello.greet"]));
}

/// A 2026-07-28 MCP request as the demo's anonymous loopback client, with the tasks extension.
fn task_request(demo: &DemoProcess, method: &str, mut params: serde_json::Value) -> serde_json::Value {
    params["_meta"] = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":
            {"elicitation": {}, "extensions": {"io.modelcontextprotocol/tasks": {}}},
    });
    let name = params["name"]
        .as_str()
        .or(params["taskId"].as_str())
        .unwrap_or_default()
        .to_string();
    let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = client
        .post(&format!("{}/mcp", demo.agent))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method)
        .header("Mcp-Name", &name)
        .send(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
        .expect("request");
    let body: serde_json::Value = response.body_mut().read_json().expect("json");
    body["result"].clone()
}

#[test]
fn a_parked_task_survives_a_crash_and_a_running_one_fails_audited_never_rerun() {
    let demo = DemoProcess::start();
    let started = |demo: &DemoProcess, name: &str, arguments: serde_json::Value| {
        let created = task_request(
            demo,
            "tools/call",
            serde_json::json!({"name": name, "arguments": arguments}),
        );
        assert_eq!(created["resultType"], "task", "{created:#}");
        created["taskId"].as_str().expect("a task").to_string()
    };
    let parked = started(&demo, "confirm_delete", serde_json::json!({"filename": "q3.csv"}));
    let running = started(&demo, "slow_compute", serde_json::json!({"seconds": 60}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while task_request(&demo, "tasks/get", serde_json::json!({"taskId": parked}))["status"] != "input_required" {
        assert!(std::time::Instant::now() < deadline, "the task did not park");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // `openport check` beside the live gateway settles nothing of it.
    let checked = openport()
        .args(["check", "--config"])
        .arg(demo.dir.path().join("openport.toml"))
        .output()
        .expect("check");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let still = task_request(&demo, "tasks/get", serde_json::json!({"taskId": running}));
    assert_eq!(still["status"], "working", "{still:#}");
    // Nor does it write into the live gateway's chain: after the live one wrote again (the
    // request above), the chain still verifies.
    let verified = openport()
        .args(["audit", "verify", "--data-dir"])
        .arg(demo.dir.path())
        .output()
        .expect("verify");
    assert!(
        verified.status.success(),
        "`check` forked the live chain: {}",
        String::from_utf8_lossy(&verified.stdout)
    );

    let demo = DemoProcess::start_in(demo.crash());
    let failed = task_request(&demo, "tasks/get", serde_json::json!({"taskId": running}));
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["data"]["code"], "agent.execution_failed");
    let events = demo
        .store()
        .audit
        .query(&openport::store::AuditFilter {
            code: Some("agent.execution_failed".into()),
            limit: 50,
            ..openport::store::AuditFilter::default()
        })
        .expect("audit");
    assert!(
        events
            .iter()
            .any(|e| e.action == "agent.task.failed" && e.details["taskId"] == running.as_str()),
        "{events:?}"
    );

    let waiting = task_request(&demo, "tasks/get", serde_json::json!({"taskId": parked}));
    assert_eq!(waiting["status"], "input_required");
    task_request(
        &demo,
        "tasks/update",
        serde_json::json!({"taskId": parked,
                           "inputResponses": {"confirm": {"action": "accept", "content": {"confirm": true}}}}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let done = task_request(&demo, "tasks/get", serde_json::json!({"taskId": parked}));
        if done["status"] == "completed" {
            assert_eq!(done["result"]["content"][0]["text"], "Deleted q3.csv.");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the resumed task did not complete: {done:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
