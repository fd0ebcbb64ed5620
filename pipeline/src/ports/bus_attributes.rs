//! A bus message's clear attributes: the ones an ingestor sets kept as typed values, any
//! others as text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::message_id::MessageId;
use crate::ports::bus::{ATTR_INGESTED_AT, ATTR_MESSAGE_ID, ATTR_RECIPIENT, ATTR_SOURCE};
use crate::urn::UserUrn;

/// A bus message's clear attributes (never ciphertext): names mapped to text, in name order.
///
/// The four an ingestor sets ([`BusAttributes::ingested`]) are kept as the values they are
/// made of, so making, cloning and reading them allocates nothing on the path every envelope
/// takes. Whoever writes them out sees the same names and texts as for any other attributes
/// ([`BusAttributes::for_each`]). Attributes read off a wire or a disk, or changed later,
/// are kept as text. Two sets are equal when they map the same names to the same texts,
/// however each is kept.
#[derive(Clone, Debug)]
pub struct BusAttributes(Kept);

/// How a set of attributes is kept.
#[derive(Clone, Debug)]
enum Kept {
    /// Exactly the four an ingestor sets.
    Ingested(Ingested),
    /// Any names and texts.
    Text(BTreeMap<String, String>),
}

/// The attributes of an envelope as its ingestor accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ingested {
    /// `ingestedAt`: milliseconds since the Unix epoch.
    ingested_at_ms: u64,
    /// `messageId`.
    message_id: MessageId,
    /// `recipient`.
    recipient: UserUrn,
    /// `source`: the ingestion path.
    source: &'static str,
}

impl BusAttributes {
    /// The attributes an ingestor sets on an envelope for `recipient` with `message_id`,
    /// accepted through `source` (`http`, `mqtt`) at `ingested_at_ms`.
    pub fn ingested(
        recipient: &UserUrn,
        message_id: &MessageId,
        ingested_at_ms: u64,
        source: &'static str,
    ) -> Self {
        Self(Kept::Ingested(Ingested {
            ingested_at_ms,
            message_id: message_id.clone(),
            recipient: recipient.clone(),
            source,
        }))
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        match &self.0 {
            Kept::Ingested(_) => 4,
            Kept::Text(map) => map.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of attribute `name`, if set.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match &self.0 {
            Kept::Ingested(ingested) => match name {
                ATTR_INGESTED_AT => Some(Cow::Owned(ingested.ingested_at_ms.to_string())),
                ATTR_MESSAGE_ID => Some(Cow::Borrowed(ingested.message_id.as_str())),
                ATTR_RECIPIENT => Some(Cow::Borrowed(ingested.recipient.as_str())),
                ATTR_SOURCE => Some(Cow::Borrowed(ingested.source)),
                _ => None,
            },
            Kept::Text(map) => map.get(name).map(|value| Cow::Borrowed(value.as_str())),
        }
    }

    /// The `recipient` attribute's text, if set.
    pub fn recipient(&self) -> Option<&str> {
        match &self.0 {
            Kept::Ingested(ingested) => Some(ingested.recipient.as_str()),
            Kept::Text(map) => map.get(ATTR_RECIPIENT).map(String::as_str),
        }
    }

    /// The `messageId` attribute's text, if set.
    pub fn message_id(&self) -> Option<&str> {
        match &self.0 {
            Kept::Ingested(ingested) => Some(ingested.message_id.as_str()),
            Kept::Text(map) => map.get(ATTR_MESSAGE_ID).map(String::as_str),
        }
    }

    /// The `ingestedAt` attribute as milliseconds since the Unix epoch, if set and a number.
    pub fn ingested_at_ms(&self) -> Option<u64> {
        match &self.0 {
            Kept::Ingested(ingested) => Some(ingested.ingested_at_ms),
            Kept::Text(map) => map.get(ATTR_INGESTED_AT)?.parse().ok(),
        }
    }

    /// Calls `visit` with each attribute's name and text, in name order.
    pub fn for_each(&self, mut visit: impl FnMut(&str, &str)) {
        match &self.0 {
            Kept::Ingested(ingested) => {
                let mut digits = itoa::Buffer::new();
                // In name order, as a map would give them.
                visit(ATTR_INGESTED_AT, digits.format(ingested.ingested_at_ms));
                visit(ATTR_MESSAGE_ID, ingested.message_id.as_str());
                visit(ATTR_RECIPIENT, ingested.recipient.as_str());
                visit(ATTR_SOURCE, ingested.source);
            }
            Kept::Text(map) => map.iter().for_each(|(name, value)| visit(name, value)),
        }
    }

    /// Sets attribute `name` to `value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        if let Kept::Ingested(_) = self.0 {
            self.0 = Kept::Text(self.to_map());
        }
        if let Kept::Text(map) = &mut self.0 {
            map.insert(name.into(), value.into());
        }
    }

    /// The attributes as a map of names to texts.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        match &self.0 {
            Kept::Ingested(_) => {
                let mut map = BTreeMap::new();
                self.for_each(|name, value| {
                    map.insert(name.to_owned(), value.to_owned());
                });
                map
            }
            Kept::Text(map) => map.clone(),
        }
    }
}

