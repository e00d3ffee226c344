//! Plugin runtime figures (issue: plugin runtime): instantiate + invoke latency of a
//! trivial adapter, cold compile vs cached load, and governed-read throughput while a
//! hostile plugin of another tenant loops until its deadline.
//!
//! `cargo bench -p openport --bench plugins` prints a Markdown table.

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fails by panicking and reports on stdout"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openport::clock::{SharedClock, SystemClock};
use openport::demo::{self, artifacts};
use openport::plugin::interaction::Round;
use openport::plugin::{Budgets, CallContext, EngineSettings, Plugin, PluginManifest, PluginRuntime};
use openport::{Config, Server};

fn manifest(dir: &Path, name: &str, krate: &str, tools: &[&str], extra: &str) -> PluginManifest {
    let component = Path::new(artifacts::ARTIFACT_DIR).join(format!("{}.wasm", krate.replace('-', "_")));
    let digest = openport::hashing::sha256_hex(&std::fs::read(&component).expect("component"));
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = {name:?}\nversion = \"1\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = {digest:?}\ntools = [{}]\n{extra}",
            component.display().to_string(),
            tools.join(", ")
        ),
    )
    .expect("manifest");
    PluginManifest::load(&path).expect("manifest")
}

/// This process's resident set, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
}

/// A call of the demo tenant.
fn context(reuse_instance: bool) -> CallContext {
    CallContext {
        tenant: demo::DEMO_ORG.into(),
        integration: "app".into(),
        request_id: "req".into(),
        actor: "svc".into(),
        allow_sensitive_fields: true,
        trace: None,
        reuse_instance,
        execution_id: None,
    }
}

/// p50 and p99 (µs) of 20,000 invokes of `tool`, after 5,000 to warm up.
fn time_invokes(
    rt: &tokio::runtime::Runtime,
    plugin: &Plugin,
    reuse_instance: bool,
    tool: &str,
    payload: &str,
) -> (f64, f64) {
    let ctx = context(reuse_instance);
    let mut samples = Vec::with_capacity(20_000);
    rt.block_on(async {
        for i in 0..25_000 {
            let started = Instant::now();
            plugin
                .invoke(&ctx, tool, payload, Round::default())
                .await
                .expect("invoke");
            if i >= 5_000 {
                samples.push(started.elapsed());
            }
        }
    });
    (pct(&mut samples, 0.5), pct(&mut samples, 0.99))
}

/// Every tool the ledger adapter describes: a manifest must declare them all.
const LEDGER_TOOLS: &[&str] = &[
    "ledger.list",
    "transaction.list",
    "transaction.create",
    "transaction.update",
    "transaction.delete",
    "transaction.hard_delete",
    "transactions.export_csv",
];

