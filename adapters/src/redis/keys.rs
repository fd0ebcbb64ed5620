//! Key and channel names. A user's keys share the hash tag `{<urn>}`; an instance's, `{<id>}`.

use pipeline::{InstanceId, UserUrn};

/// Names every Redis key under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (e.g. `er:`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn user(&self, user: &UserUrn, suffix: &str) -> String {
        format!("{}{{{}}}:{suffix}", self.prefix, user)
    }

    /// Hash of a user's live sessions: session id → JSON.
    pub fn sessions(&self, user: &UserUrn) -> String {
        self.user(user, "sessions")
    }

    /// Sorted set of a user's queue: message id by (lane, seq).
    pub fn queue(&self, user: &UserUrn) -> String {
        self.user(user, "q")
    }

    /// Hash of a user's queued envelopes: message id → JSON.
    pub fn envelopes(&self, user: &UserUrn) -> String {
        self.user(user, "e")
    }

    /// Sorted set of a user's queued ids by expiry time.
    pub fn expiry(&self, user: &UserUrn) -> String {
        self.user(user, "x")
    }

    /// Sorted set of a user's recently seen ids by end of dedupe window.
    pub fn dedupe(&self, user: &UserUrn) -> String {
        self.user(user, "d")
    }

    /// Hash of a user's push devices: token fingerprint → JSON.
    pub fn devices(&self, user: &UserUrn) -> String {
        self.user(user, "devices")
    }

    /// A user's queue sequence counter.
    pub fn sequence(&self, user: &UserUrn) -> String {
        self.user(user, "seq")
    }

    /// An instance's liveness key.
    pub fn instance_alive(&self, instance: &InstanceId) -> String {
        format!("{}instance:{{{}}}:alive", self.prefix, instance)
    }

    /// Set of `<urn>\t<session>` an instance holds (for graceful removal).
    pub fn instance_sessions(&self, instance: &InstanceId) -> String {
        format!("{}instance:{{{}}}:sessions", self.prefix, instance)
    }

    /// The lock one janitor holds while it sweeps.
    pub fn janitor_lock(&self) -> String {
        format!("{}janitor-lock", self.prefix)
    }

    /// A token bucket.
    pub fn bucket(&self, key: &str) -> String {
        format!("{}rl:{{{key}}}", self.prefix)
    }

    /// An instance's delivery channel (Redis pub/sub).
    pub fn delivery_channel(&self, instance: &InstanceId) -> String {
        format!("{}delivery:{}", self.prefix, instance)
    }
}
