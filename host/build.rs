//! Builds the guest plugins in `../plugins` for `wasm32-wasip2` and exposes them to the
//! host: the demo plugins are embedded in the binary (so `openport demo` needs no files)
//! and every artifact's path is available to tests.
//!
//! The nested cargo uses its own target directory (`target/plugins`): sharing the outer
//! one would deadlock on its lock.

#![expect(clippy::expect_used, reason = "a build script reports failure by panicking")]
#![expect(
    clippy::disallowed_methods,
    reason = "a build script reads the environment cargo gives it"
)]

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// Plugins embedded in the binary for `openport demo`.
const DEMO_PLUGINS: &[&str] = &["ledger", "ledger-witness", "tickets", "mcp-conformance"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.lock").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    let members = plugin_members(&plugins);
    for member in &members {
        println!("cargo:rerun-if-changed={}", plugins.join(member).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the plugins");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed; if the target is missing, run \
             `rustup target add wasm32-wasip2` and build again"
        );
    }

    let artifacts = target_dir.join("wasm32-wasip2").join("release");
    let mut out = String::new();
    writeln!(out, "/// Where the built plugin components are.").ok();
    writeln!(
        out,
        "pub const ARTIFACT_DIR: &str = {:?};",
        artifacts.display().to_string()
    )
    .ok();
    writeln!(out, "/// Every plugin crate in `plugins/`, by crate name.").ok();
    writeln!(out, "pub const ALL: &[&str] = &{members:?};").ok();
    for demo in DEMO_PLUGINS {
        let file = demo.replace('-', "_");
        let path = artifacts.join(format!("{file}.wasm"));
        assert!(path.exists(), "plugin `{demo}` was not built at {}", path.display());
        writeln!(out, "/// The `{demo}` component.").ok();
        writeln!(
            out,
            "pub const {}: &[u8] = include_bytes!({:?});",
            file.to_uppercase(),
            path.display().to_string()
        )
        .ok();
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("plugins.rs"), out).expect("write plugins.rs");
}

/// Crate names listed in `plugins/Cargo.toml` `members`.
fn plugin_members(plugins: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(plugins.join("Cargo.toml")).expect("read plugins/Cargo.toml");
    let start = text.find("members").expect("plugins/Cargo.toml lists members");
    let list = &text[start..];
    let open = list.find('[').expect("members is a list");
    let close = list.find(']').expect("members is a list");
    list[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
