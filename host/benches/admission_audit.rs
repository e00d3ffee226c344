//! Admission and audit figures (issue: admission control and a tamper-evident audit trail).
//!
//! `cargo bench -p openport --bench admission_audit` prints a Markdown table:
//! - the cost of an admitted vs a refused (429) call through the real HTTP server,
//! - admission checks per second,
//! - audit events written per second (batched) and verified per second,
//! - completeness under load: requests answered vs terminal events stored.

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fails by panicking and reports on stdout"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use openport::admission::{Admission, Caller, Limits, Rate, RateClass};
use openport::audit::{AuditEvent, AuditLog, verify_chain};
use openport::clock::{SharedClock, SystemClock};
use openport::store::{self, AuditFilter};
use openport::{Config, Server, demo};

fn main() {
    let mut rows = Vec::new();
    rows.extend(admission_checks());
    rows.extend(audit_throughput());
    rows.extend(http_admitted_vs_refused());
    println!("| figure | value |\n|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
}

fn admission_checks() -> Vec<(String, String)> {
    let admission = Admission::new(Limits {
        default: RateClass {
            per_key: Rate {
                requests: u32::MAX,
                window_seconds: 1,
            },
            ..RateClass::default()
        },
        classes: Default::default(),
        max_in_flight: usize::MAX,
        unauthenticated: None,
    });
    let n = 1_000_000;
    let started = Instant::now();
    for i in 0..n {
        let key = format!("key{}", i % 1000);
        let caller = Caller {
            app_id: "app",
            key_id: &key,
            tenant: "org",
            client: "127.0.0.1",
            tool: Some("ledgers"),
            class: None,
        };
        drop(admission.admit(&caller, 0));
    }
    let per = started.elapsed() / n;
    vec![(
        "admission check (admit + release)".into(),
        format!("{:.2} µs", per.as_secs_f64() * 1e6),
    )]
}

fn audit_throughput() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bench.db");
    let opened = store::Store::open(&path).expect("store");
    let log = AuditLog::start(opened.chain_writer("").expect("writer"), Default::default(), None).expect("audit");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let total = 200_000;
    let producers = 500;
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..producers {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..total / producers {
                    let mut e = AuditEvent::new(
                        "bench.event",
                        openport::protocol::codes::SUCCESS,
                        "2026-11-22T00:00:00.000Z".into(),
                    );
                    e.request_id = Some(format!("req_{p}_{i}"));
                    log.record(e).await.expect("durable");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let write = started.elapsed();
    let chain = opened.chain_reader("").expect("open the chain");
    let started = Instant::now();
    let report = verify_chain(&chain, &Default::default()).expect("verify");
    let verify = started.elapsed();
    assert!(report.intact && report.events as usize == total);
    vec![
        (
            format!("audit events written, {producers} concurrent producers, durable group commit"),
            format!("{:.0} /s", total as f64 / write.as_secs_f64()),
        ),
        (
            "audit events verified (re-hash + link check)".into(),
            format!("{:.0} /s", total as f64 / verify.as_secs_f64()),
        ),
    ]
}

/// Drives `GET /api/agent/v1/ledgers` from client threads for a fixed time.
fn drive(url: &str, token: &str, threads: usize, duration: Duration) -> (u64, Vec<Duration>, Vec<String>) {
    let deadline = Instant::now() + duration;
    let results: Vec<(u64, Vec<Duration>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    let (mut n, mut lat, mut ids) = (0, Vec::new(), Vec::new());
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let r = agent
                            .get(url)
                            .header("Authorization", &format!("Bearer {token}"))
                            .call()
                            .expect("answered");
                        lat.push(t.elapsed());
                        ids.push(r.headers()["x-request-id"].to_str().unwrap_or("").to_string());
                        n += 1;
                    }
                    (n, lat, ids)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut total = 0;
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for (n, lat, i) in results {
        total += n;
        all.extend(lat);
        ids.extend(i);
    }
    all.sort();
    (total, all, ids)
}

fn pct(lat: &[Duration], p: f64) -> String {
    let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
    lat.get(i)
        .map_or("-".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
}

fn http_admitted_vs_refused() -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("dir");
    let any = "127.0.0.1:0".parse().expect("addr");
    let desk = demo::desk::start().expect("desk");
    let path = demo::write_files(dir.path(), any, any, None, desk).expect("files");
    let mut text = std::fs::read_to_string(&path).expect("config");
    // Admitted: a class with room for everything; refused: the demo reader app's class allows 1.
    text.push_str(
        "\n[admission]\nmax_in_flight = 100000\n[admission.default]\nrequests = 100000000\nwindow_seconds = 1\nconcurrency = 100000\n[admission.classes.tiny]\nrequests = 1\nwindow_seconds = 3600\n",
    );
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("config");
    let clock: SharedClock = Arc::new(SystemClock);
    let creds = demo::seed(&config, dir.path(), &clock).expect("seed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let server = runtime.block_on(Server::start(config, clock)).expect("server");
    let store = server.gateway.store.clone();
    let reader = creds.app_ids["Read-only Reporter"].clone();
    store
        .apps
        .set_policy(
            &reader,
            &openport::app_policy::AppPolicy {
                rate_class: Some("tiny".into()),
                ..Default::default()
            },
            "2026-01-01T00:00:00.000Z",
        )
        .expect("policy");
    let url = format!("http://{}/api/agent/v1/ledgers", server.agent_addr);
    let threads = 4;
    let secs = Duration::from_secs(5);
    let (ok_n, ok_lat, ok_ids) = drive(&url, &creds.agent_tokens["Demo Integration"], threads, secs);
    let (no_n, no_lat, no_ids) = drive(&url, &creds.agent_tokens["Read-only Reporter"], threads, secs);
    let events = store
        .audit
        .query(&AuditFilter {
            limit: 10_000_000,
            ..AuditFilter::default()
        })
        .expect("events");
    let stored: std::collections::HashSet<&str> = events.iter().filter_map(|e| e.request_id.as_deref()).collect();
    let answered = ok_ids.len() + no_ids.len();
    let with_event = ok_ids
        .iter()
        .chain(&no_ids)
        .filter(|id| stored.contains(id.as_str()))
        .count();
    let ok_rate = ok_n as f64 / secs.as_secs_f64();
    let no_rate = no_n as f64 / secs.as_secs_f64();
    vec![
        (
            format!("governed read, {threads} client threads in-process, 5 s"),
            format!(
                "{ok_rate:.0} req/s, p50 {}, p99 {}",
                pct(&ok_lat, 0.5),
                pct(&ok_lat, 0.99)
            ),
        ),
        (
            "refused read (429), same load".to_string(),
            format!(
                "{no_rate:.0} req/s, p50 {}, p99 {}",
                pct(&no_lat, 0.5),
                pct(&no_lat, 0.99)
            ),
        ),
        (
            "refused / admitted throughput".into(),
            format!("{:.2}x", no_rate / ok_rate),
        ),
        (
            "completeness: answered requests with exactly their terminal event".into(),
            format!("{with_event} of {answered}"),
        ),
    ]
}
