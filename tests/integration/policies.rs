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
    let wrong = text.replacen("\"decision\": \"allow\"", "\"decision\": \"deny\"", 1);
    let file = dir.path().join("scenarios.json");
    std::fs::write(
        &file,
        wrong.replace(
            "\"policy_dirs\": [\".\"]",
            &format!("\"policy_dirs\": [{:?}]", policies()),
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args(["policy", "test"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}
