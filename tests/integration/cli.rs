use std::process::Command;

use crate::support::TestGateway;

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
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 plugins, 7 tools"));

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
