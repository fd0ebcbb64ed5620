//! Ingest: the one way an accepted envelope becomes a bus message (HTTP and MQTT alike).

use std::sync::Arc;

use crate::envelope::Envelope;
use crate::envelope_header::EnvelopeHeader;
use crate::ports::bus::BusMessage;
use crate::ports::bus_attributes::BusAttributes;

/// The bus message for `envelope` accepted through `source` (`http`, `mqtt`) at `now_ms`:
/// its canonical JSON plus clear attributes (recipient, id, ingest time, source), with the
/// envelope's header kept beside the JSON for a bus that hands it over in memory.
pub fn to_bus_message(envelope: &Envelope, source: &'static str, now_ms: u64) -> BusMessage {
    let attributes =
        BusAttributes::ingested(&envelope.recipient, &envelope.message_id, now_ms, source);
    let json: Arc<str> = envelope.to_json().into();
    BusMessage::validated(EnvelopeHeader::from(envelope), json, attributes)
}
