//! Authorization figures (issues: authorization, Cedar over any tool's arguments): Cedar
//! decision latency with 10, 100 and 1,000 policies over typed tool arguments (sliced,
//! and the whole set for comparison), the time to build and validate such a set against
//! the generated schema (what a reload or plugin load costs), discovery over 500 tools,
//! and authentication cost per request.
//!
//! `cargo bench -p openport --bench authz` prints a Markdown table.

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fails by panicking and reports on stdout"
)]

use std::time::{Duration, Instant};

use openport::attr::ArgType;
use openport::authz::{Action, AppFacts, Authorizer, DEFAULT_SCHEMA, PolicySource, RequestFacts, ToolVocabulary};
use openport::tool::ToolFacts;
use openport::tool::{Effect, Risk};
use serde_json::json;

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 * p) as usize).min(samples.len() - 1);
    samples[i].as_secs_f64() * 1e6
}

/// The arguments of every bench tool: a string, a decimal, a date, an enum and a Long.
fn arg_type() -> ArgType {
    ArgType::of_input_schema(&json!({
        "type": "object",
        "required": ["ledgerId"],
        "properties": {
            "ledgerId": {"type": "string"},
            "amount_home": {"type": "number"},
            "startDate": {"type": "string", "format": "date"},
            "priority": {"type": "string", "enum": ["low", "urgent"]},
            "quantity": {"type": "integer"}
        }
    }))
    .0
}

/// The default set plus enough policies to make `n`, each about one of 100 apps and one
/// of 50 write tools (no two about the same pair), each over a typed argument.
fn policy_set(n: usize, tools: &[String], is_read: bool) -> Authorizer {
    let args = arg_type();
    let vocabulary: Vec<ToolVocabulary<'_>> = tools
        .iter()
        .map(|name| ToolVocabulary {
            name,
            is_read,
            args: &args,
        })
        .collect();
    let base = Authorizer::default_set(&vocabulary)
        .expect("default set")
        .policy_ids()
        .len();
    let mut extra = String::new();
    for i in 0..n.saturating_sub(base) {
        extra.push_str(&format!(
            "@id(\"p{i}\")\nforbid (principal == OpenPort::App::\"app_{}\", action in OpenPort::Action::\"{}\", resource) when {{ context has args && context.args has amount_home && context.args.amount_home.greaterThan(decimal(\"{}.0\")) }};\n",
            i % 100,
            tools[(i / 100) % tools.len()],
            i + 1
        ));
    }
    Authorizer::build(
        DEFAULT_SCHEMA,
        &vocabulary,
        [
            openport::authz::default_sources(),
            vec![PolicySource::new("extra.cedar", extra)],
        ]
        .concat(),
    )
    .expect("valid set")
}

