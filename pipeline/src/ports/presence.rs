//! Presence: which instances hold live sessions of a user.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::PresenceError;
use crate::instance_id::InstanceId;
use crate::session_id::SessionId;
use crate::urn::UserUrn;

/// How a session is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `GET /connect`.
    WebSocket,
    /// `clients/<urn>/receive` on the MQTT broker.
    Mqtt,
}

impl Protocol {
    /// The name stored in presence (`websocket`, `mqtt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::WebSocket => "websocket",
            Protocol::Mqtt => "mqtt",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "websocket" => Some(Protocol::WebSocket),
            "mqtt" => Some(Protocol::Mqtt),
            _ => None,
        }
    }
}

/// One live session as presence records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub session: SessionId,
    /// Whose session it is.
    pub user: UserUrn,
    /// The instance holding the connection.
    pub instance: InstanceId,
    /// WebSocket or MQTT.
    pub protocol: Protocol,
    /// When it connected, milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Last heartbeat, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
}

/// Shared truth of who is online where.
///
/// A session counts as live while its heartbeat is younger than its TTL *and* its instance's
/// liveness beat is younger than the instance TTL: a crashed instance's sessions stop counting
/// within one instance TTL, so no envelope is routed to a dead process for long.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `session` as live for `ttl` (until its next heartbeat).
    async fn register(&self, session: &SessionInfo, ttl: Duration) -> Result<(), PresenceError>;

    /// Extends `session` of `user` by `ttl`; returns false when the session was already gone.
    async fn heartbeat(
        &self,
        user: &UserUrn,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<bool, PresenceError>;

    /// Removes one session (it closed).
    async fn unregister(&self, user: &UserUrn, session: &SessionId) -> Result<(), PresenceError>;

    /// The live sessions of `user` on live instances.
    async fn sessions(&self, user: &UserUrn) -> Result<Vec<SessionInfo>, PresenceError>;

    /// The live sessions of each of `users`, in order; one round trip where the backend allows.
    async fn sessions_many(
        &self,
        users: &[UserUrn],
    ) -> Result<Vec<Vec<SessionInfo>>, PresenceError> {
        let mut all = Vec::with_capacity(users.len());
        for user in users {
            all.push(self.sessions(user).await?);
        }
        Ok(all)
    }

    /// Marks `instance` alive for `ttl` (its liveness beat).
    async fn instance_alive(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<(), PresenceError>;

    /// Whether `instance`'s liveness beat is current.
    async fn instance_live(&self, instance: &InstanceId) -> Result<bool, PresenceError>;

    /// Removes `instance`'s liveness and every session it holds (graceful shutdown).
    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), PresenceError>;

    /// Whether presence is reachable (for `/readyz`).
    async fn check(&self) -> Result<(), PresenceError>;
}
