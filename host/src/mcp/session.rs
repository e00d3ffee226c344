//! MCP sessions (`Mcp-Session-Id`): created by `initialize`, bound to the credential that
//! created them, ended by `DELETE /mcp` or by idling out. They live in memory: a session
//! carries no authority (every request is authenticated and authorized again), so losing
//! them on restart only makes clients initialize again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hashing::sha256_hex;
use crate::protocol::ids::{self, Kind};

/// Sessions idle longer than this are gone.
const IDLE: Duration = Duration::from_secs(3600);
/// At most this many sessions; the least recently used goes first.
const CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Session {
    /// sha256 of the credential that created the session.
    credential: String,
    protocol_version: String,
    last_seen: Instant,
}

/// Why a request's session was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No `Mcp-Session-Id` header on a request that needs one.
    Missing,
    /// Unknown, expired, ended, or created by another credential.
    NotFound,
}

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

/// What a session is bound to: the `Authorization` header, or the anonymous integration.
pub fn credential_of(authorization: Option<&str>) -> String {
    match authorization {
        Some(value) => sha256_hex(value.trim().as_bytes()),
        None => "anonymous".into(),
    }
}

impl Sessions {
    /// Opens a session for a credential and returns its id.
    pub fn open(&self, credential: String, protocol_version: &str) -> String {
        let id = ids::new_id(Kind::McpSession);
        let now = Instant::now();
        let mut sessions = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if sessions.len() >= CAPACITY
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                credential,
                protocol_version: protocol_version.to_string(),
                last_seen: now,
            },
        );
        id
    }

    /// Checks a request's session and returns its protocol version.
    pub fn touch(&self, id: Option<&str>, credential: &str) -> Result<String, SessionError> {
        let id = id.ok_or(SessionError::Missing)?;
        let now = Instant::now();
        let mut sessions = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get_mut(id) {
            Some(s) if s.credential == credential && now.duration_since(s.last_seen) < IDLE => {
                s.last_seen = now;
                Ok(s.protocol_version.clone())
            }
            _ => Err(SessionError::NotFound),
        }
    }

    /// Ends a session; only its own credential may end it.
    pub fn close(&self, id: &str, credential: &str) -> bool {
        let mut sessions = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.get(id).is_some_and(|s| s.credential == credential) {
            sessions.remove(id);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_its_credential() {
        let sessions = Sessions::default();
        let mine = credential_of(Some("Bearer op_a"));
        let id = sessions.open(mine.clone(), "2025-11-25");
        assert_eq!(sessions.touch(Some(&id), &mine), Ok("2025-11-25".into()));
        assert_eq!(
            sessions.touch(Some(&id), &credential_of(Some("Bearer op_b"))),
            Err(SessionError::NotFound)
        );
        assert_eq!(sessions.touch(None, &mine), Err(SessionError::Missing));
        assert!(
            !sessions.close(&id, &credential_of(None)),
            "another credential cannot end it"
        );
        assert!(sessions.close(&id, &mine));
        assert_eq!(sessions.touch(Some(&id), &mine), Err(SessionError::NotFound));
    }
}
