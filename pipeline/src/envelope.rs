//! The SecureEnvelope contract: ProtoJSON (camelCase names, bytes as base64), validated once.
//!
//! The router reads only the clear header (ids, sender, recipient, flags). The ciphertext fields
//! are checked to be base64 and carried along; they are never inspected, logged or printed
//! (`Debug` shows their sizes only).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use crate::clock::IdGenerator;
use crate::error::EnvelopeError;
use crate::message_id::MessageId;
use crate::opaque::Opaque;
use crate::urn::UserUrn;

/// Delivery priority, 0–9. Five and above is the express lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// Highest priority accepted.
    pub const MAX: u8 = 9;
    /// Lowest priority of the express lane.
    pub const EXPRESS_FROM: u8 = 5;

    /// Validates `value` (0–9).
    pub fn new(value: i64) -> Result<Self, EnvelopeError> {
        if (0..=i64::from(Self::MAX)).contains(&value) {
            Ok(Self(value as u8))
        } else {
            Err(EnvelopeError::InvalidField {
                field: "priority",
                reason: "must be an integer from 0 to 9".into(),
            })
        }
    }

    /// The numeric value.
    pub fn value(self) -> u8 {
        self.0
    }

    /// Whether this envelope rides the express lane (served first from a backlog).
    pub fn is_express(self) -> bool {
        self.0 >= Self::EXPRESS_FROM
    }
}

/// A validated envelope as received at ingest: its `messageId` may still be missing.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvelopeDraft {
    /// The client's dedupe key, if it sent one.
    pub message_id: Option<MessageId>,
    /// Who receives it.
    pub recipient: UserUrn,
    /// Who claims to send it; `None` is sealed sender.
    pub sender: Option<UserUrn>,
    /// Opaque ciphertext, never empty.
    pub encrypted_data: Opaque,
    /// Opaque wrapped key.
    pub encrypted_symmetric_key: Option<Opaque>,
    /// Opaque signature.
    pub signature: Option<Opaque>,
    /// Delivered to live sessions only: never stored, never pushed.
    pub ephemeral: bool,
    /// Lane and priority.
    pub priority: Priority,
}

/// A validated envelope with its final `messageId`, as it travels on the bus and sits in queues.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The dedupe key, fixed at ingest.
    pub message_id: MessageId,
    /// Who receives it.
    pub recipient: UserUrn,
    /// Who claims to send it; `None` is sealed sender.
    pub sender: Option<UserUrn>,
    /// Opaque ciphertext, never empty.
    pub encrypted_data: Opaque,
    /// Opaque wrapped key.
    pub encrypted_symmetric_key: Option<Opaque>,
    /// Opaque signature.
    pub signature: Option<Opaque>,
    /// Delivered to live sessions only: never stored, never pushed.
    pub ephemeral: bool,
    /// Lane and priority.
    pub priority: Priority,
}

/// The JSON shape on the wire. Unknown fields are ignored; proto field names are accepted too.
/// Strings borrow from the body unless they hold escapes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn<'a> {
    #[serde(default, borrow, alias = "message_id")]
    message_id: Option<WireStr<'a>>,
    #[serde(default, borrow, alias = "recipient_id")]
    recipient_id: Option<WireStr<'a>>,
    #[serde(default, borrow, alias = "sender_id")]
    sender_id: Option<WireStr<'a>>,
    #[serde(default, borrow, alias = "encrypted_data")]
    encrypted_data: Option<WireStr<'a>>,
    #[serde(default, borrow, alias = "encrypted_symmetric_key")]
    encrypted_symmetric_key: Option<WireStr<'a>>,
    #[serde(default, borrow)]
    signature: Option<WireStr<'a>>,
    #[serde(default, alias = "is_ephemeral")]
    is_ephemeral: Option<bool>,
    #[serde(default)]
    priority: Option<WirePriority>,
}

/// A string field of the wire JSON: borrowed from the body, or owned when it holds escapes.
/// (serde borrows a bare `Cow<str>` field, but not one inside an `Option`.)
struct WireStr<'a>(Cow<'a, str>);

