//! Typed errors of the envelope contract and of every port.
//!
//! Each port error separates what a caller acts on: `Unavailable` (transient: retry, nack, 503)
//! from the rest (permanent).

use thiserror::Error;

/// Why an envelope (or another client-supplied value) is invalid. Always a client error (400).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is not JSON of the expected shape.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A required field is missing.
    #[error("missing required field {0}")]
    MissingField(&'static str),
    /// A field has the wrong type, a bad value or bad base64.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The JSON field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A user URN is malformed.
    #[error("invalid user URN: {0}")]
    InvalidUrn(String),
}

/// Failures of the bus port.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus cannot take or confirm the message now; the caller may retry (503 at ingest).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus is shutting down.
    #[error("bus closed")]
    Closed,
}

/// Failures of the envelope store port.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend did not answer or failed; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A backlog cursor that this store did not issue.
    #[error("invalid backlog cursor")]
    InvalidCursor,
    /// Stored data could not be decoded (corruption or a format change).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Failures of the presence port.
#[derive(Debug, Error)]
pub enum PresenceError {
    /// The backend did not answer or failed; retry later.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Failures of the device-token port.
#[derive(Debug, Error)]
pub enum DeviceTokenError {
    /// The backend did not answer or failed; retry later.
    #[error("device token store unavailable: {0}")]
    Unavailable(String),
}

/// Failures of a push sender.
#[derive(Debug, Error)]
pub enum PushError {
    /// The provider failed or throttled after the sender's own retries.
    #[error("push provider unavailable: {0}")]
    Unavailable(String),
    /// The provider rejected the request for a reason other than the token (config, auth).
    #[error("push rejected: {0}")]
    Rejected(String),
}

/// Failures of the per-instance delivery channel.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The channel could not take the item now.
    #[error("delivery channel unavailable: {0}")]
    Unavailable(String),
    /// No channel exists for that instance (it stopped).
    #[error("no delivery channel for instance {0}")]
    UnknownInstance(String),
}

/// Failures of the rate limiter port.
#[derive(Debug, Error)]
pub enum RateLimitError {
    /// The backend did not answer.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}
