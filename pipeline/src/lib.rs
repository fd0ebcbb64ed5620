//! Domain types, port traits and routing logic of envelope-router.
//!
//! # Layout
//! * [`urn`], [`message_id`], [`instance_id`], [`session_id`], [`device`]: ids, parsed once at the edge.
//! * [`envelope`]: the SecureEnvelope contract (ProtoJSON, camelCase, base64 bytes) and its validation.
//! * [`envelope_header`]: the clear header routing reads of a validated envelope.
//! * [`opaque`]: the envelope's opaque bytes, carried as canonical base64 text, never decoded.
//! * [`ports`]: one trait per backend role (bus, presence, envelope store, device tokens, push,
//!   delivery channel, rate limits); adapters implement them.
//! * [`routing`]: transformer → processor, the store-first routing shared by every mode, and wake-ups.
//! * [`clock`]: injectable time and id generation.
//! * [`error`]: the typed errors of every port.
//! * [`health`]: the ingest gate (503 while the store or bus is down).
//! * `testkit` (feature): one behaviour suite per port, run by every adapter.
//!
//! The crate holds no network code: adapters bring the wire, `src/` wires roles together.
#![warn(missing_docs)]

pub mod clock;
pub mod device;
pub mod envelope;
pub mod envelope_header;
pub mod error;
pub mod health;
pub mod instance_id;
pub mod message_id;
pub mod opaque;
pub mod ports;
pub mod routing;
pub mod session_id;
pub mod urn;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use device::{DeviceRegistration, DeviceToken, Platform};
pub use envelope::{Envelope, EnvelopeDraft, Priority};
pub use envelope_header::EnvelopeHeader;
pub use instance_id::InstanceId;
pub use message_id::MessageId;
pub use opaque::Opaque;
pub use session_id::SessionId;
pub use urn::UserUrn;