fn main() {
    let scopes = vec!["tool.use".to_string()];
    let required = vec!["tool.use".to_string()];
    let policy: openport::app_policy::AppPolicy =
        serde_json::from_value(json!({"data": {"allowed_ledger_ids": ["ledger_main"], "max_days": 90}}))
            .expect("policy");
    let data_policy = policy.cedar_data_policy();
    let args_type = arg_type();
    let typed = |v: serde_json::Value| args_type.value_of(&v).expect("typed");
    let args = typed(
        json!({"ledgerId": "ledger_main", "amount_home": 50, "startDate": "2026-01-01", "priority": "low", "quantity": 3}),
    );
    let tool_names: Vec<String> = (0..50).map(|i| format!("tool.t{i}")).collect();
    let facts = RequestFacts {
        client_ip: "127.0.0.1".parse().expect("ip"),
        now: time::OffsetDateTime::now_utc(),
        channel: "rest",
        actor: "user_bench",
        args: Some(&args),
        has_idempotency_key: false,
        has_preflight_hash: false,
        has_justification: false,
    };
    println!("| figure | p50 | p99 |\n|---|---|---|");
    for n in [10, 100, 1000] {
        let started = Instant::now();
        let authz = policy_set(n, &tool_names, false);
        let built = started.elapsed();
        assert_eq!(authz.policy_ids().len(), n);
        println!(
            "| build and validate {n} policies against the schema of 50 typed tools (a reload) | {:.1} ms | |",
            built.as_secs_f64() * 1e3
        );
        for (label, sliced, fresh) in [
            ("sliced (what requests use), a new request each time", true, true),
            ("sliced, the same request again (memoised)", true, false),
            ("whole set", false, false),
        ] {
            let mut samples = Vec::with_capacity(20_000);
            // Two passes over the same requests: the first builds each (app, action, tool)
            // slice once, the second measures the steady state.
            for n_iter in 0..40_000 {
                let i = n_iter % 20_000;
                let app_id = format!("app_{}", i % 100);
                let tool_name = format!("tool.t{}", (i / 7) % 50);
                let app = AppFacts {
                    app_id: &app_id,
                    app_name: "bench",
                    org_id: "org_demo",
                    key_id: "key",
                    scopes: &scopes,
                    data_policy: &data_policy,
                    tags: openport::authz::no_tags(),
                };
                let tool = ToolFacts {
                    name: &tool_name,
                    risk: Risk::Medium,
                    effect: Effect::Write,
                    required_scopes: &required,
                    plugin: "bench",
                };
                // A distinct amount makes every request new to the decision memo; typing the
                // arguments from JSON is part of what a request costs, so it is timed too.
                let payload = json!({"ledgerId": "ledger_main", "amount_home": n_iter, "startDate": "2026-01-01", "priority": "low", "quantity": 3});
                let started = Instant::now();
                let distinct = if fresh { typed(payload) } else { args.clone() };
                let facts = if fresh {
                    RequestFacts {
                        args: Some(&distinct),
                        ..facts.clone()
                    }
                } else {
                    facts.clone()
                };
                let d = if sliced {
                    authz.decide(&app, Action::Propose, &tool, &facts)
                } else {
                    authz.decide_unsliced(&app, Action::Propose, &tool, &facts)
                };
                if n_iter >= 20_000 {
                    samples.push(started.elapsed());
                }
                assert!(d.errors.is_empty(), "{:?}", d.errors);
            }
            let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
            println!("| Cedar decision, {n} policies, {label} | {p50:.1} µs | {p99:.1} µs |");
        }
    }

    // Discovery: one `discover` decision per tool, the manifest's authorization work.
    let tools: Vec<String> = (0..500).map(|i| format!("tool.t{i}")).collect();
    let authz = policy_set(100, &tools, true);
    let app = AppFacts {
        app_id: "app_1",
        app_name: "bench",
        org_id: "org_demo",
        key_id: "key",
        scopes: &scopes,
        data_policy: &data_policy,
        tags: openport::authz::no_tags(),
    };
    let discover = RequestFacts {
        args: None,
        ..facts.clone()
    };
    let mut samples = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let visible = tools
            .iter()
            .filter(|name| {
                let tool = ToolFacts {
                    name,
                    risk: Risk::Low,
                    effect: Effect::Read,
                    required_scopes: &required,
                    plugin: "bench",
                };
                authz.decide(&app, Action::Discover, &tool, &discover).allowed
            })
            .count();
        samples.push(started.elapsed());
        assert_eq!(visible, 500);
    }
    let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
    println!(
        "| discovery over 500 tools (500 Cedar `discover` decisions, repeated: memoised) | {:.2} ms | {:.2} ms |",
        p50 / 1000.0,
        p99 / 1000.0
    );

    // A real manifest of 500 tools over HTTP: one plugin serving them, an app holding the scope.
    {
        let dir = tempfile::tempdir().expect("dir");
        let any = "127.0.0.1:0".parse().expect("addr");
        let desk = openport::demo::desk::start().expect("desk");
        let path = openport::demo::write_files(dir.path(), any, any, None, desk).expect("files");
        let mut text = std::fs::read_to_string(&path).expect("config");
        text.push_str("\n[admission.default]\nrequests = 100000000\nwindow_seconds = 1\n");
        std::fs::write(&path, text).expect("config");
        let config = openport::Config::load(&path).expect("config");
        let clock: openport::clock::SharedClock = std::sync::Arc::new(openport::clock::SystemClock);
        openport::demo::seed(&config, dir.path(), &clock).expect("seed");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        let server = rt.block_on(openport::Server::start(config, clock)).expect("server");
        let component = std::path::Path::new(openport::demo::artifacts::ARTIFACT_DIR).join("many_tools.wasm");
        let digest = openport::hashing::sha256_hex(&std::fs::read(&component).expect("component"));
        let tools: Vec<String> = (0..500).map(|i| format!("\"bulk.t{i:03}\"")).collect();
        let manifest = dir.path().join("many.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"many\"\nversion = \"1\"\nworld = \"tool-adapter\"\ncomponent = {:?}\nsha256 = {digest:?}\ntools = [{}]\n",
                component.display().to_string(),
                tools.join(", ")
            ),
        )
        .expect("manifest");
        rt.block_on(server.gateway.load_plugin(
            openport::plugin::PluginManifest::load(&manifest).expect("manifest"),
            "bench",
        ))
        .expect("loads");
        let app = openport::apps::create_app(
            &server.gateway.store,
            openport::apps::NewApp {
                scope: "workspace".into(),
                name: "bulk".into(),
                description: None,
                org_id: Some("org_demo".into()),
                user_id: None,
                service_user_id: None,
                scopes: vec!["bulk.read".into()],
                policy: None,
            },
            "bench",
            "2026-01-01T00:00:00.000Z",
        )
        .expect("app");
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let url = format!("http://{}/api/agent/v1/manifest", server.agent_addr);
        let mut samples = Vec::new();
        for i in 0..220 {
            let started = Instant::now();
            let mut response = agent
                .get(&url)
                .header("Authorization", &format!("Bearer {}", app.token))
                .call()
                .expect("manifest");
            let body = response.body_mut().read_to_string().expect("body");
            if i >= 20 {
                samples.push(started.elapsed());
            }
            assert!(body.contains("bulk.t499"));
        }
        let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
        println!(
            "| GET /manifest listing 500 tools (HTTP, in-process client, repeated) | {:.2} ms | {:.2} ms |",
            p50 / 1000.0,
            p99 / 1000.0
        );
        drop(server);
    }

    // Authentication: sha256 of the token, prefix lookup among 1,000 keys, app lookup.
    let dir = tempfile::tempdir().expect("dir");
    let store = openport::store::Store::open(&dir.path().join("auth.db")).expect("store");
    let mut token = String::new();
    for i in 0..1000 {
        let created = openport::apps::create_app(
            &store,
            openport::apps::NewApp {
                scope: "workspace".into(),
                name: format!("app {i}"),
                description: None,
                org_id: Some("org_demo".into()),
                user_id: None,
                service_user_id: None,
                scopes: vec!["ledger.read".into()],
                policy: None,
            },
            "bench",
            "2026-01-01T00:00:00.000Z",
        )
        .expect("app");
        token = created.token;
    }
    let header = format!("Bearer {token}");
    let now = time::OffsetDateTime::now_utc();
    let mut samples = Vec::new();
    for _ in 0..20_000 {
        let started = Instant::now();
        let principal = openport::auth::authenticate(&store, Some(&header), now)
            .expect("store")
            .expect("valid");
        samples.push(started.elapsed());
        assert_eq!(principal.org_id, "org_demo");
    }
    let (p50, p99) = (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99));
    println!(
        "| authentication (1,000 keys in the store, the key cached after its first request) | {p50:.1} µs | {p99:.1} µs |"
    );
}
