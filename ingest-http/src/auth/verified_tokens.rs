//! Tokens verified lately: a client that sends many requests with one token pays for its
//! signature check once per [`RECHECK_AFTER`], not on every request.
//!
//! An entry is the exact token text, so a token that differs in any byte is verified afresh.
//! A cached token still expires at its own `exp` (with the verifier's leeway), and is checked
//! again after [`RECHECK_AFTER`], so a key removed from the JWKS stops being accepted within
//! that time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use pipeline::UserUrn;

/// How long a verified token is served from the cache before its signature is checked again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// How many tokens the cache holds at most (~300 bytes each).
pub const CAPACITY: usize = 10_000;

/// What the cache knows of one verified token.
struct Verified {
    user: UserUrn,
    /// Unix seconds after which the token is expired (its `exp` plus the leeway).
    expires_at: u64,
    /// When its signature was last checked.
    checked_at: Instant,
}

/// A bounded map from token text to the user it names, shared by every connection.
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Verified>>,
    capacity: usize,
    recheck_after: Duration,
}

impl VerifiedTokens {
    /// An empty cache of at most `capacity` tokens, each served for `recheck_after`.
    pub fn new(capacity: usize, recheck_after: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            recheck_after,
        }
    }

    /// The user of `token` if it was verified less than `recheck_after` before `now` and is
    /// not expired at `now_unix` (seconds).
    pub fn get(&self, token: &str, now: Instant, now_unix: u64) -> Option<UserUrn> {
        let entries = self.entries.lock().ok()?;
        let verified = entries.get(token)?;
        let fresh = now.saturating_duration_since(verified.checked_at) < self.recheck_after;
        (fresh && now_unix <= verified.expires_at).then(|| verified.user.clone())
    }

    /// Remembers that `token` names `user` and expires after `expires_at` (Unix seconds),
    /// verified at `now`. When full, an arbitrary entry makes room.
    pub fn insert(&self, token: &str, user: UserUrn, expires_at: u64, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            let victim = entries.keys().next().cloned();
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        entries.insert(
            token.into(),
            Verified {
                user,
                expires_at,
                checked_at: now,
            },
        );
    }

    /// How many tokens the cache holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserUrn {
        UserUrn::parse(name).expect("urn")
    }

    #[test]
    fn a_verified_token_is_served_until_its_expiry() {
        let cache = VerifiedTokens::new(8, Duration::from_secs(60));
        let now = Instant::now();
        cache.insert("a.b.c", user("alice"), 1_000, now);
        assert_eq!(cache.get("a.b.c", now, 1_000), Some(user("alice")));
        assert_eq!(cache.get("a.b.c", now, 1_001), None, "expired");
    }

    #[test]
    fn a_token_is_checked_again_after_the_recheck_time() {
        let cache = VerifiedTokens::new(8, Duration::from_secs(60));
        let then = Instant::now();
        cache.insert("a.b.c", user("alice"), u64::MAX, then);
        assert!(
            cache
                .get("a.b.c", then + Duration::from_secs(59), 0)
                .is_some()
        );
        assert!(
            cache
                .get("a.b.c", then + Duration::from_secs(60), 0)
                .is_none()
        );
    }

    #[test]
    fn only_the_exact_token_text_is_served() {
        let cache = VerifiedTokens::new(8, Duration::from_secs(60));
        let now = Instant::now();
        cache.insert("a.b.c", user("alice"), u64::MAX, now);
        assert_eq!(cache.get("a.b.d", now, 0), None);
        assert_eq!(cache.get("a.b.c ", now, 0), None);
        assert_eq!(cache.get("a.b", now, 0), None);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = VerifiedTokens::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..10 {
            cache.insert(&format!("token-{i}"), user("alice"), u64::MAX, now);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("token-9", now, 0).is_some(), "the newest is kept");
    }
}
