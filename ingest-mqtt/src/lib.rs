//! MQTT ingestor of envelope-router: IoT devices publish SecureEnvelopes to the broker; the
//! router, a client of that broker, validates them and publishes them to the bus.
//!
//! # Layout
//! * [`config`]: broker URL, client id, shared-subscription group, topics.
//! * [`transport`]: [`MqttTransport`], the small trait the ingestor needs from an MQTT client.
//! * [`rumqttc_transport`]: its implementation on `rumqttc` (v5), replaceable by a fork.
//! * [`ingestor`]: per message: authenticate, validate, publish to the bus, then PUBACK.
//! * [`sessions`]: MQTT-connected clients: announce, receive, ack, Last Will.
#![warn(missing_docs)]

pub mod config;
pub mod ingestor;
pub mod rumqttc_transport;
pub mod sessions;
pub mod transport;

pub use config::MqttConfig;
pub use ingestor::MqttIngestor;
pub use transport::{InboundMessage, MqttTransport};
