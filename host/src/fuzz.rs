//! Property-based fuzzing (proptest, on stable) of what parses untrusted input or hashes
//! what is bound: the agent request parser, the MCP message parser, the envelope, network
//! and scope matching, canonical JSON and the impact hash, Cedar context building, and the
//! config parser. Each property first runs every seed in `fuzz/corpus/<target>/` (the
//! checked-in corpus), then generated cases; failures proptest finds are kept in
//! `host/proptest-regressions/` and replayed first on every run.
//!
//! `cargo test -p openport --lib fuzz::` runs them as part of the tests (256 cases each);
//! `.ci/run` runs a longer bounded pass with `PROPTEST_CASES`.

#![allow(clippy::expect_used, reason = "a fuzz property fails by panicking")]

use std::net::IpAddr;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::app_policy::{AppPolicy, DataPolicy};
use crate::attr::{ArgType, Attr};
use crate::authz::{Action, AppFacts, Authorizer, DEFAULT_SCHEMA, RequestFacts, ToolVocabulary};
use crate::hashing::{canonical_json, jcs_sha256, sha256_hex};
use crate::pipeline::{BodyError, Inbound, McpHeaders};
use crate::protocol::{Envelope, Failure, codes};
use crate::tool::ToolFacts;
use crate::tool::{Effect, Risk};

