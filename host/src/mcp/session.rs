//! MCP sessions (`Mcp-Session-Id`): created by `initialize`, bound to the credential that
//! created them, ended by `DELETE /mcp` or by idling out, kept in a [`SessionTable`].

use crate::clock::SharedClock;
use crate::hashing::sha256_hex;
use crate::sessions::{Expiry, SessionTable};

/// Sessions idle longer than this are gone.
const IDLE_MS: i64 = 3600 * 1000;
/// At most this many sessions; the least recently used goes first.
const CAPACITY: usize = 10_000;

/// What an MCP session remembers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// sha256 of the credential that created the session.
    pub credential: String,
    pub protocol_version: String,
}

/// Open MCP sessions.
pub type Sessions = SessionTable<Session>;

/// The table the MCP binding keeps its sessions in.
pub fn table(clock: SharedClock) -> Sessions {
    SessionTable::new(clock, Expiry::IdleMs(IDLE_MS), CAPACITY)
}

/// What a session is bound to: the `Authorization` header, or the anonymous integration.
pub fn credential_of(authorization: Option<&str>) -> String {
    match authorization {
        Some(value) => sha256_hex(value.trim().as_bytes()),
        None => "anonymous".into(),
    }
}

/// Why a request's session was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No `Mcp-Session-Id` header on a request that needs one.
    Missing,
    /// Unknown, expired, ended, or created by another credential.
    NotFound,
}

/// Checks a request's session: it exists, is live, and belongs to `credential`.
pub fn check(sessions: &Sessions, id: Option<&str>, credential: &str) -> Result<Session, SessionError> {
    let id = id.ok_or(SessionError::Missing)?;
    sessions
        .touch(id)
        .filter(|s| s.credential == credential)
        .ok_or(SessionError::NotFound)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_session_belongs_to_its_credential_and_idles_out_on_the_gateway_clock() {
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        let sessions = table(clock.clone());
        let mine = credential_of(Some("Bearer op_a"));
        sessions.open(
            "s1".into(),
            Session {
                credential: mine.clone(),
                protocol_version: "2025-11-25".into(),
            },
        );
        assert_eq!(
            check(&sessions, Some("s1"), &mine).map(|s| s.protocol_version),
            Ok("2025-11-25".into())
        );
        let theirs = credential_of(Some("Bearer op_b"));
        assert_eq!(check(&sessions, Some("s1"), &theirs), Err(SessionError::NotFound));
        assert_eq!(check(&sessions, None, &mine), Err(SessionError::Missing));
        assert!(
            !sessions.close_if("s1", |s| s.credential == theirs),
            "another credential cannot end it"
        );
        clock.advance_ms(IDLE_MS);
        assert_eq!(check(&sessions, Some("s1"), &mine), Err(SessionError::NotFound));
    }
}
