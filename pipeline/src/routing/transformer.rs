//! The transformer: turns a bus message into a validated envelope, or rejects it for good.

use std::sync::Arc;

use thiserror::Error;

use crate::envelope::Envelope;
use crate::error::EnvelopeError;
use crate::ports::bus::BusMessage;

/// Why a bus message can never be routed (it goes to the dead-letter topic, never retried).
#[derive(Debug, Error)]
pub enum TransformError {
    /// The data is not a valid envelope.
    #[error("invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
    /// The data is not UTF-8.
    #[error("envelope is not UTF-8")]
    NotUtf8,
}

/// Parses and validates `message`, returning the envelope and its canonical JSON text.
///
/// The JSON is the bus data itself (ingest already wrote it canonically), so the processor
/// stores and delivers exactly the bytes the ingestor accepted.
pub fn transform(message: &BusMessage) -> Result<(Envelope, Arc<str>), TransformError> {
    let text = std::str::from_utf8(&message.data).map_err(|_| TransformError::NotUtf8)?;
    let envelope = Envelope::from_json(text.as_bytes())?;
    Ok((envelope, Arc::from(text)))
}