/// The seeds of one target.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| {
            let path = e.expect("entry").path();
            (path.display().to_string(), std::fs::read(&path).expect("seed"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn inbound(method: &str, path: &str, query: Option<String>, content_type: Option<&str>, body: Vec<u8>) -> Inbound {
    Inbound {
        request_id: "req_fuzz".into(),
        method: method.into(),
        path: path.into(),
        query,
        authorization: None,
        forwarded_for: None,
        user_agent: None,
        content_type: content_type.map(String::from),
        idempotency_key: None,
        cookie: None,
        mcp: McpHeaders::default(),
        trace: None,
        peer: IpAddr::from([127, 0, 0, 1]),
        client_cert: None,
        head_too_large: false,
        body: Ok(Bytes::from(body)),
    }
}

/// Integers an IEEE double holds exactly: the ones the pipeline accepts in payloads.
const SAFE: i64 = (1 << 53) - 1;

/// JSON values: scalars (safe integers only, so equality survives a round trip), strings
/// with any characters, and nested arrays and objects.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-SAFE..=SAFE).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON values for checking the direct canonical path against the canonicalizer: mostly
/// ASCII keys and integers (the direct path), sometimes any key, a fraction or an integer
/// past 2^53 (the generic path), at any depth.
fn arb_jcs_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        4 => (-SAFE..=SAFE).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(Value::from),
        4 => any::<String>().prop_map(Value::String),
    ];
    let key = prop_oneof![8 => "[ -~]{0,8}", 1 => any::<String>()];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The agent parser refuses only with client errors (4xx) and never panics.
fn check_request(inbound: &Inbound) -> Result<(), TestCaseError> {
    if let Err(refused) = crate::rest::parse(inbound) {
        let status = refused.failure.code.status;
        prop_assert!((400..500).contains(&status), "parse refused with {status}");
        prop_assert!(codes::by_name(refused.failure.code.name).is_some());
    }
    Ok(())
}

#[test]
fn request_corpus() {
    for (name, seed) in corpus("requests") {
        for path in ["/api/agent/v1/actions", "/api/agent/v1/preflight"] {
            let request = inbound("POST", path, None, Some("application/json"), seed.clone());
            check_request(&request).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn mcp_corpus() {
    for (name, seed) in corpus("mcp") {
        let request = inbound("POST", "/mcp", None, Some("application/json"), seed);
        if let Err(fault) = crate::mcp::parse_message(&request) {
            assert!((400..500).contains(&fault.status), "{name}: {}", fault.status);
        }
    }
}

#[test]
fn json_corpus_canonicalizes_stably() {
    for (name, seed) in corpus("json") {
        let Ok(value) = serde_json::from_slice::<Value>(&seed) else {
            continue;
        };
        let canonical = canonical_json(&value);
        let again: Value = serde_json::from_str(&canonical).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            canonical_json(&again),
            canonical,
            "{name}: canonical JSON is a fixed point"
        );
    }
}

#[test]
fn config_corpus_never_panics() {
    for (name, seed) in corpus("configs") {
        let text = String::from_utf8_lossy(&seed);
        if let Err(e) = crate::config::Config::parse(&text, Path::new("/srv/openport")) {
            assert!(!e.key.is_empty(), "{name}: an error names a key");
        }
    }
}

proptest! {
    #[test]
    fn agent_requests_of_any_shape(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        path in "/api/agent/v1/[a-z_./%-]{0,40}",
        query in proptest::option::of("[a-zA-Z0-9=&%_.+-]{0,60}"),
        json in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let content_type = json.then_some("application/json");
        check_request(&inbound(method, &path, query, content_type, body))?;
    }

    #[test]
    fn action_bodies_of_any_json(value in arb_json()) {
        let body = value.to_string().into_bytes();
        let request = inbound("POST", "/api/agent/v1/actions", None, Some("application/json"), body);
        let parsed = crate::rest::parse(&request);
        check_request(&request)?;
        // A body is an action only when it is an object naming one.
        if parsed.is_ok() {
            prop_assert!(value["action"].is_string());
        }
    }

    #[test]
    fn too_large_bodies_are_413(method in prop::sample::select(vec!["GET", "POST"])) {
        let mut request = inbound(method, "/api/agent/v1/actions", None, Some("application/json"), Vec::new());
        request.body = Err(BodyError::TooLarge);
        let refused = crate::rest::parse(&request).expect_err("refused");
        prop_assert_eq!(refused.failure.code, codes::REQUEST_TOO_LARGE);
    }

    #[test]
    fn mcp_messages_of_any_json(value in arb_json(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        for body in [value.to_string().into_bytes(), raw.clone()] {
            let request = inbound("POST", "/mcp", None, Some("application/json"), body);
            if let Err(fault) = crate::mcp::parse_message(&request) {
                prop_assert!((400..500).contains(&fault.status));
            }
        }
    }

    #[test]
    fn error_envelopes_are_json_with_the_code(message in any::<String>(), index in 0..codes::ALL.len()) {
        let code = codes::ALL[index];
        let bytes = Envelope::failure(Failure::new(code, message.clone()), "req_x").to_bytes();
        let parsed: Value = serde_json::from_slice(&bytes).expect("envelope is JSON");
        prop_assert_eq!(&parsed["code"], code.name);
        prop_assert_eq!(&parsed["message"], message.as_str());
        prop_assert_eq!(&parsed["ok"], false);
    }

    #[test]
    fn network_entries_of_any_text_never_allow_by_accident(entry in any::<String>(), ip in any::<[u8; 4]>()) {
        let ip = IpAddr::from(ip);
        let parsed = crate::auth::network::parse_entry(&entry);
        let allowed = crate::auth::network::allowed(ip, std::slice::from_ref(&entry));
        // An entry that does not parse allows nothing (fail closed).
        prop_assert_eq!(allowed, parsed.is_some_and(|net| net.contains(&ip)));
    }

    #[test]
    fn ipv4_cidrs_match_like_their_prefix(net in any::<[u8; 4]>(), len in 0_u8..=32, ip in any::<[u8; 4]>()) {
        let entry = format!("{}/{len}", IpAddr::from(net));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        let inside = u32::from_be_bytes(net) & mask == u32::from_be_bytes(ip) & mask;
        prop_assert_eq!(crate::auth::network::allowed(IpAddr::from(ip), &[entry]), inside);
    }

    #[test]
    fn scope_names_are_lowercase_dotted_words(scope in any::<String>()) {
        let ok = crate::apps::is_scope(&scope);
        let shaped = !scope.is_empty() && scope.len() <= 64
            && scope.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        prop_assert_eq!(ok, shaped);
    }

    #[test]
    fn canonical_json_round_trips_and_ignores_key_order(value in arb_json()) {
        let canonical = canonical_json(&value);
        let back: Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
        prop_assert_eq!(&back, &value);
        let reversed = reverse_keys(&value);
        prop_assert_eq!(canonical_json(&reversed), canonical.clone());
        prop_assert_eq!(jcs_sha256(&reversed), sha256_hex(canonical.as_bytes()));
    }

    #[test]
    fn the_impact_hash_binds_action_payload_and_impact(payload in arb_json(), impact in arb_json(), other in arb_json()) {
        let hash = |p: &Value, i: &Value| jcs_sha256(&json!({"action": "transaction.delete", "payload": p, "impact": i}));
        prop_assert_eq!(hash(&payload, &impact), hash(&reverse_keys(&payload), &reverse_keys(&impact)));
        if other != impact {
            prop_assert_ne!(hash(&payload, &impact), hash(&payload, &other));
        }
    }

    #[test]
    fn integers_past_2_pow_53_are_found_wherever_they_hide(value in arb_json(), big in prop_oneof![(SAFE + 1)..=i64::MAX, i64::MIN..=-(SAFE + 1)], key in "[a-z]{1,8}") {
        prop_assert_eq!(crate::pipeline::unbindable_number(&value), None);
        let hidden = json!({"outer": [value.clone(), {key.clone(): big}]});
        prop_assert_eq!(
            crate::pipeline::unbindable_number(&hidden),
            Some(vec!["outer".to_string(), "1".to_string(), key])
        );
    }

    #[test]
    fn canonical_json_is_the_canonicalizers_jcs(value in arb_jcs_json()) {
        let generic = serde_json_canonicalizer::to_string(&value).expect("canonical");
        prop_assert_eq!(canonical_json(&value), generic);
    }

    #[test]
    fn canonical_numbers_keep_their_value(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let canonical = canonical_json(&json!(x));
        let back: f64 = serde_json::from_str(&canonical).expect("a number");
        prop_assert_eq!(back, x);
    }

    #[test]
    fn cedar_decides_any_payload_and_policy_without_panicking(
        payload in arb_json(),
        ledgers in proptest::option::of(proptest::collection::vec("[a-z_]{0,12}", 0..4)),
        orgs in proptest::option::of(proptest::collection::vec("[a-z_]{0,12}", 0..4)),
        max_days in proptest::option::of(any::<i64>()),
        sensitive in proptest::option::of(any::<bool>()),
        scopes in proptest::collection::vec("[a-z.]{1,12}", 0..4),
    ) {
        let (authorizer, arg_type) = ledger_like();
        let policy = AppPolicy {
            data: Some(DataPolicy { allowed_ledger_ids: ledgers, allowed_org_ids: orgs, max_days, allow_sensitive_fields: sensitive }),
            ..AppPolicy::default()
        };
        let required = vec!["transaction.write".to_string()];
        let app = AppFacts {
            app_id: "app_x", app_name: "x", org_id: "org_x", key_id: "key_x", scopes: &scopes,
            data_policy: &policy.cedar_data_policy(), tags: crate::authz::no_tags(),
        };
        let tool = ToolFacts { name: "transaction.create", risk: Risk::Medium, effect: Effect::Write, required_scopes: &required, plugin: "ledger" };
        // Arguments that do not fit are refused before Cedar, with a stable issue code.
        let args = match arg_type.value_of(&payload) {
            Ok(args) => args,
            Err(m) => {
                prop_assert!(["invalid_type", "out_of_range", "required", "invalid_format"].contains(&m.code), "{}", m.code);
                return Ok(());
            }
        };
        let facts = request_facts(&args);
        let decision = authorizer.decide(&app, Action::Propose, &tool, &facts);
        // Whatever the payload and policy say, no scope means no permit.
        if !scopes.contains(&required[0]) {
            prop_assert!(!decision.allowed);
        }
    }

    #[test]
    fn arguments_valid_under_a_tools_schema_make_a_context_its_generated_schema_accepts(
        (schema, value) in arb_schema().prop_flat_map(|schema| {
            let values = arb_value(&schema);
            (Just(schema), values)
        }),
        noise in arb_json(),
    ) {
        let schema = json!({"type": "object", "properties": {"a": schema}, "required": ["a"]});
        let (arg_type, _) = ArgType::of_input_schema(&schema);
        let tool_schema = ToolVocabulary { name: "x.call", is_read: false, args: &arg_type };
        let authorizer = Authorizer::build(
            DEFAULT_SCHEMA,
            &[tool_schema],
            crate::authz::default_sources(),
        ).expect("the base set validates against any tool");
        let args = arg_type.value_of(&json!({"a": value})).expect("a valid value is typed");
        let scopes = vec!["s".to_string()];
        let app = AppFacts {
            app_id: "app_x", app_name: "x", org_id: "org_x", key_id: "key_x", scopes: &scopes,
            data_policy: &AppPolicy::default().cedar_data_policy(), tags: crate::authz::no_tags(),
        };
        let tool = ToolFacts { name: "x.call", risk: Risk::Low, effect: Effect::Write, required_scopes: &scopes, plugin: "p" };
        // The reference path checks the context against the generated schema.
        let decision = authorizer.decide_unsliced(&app, Action::Propose, &tool, &request_facts(&args));
        prop_assert!(decision.errors.is_empty(), "{:?}", decision.errors);
        prop_assert!(decision.allowed);
        // Anything else is either typed the same way or refused with a stable code.
        match arg_type.value_of(&json!({"a": noise})) {
            Ok(args) => {
                let decision = authorizer.decide_unsliced(&app, Action::Propose, &tool, &request_facts(&args));
                prop_assert!(decision.errors.is_empty(), "{:?}", decision.errors);
            }
            Err(m) => prop_assert!(["invalid_type", "out_of_range", "required", "invalid_format"].contains(&m.code)),
        }
    }

    #[test]
    fn configs_of_any_text_never_panic(text in any::<String>()) {
        if let Err(e) = crate::config::Config::parse(&text, Path::new("/srv/openport")) {
            prop_assert!(!e.key.is_empty());
        }
    }

    #[test]
    fn configs_with_any_values_name_the_bad_key(key in "[a-z_]{1,20}", value in "[ -~]{0,30}") {
        let text = format!("[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\n{key} = \"{}\"\n[store]\npath = \"x.db\"\n", value.replace(['"', '\\'], ""));
        if let Err(e) = crate::config::Config::parse(&text, Path::new("/srv/openport")) {
            prop_assert!(e.key.starts_with("server") || e.key == "config", "{}", e.key);
        }
    }
}

/// The same value with every object's keys inserted in reverse order.
fn reverse_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut reversed = Map::new();
            for (k, v) in map.iter().rev() {
                reversed.insert(k.clone(), reverse_keys(v));
            }
            Value::Object(reversed)
        }
        Value::Array(items) => Value::Array(items.iter().map(reverse_keys).collect()),
        other => other.clone(),
    }
}

/// The default set over one ledger-like write tool, and its argument type.
fn ledger_like() -> &'static (Authorizer, ArgType) {
    static SET: std::sync::OnceLock<(Authorizer, ArgType)> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let (args, _) = ArgType::of_input_schema(&json!({
            "type": "object",
            "properties": {
                "ledgerId": {"type": "string"},
                "amount": {"type": "number"},
                "date": {"type": "string", "format": "date"},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        }));
        let tool = ToolVocabulary {
            name: "transaction.create",
            is_read: false,
            args: &args,
        };
        let authz = Authorizer::build(DEFAULT_SCHEMA, &[tool], crate::authz::default_sources())
            .expect("default policies compile");
        (authz, args)
    })
}

