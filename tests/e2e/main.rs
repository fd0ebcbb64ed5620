//! End-to-end tests: the real `envelope-router` binary on a random port, driven through HTTP and
//! WebSocket like a client would.
//!
//! # Layout
//! * `harness`: start, stop, kill and restart the server; tokens; HTTP and WebSocket clients.
//! * one file per area: delivery, durability, http_errors, devices_and_wakeups, auth, shutdown.

mod harness;

mod auth;
mod cluster;
mod delivery;
mod devices_and_wakeups;
mod durability;
mod http_api;
mod http_errors;
mod logging;
mod mqtt;
mod pubsub_cluster;
mod push;
mod shutdown;
