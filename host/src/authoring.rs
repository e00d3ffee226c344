//! Plugin authoring for app teams: `openport plugin new NAME` writes a crate that builds on
//! its own, out of this repository (the WIT, the pinned dependency versions and the build
//! settings included), and `openport plugin pack DIR` builds one and writes the component
//! beside a manifest that names its digest, world and tools, ready for `plugin add`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::clock::{SharedClock, SystemClock};
use crate::hashing::sha256_hex;
use crate::plugin::{Budgets, EngineSettings, PluginRuntime, World};
use crate::protocol::ids::{self, Kind};
use crate::store::Store;

/// The contract every plugin builds against.
const WIT: &str = include_str!("../../wit/plugin.wit");
/// The in-tree template: one read tool, `hello.greet`.
const TEMPLATE: &str = include_str!("../../plugins/template/src/lib.rs");
/// The lock file the in-tree plugins are built and tested with: a new crate starts from
/// the same versions (cargo drops what it does not use).
const LOCK: &str = include_str!("../../plugins/Cargo.lock");
/// The guest dependencies, pinned to the versions in [`LOCK`] (a test keeps them in step).
const WIT_BINDGEN: &str = "0.61.1";
const SERDE_JSON: &str = "1.0.154";

#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    #[error("`{0}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter")]
    Name(String),
    #[error("`{0}` exists already; choose another name or directory")]
    Exists(String),
    #[error("cannot write `{path}`: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot run cargo: {0}")]
    Cargo(String),
    #[error("the build failed (cargo's output is above)")]
    Build,
    #[error("`{path}`: {message}")]
    Artifact { path: String, message: String },
    #[error("the component does not load: {0}")]
    Load(String),
}

fn is_plugin_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn write(path: &Path, text: &str) -> Result<(), AuthoringError> {
    let failed = |source| AuthoringError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)
}

