//! Several gateway nodes on one PostgreSQL database. Each test makes a throwaway database
//! under `OPENPORT_TEST_DATABASE_URL` (CI sets it; without it these tests say how to run
//! them and pass without running).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openport::store::{AppRecord, DraftRecord, DraftStatus, IdempotencyScope, KeyRecord, Location, Reservation, Store};
use serde_json::json;

/// A database of its own, dropped (with every connection to it) when the test ends.
pub struct TestDatabase {
    base: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// `None`, with a line saying how to run the test, when no PostgreSQL is configured.
    pub fn create() -> Option<TestDatabase> {
        let Ok(base) = std::env::var("OPENPORT_TEST_DATABASE_URL") else {
            eprintln!(
                "skipped: no PostgreSQL; run with OPENPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
            );
            return None;
        };
        let name = format!("openport_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin(&base, &format!("CREATE DATABASE {name}"));
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("OPENPORT_TEST_DATABASE_URL has no database: {base}"),
        };
        Some(TestDatabase { base, name, url })
    }

    pub fn location(&self) -> Location {
        Location::Postgres(self.url.clone())
    }

    pub fn open(&self) -> Store {
        Store::open_at(&self.location()).expect("open the shared store")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin(
            &self.base,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `work` with a connection to the server of `url`, outside the gateway.
fn on_server<T>(url: &str, work: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    crate::support::block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("OPENPORT_TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
        let driver = tokio::spawn(connection);
        let out = work(&client).await;
        drop(client);
        let _ = driver.await;
        out
    })
}

/// Runs one statement on the server of `url`.
fn admin(url: &str, sql: &str) {
    on_server(url, async |client| client.batch_execute(sql).await.expect(sql));
}

/// One value of a query on the server of `url`, as text.
fn scalar(url: &str, sql: &str) -> String {
    on_server(url, async |client| client.query_one(sql, &[]).await.expect(sql).get(0))
}

fn now() -> String {
    openport::clock::iso(time::OffsetDateTime::now_utc())
}

fn app(id: &str) -> AppRecord {
    AppRecord {
        id: id.into(),
        name: format!("app {id}"),
        description: None,
        scope: "workspace".into(),
        org_id: Some("org_a".into()),
        user_id: None,
        service_user_id: None,
        scopes: vec!["ledger.read".into()],
        status: "active".into(),
        policy: Default::default(),
        auto_execute: Default::default(),
        created_by: None,
        created_at: now(),
        updated_at: now(),
        tags: Default::default(),
    }
}

fn key(id: &str, app_id: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        app_id: app_id.into(),
        name: "k".into(),
        token_prefix: format!("prefix_{id}"),
        token_hash: format!("hash_{id}"),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        created_by: None,
        created_at: now(),
    }
}

/// Polls `check` until it holds or `within` passes; how long it took.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn two_nodes_share_apps_and_a_revocation_on_one_reaches_the_others_cache_within_a_second() {
    let Some(db) = TestDatabase::create() else { return };
    let (a, b) = (db.open(), db.open());
    assert!(a.is_shared() && b.is_shared());
    assert!(a.apps.insert(&app("app_1")).expect("insert"));
    a.apps.insert_key(&key("key_1", "app_1")).expect("key");

    // B reads (and caches) what A wrote.
    let seen = b.apps.keys_by_prefix("prefix_key_1").expect("keys");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].revoked_at.is_none());
    assert_eq!(b.apps.shared("app_1").expect("app").expect("found").status, "active");

    // A revokes; B's cached copies are dropped by A's notification.
    a.apps.revoke_key("key_1", &now()).expect("revoke");
    a.apps.set_status("app_1", "revoked", &now()).expect("status");
    let lag = eventually(Duration::from_secs(1), || {
        let key_revoked = b.apps.keys_by_prefix("prefix_key_1").expect("keys")[0]
            .revoked_at
            .is_some();
        let app_revoked = b.apps.shared("app_1").expect("app").expect("found").status == "revoked";
        key_revoked && app_revoked
    });
    assert!(lag.is_some(), "node B still trusts a key node A revoked after 1 s");
}