impl std::ops::Deref for WireStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = WireStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(WireStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// ProtoJSON writes int32 as a number but accepts a numeric string too.
#[derive(Deserialize)]
#[serde(untagged)]
enum WirePriority {
    Number(i64),
    Text(String),
}

/// The bytes of the canonical JSON besides its string values: keys, quotes, punctuation and
/// the flag and priority (≈130 with every field present), plus room for escapes in the ids.
const JSON_FRAMING: usize = 160;

/// The error for a body `serde_json` refused with `err`, naming the field where it went wrong.
///
/// The path is found by parsing again with `serde_path_to_error`: tracking it costs about as
/// much as the parse itself, so a body that parses never pays for it.
fn malformed(body: &[u8], err: serde_json::Error) -> EnvelopeError {
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, WireIn>(de) {
        Err(tracked) => {
            let path = tracked.path().to_string();
            let inner = tracked.into_inner();
            if path.is_empty() || path == "." {
                EnvelopeError::MalformedJson(inner.to_string())
            } else {
                EnvelopeError::MalformedJson(format!("{path}: {inner}"))
            }
        }
        // The value parsed, so what `err` found is after it: trailing characters.
        Ok(_) => EnvelopeError::MalformedJson(err.to_string()),
    }
}

/// Checks a ProtoJSON bytes field (standard or URL-safe alphabet, padded or not).
fn opaque(field: &'static str, text: &str) -> Result<Opaque, EnvelopeError> {
    Opaque::from_base64(text).map_err(|_| EnvelopeError::InvalidField {
        field,
        reason: "not valid base64".into(),
    })
}

impl EnvelopeDraft {
    /// Parses and validates a client's JSON body.
    pub fn from_json(body: &[u8]) -> Result<Self, EnvelopeError> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(EnvelopeError::MalformedJson(
                "the envelope must be a JSON object".into(),
            ));
        }
        let wire: WireIn = serde_json::from_slice(body).map_err(|err| malformed(body, err))?;

        let recipient = match wire.recipient_id.as_deref() {
            None | Some("") => return Err(EnvelopeError::MissingField("recipientId")),
            Some(text) => UserUrn::parse(text)?,
        };
        let sender = match wire.sender_id.as_deref() {
            None | Some("") => None,
            Some(text) => Some(UserUrn::parse(text)?),
        };
        let encrypted_data = match wire.encrypted_data.as_deref() {
            None | Some("") => return Err(EnvelopeError::MissingField("encryptedData")),
            Some(text) => opaque("encryptedData", text)?,
        };
        if encrypted_data.is_empty() {
            return Err(EnvelopeError::MissingField("encryptedData"));
        }
        let encrypted_symmetric_key = match wire.encrypted_symmetric_key.as_deref() {
            None | Some("") => None,
            Some(text) => Some(opaque("encryptedSymmetricKey", text)?),
        };
        let signature = match wire.signature.as_deref() {
            None | Some("") => None,
            Some(text) => Some(opaque("signature", text)?),
        };
        let message_id = match wire.message_id.as_deref() {
            None | Some("") => None,
            Some(text) => Some(MessageId::parse(text)?),
        };
        let priority = match wire.priority {
            None => Priority::default(),
            Some(WirePriority::Number(n)) => Priority::new(n)?,
            Some(WirePriority::Text(text)) => {
                Priority::new(text.parse().map_err(|_| EnvelopeError::InvalidField {
                    field: "priority",
                    reason: "must be an integer from 0 to 9".into(),
                })?)?
            }
        };
        Ok(Self {
            message_id,
            recipient,
            sender,
            encrypted_data,
            encrypted_symmetric_key,
            signature,
            ephemeral: wire.is_ephemeral.unwrap_or(false),
            priority,
        })
    }

    /// Fixes the envelope's id: the client's, else a fresh one from `ids`. Done at ingest only.
    pub fn into_envelope(self, ids: &dyn IdGenerator) -> Envelope {
        Envelope {
            message_id: self.message_id.unwrap_or_else(|| ids.message_id()),
            recipient: self.recipient,
            sender: self.sender,
            encrypted_data: self.encrypted_data,
            encrypted_symmetric_key: self.encrypted_symmetric_key,
            signature: self.signature,
            ephemeral: self.ephemeral,
            priority: self.priority,
        }
    }
}

