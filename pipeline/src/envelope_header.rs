//! The envelope's clear header as routing reads it: ids and lanes, never the ciphertext.

use crate::envelope::Envelope;
use crate::message_id::MessageId;
use crate::urn::UserUrn;

/// What the processor needs of a validated envelope to store and route it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The dedupe key, fixed at ingest.
    pub message_id: MessageId,
    /// Who receives it.
    pub recipient: UserUrn,
    /// Delivered to live sessions only: never stored, never pushed.
    pub ephemeral: bool,
    /// In the express lane (a priority above normal).
    pub express: bool,
}

impl From<&Envelope> for EnvelopeHeader {
    fn from(envelope: &Envelope) -> Self {
        Self {
            message_id: envelope.message_id.clone(),
            recipient: envelope.recipient.clone(),
            ephemeral: envelope.ephemeral,
            express: envelope.priority.is_express(),
        }
    }
}
