//! Implementations of envelope-router's ports.
//!
//! # Layout
//! * [`embedded`]: the all-in-one defaults: a durable local bus, queues and device tokens in one
//!   on-disk [redb](https://www.redb.org) database, in-memory presence, rate limits and delivery
//!   channel, and a push sender that logs.
//! * [`redis`]: presence, queues, rate limits and delivery channels shared by many instances.
//! * [`pubsub`]: Google Pub/Sub: the `envelope-ingress` bus and per-instance delivery topics.
//! * [`push`]: FCM HTTP v1 and APNs wake-up senders.
//! * [`firestore`]: device tokens in Firestore.
//! * [`delivery_wire`]: the JSON form of delivery items between instances.
//! * [`error`]: errors raised while building adapters.
//!
//! Cloud backends (Redis, Pub/Sub, Firestore, FCM, APNs) get a folder each, one file per port.
#![warn(missing_docs)]

pub mod delivery_wire;
pub mod embedded;
pub mod error;
pub mod firestore;
pub mod pubsub;
pub mod push;
pub mod redis;

pub use error::AdapterError;
