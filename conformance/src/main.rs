//! The OpenPort conformance runner: black-box cases against a live gateway.
//!
//! It depends on no crate of the gateway's workspace and parses every response itself,
//! so a wire-format regression cannot hide behind shared types.
//!
//! ```text
//! openport-conformance --binary target/debug/openport [--profile core] [--report json FILE]
//! openport-conformance --url http://127.0.0.1:8080 --token op_... [--profile core]
//! ```
//! With `--url`, `OPENPORT_BASE_URL` and `OPENPORT_AGENT_TOKEN` are read when the flags
//! are absent, as the reference's runner does.

mod runner;

use std::path::PathBuf;
use std::process::ExitCode;

use runner::{Profile, Target};

const PROFILES: &[(&str, &str)] = &[("core", include_str!("../profiles/core.json"))];

fn usage() -> ExitCode {
    eprintln!(
        "usage: openport-conformance (--binary PATH | --url URL [--token TOKEN]) [--profile NAME]... [--report json FILE]"
    );
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut binary = None;
    let mut url = std::env::var("OPENPORT_BASE_URL").ok();
    let mut token = std::env::var("OPENPORT_AGENT_TOKEN").ok();
    let mut profiles = Vec::new();
    let mut report = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next().map(PathBuf::from),
            "--url" => url = args.next(),
            "--token" => token = args.next(),
            "--profile" => profiles.extend(args.next()),
            "--report" => {
                if args.next().as_deref() != Some("json") {
                    return usage();
                }
                report = args.next().map(PathBuf::from);
            }
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let mut selected = Vec::new();
    for (name, text) in PROFILES {
        if profiles.is_empty() || profiles.iter().any(|p| p == name) {
            match serde_json::from_str::<Profile>(text) {
                Ok(profile) => selected.push(profile),
                Err(e) => {
                    eprintln!("profile `{name}` is invalid: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Some(unknown) = profiles.iter().find(|p| !PROFILES.iter().any(|(name, _)| name == p)) {
        eprintln!("unknown profile `{unknown}`");
        return usage();
    }
    let target = match (binary, url) {
        (Some(binary), _) => match Target::start(&binary) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("cannot start `{}`: {e}", binary.display());
                return ExitCode::FAILURE;
            }
        },
        (None, Some(url)) => match token {
            Some(token) => Target::remote(url, token),
            None => return usage(),
        },
        (None, None) => return usage(),
    };
    let results = runner::run(&target, &selected);
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    for r in &results {
        match &r.error {
            None => println!("ok   {}", r.id),
            Some(e) => println!("FAIL {}: {e}", r.id),
        }
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    if let Some(path) = report {
        let json = serde_json::json!({
            "passed": results.len() - failed,
            "failed": failed,
            "cases": results.iter().map(|r| serde_json::json!({"id": r.id, "ok": r.error.is_none(), "error": r.error})).collect::<Vec<_>>(),
        });
        if let Err(e) = std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default()) {
            eprintln!("cannot write report `{}`: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    drop(target);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
