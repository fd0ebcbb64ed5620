//! The transformer: turns a bus message into a validated envelope, or rejects it for good.

use std::sync::Arc;

use thiserror::Error;

use crate::envelope::Envelope;
use crate::envelope_header::EnvelopeHeader;
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

/// Parses and validates `message`, returning the envelope's header and its canonical JSON
/// text.
///
/// The JSON is the bus data itself (ingest already wrote it canonically), so the processor
/// stores and delivers exactly the bytes the ingestor accepted. A message an ingestor of this
/// process validated and a bus handed over in memory ([`BusMessage::validated_envelope`]) is
/// not parsed again: its header and text are the ones that ingestor read.
pub fn transform(message: &BusMessage) -> Result<(EnvelopeHeader, Arc<str>), TransformError> {
    if let Some((header, json)) = message.validated_envelope() {
        return Ok((header.clone(), json.clone()));
    }
    let text = std::str::from_utf8(&message.data).map_err(|_| TransformError::NotUtf8)?;
    let envelope = Envelope::from_json(text.as_bytes())?;
    Ok((EnvelopeHeader::from(&envelope), Arc::from(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Priority;
    use crate::message_id::MessageId;
    use crate::opaque::Opaque;
    use crate::routing::to_bus_message;
    use crate::urn::UserUrn;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn envelope(id: &str, ephemeral: bool, priority: u8, data: &[u8]) -> Envelope {
        Envelope {
            message_id: MessageId::parse(id).unwrap(),
            recipient: UserUrn::parse("urn:x:user:bob").unwrap(),
            sender: Some(UserUrn::parse("urn:x:user:ann").unwrap()),
            encrypted_data: Opaque::from_bytes(data),
            encrypted_symmetric_key: None,
            signature: None,
            ephemeral,
            priority: Priority::new(i64::from(priority)).unwrap(),
        }
    }

    /// The same message as a bus that read it off the wire would hand it over.
    fn as_read(message: &BusMessage) -> BusMessage {
        BusMessage::new(
            Bytes::copy_from_slice(&message.data),
            message.attributes.clone(),
        )
    }

    #[test]
    fn an_ingested_message_is_taken_as_validated() {
        let message = to_bus_message(&envelope("m-1", false, 5, b"hi"), "http", 7);
        let (header, json) = message.validated_envelope().expect("validated at ingest");
        let (taken_header, taken_json) = transform(&message).unwrap();
        assert!(
            Arc::ptr_eq(json, &taken_json),
            "the ingestor's text, not a parse"
        );
        assert_eq!(&taken_header, header);
        assert_eq!(&message.data[..], taken_json.as_bytes());
        let clone = message.clone();
        assert!(clone.validated_envelope().is_some(), "a clone keeps it");
        assert_eq!(clone, as_read(&message), "the memo is not part of equality");
        assert!(as_read(&message).validated_envelope().is_none());
    }

    #[test]
    fn replaced_data_is_parsed_again() {
        let mut message = to_bus_message(&envelope("m-1", false, 0, b"hi"), "http", 7);
        message.data = message.data.slice(..message.data.len() - 1);
        assert!(message.validated_envelope().is_none(), "a cut of the text");
        assert!(matches!(
            transform(&message),
            Err(TransformError::Invalid(_))
        ));
        let other = to_bus_message(&envelope("m-2", true, 9, b"yo"), "http", 7);
        message.data = other.data.clone();
        assert!(
            message.validated_envelope().is_none(),
            "another message's text"
        );
        let (header, _) = transform(&message).unwrap();
        assert_eq!(header.message_id.as_str(), "m-2", "read from the data");
        message.data = Bytes::from_static(b"\xff");
        assert!(matches!(transform(&message), Err(TransformError::NotUtf8)));
    }

    proptest! {
        #[test]
        fn the_memo_answers_as_a_parse_would(
            id in "[A-Za-z0-9._:-]{1,64}",
            ephemeral in any::<bool>(),
            priority in 0u8..=9,
            data in proptest::collection::vec(any::<u8>(), 1..200),
        ) {
            let message = to_bus_message(&envelope(&id, ephemeral, priority, &data), "mqtt", 1);
            let (memo_header, memo_json) = transform(&message).unwrap();
            let (parsed_header, parsed_json) = transform(&as_read(&message)).unwrap();
            prop_assert_eq!(memo_header, parsed_header);
            prop_assert_eq!(memo_json, parsed_json);
        }
    }
}
