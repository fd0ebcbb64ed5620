//! Ingest: the one way an accepted envelope becomes a bus message (HTTP and MQTT alike).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::envelope::Envelope;
use crate::envelope_header::EnvelopeHeader;
use crate::ports::bus::{
    ATTR_INGESTED_AT, ATTR_MESSAGE_ID, ATTR_RECIPIENT, ATTR_SOURCE, BusMessage,
};

/// The bus message for `envelope` accepted through `source` (`http`, `mqtt`) at `now_ms`:
/// its canonical JSON plus clear attributes (recipient, id, ingest time, source), with the
/// envelope's header kept beside the JSON for a bus that hands it over in memory.
pub fn to_bus_message(envelope: &Envelope, source: &str, now_ms: u64) -> BusMessage {
    let mut attributes = BTreeMap::new();
    attributes.insert(ATTR_RECIPIENT.to_owned(), envelope.recipient.to_string());
    attributes.insert(ATTR_MESSAGE_ID.to_owned(), envelope.message_id.to_string());
    attributes.insert(ATTR_INGESTED_AT.to_owned(), now_ms.to_string());
    attributes.insert(ATTR_SOURCE.to_owned(), source.to_owned());
    let json: Arc<str> = envelope.to_json().into();
    BusMessage::validated(EnvelopeHeader::from(envelope), json, attributes)
}