fn main() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(openport::store::Store::open(&dir.path().join("b.db")).expect("store"));
    let clock: SharedClock = Arc::new(SystemClock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    println!("| figure | value |\n|---|---|");

    // Cold compile vs a load from the on-disk cache (a second engine, same cache dir).
    let cache = dir.path().join("cache");
    let new_runtime = || {
        PluginRuntime::new(
            store.clone(),
            clock.clone(),
            Some(&cache),
            Budgets::default(),
            EngineSettings::default(),
        )
        .expect("runtime")
    };
    for (label, krate, tools) in [
        ("template (100 KB)", "template", &["hello.greet"][..]),
        ("ledger (165 KB)", "ledger", LEDGER_TOOLS),
    ] {
        let mut times = Vec::new();
        for _ in 0..2 {
            let runtime = new_runtime();
            let m = manifest(dir.path(), krate, krate, tools, "");
            let started = Instant::now();
            rt.block_on(runtime.load(m)).expect("loads");
            times.push(started.elapsed());
        }
        println!(
            "| load {label}: cold compile / from the compiled-code cache | {:.1} ms / {:.1} ms |",
            times[0].as_secs_f64() * 1e3,
            times[1].as_secs_f64() * 1e3
        );
    }

    // Invoke of a trivial adapter: a fresh store and instance per call, then reused.
    let runtime = new_runtime();
    let plugin = rt
        .block_on(runtime.load(manifest(dir.path(), "template", "template", &["hello.greet"], "")))
        .expect("load")
        .plugin;
    for (label, reuse_instance) in [
        ("a fresh store and instance per call", false),
        ("an instance reused within its isolation domain", true),
    ] {
        let (p50, p99) = time_invokes(&rt, &plugin, reuse_instance, "hello.greet", r#"{"name":"Ada"}"#);
        println!("| invoke, trivial adapter, {label} (20,000 calls) | p50 {p50:.1} µs, p99 {p99:.1} µs |");
    }

    // The reference's ledger read as the ledger adapter runs it (the guest's JSON work and
    // its four key-value host calls), on the demo's data, reusing its instance.
    let grants = "[grants]\nkv = true\nclock = true\n";
    let ledger = rt
        .block_on(runtime.load(manifest(dir.path(), "ledger", "ledger", LEDGER_TOOLS, grants)))
        .expect("load")
        .plugin;
    demo::seed_ledgers(&store, "2026-12-01T00:00:00.000Z").expect("seed");
    let read = r#"{"ledgerId":"ledger_main"}"#;
    let first = rt
        .block_on(ledger.invoke(&context(true), "transaction.list", read, Round::default()))
        .expect("invoke");
    let listed: Option<serde_json::Value> = first.structured.as_ref().and_then(|s| serde_json::from_str(s).ok());
    let total = listed.as_ref().and_then(|s| s.get("total")).cloned();
    assert_eq!(total, Some(2.into()), "{:?}", first.structured);
    let (p50, p99) = time_invokes(&rt, &ledger, true, "transaction.list", read);
    println!(
        "| invoke, ledger `transaction.list` (2 transactions, instance reused; 20,000 calls) | p50 {p50:.1} µs, p99 {p99:.1} µs |"
    );
    drop(rt);

    // A governed read's throughput, alone and while another tenant's plugin loops.
    let any = "127.0.0.1:0".parse().expect("addr");
    let desk = demo::desk::start().expect("desk");
    let path = demo::write_files(dir.path(), any, any, None, desk).expect("files");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str("\n[admission]\nmax_in_flight = 100000\n[admission.default]\nrequests = 100000000\nwindow_seconds = 1\nconcurrency = 100000\n");
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("config");
    let creds = demo::seed(&config, dir.path(), &clock).expect("seed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let server = rt.block_on(Server::start(config, clock.clone())).expect("server");
    rt.block_on(server.gateway.load_plugin(
        manifest(
            dir.path(),
            "loop",
            "test-loop",
            &["hostile.loop"],
            "[limits]\ntimeout_ms = 2000\n",
        ),
        "bench",
    ))
    .expect("loop fixture");
    let other = openport::apps::create_app(
        &server.gateway.store,
        openport::apps::NewApp {
            scope: "workspace".into(),
            name: "hostile".into(),
            description: None,
            org_id: Some("org_other".into()),
            user_id: None,
            service_user_id: None,
            scopes: vec!["hostile.use".into()],
            policy: None,
        },
        "bench",
        "2026-01-01T00:00:00.000Z",
    )
    .expect("app");
    let url = format!(
        "http://{}/api/agent/v1/transactions?ledgerId=ledger_main",
        server.agent_addr
    );
    rt.block_on(server.gateway.load_plugin(
        manifest(dir.path(), "memory", "test-memory", &["hostile.memory"], ""),
        "bench",
    ))
    .expect("memory fixture");
    let loop_url = format!("http://{}/api/agent/v1/hostile-loop", server.agent_addr);
    let memory_url = format!("http://{}/api/agent/v1/hostile-memory", server.agent_addr);
    let token = creds.agent_tokens["Demo Integration"].clone();
    // 4 clients of the governed read for `secs`, while `hostile` callers (if any) hammer
    // the other tenant's plugin at `hostile_url`: the read's throughput and p99 (ms).
    let drive = |secs: u64, hostile_url: &str, hostile: usize| -> (f64, f64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        std::thread::scope(|scope| {
            for _ in 0..hostile {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    while Instant::now() < deadline {
                        let _ = agent
                            .get(hostile_url)
                            .header("Authorization", &format!("Bearer {}", other.token))
                            .call();
                    }
                });
            }
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let agent: ureq::Agent =
                            ureq::Agent::config_builder().http_status_as_error(false).build().into();
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let started = Instant::now();
                            agent
                                .get(&url)
                                .header("Authorization", &format!("Bearer {token}"))
                                .call()
                                .expect("answered");
                            latencies.push(started.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("thread")).collect();
            let rate = all.len() as f64 / secs as f64;
            (rate, pct(&mut all, 0.99) / 1000.0)
        })
    };
    // A/B/A: the undisturbed figure is the mean of a run before and a run after, so a
    // drift over time (a growing audit table) does not count against the plugin.
    let before = drive(6, "", 0);
    let rss_before = rss_mib();
    let one_loop = drive(6, &loop_url, 1);
    let loops = drive(6, &loop_url, 32);
    let hungry = drive(6, &memory_url, 32);
    let rss_peak = rss_mib();
    let after = drive(6, "", 0);
    std::thread::sleep(Duration::from_secs(10));
    let rss_after = rss_mib();
    let alone = ((before.0 + after.0) / 2.0, before.1.max(after.1));
    println!(
        "| governed read alone (4 in-process clients, 6 s; before / after) | {:.0} / {:.0} req/s, p99 {:.2} / {:.2} ms |",
        before.0, after.0, before.1, after.1
    );
    for (label, (rate, p99)) in [
        ("another tenant's plugin loops to its 2 s deadline, 1 caller", one_loop),
        ("the same, 32 callers", loops),
        ("another tenant's plugin allocates without bound, 32 callers", hungry),
    ] {
        println!(
            "| the read while {label} | {rate:.0} req/s ({:.0}% of alone), p99 {p99:.2} ms ({:.1}x alone) |",
            rate / alone.0 * 100.0,
            p99 / alone.1
        );
    }
    println!(
        "| RSS: before the attacks / at their end / 10 s after | {rss_before} / {rss_peak} / {rss_after} MiB ({:.2}x before) |",
        rss_after as f64 / rss_before as f64
    );
    drop(server);
}
