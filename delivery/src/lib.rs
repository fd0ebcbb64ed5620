//! Connection manager of envelope-router: live sessions, presence registration, delivery.
//!
//! # Layout
//! * [`config`]: timings and bounds of sessions.
//! * [`delivery_metrics`]: per-envelope counters and histograms, registered once.
//! * [`manager`]: [`ConnectionManager`], this instance's sessions, its delivery channel and its
//!   presence (liveness beat, registration, removal on shutdown).
//! * [`unacked`]: envelopes written but not acked yet, and the wake-up when they stay unacked.
//! * [`frames`]: the JSON frames sessions exchange with clients.
//! * [`websocket`]: one WebSocket session: backlog first, then live envelopes, acks, pings.
#![warn(missing_docs)]

pub mod config;
pub mod delivery_metrics;
pub mod frames;
pub mod manager;
pub mod unacked;
pub mod websocket;

pub use config::DeliveryConfig;
pub use manager::{CloseReason, ConnectionManager, Outbound, SessionHandle};
