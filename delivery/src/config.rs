//! Timings and bounds of live sessions.

use std::time::Duration;

/// How sessions are kept alive, bounded and checked.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Live envelopes queued per session before it counts as too slow and is closed.
    pub session_queue: usize,
    /// Items the instance's delivery channel buffers.
    pub channel_capacity: usize,
    /// Server ping interval; a session silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// Deadline of every write to a client.
    pub write_timeout: Duration,
    /// Presence heartbeat interval of a session.
    pub heartbeat_interval: Duration,
    /// Presence TTL of a session without heartbeat.
    pub session_ttl: Duration,
    /// Instance liveness beat interval.
    pub instance_beat: Duration,
    /// Instance liveness TTL without a beat.
    pub instance_ttl: Duration,
    /// An envelope written but not acked this long triggers a wake-up.
    pub ack_timeout: Duration,
    /// Envelopes read from the store per backlog page.
    pub backlog_page: usize,
    /// Live envelopes buffered while the backlog is still being sent.
    pub backlog_live_buffer: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            session_queue: 256,
            channel_capacity: 4096,
            ping_interval: Duration::from_secs(25),
            write_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            session_ttl: Duration::from_secs(90),
            instance_beat: Duration::from_secs(5),
            instance_ttl: Duration::from_secs(15),
            ack_timeout: Duration::from_secs(60),
            backlog_page: 200,
            backlog_live_buffer: 1024,
        }
    }
}
