//! Signed checkpoints of the audit chain (issue: security and integrity). A hash chain
//! alone proves order, not completeness: whoever can write the database can delete its
//! tail, or edit a row and recompute every later hash, and the chain still links. A
//! checkpoint pins the chain's head: (position, head hash, time), signed with an Ed25519
//! key kept outside the database. The writer signs one at least every second while events
//! flow, stores it in the database and appends it to a log file outside the database;
//! `verify` checks the chain against every checkpoint it is given.
//!
//! The signed message is text, so any Ed25519 tool can check it:
//!
//! ```text
//! openport audit checkpoint v1
//! <position of the head event>
//! <hex head hash>
//! <RFC 3339 time>
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::hashing::sha256_hex;
use crate::store::SignedCheckpoint;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

const SECRET_PREFIX: &str = "openport-audit-ed25519-secret:";
const PUBLIC_PREFIX: &str = "openport-audit-ed25519-public:";

/// The text a checkpoint's signature covers.
pub fn message(node: &str, seq: i64, head_hash: &str, created_at: &str) -> String {
    // v1 has no node: the embedded store's one chain. A shared store's chains sign theirs,
    // so a checkpoint cannot be passed off as another node's.
    if node.is_empty() {
        format!("openport audit checkpoint v1\n{seq}\n{head_hash}\n{created_at}\n")
    } else {
        format!("openport audit checkpoint v2\n{node}\n{seq}\n{head_hash}\n{created_at}\n")
    }
}

/// Whether `key` signed exactly this checkpoint.
pub fn verify(checkpoint: &SignedCheckpoint, key: &VerifyingKey) -> bool {
    let Ok(bytes) = hex::decode(&checkpoint.signature) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    let text = message(
        &checkpoint.node,
        checkpoint.seq,
        &checkpoint.head_hash,
        &checkpoint.created_at,
    );
    checkpoint.key_id == key_id(key) && key.verify(text.as_bytes(), &signature).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write `{path}`: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("`{path}` is not an OpenPort audit {what} key")]
    Malformed { path: String, what: &'static str },
    #[error("`{path}` exists already; refusing to overwrite a signing key")]
    Exists { path: String },
}

fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_string()
}

/// The public key file that goes with a secret key file: `<path>.pub`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates a new signing key at `path` (readable by the owner only) and its public key at
/// `<path>.pub`. Refuses to overwrite an existing key.
pub fn generate_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let display = || path.display().to_string();
    if path.exists() {
        return Err(KeyError::Exists { path: display() });
    }
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    let write = |target: &Path, text: String, private: bool| -> Result<(), KeyError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let _ = private;
        let mut file = options.open(target).map_err(|source| KeyError::Write {
            path: target.display().to_string(),
            source,
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Write {
                path: target.display().to_string(),
                source,
            })
    };
    write(path, format!("{SECRET_PREFIX}{}\n", hex::encode(seed)), true)?;
    let public = key.verifying_key();
    write(
        &public_key_path(path),
        format!("{PUBLIC_PREFIX}{}\n", hex::encode(public.as_bytes())),
        false,
    )?;
    Ok(public)
}

fn read_key_bytes(path: &Path, prefix: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let malformed = || KeyError::Malformed {
        path: path.display().to_string(),
        what,
    };
    let bytes = hex::decode(text.trim().strip_prefix(prefix).ok_or_else(malformed)?).map_err(|_| malformed())?;
    bytes.try_into().map_err(|_| malformed())
}

/// The signing key in `path`.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&read_key_bytes(path, SECRET_PREFIX, "secret")?))
}

/// A public key: from a `.pub` file, or derived from a secret key file.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    match read_key_bytes(path, PUBLIC_PREFIX, "public") {
        Ok(bytes) => VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed {
            path: path.display().to_string(),
            what: "public",
        }),
        Err(KeyError::Malformed { .. }) => Ok(load_signing_key(path)?.verifying_key()),
        Err(other) => Err(other),
    }
}

/// Signs checkpoints and appends them to the log outside the database.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    key_id: String,
    log: Option<PathBuf>,
}

impl Signer {
    pub fn new(key: SigningKey, log: Option<PathBuf>) -> Signer {
        let key_id = key_id(&key.verifying_key());
        Signer { key, key_id, log }
    }

    pub fn sign(&self, node: &str, seq: i64, head_hash: &str, created_at: &str) -> SignedCheckpoint {
        let signature = self.key.sign(message(node, seq, head_hash, created_at).as_bytes());
        SignedCheckpoint {
            node: node.to_string(),
            seq,
            head_hash: head_hash.to_string(),
            created_at: created_at.to_string(),
            key_id: self.key_id.clone(),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Appends a checkpoint to the log file and syncs it to disk.
    pub fn append_to_log(&self, checkpoint: &SignedCheckpoint) -> std::io::Result<()> {
        let Some(path) = &self.log else {
            return Ok(());
        };
        let line = serde_json::to_string(checkpoint).map_err(std::io::Error::other)?;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()
    }
}

/// Every checkpoint in a log file; a line that does not parse is an error naming it.
pub fn read_log(path: &Path) -> Result<Vec<SignedCheckpoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("`{}` line {}: not a checkpoint: {e}", path.display(), n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_under_its_key_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let public = generate_key(&path).unwrap();
        assert!(matches!(generate_key(&path), Err(KeyError::Exists { .. })));
        assert_eq!(load_verifying_key(&public_key_path(&path)).unwrap(), public);
        assert_eq!(load_verifying_key(&path).unwrap(), public, "derived from the secret");
        let signer = Signer::new(load_signing_key(&path).unwrap(), None);
        let checkpoint = signer.sign("", 42, &"ab".repeat(32), "2026-11-30T00:00:00.000Z");
        assert!(verify(&checkpoint, &public));
        let mut moved = checkpoint.clone();
        moved.seq = 41;
        assert!(!verify(&moved, &public), "another position");
        let mut rehashed = checkpoint.clone();
        rehashed.head_hash = "cd".repeat(32);
        assert!(!verify(&rehashed, &public), "another head");
        let other = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(!verify(&checkpoint, &other), "another key");
    }
}
