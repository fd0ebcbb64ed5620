//! Behaviour suites: one per port, run against every implementation (one suite, many backends).
//!
//! Each suite takes a factory, so a backend can be built with the settings a case needs, and a
//! unique namespace, so suites of several backends run in parallel without sharing keys.

mod bus_suite;
mod device_tokens_suite;
mod envelope_store_suite;
mod presence_suite;

pub use bus_suite::{bus_message, bus_suite};
pub use device_tokens_suite::device_tokens_suite;
pub use envelope_store_suite::envelope_store_suite;
pub use presence_suite::presence_suite;

use crate::message_id::MessageId;
use crate::ports::envelope_store::QueuedEnvelope;
use crate::urn::UserUrn;

/// A user URN unique to one suite run.
pub fn user(namespace: &str, name: &str) -> UserUrn {
    UserUrn::parse(&format!("urn:{namespace}:user:{name}"))
        .unwrap_or_else(|err| panic!("test URN for {name} in {namespace}: {err}"))
}

/// A queued envelope `id` for `recipient` (express lane or not) with a minimal envelope JSON.
pub fn queued(recipient: &UserUrn, id: &str, express: bool) -> QueuedEnvelope {
    QueuedEnvelope {
        message_id: MessageId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        recipient: recipient.clone(),
        express,
        json: format!(
            r#"{{"messageId":"{id}","recipientId":"{recipient}","encryptedData":"AA=="}}"#
        )
        .into(),
    }
}