impl Default for BusAttributes {
    /// No attributes.
    fn default() -> Self {
        Self(Kept::Text(BTreeMap::new()))
    }
}

impl From<BTreeMap<String, String>> for BusAttributes {
    /// The attributes of `map`, kept as text.
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(Kept::Text(map))
    }
}

impl FromIterator<(String, String)> for BusAttributes {
    /// The attributes named and valued by `pairs` (a later name replaces an earlier one).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(Kept::Text(pairs.into_iter().collect()))
    }
}

impl PartialEq for BusAttributes {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Kept::Ingested(a), Kept::Ingested(b)) => a == b,
            (Kept::Text(a), Kept::Text(b)) => a == b,
            _ => self.to_map() == other.to_map(),
        }
    }
}

impl Eq for BusAttributes {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingested() -> BusAttributes {
        BusAttributes::ingested(
            &UserUrn::parse("urn:x:user:bob").unwrap(),
            &MessageId::parse("m-1").unwrap(),
            1_700_000_000_123,
            "http",
        )
    }

    /// The map an ingestor's attributes stand for, written out by hand.
    fn ingested_as_text() -> BTreeMap<String, String> {
        [
            (ATTR_RECIPIENT, "urn:x:user:bob"),
            (ATTR_MESSAGE_ID, "m-1"),
            (ATTR_INGESTED_AT, "1700000000123"),
            (ATTR_SOURCE, "http"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
    }

    fn visited(attributes: &BusAttributes) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        attributes.for_each(|name, value| pairs.push((name.to_owned(), value.to_owned())));
        pairs
    }

    #[test]
    fn an_ingestors_attributes_read_as_the_same_map_written_as_text() {
        let typed = ingested();
        let text = BusAttributes::from(ingested_as_text());
        assert_eq!(typed.to_map(), ingested_as_text());
        assert_eq!(
            visited(&typed),
            visited(&text),
            "same names, texts and order"
        );
        assert_eq!((typed.len(), text.len()), (4, 4));
        assert_eq!(typed, text);
        assert_eq!(text, typed);
        for name in [
            ATTR_RECIPIENT,
            ATTR_MESSAGE_ID,
            ATTR_INGESTED_AT,
            ATTR_SOURCE,
            "other",
        ] {
            assert_eq!(typed.get(name), text.get(name), "{name}");
        }
    }

    #[test]
    fn typed_readers_answer_alike_however_the_attributes_are_kept() {
        let typed = ingested();
        let text = BusAttributes::from(ingested_as_text());
        for attributes in [&typed, &text] {
            assert_eq!(attributes.recipient(), Some("urn:x:user:bob"));
            assert_eq!(attributes.message_id(), Some("m-1"));
            assert_eq!(attributes.ingested_at_ms(), Some(1_700_000_000_123));
        }
        let empty = BusAttributes::default();
        assert!(empty.is_empty());
        assert_eq!(
            (
                empty.recipient(),
                empty.message_id(),
                empty.ingested_at_ms()
            ),
            (None, None, None)
        );
        let not_a_number: BusAttributes = [(ATTR_INGESTED_AT.to_owned(), "soon".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(not_a_number.ingested_at_ms(), None);
    }

    #[test]
    fn an_insert_keeps_the_ingestors_attributes_beside_the_new_one() {
        let mut attributes = ingested();
        attributes.insert("deadLetterReason", "bad");
        let mut expected = ingested_as_text();
        expected.insert("deadLetterReason".to_owned(), "bad".to_owned());
        assert_eq!(attributes.to_map(), expected);
        assert_eq!(attributes.recipient(), Some("urn:x:user:bob"));
        assert_ne!(attributes, ingested());
    }

    #[test]
    fn attributes_that_differ_in_any_value_are_not_equal() {
        let other_time = BusAttributes::ingested(
            &UserUrn::parse("urn:x:user:bob").unwrap(),
            &MessageId::parse("m-1").unwrap(),
            1_700_000_000_124,
            "http",
        );
        assert_ne!(ingested(), other_time);
        let mut text = ingested_as_text();
        text.insert(ATTR_SOURCE.to_owned(), "mqtt".to_owned());
        assert_ne!(ingested(), BusAttributes::from(text));
    }
}