impl Envelope {
    /// Parses an envelope that must already carry its `messageId` (as read from the bus).
    pub fn from_json(body: &[u8]) -> Result<Self, EnvelopeError> {
        let draft = EnvelopeDraft::from_json(body)?;
        let message_id = draft
            .message_id
            .clone()
            .ok_or(EnvelopeError::MissingField("messageId"))?;
        Ok(Envelope {
            message_id,
            recipient: draft.recipient,
            sender: draft.sender,
            encrypted_data: draft.encrypted_data,
            encrypted_symmetric_key: draft.encrypted_symmetric_key,
            signature: draft.signature,
            ephemeral: draft.ephemeral,
            priority: draft.priority,
        })
    }

    /// The canonical JSON the router stores and delivers: camelCase names in a fixed order,
    /// standard padded base64, defaults (`false`, priority 0, absent fields) left out.
    ///
    /// Written by hand into a buffer sized up front. The base64 fields, almost all of it, are
    /// copied as they are: [`Opaque`] holds only `A-Z a-z 0-9 + / =`, which JSON never
    /// escapes, so scanning them for escapes (as a serializer would) is wasted work. The ids
    /// go through `serde_json`'s string writer, which escapes what a URN may hold.
    pub fn to_json(&self) -> String {
        let ids = [
            Some(self.message_id.as_str()),
            Some(self.recipient.as_str()),
            self.sender.as_ref().map(UserUrn::as_str),
        ];
        let opaques = [
            Some(&self.encrypted_data),
            self.encrypted_symmetric_key.as_ref(),
            self.signature.as_ref(),
        ];
        let capacity = JSON_FRAMING
            + ids.iter().flatten().map(|t| t.len()).sum::<usize>()
            + opaques
                .iter()
                .flatten()
                .map(|o| o.as_base64().len())
                .sum::<usize>();
        let mut json = String::with_capacity(capacity);
        json.push('{');
        push_text(&mut json, "messageId", self.message_id.as_str());
        json.push(',');
        push_text(&mut json, "recipientId", self.recipient.as_str());
        if let Some(sender) = &self.sender {
            json.push(',');
            push_text(&mut json, "senderId", sender.as_str());
        }
        push_opaque(&mut json, "encryptedData", &self.encrypted_data);
        if let Some(key) = &self.encrypted_symmetric_key {
            push_opaque(&mut json, "encryptedSymmetricKey", key);
        }
        if let Some(signature) = &self.signature {
            push_opaque(&mut json, "signature", signature);
        }
        if self.ephemeral {
            json.push_str(",\"isEphemeral\":true");
        }
        if self.priority.value() != 0 {
            // One digit: a `Priority` is 0–9.
            json.push_str(",\"priority\":");
            json.push(char::from(b'0' + self.priority.value()));
        }
        json.push('}');
        json
    }
}

/// Appends `"name":` and `text` as a JSON string, escaped where JSON needs it.
fn push_text(json: &mut String, name: &str, text: &str) {
    json.push('"');
    json.push_str(name);
    json.push_str("\":");
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        json.push('"');
        json.push_str(text);
        json.push('"');
    } else {
        let escaped = serde_json::to_string(text)
            .unwrap_or_else(|_| unreachable!("serialising a string cannot fail"));
        json.push_str(&escaped);
    }
}

/// Appends `,"name":"<base64>"`: canonical base64 needs no escapes.
fn push_opaque(json: &mut String, name: &str, opaque: &Opaque) {
    json.push_str(",\"");
    json.push_str(name);
    json.push_str("\":\"");
    json.push_str(opaque.as_base64());
    json.push('"');
}

