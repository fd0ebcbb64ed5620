//! Message ids: the dedupe key of an envelope, chosen by the client or assigned at ingest.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::EnvelopeError;

/// Longest message id accepted.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// A validated message id: 1–128 characters of `[A-Za-z0-9._:-]`.
///
/// The character set needs no escaping in JSON, store keys or MQTT topics.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// Parses and validates a client-supplied id.
    pub fn parse(input: &str) -> Result<Self, EnvelopeError> {
        if input.is_empty() || input.len() > MAX_MESSAGE_ID_LEN {
            return Err(EnvelopeError::InvalidField {
                field: "messageId",
                reason: format!("must be 1-{MAX_MESSAGE_ID_LEN} characters"),
            });
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(EnvelopeError::InvalidField {
                field: "messageId",
                reason: "may only contain A-Z a-z 0-9 . _ : -".into(),
            });
        }
        Ok(Self(input.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MessageId {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(MessageId::parse("abc-DEF_0.9:x").is_ok());
        assert!(MessageId::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert!(MessageId::parse("").is_err());
        assert!(MessageId::parse(&"a".repeat(129)).is_err());
        for bad in ["a b", "a/b", "a\"b", "é", "a\nb"] {
            assert!(MessageId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