#[test]
fn plugin_key_value_operations_stay_atomic_across_nodes() {
    let Some(db) = TestDatabase::create() else { return };
    let nodes: Vec<Arc<Store>> = (0..3).map(|_| Arc::new(db.open())).collect();
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let node = nodes[t % 3].clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    node.kv.increment("ledger", "org_a", "counter", 1).expect("increment");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // 12 threads × 25 increments over 3 nodes: none lost, and every node reads the sum
    // (through its cache, which the others' writes invalidated).
    for node in &nodes {
        let read = eventually(Duration::from_secs(1), || {
            node.kv.get("ledger", "org_a", "counter").expect("get").as_deref() == Some("300")
        });
        assert!(read.is_some(), "{:?}", node.kv.get("ledger", "org_a", "counter"));
    }

    // Compare-and-set: of 3 nodes racing from the same version, exactly one wins.
    let version = nodes[0]
        .kv
        .get_versioned("ledger", "org_a", "counter")
        .expect("get")
        .expect("set")
        .version;
    let wins: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            std::thread::spawn(move || {
                node.kv
                    .compare_and_set("ledger", "org_a", "counter", Some(version), "0")
                    .expect("cas")
                    .is_some()
            })
        })
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");

    // Prefix listing compares bytes, as on SQLite.
    for k in ["txn/1", "txn/2", "txn/é", "txn0", "u"] {
        nodes[1].kv.set("ledger", "org_a", k, "v").expect("set");
    }
    assert_eq!(
        nodes[2].kv.list("ledger", "org_a", "txn/", 10).expect("list"),
        vec!["txn/1", "txn/2", "txn/é"]
    );
    // A listing node 2 keeps in its cache is forgotten when node 1 writes under its prefix.
    nodes[1].kv.set("ledger", "org_a", "txn/3", "v").expect("set");
    let listed = || nodes[2].kv.list("ledger", "org_a", "txn/", 10).expect("list");
    let seen = eventually(Duration::from_secs(2), || listed().contains(&"txn/3".to_string()));
    assert!(seen.is_some(), "node 2 still lists {:?}", listed());
    nodes[1].kv.delete("ledger", "org_a", "txn/1").expect("delete");
    let seen = eventually(Duration::from_secs(2), || !listed().contains(&"txn/1".to_string()));
    assert!(seen.is_some(), "node 2 still lists {:?}", listed());
}

fn draft(id: &str) -> DraftRecord {
    DraftRecord {
        id: id.into(),
        app_id: "app_1".into(),
        key_id: "key_1".into(),
        org_id: "org_a".into(),
        actor_user_id: "user".into(),
        action_type: "transaction.create".into(),
        payload: json!({"title": "t"}),
        status: DraftStatus::Draft,
        risk: "medium".into(),
        requires_confirmation: true,
        auto_execute_requested: false,
        justification: None,
        idempotency_key: Some("idem".into()),
        request_id: "req".into(),
        impact: None,
        impact_hash: None,
        preflight_hash: None,
        preflight_state_witness_hash: None,
        plugin: "ledger".into(),
        plugin_digest: "digest".into(),
        created_at: now(),
        updated_at: now(),
        expires_at: now(),
        confirmed_at: None,
        canceled_at: None,
        confirmed_by_user_id: None,
        canceled_by: None,
    }
}

