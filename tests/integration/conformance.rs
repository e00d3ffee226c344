//! The conformance profiles (`conformance/profiles/*.json`) against the reason-code
//! registry: every code is asserted by at least one black-box case, except the few that no
//! outside client can cause, each listed here with why and where it is tested instead.

use std::collections::BTreeSet;

use openport::protocol::codes;
use serde_json::Value;

/// Codes no black-box case can reach, with the reason and the test that covers them.
const UNREACHABLE_FROM_OUTSIDE: &[(&str, &str)] = &[
    (
        "common.internal_error",
        "means a bug or a failed store; tested by audit::a_store_failure_is_a_500_without_internals_and_is_audited_with_them",
    ),
    (
        "agent.draft_expired",
        "needs the review window (at least 60 s, fixed at start) to pass; tested with an injected clock by \
         drafts::a_draft_expires_exactly_at_the_end_of_its_review_window",
    ),
];

/// Every string in the expectations (`expect`, `audit`) of a case, at any depth.
fn expected_strings(value: &Value, inside_expectation: bool, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) if inside_expectation => {
            out.insert(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|v| expected_strings(v, inside_expectation, out)),
        Value::Object(map) => {
            for (key, v) in map {
                expected_strings(v, inside_expectation || key == "expect" || key == "audit", out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_profiles_assert_every_reason_code_of_the_registry() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/profiles");
    let mut asserted = BTreeSet::new();
    let mut cases = 0;
    for entry in std::fs::read_dir(dir).expect("profiles directory") {
        let path = entry.expect("entry").path();
        let profile: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("profile is JSON");
        cases += profile["cases"].as_array().map_or(0, Vec::len);
        expected_strings(&profile, false, &mut asserted);
    }
    assert!(
        cases >= 150,
        "the profiles hold {cases} cases; SPEC 11 wants at least 150"
    );
    let exempt: BTreeSet<&str> = UNREACHABLE_FROM_OUTSIDE.iter().map(|(code, _)| *code).collect();
    let missing: Vec<&str> = codes::ALL
        .iter()
        .map(|c| c.name)
        .filter(|name| !asserted.contains(*name) && !exempt.contains(name))
        .collect();
    assert!(missing.is_empty(), "no conformance case asserts {missing:?}");
    for code in &exempt {
        assert!(
            codes::by_name(code).is_some(),
            "exemption for a code not in the registry: {code}"
        );
        assert!(
            !asserted.contains(*code),
            "{code} is asserted by a case now: drop its exemption"
        );
    }
}
