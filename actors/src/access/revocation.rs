//! Revocation of access tokens: access tokens are verified without the
//! database, so ending a session (logout, `DELETE /sessions/{id}`, reuse of
//! a spent refresh token) also writes `revoked:session:<sid>` into the
//! key-value store, which the front-end checks on every request. The entry
//! lives as long as a token of that session could still verify (the access
//! TTL plus the verification leeway); after that the tokens have expired on
//! their own. With Redis, every replica sees it at once.
//!
//! The database's `revoked_at` stays the truth: the auth service copies the
//! recent revocations back into the store when the service starts, so an
//! in-memory store that was lost with the process forgets nothing that
//! still matters.

use std::time::Duration;

use uuid::Uuid;

use super::tokens::LEEWAY;
use crate::kv::{KvError, KvStore};

/// The key that marks a session's access tokens as revoked.
pub fn revocation_key(session_id: Uuid) -> String {
    format!("revoked:session:{session_id}")
}

/// How long a revocation must be remembered for tokens of `access_ttl`.
pub fn revocation_ttl(access_ttl: Duration) -> Duration {
    access_ttl + LEEWAY
}

/// Marks the session's access tokens as revoked for `ttl`.
pub async fn revoke_session_tokens(
    kv: &dyn KvStore,
    session_id: Uuid,
    ttl: Duration,
) -> Result<(), KvError> {
    kv.set(&revocation_key(session_id), b"1", Some(ttl)).await
}

/// Whether the session's access tokens have been revoked: what the
/// front-end asks after verifying a token's signature.
pub async fn is_session_revoked(kv: &dyn KvStore, session_id: Uuid) -> Result<bool, KvError> {
    Ok(kv.get(&revocation_key(session_id)).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;

    #[tokio::test]
    async fn a_revoked_session_is_seen_until_its_tokens_expire() {
        let kv = MemoryKv::new(1000, "test:");
        let (sid, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(!is_session_revoked(&kv, sid).await.expect("kv"));
        revoke_session_tokens(&kv, sid, Duration::from_millis(50))
            .await
            .expect("kv");
        assert!(is_session_revoked(&kv, sid).await.expect("kv"));
        assert!(!is_session_revoked(&kv, other).await.expect("kv"));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!is_session_revoked(&kv, sid).await.expect("kv"));
        assert_eq!(
            revocation_ttl(Duration::from_secs(900)),
            Duration::from_secs(930)
        );
    }
}