#[test]
fn one_idempotency_reservation_and_one_approval_win_across_nodes() {
    let Some(db) = TestDatabase::create() else { return };
    let nodes: Vec<Arc<Store>> = (0..3).map(|_| Arc::new(db.open())).collect();
    let race = |f: Arc<dyn Fn(&Store) -> bool + Send + Sync>| -> usize {
        let threads: Vec<_> = (0..30)
            .map(|i| {
                let node = nodes[i % 3].clone();
                let f = f.clone();
                std::thread::spawn(move || f(&node))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .filter(|won| *won)
            .count()
    };
    let reserved = race(Arc::new(|node: &Store| {
        let scope = IdempotencyScope {
            app_id: "app_1",
            key_id: "key_1",
            idempotency_key: "idem",
        };
        matches!(
            node.idempotency
                .reserve(scope, "fingerprint", &now(), "9999")
                .expect("reserve"),
            Reservation::Taken
        )
    }));
    assert_eq!(reserved, 1, "30 reservations of one key over 3 nodes");

    nodes[0].drafts.insert(&draft("dft_1")).expect("draft");
    let approved = race(Arc::new(|node: &Store| {
        node.drafts
            .transition(
                "dft_1",
                DraftStatus::Draft,
                DraftStatus::Confirmed,
                Some("reviewer"),
                &now(),
            )
            .expect("transition")
    }));
    assert_eq!(approved, 1, "30 approvals of one draft over 3 nodes");
}

#[test]
fn each_node_keeps_its_own_audit_chain_and_verify_checks_them_all() {
    let Some(db) = TestDatabase::create() else { return };
    let store = db.open();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let writers: Vec<_> = ["node_a", "node_b"]
        .iter()
        .map(|node| {
            openport::audit::AuditLog::start(store.chain_writer(node).expect("writer"), Default::default(), None)
                .expect("writer")
        })
        .collect();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = writers[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let event = openport::audit::AuditEvent::new("test.event", openport::protocol::codes::SUCCESS, now());
                log.record(event).await.expect("record")
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    let (intact, report) = openport::audit::verify_store(&store, None, &[]).expect("verify");
    assert!(intact, "{report}");
    assert_eq!(report["events"], 200, "{report}");
    let chains = report["chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 2, "{report}");
    assert!(chains.iter().all(|c| c["events"] == 100), "{report}");

    // An export merges the chains in time order.
    let filter = openport::store::AuditFilter {
        limit: 50,
        ascending: true,
        ..Default::default()
    };
    let mut merged = Vec::new();
    let mut after: Option<(String, i64)> = None;
    loop {
        let cursor = after.as_ref().map(|(t, s)| (t.as_str(), *s));
        let page = store.audit.in_time_order(&filter, cursor).expect("page");
        let Some(last) = page.last() else { break };
        after = Some((last.created_at.clone(), last.seq));
        merged.extend(page);
    }
    assert_eq!(merged.len(), 200);
    assert!(
        merged
            .windows(2)
            .all(|w| (&w[0].created_at, w[0].seq) < (&w[1].created_at, w[1].seq))
    );
    assert_eq!(merged.iter().filter(|r| r.node == "node_a").count(), 100);

    // A row of one chain edited in the database breaks that chain only.
    admin(
        &db.url,
        "UPDATE audit_events SET action = 'test.edited' WHERE seq = (SELECT MIN(seq) FROM audit_events WHERE node = 'node_b')",
    );
    let (intact, report) = openport::audit::verify_store(&store, None, &[]).expect("verify");
    assert!(!intact, "{report}");
    let chains = report["chains"].as_array().expect("chains");
    let broken: Vec<_> = chains
        .iter()
        .filter(|c| c["intact"] == false)
        .map(|c| c["node"].clone())
        .collect();
    assert_eq!(broken, vec![json!("node_b")], "{report}");
}

#[test]
fn a_node_reaches_postgresql_over_verified_tls_and_refuses_a_server_it_cannot_verify() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    if scalar(&db.url, "SHOW ssl") != "on" {
        eprintln!("skipped: PostgreSQL at {} does not serve TLS (ssl = off)", db.url);
        return;
    }
    // The server's own certificate (on Debian a self-signed one naming `localhost`) as the
    // only CA trusted, and the server reached by that name.
    let certificate = scalar(&db.url, "SHOW ssl_cert_file");
    let by_name = db.url.replacen("@127.0.0.1", "@localhost", 1);
    let tls = |url: &str, ca: &str| Location::Postgres(format!("{url}?sslmode=verify-full&sslrootcert={ca}"));
    let connections = || {
        scalar(
            &db.url,
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.datname = '{}' AND a.pid <> pg_backend_pid()",
                db.name
            ),
        )
    };

    let store = Store::open_at(&tls(&by_name, &certificate)).expect("verified TLS to PostgreSQL");
    store.meta.bump("tls-test").expect("a write over TLS");
    let (encrypted, plain) = connections()
        .split_once(' ')
        .map(|(a, b)| (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()))
        .unwrap();
    assert!(encrypted >= 1, "no TLS connection from the store");
    assert_eq!(plain, 0, "a connection of the store is plain");
    drop(store);

    // A CA that did not sign the server's certificate: refused at open.
    let dir = tempfile::tempdir().expect("dir");
    let stranger = dir.path().join("stranger-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&stranger, params.self_signed(&key).expect("CA").pem()).expect("write");
    let refused = Store::open_at(&tls(&by_name, &stranger.display().to_string())).expect_err("an unknown CA");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // The right CA, but a host name the certificate does not name.
    let refused = Store::open_at(&tls(&db.url, &certificate)).expect_err("a name the certificate lacks");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // A client certificate for a server that authenticates nodes by certificate: presented
    // when asked (this server does not ask, so the connection must simply still work), and
    // a key that is not there refuses the start.
    let node_key = rcgen::KeyPair::generate().expect("key");
    let node_cert = rcgen::CertificateParams::new(vec!["node1".to_string()])
        .expect("params")
        .self_signed(&node_key)
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("node.pem"), dir.path().join("node.key"));
    std::fs::write(&cert_path, node_cert.pem()).expect("write");
    std::fs::write(&key_path, node_key.serialize_pem()).expect("write");
    let identity = |key: &std::path::Path| {
        format!(
            "{by_name}?sslmode=verify-full&sslrootcert={certificate}&sslcert={}&sslkey={}",
            cert_path.display(),
            key.display()
        )
    };
    Store::open_at(&Location::Postgres(identity(&key_path))).expect("TLS with a client certificate");
    let refused =
        Store::open_at(&Location::Postgres(identity(&dir.path().join("missing.key")))).expect_err("a missing key");
    assert!(refused.to_string().contains("sslkey"), "{refused}");
    // TLS asked for without a CA: refused before any connection.
    let refused = Store::open_at(&Location::Postgres(format!("{by_name}?sslmode=require"))).expect_err("no CA");
    assert!(refused.to_string().contains("sslrootcert"), "{refused}");
}