fn request_facts(args: &Attr) -> RequestFacts<'_> {
    RequestFacts {
        client_ip: IpAddr::from([127, 0, 0, 1]),
        now: time::OffsetDateTime::UNIX_EPOCH,
        channel: "rest",
        actor: "user_x",
        args: Some(args),
        has_idempotency_key: false,
        has_preflight_hash: false,
        has_justification: false,
    }
}

/// JSON Schemas of every shape the Cedar mapping types.
fn arb_schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string"})),
        Just(json!({"type": "string", "format": "date"})),
        Just(json!({"type": "string", "format": "date-time"})),
        Just(json!({"type": "integer"})),
        Just(json!({"type": "number"})),
        Just(json!({"type": "boolean"})),
        Just(json!({"enum": ["low", "urgent"]})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|items| json!({"type": "array", "items": items})),
            (proptest::collection::btree_map("[a-z]{1,6}", inner, 1..4), any::<u8>()).prop_map(|(props, mask)| {
                let required: Vec<&String> = props
                    .keys()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, k)| k)
                    .collect();
                json!({"type": "object", "properties": props, "required": required})
            }),
        ]
    })
}

/// Values valid under a schema from `arb_schema`.
fn arb_value(schema: &Value) -> BoxedStrategy<Value> {
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("enum");
    let format = schema.get("format").and_then(Value::as_str);
    match (kind, format) {
        ("string", Some("date")) => (1970i32..2100, 1u8..13, 1u8..29)
            .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}")))
            .boxed(),
        ("string", Some(_)) => (0i64..4_000_000_000, -12i32..13)
            .prop_map(|(secs, offset)| {
                let at = time::OffsetDateTime::from_unix_timestamp(secs)
                    .expect("in range")
                    .to_offset(time::UtcOffset::from_hms(offset as i8, 0, 0).expect("an offset"));
                json!(
                    at.format(&time::format_description::well_known::Rfc3339)
                        .expect("formats")
                )
            })
            .boxed(),
        ("string", None) => any::<String>().prop_map(Value::String).boxed(),
        ("integer", _) => any::<i64>().prop_map(Value::from).boxed(),
        ("number", _) => (-1.0e14f64..1.0e14).prop_map(Value::from).boxed(),
        ("boolean", _) => any::<bool>().prop_map(Value::Bool).boxed(),
        ("array", _) => proptest::collection::vec(arb_value(&schema["items"]), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        ("object", _) => {
            let required: Vec<String> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, property)| {
                    let is_required = required.contains(name);
                    let name = name.clone();
                    let value = arb_value(property).prop_map(move |v| (name.clone(), v));
                    if is_required {
                        value.prop_map(Some).boxed()
                    } else {
                        proptest::option::of(value).boxed()
                    }
                })
                .collect();
            fields
                .prop_map(|pairs| Value::Object(pairs.into_iter().flatten().collect()))
                .boxed()
        }
        _ => prop_oneof![Just(json!("low")), Just(json!("urgent"))].boxed(),
    }
}