/// Writes a new plugin crate `parent/name` from the template; returns its directory.
pub fn scaffold(parent: &Path, name: &str) -> Result<PathBuf, AuthoringError> {
    if !is_plugin_name(name) {
        return Err(AuthoringError::Name(name.to_string()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(AuthoringError::Exists(dir.display().to_string()));
    }
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
serde_json = "={SERDE_JSON}"
wit-bindgen = "={WIT_BINDGEN}"

# A workspace of its own: it builds wherever it is checked out.
[workspace]

# Small components: the gateway compiles each once, and loads it on every node.
[profile.release]
opt-level = "s"
strip = true
lto = true
codegen-units = 1
panic = "abort"
"#
    );
    let lib = TEMPLATE.replace(r#"path: "../../wit""#, r#"path: "wit""#);
    let readme = format!(
        "# {name}\n\nAn OpenPort tool adapter. Build it and write its manifest with\n\n\
         ```sh\nopenport plugin pack .\n```\n\n\
         then load it into a running gateway with `openport plugin add dist/{name}.toml`.\n\
         `wit/plugin.wit` is the contract (what the gateway offers, what a plugin exports);\n\
         OpenPort's `docs/plugin-authoring.md` walks through it.\n"
    );
    write(&dir.join("Cargo.toml"), &cargo)?;
    write(&dir.join("Cargo.lock"), LOCK)?;
    write(&dir.join("wit/plugin.wit"), WIT)?;
    write(&dir.join("src/lib.rs"), &lib)?;
    write(&dir.join("README.md"), &readme)?;
    write(&dir.join(".gitignore"), "/target\n/dist\n")?;
    Ok(dir)
}

/// What `pack` made.
#[derive(Debug)]
pub struct Packed {
    pub manifest: PathBuf,
    pub component: PathBuf,
    pub digest: String,
    pub world: World,
    pub tools: Vec<String>,
}

/// The package cargo reports for `dir`: name, version, and where it builds to.
fn package(dir: &Path) -> Result<(String, String, PathBuf), AuthoringError> {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .map_err(|e| AuthoringError::Cargo(e.to_string()))?;
    if !output.status.success() {
        return Err(AuthoringError::Cargo(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| AuthoringError::Cargo(e.to_string()))?;
    let package = &metadata["packages"][0];
    let (Some(name), Some(version), Some(target)) = (
        package["name"].as_str(),
        package["version"].as_str(),
        metadata["target_directory"].as_str(),
    ) else {
        return Err(AuthoringError::Cargo("cargo metadata names no package".into()));
    };
    Ok((name.to_string(), version.to_string(), PathBuf::from(target)))
}

/// Builds the crate in `dir` for `wasm32-wasip2`, checks that the gateway can load it, and
/// writes `dir/dist/NAME.wasm` and `dir/dist/NAME.toml`.
pub async fn pack(dir: &Path) -> Result<Packed, AuthoringError> {
    let (name, version, target) = package(dir)?;
    if !is_plugin_name(&name) {
        return Err(AuthoringError::Name(name));
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .map_err(|e| AuthoringError::Cargo(e.to_string()))?;
    if !status.success() {
        return Err(AuthoringError::Build);
    }
    let built = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let bytes = std::fs::read(&built).map_err(|e| AuthoringError::Artifact {
        path: built.display().to_string(),
        message: e.to_string(),
    })?;
    let (world, tools) = describe(&name, &bytes).await?;
    let digest = sha256_hex(&bytes);
    let dist = dir.join("dist");
    let component = dist.join(format!("{name}.wasm"));
    std::fs::create_dir_all(&dist)
        .and_then(|()| std::fs::write(&component, &bytes))
        .map_err(|source| AuthoringError::Write {
            path: component.display().to_string(),
            source,
        })?;
    let manifest = dist.join(format!("{name}.toml"));
    write(&manifest, &manifest_text(&name, &version, world, &digest, &tools))?;
    Ok(Packed {
        manifest,
        component,
        digest,
        world,
        tools,
    })
}

/// Loads the component in a throwaway sandbox, with nothing granted, to learn what it is.
async fn describe(name: &str, bytes: &[u8]) -> Result<(World, Vec<String>), AuthoringError> {
    let scratch = tempfile_dir()?;
    let store = Store::open(&scratch.join("pack.db")).map_err(|e| AuthoringError::Load(e.to_string()))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let runtime = PluginRuntime::new(
        Arc::new(store),
        clock,
        None,
        Budgets::default(),
        EngineSettings::default(),
    )
    .map_err(|e| AuthoringError::Load(e.to_string()))?;
    let described = runtime.describe(name, bytes).await;
    let _ = std::fs::remove_dir_all(&scratch);
    described.map_err(|e| AuthoringError::Load(e.to_string()))
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> Result<PathBuf, AuthoringError> {
    let dir = std::env::temp_dir().join(format!("openport-pack-{}", ids::new_id(Kind::Request)));
    std::fs::create_dir_all(&dir).map_err(|source| AuthoringError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}

/// The manifest for a packed component: what the operator reviews before `plugin add`.
fn manifest_text(name: &str, version: &str, world: World, digest: &str, tools: &[String]) -> String {
    let world = world.as_str();
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"# Written by `openport plugin pack`. The digest binds this manifest to the component:
# rebuild with `plugin pack` after any change. Grants are the operator's decision: nothing
# is granted until listed here.
name = "{name}"
version = "{version}"
world = "{world}"
component = "{name}.wasm"
sha256 = "{digest}"
tools = [{tools}]

[grants]
log = false
clock = false
kv = false
http = []

[limits]
timeout_ms = 2000
memory_mib = 64
"#,
        tools = tools.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_versions_are_the_ones_the_in_tree_plugins_build_with() {
        for (package, version) in [("wit-bindgen", WIT_BINDGEN), ("serde_json", SERDE_JSON)] {
            let entry = format!("name = \"{package}\"\nversion = \"{version}\"");
            assert!(LOCK.contains(&entry), "plugins/Cargo.lock has no {package} {version}");
        }
        assert!(
            TEMPLATE.contains(r#"path: "../../wit""#),
            "the template's WIT path moved"
        );
    }

    #[test]
    fn plugin_names_are_lowercase_words() {
        for ok in ["crm", "crm-tools", "a1"] {
            assert!(is_plugin_name(ok), "{ok}");
        }
        for bad in ["", "Crm", "1crm", "crm_tools", "crm-", "../x", "crm tools"] {
            assert!(!is_plugin_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_scaffold_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let made = scaffold(dir.path(), "crm").unwrap();
        assert!(made.join("wit/plugin.wit").exists());
        assert!(
            std::fs::read_to_string(made.join("src/lib.rs"))
                .unwrap()
                .contains(r#"path: "wit""#)
        );
        assert!(matches!(scaffold(dir.path(), "crm"), Err(AuthoringError::Exists(_))));
    }
}
