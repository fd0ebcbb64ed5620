//! MQTT ingestor of envelope-router — **a placeholder crate**.
//!
//! Nothing here runs yet: the MQTT issue (ingest sidecar for IoT devices, delivery to
//! MQTT-connected clients) fills it. Until then the workspace keeps the crate so the layout, the
//! binary's wiring and the docs already have their place.
#![warn(missing_docs)]

/// Whether this build has a working MQTT ingestor (`false` until the MQTT issue lands).
pub const AVAILABLE: bool = false;