impl fmt::Debug for EnvelopeDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeDraft")
            .field("message_id", &self.message_id)
            .field("recipient", &self.recipient)
            .field("sender", &self.sender)
            .field("encrypted_data_len", &self.encrypted_data.len())
            .field("ephemeral", &self.ephemeral)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("message_id", &self.message_id)
            .field("recipient", &self.recipient)
            .field("sender", &self.sender)
            .field("encrypted_data_len", &self.encrypted_data.len())
            .field("ephemeral", &self.ephemeral)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UuidV7Ids;
    use proptest::prelude::*;

    /// The canonical JSON as `serde_json` writes it from a struct: the reference the hand-written
    /// [`Envelope::to_json`] must match byte for byte.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireOut<'a> {
        message_id: &'a str,
        recipient_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender_id: Option<&'a str>,
        encrypted_data: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_symmetric_key: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_ephemeral: bool,
        #[serde(skip_serializing_if = "is_zero")]
        priority: u8,
    }

    fn is_zero(value: &u8) -> bool {
        *value == 0
    }

    /// [`Envelope::to_json`] as `serde_json` writes it.
    fn reference_json(env: &Envelope) -> String {
        serde_json::to_string(&WireOut {
            message_id: env.message_id.as_str(),
            recipient_id: env.recipient.as_str(),
            sender_id: env.sender.as_ref().map(UserUrn::as_str),
            encrypted_data: env.encrypted_data.as_base64(),
            encrypted_symmetric_key: env.encrypted_symmetric_key.as_ref().map(Opaque::as_base64),
            signature: env.signature.as_ref().map(Opaque::as_base64),
            is_ephemeral: env.ephemeral,
            priority: env.priority.value(),
        })
        .unwrap()
    }

    fn parse(json: &str) -> Result<EnvelopeDraft, EnvelopeError> {
        EnvelopeDraft::from_json(json.as_bytes())
    }

    #[test]
    fn minimal_envelope_gets_defaults() {
        let draft = parse(r#"{"recipientId":"bob","encryptedData":"aGk="}"#).unwrap();
        assert_eq!(draft.recipient.as_str(), "urn:sm:user:bob");
        assert_eq!(draft.encrypted_data.to_bytes(), b"hi");
        assert_eq!(draft.priority.value(), 0);
        assert!(!draft.ephemeral && draft.sender.is_none() && draft.message_id.is_none());
    }

    #[test]
    fn unknown_fields_are_ignored_and_proto_names_accepted() {
        let draft = parse(
            r#"{"recipient_id":"urn:a:user:b","encrypted_data":"aGk","future":{"x":1},"priority":"7"}"#,
        )
        .unwrap();
        assert!(draft.priority.is_express());
        assert_eq!(draft.encrypted_data.to_bytes(), b"hi");
    }

    #[test]
    fn escaped_strings_read_like_plain_ones() {
        // Escapes cannot be borrowed from the body: these fields take the owned path.
        let plain =
            parse(r#"{"recipientId":"bob","messageId":"m-1","encryptedData":"aGk="}"#).unwrap();
        let escaped = parse(
            r#"{"recipientId":"b\u006fb","messageId":"m\u002d1","encryptedData":"aGk\u003d"}"#,
        )
        .unwrap();
        assert_eq!(escaped, plain);
    }

    #[test]
    fn url_safe_base64_is_accepted() {
        let draft = parse(r#"{"recipientId":"b","encryptedData":"-_8"}"#).unwrap();
        assert_eq!(draft.encrypted_data.to_bytes(), [0xfb, 0xff]);
    }

    #[test]
    fn bad_fields_name_the_field() {
        let cases = [
            (r#"{"encryptedData":"aGk="}"#, "recipientId"),
            (r#"{"recipientId":"b"}"#, "encryptedData"),
            (
                r#"{"recipientId":"b","encryptedData":"!!"}"#,
                "encryptedData",
            ),
            (
                r#"{"recipientId":"b","encryptedData":"aGk=","signature":"%"}"#,
                "signature",
            ),
            (
                r#"{"recipientId":"b","encryptedData":"aGk=","priority":10}"#,
                "priority",
            ),
            (
                r#"{"recipientId":"b","encryptedData":"aGk=","priority":"x"}"#,
                "priority",
            ),
            (
                r#"{"recipientId":"b","encryptedData":"aGk=","messageId":"a b"}"#,
                "messageId",
            ),
            (r#"{"recipientId":5,"encryptedData":"aGk="}"#, "recipientId"),
            (r#"{"recipientId":"a:b","encryptedData":"aGk="}"#, "URN"),
            (
                r#"{"recipientId":"b","encryptedData":"aGk=","isEphemeral":"yes"}"#,
                "isEphemeral: invalid type",
            ),
            (
                r#"{"recipientId":"b","encryptedData":"aGk="} {}"#,
                "trailing characters",
            ),
        ];
        for (json, needle) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
        assert!(matches!(parse("{"), Err(EnvelopeError::MalformedJson(_))));
        assert!(matches!(parse("[]"), Err(EnvelopeError::MalformedJson(_))));
    }

    #[test]
    fn canonical_json_round_trips_and_keeps_the_id() {
        let draft = parse(
            r#"{"recipientId":"bob","senderId":"alice","encryptedData":"AAEC","encryptedSymmetricKey":"Aw==","signature":"BA","isEphemeral":true,"priority":6}"#,
        )
        .unwrap();
        let env = draft.into_envelope(&UuidV7Ids);
        let json = env.to_json();
        let back = Envelope::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, env);
        assert!(json.contains("\"signature\":\"BA==\""), "{json}");
    }

    #[test]
    fn canonical_json_is_written_into_a_buffer_of_its_size() {
        let body = serde_json::json!({
            "recipientId": "bob",
            "senderId": "alice",
            "encryptedData": Opaque::from_bytes(&[7; 1024]).as_base64(),
            "encryptedSymmetricKey": "Aw==",
            "signature": "BA==",
            "isEphemeral": true,
            "priority": 9,
        });
        let env = parse(&body.to_string()).unwrap().into_envelope(&UuidV7Ids);
        let json = env.to_json();
        // Growing by doubling would leave up to half of it unused.
        assert!(json.len() <= json.capacity(), "{json}");
        assert!(
            json.capacity() - json.len() <= JSON_FRAMING,
            "{} bytes in a buffer of {}",
            json.len(),
            json.capacity()
        );
    }

    #[test]
    fn debug_never_shows_ciphertext() {
        let draft = parse(r#"{"recipientId":"b","encryptedData":"c2VjcmV0"}"#).unwrap();
        let shown = format!("{draft:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("secret"),
            "{shown}"
        );
    }

    #[test]
    fn bus_envelopes_need_an_id() {
        assert_eq!(
            Envelope::from_json(br#"{"recipientId":"b","encryptedData":"aGk="}"#),
            Err(EnvelopeError::MissingField("messageId"))
        );
    }

    #[test]
    fn ids_that_need_escapes_are_escaped() {
        let env = parse(r#"{"recipientId":"urn:x:user:b\"o\\b","encryptedData":"aGk="}"#)
            .unwrap()
            .into_envelope(&UuidV7Ids);
        let json = env.to_json();
        assert!(
            json.contains(r#""recipientId":"urn:x:user:b\"o\\b""#),
            "{json}"
        );
        assert_eq!(json, reference_json(&env));
        assert_eq!(Envelope::from_json(json.as_bytes()).unwrap(), env);
    }

    proptest! {
        #[test]
        fn canonical_json_is_what_serde_json_writes(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            signature in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            id in "[A-Za-z0-9._:-]{1,128}",
            recipient in "[a-z\"\\\\é€😀]{1,20}",
            sender in proptest::option::of("[A-Za-z0-9\"\\\\ü]{1,20}"),
            priority in 0u8..=9,
            ephemeral in any::<bool>(),
        ) {
            let env = Envelope {
                message_id: MessageId::parse(&id).unwrap(),
                recipient: UserUrn::parse(&format!("urn:x:user:{recipient}")).unwrap(),
                sender: sender.map(|s| UserUrn::parse(&format!("urn:x:user:{s}")).unwrap()),
                encrypted_data: Opaque::from_bytes(&data),
                encrypted_symmetric_key: key.as_deref().map(Opaque::from_bytes),
                signature: signature.as_deref().map(Opaque::from_bytes),
                ephemeral,
                priority: Priority::new(i64::from(priority)).unwrap(),
            };
            let json = env.to_json();
            prop_assert_eq!(&json, &reference_json(&env));
            prop_assert_eq!(Envelope::from_json(json.as_bytes()).unwrap(), env);
        }

        #[test]
        fn parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = EnvelopeDraft::from_json(&body);
        }

        #[test]
        fn valid_envelopes_round_trip(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            id in "[A-Za-z0-9._:-]{1,128}",
            user in "[a-z0-9]{1,20}",
            priority in 0u8..=9,
            ephemeral in any::<bool>(),
        ) {
            let env = Envelope {
                message_id: MessageId::parse(&id).unwrap(),
                recipient: UserUrn::parse(&user).unwrap(),
                sender: None,
                encrypted_data: Opaque::from_bytes(&data),
                encrypted_symmetric_key: key.as_deref().map(Opaque::from_bytes),
                signature: None,
                ephemeral,
                priority: Priority::new(i64::from(priority)).unwrap(),
            };
            let back = Envelope::from_json(env.to_json().as_bytes()).unwrap();
            prop_assert_eq!(back, env);
        }
    }
}
