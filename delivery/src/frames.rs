//! JSON frames between a session and its client.

use pipeline::MessageId;
use pipeline::error::EnvelopeError;
use serde::Deserialize;

/// Most ids one ack frame or request may name.
pub const MAX_ACK_IDS: usize = 1000;

/// `{"type":"envelope","messageId":"…","envelope":{…}}`, built without re-encoding the envelope.
///
/// Sized exactly: a `String` whose length is its capacity becomes the WebSocket frame's bytes
/// without the extra allocation `Bytes` makes for spare capacity.
pub fn envelope_frame(message_id: &MessageId, json: &str) -> String {
    // Message ids are [A-Za-z0-9._:-]: nothing to escape. `concat` allocates the exact sum.
    [
        r#"{"type":"envelope","messageId":""#,
        message_id.as_str(),
        r#"","envelope":"#,
        json,
        "}",
    ]
    .concat()
}

/// `{"type":"error","error":"…"}`.
pub fn error_frame(message: &str) -> String {
    serde_json::json!({"type": "error", "error": message}).to_string()
}

/// A frame a client sends.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `{"type":"ack","messageIds":[…]}`: these envelopes were received and may be deleted.
    Ack(Vec<MessageId>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message_ids: Option<Vec<String>>,
}

/// Parses a client's text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, EnvelopeError> {
    let raw: RawFrame =
        serde_json::from_str(text).map_err(|e| EnvelopeError::MalformedJson(e.to_string()))?;
    match raw.kind.as_str() {
        "ack" => parse_ack_ids(raw.message_ids).map(ClientFrame::Ack),
        other => Err(EnvelopeError::InvalidField {
            field: "type",
            reason: format!("unknown frame type {other:?}; expected \"ack\""),
        }),
    }
}

/// Validates the `messageIds` of an ack (frame or `POST /messages/ack`).
pub fn parse_ack_ids(ids: Option<Vec<String>>) -> Result<Vec<MessageId>, EnvelopeError> {
    let ids = ids.ok_or(EnvelopeError::MissingField("messageIds"))?;
    if ids.len() > MAX_ACK_IDS {
        return Err(EnvelopeError::InvalidField {
            field: "messageIds",
            reason: format!("at most {MAX_ACK_IDS} ids per ack"),
        });
    }
    ids.iter().map(|id| MessageId::parse(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_frame_is_json() {
        let id = MessageId::parse("m-1").unwrap();
        let frame = envelope_frame(&id, r#"{"recipientId":"urn:a:b:c"}"#);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["type"], "envelope");
        assert_eq!(value["messageId"], "m-1");
        assert_eq!(value["envelope"]["recipientId"], "urn:a:b:c");
        assert_eq!(frame.len(), frame.capacity(), "sized exactly");
    }

    #[test]
    fn client_frames_parse_or_explain() {
        assert_eq!(
            parse_client_frame(r#"{"type":"ack","messageIds":["a","b"]}"#).unwrap(),
            ClientFrame::Ack(vec![
                MessageId::parse("a").unwrap(),
                MessageId::parse("b").unwrap()
            ])
        );
        for bad in [
            "nope",
            r#"{"type":"hello"}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","messageIds":["a b"]}"#,
        ] {
            assert!(parse_client_frame(bad).is_err(), "{bad}");
        }
    }
}
