//! The module layering of `host/src`, checked: every `crate::` reference of a top-level
//! module points to a lower layer, so there is no import cycle between top-level modules
//! (docs/architecture.md draws the same picture). Test code may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom layer first. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Vocabulary: no I/O, no state. Time and hashes first: the wire protocol hashes.
    &["clock", "hashing"],
    &["protocol", "tool", "attr", "metrics", "logging"],
    &["app_policy"],
    // Durable state.
    &["store", "disk"],
    &["audit", "auth", "authz", "sessions"],
    &["admission", "apps", "plugin"],
    &["config", "catalog"],
    &["tls"],
    &["outcome"],
    // Reads finishing in the background, and what nodes sharing a store keep in step;
    // then the gateway that holds them.
    &["tasks", "cluster"],
    &["gateway"],
    // The write lifecycle, then the steps every agent request runs.
    &["writes"],
    &["pipeline"],
    // Bindings and planes: each turns its wire into pipeline calls and back.
    &["rest", "mcp", "admin"],
    &["http", "admin_client"],
    &["demo", "authoring"],
    &["cli"],
];

/// Modules that are only compiled for tests.
const TEST_ONLY: &[&str] = &["fuzz", "layering"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read host/src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `store/kv.rs` → `store`, `rest.rs` → `rest`.
fn top_module(src: &Path, file: &Path) -> String {
    let first = file
        .strip_prefix(src)
        .expect("under src")
        .components()
        .next()
        .expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// The top-level modules a file's non-test code names as `crate::x`, including inside
/// `use crate::{a, b::c}` groups.
fn references(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    for word in words(code) {
        if let Some(rest) = word.strip_prefix("crate::") {
            let name = rest.split("::").next().unwrap_or("");
            if modules.contains(name) {
                found.insert(name.to_string());
            }
        }
    }
    let mut rest = code;
    while let Some(start) = rest.find("use crate::{") {
        let group = &rest[start + "use crate::{".len()..];
        let end = group.find("};").unwrap_or(group.len());
        for item in group[..end].split(',') {
            let name = item
                .trim()
                .split("::")
                .next()
                .unwrap_or("")
                .trim_start_matches('{')
                .trim();
            if modules.contains(name) {
                found.insert(name.to_string());
            }
        }
        rest = &group[end..];
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = top_module(&src, file);
        if me == "lib" || me == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        let uses = references(&text, &modules);
        edges
            .entry(me.clone())
            .or_default()
            .extend(uses.into_iter().filter(|m| *m != me));
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    for module in graph().keys() {
        assert!(
            layer_of(module).is_some() || TEST_ONLY.contains(&module.as_str()),
            "module `{module}` is in no layer: add it to LAYERS in host/src/layering.rs and to docs/architecture.md"
        );
    }
}

#[test]
fn modules_use_only_lower_layers_so_there_are_no_import_cycles() {
    let mut upward = Vec::new();
    for (module, uses) in graph() {
        let Some(mine) = layer_of(&module) else { continue };
        for used in uses {
            if layer_of(&used).is_none_or(|theirs| theirs >= mine) {
                upward.push(format!("{module} -> {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "these references go sideways or up the layers (a cycle waiting to happen): {upward:?}"
    );
}

#[test]
fn the_scan_sees_grouped_and_path_references() {
    let modules: BTreeSet<String> = ["store", "audit", "clock"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{audit::AuditEvent, clock};\nfn f() { crate::store::connect(); }\n#[cfg(test)]\nmod t { use crate::x; }";
    let found: Vec<String> = references(text, &modules).into_iter().collect();
    assert_eq!(found, ["audit", "clock", "store"]);
}
