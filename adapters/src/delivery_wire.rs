//! The wire form of a delivery item between instances (Redis pub/sub, Pub/Sub topics):
//! `{"recipient","messageId","ephemeral","envelope":{…raw JSON…}}`.

use pipeline::ports::delivery_channel::DeliveryItem;
use pipeline::{MessageId, UserUrn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    recipient: &'a str,
    message_id: &'a str,
    ephemeral: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ingested_at: Option<u64>,
    envelope: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    recipient: String,
    message_id: String,
    ephemeral: bool,
    #[serde(default)]
    ingested_at: Option<u64>,
    envelope: Box<RawValue>,
}

/// Encodes `item`; the envelope is embedded as raw JSON, not re-encoded.
pub fn encode(item: &DeliveryItem) -> Result<Vec<u8>, String> {
    let envelope: &RawValue =
        serde_json::from_str(&item.json).map_err(|e| format!("envelope is not JSON: {e}"))?;
    serde_json::to_vec(&WireOut {
        recipient: item.recipient.as_str(),
        message_id: item.message_id.as_str(),
        ephemeral: item.ephemeral,
        ingested_at: item.ingested_at_ms,
        envelope,
    })
    .map_err(|e| e.to_string())
}

/// Decodes a delivery item; `None` for anything malformed.
pub fn decode(payload: &[u8]) -> Option<DeliveryItem> {
    let wire: WireIn = serde_json::from_slice(payload).ok()?;
    Some(DeliveryItem {
        recipient: UserUrn::parse(&wire.recipient).ok()?,
        message_id: MessageId::parse(&wire.message_id).ok()?,
        json: wire.envelope.get().into(),
        ephemeral: wire.ephemeral,
        ingested_at_ms: wire.ingested_at,
    })
}
