//! The OpenPort conformance runner: black-box cases against a live gateway.
//!
//! It depends on no crate of the gateway's workspace and parses every response itself,
//! so a wire-format regression cannot hide behind shared types.
//!
//! ```text
//! openport-conformance --binary target/debug/openport [--profile NAME]... [--report json FILE]
//! openport-conformance --url http://127.0.0.1:8080 --token op_... \
//!     [--admin-url URL --admin-token ROLE=TOKEN...] [--profile NAME]...
//! ```
//! With `--url`, `OPENPORT_BASE_URL` and `OPENPORT_AGENT_TOKEN` are read when the flags
//! are absent, as the reference's runner does; `--credentials FILE` (a demo's
//! `demo-credentials.json`) gives every token and app id instead, for the cases that name
//! the demo's other apps. Cases that reconfigure the gateway run only
//! with `--binary` (the runner owns that gateway) and are reported as skipped otherwise.

mod runner;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use runner::{Outcome, Profile, Target};

/// The profiles of SPEC section 11, in the order they run.
const PROFILES: &[(&str, &str)] = &[
    ("core", include_str!("../profiles/core.json")),
    ("authz", include_str!("../profiles/authz.json")),
    ("arguments", include_str!("../profiles/arguments.json")),
    ("writes", include_str!("../profiles/writes.json")),
    ("state-witness", include_str!("../profiles/state-witness.json")),
    ("abuse", include_str!("../profiles/abuse.json")),
    ("security", include_str!("../profiles/security.json")),
    ("audit", include_str!("../profiles/audit.json")),
    ("admin", include_str!("../profiles/admin.json")),
    ("mcp", include_str!("../profiles/mcp.json")),
];

fn usage() -> ExitCode {
    eprintln!(
        "usage: openport-conformance (--binary PATH | --url URL [--token TOKEN | --credentials FILE] \
         [--admin-url URL] [--admin-token ROLE=TOKEN]...) [--profile NAME]... [--report json FILE] [--list]"
    );
    ExitCode::from(64)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut binary = None;
    let mut url = std::env::var("OPENPORT_BASE_URL").ok();
    let mut token = std::env::var("OPENPORT_AGENT_TOKEN").ok();
    let mut admin_url = std::env::var("OPENPORT_ADMIN_URL").ok();
    let mut admin_tokens = BTreeMap::new();
    let mut profiles = Vec::new();
    let mut report = None;
    let mut credentials: Option<PathBuf> = None;
    let mut list = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next().map(PathBuf::from),
            "--url" => url = args.next(),
            "--token" => token = args.next(),
            "--admin-url" => admin_url = args.next(),
            "--admin-token" => match args.next().as_deref().and_then(|v| v.split_once('=')) {
                Some((role, token)) => {
                    admin_tokens.insert(role.to_string(), token.to_string());
                }
                None => return usage(),
            },
            "--profile" => profiles.extend(args.next()),
            "--credentials" => credentials = args.next().map(PathBuf::from),
            "--list" => list = true,
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
    if let Some(unknown) = profiles.iter().find(|p| !PROFILES.iter().any(|(name, _)| name == p)) {
        eprintln!("unknown profile `{unknown}`");
        return usage();
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
    if list {
        for profile in &selected {
            for case in &profile.cases {
                println!("{}/{}", profile.id, case.id);
            }
        }
        return ExitCode::SUCCESS;
    }
    let target = match (binary, url) {
        (Some(binary), _) => match Target::start(&binary) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("cannot start `{}`: {e}", binary.display());
                return ExitCode::FAILURE;
            }
        },
        (None, Some(url)) => match (token, credentials) {
            (_, Some(path)) => {
                let mut target = Target::remote(url, String::new(), admin_url, BTreeMap::new());
                if let Err(e) = target.use_credentials(&path) {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
                target
            }
            (Some(token), None) => Target::remote(url, token, admin_url, admin_tokens),
            (None, None) => return usage(),
        },
        (None, None) => return usage(),
    };
    let results = runner::run(&target, &selected);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for r in &results {
        match &r.outcome {
            Outcome::Passed => {
                passed += 1;
                println!("ok   {}", r.id);
            }
            Outcome::Failed(e) => {
                failed += 1;
                println!("FAIL {}: {e}", r.id);
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                println!("skip {}: {why}", r.id);
            }
        }
    }
    if skipped > 0 {
        println!("{skipped} skipped");
    }
    println!("{passed} passed, {failed} failed");
    if let Some(path) = report {
        let cases: Vec<_> = results
            .iter()
            .map(|r| {
                let (status, error) = match &r.outcome {
                    Outcome::Passed => ("passed", None),
                    Outcome::Failed(e) => ("failed", Some(e.clone())),
                    Outcome::Skipped(why) => ("skipped", Some(why.clone())),
                };
                serde_json::json!({"id": r.id, "status": status, "error": error, "codes": r.codes, "millis": r.millis})
            })
            .collect();
        let json = serde_json::json!({
            "target": target.url,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "cases": cases,
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
