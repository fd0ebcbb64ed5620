//! The embedded bus (`BUS=memory`): in-process at-least-once delivery whose unacked messages are
//! kept in an append-only log on disk ([`BusLog`]), so a message confirmed by `publish`
//! survives `kill -9`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pipeline::error::BusError;
use pipeline::ports::bus::{
    Acknowledger, BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage,
};
use redb::TableDefinition;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::embedded::bus_log::{BusLog, Position, SEGMENT_BYTES};
use crate::embedded::database::{EmbeddedDb, read_rows};
use crate::error::AdapterError;

/// Where versions before the bus log kept pending messages (in the queues' redb file).
const LEGACY_PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("bus_pending");

/// Settings of the embedded bus.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedBusConfig {
    /// Messages waiting for the processor before `publish` pushes back.
    pub capacity: usize,
    /// How long `publish` waits for room before answering "unavailable" (503).
    pub publish_timeout: Duration,
    /// First redelivery delay after a nack; doubles per attempt.
    pub redelivery_backoff: Duration,
    /// Longest redelivery delay. A nack is a transient failure: the message is retried until it
    /// is acked, never dead-lettered (the processor dead-letters permanent failures itself).
    pub max_backoff: Duration,
    /// Bytes after which a bus log segment takes no more appends (`BUS_SEGMENT_BYTES`).
    pub segment_bytes: u64,
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            publish_timeout: Duration::from_secs(5),
            redelivery_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// A message as the log keeps it: `count: u16`, then per attribute `key_len: u16`, key,
/// `value_len: u32`, value (all little-endian), then the data to the end.
fn encode(message: &BusMessage) -> Result<Vec<u8>, BusError> {
    let too_big = || BusError::Unavailable("bus message attributes too large".into());
    let mut out = Vec::with_capacity(message.data.len() + 128);
    let count = u16::try_from(message.attributes.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&count.to_le_bytes());
    let mut fits = true;
    message.attributes.for_each(|key, value| {
        let (Ok(key_len), Ok(value_len)) = (u16::try_from(key.len()), u32::try_from(value.len()))
        else {
            fits = false;
            return;
        };
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    });
    if !fits {
        return Err(too_big());
    }
    out.extend_from_slice(&message.data);
    Ok(out)
}

/// Reads what [`encode`] wrote; `None` if the bytes are not such a message.
fn decode(bytes: &[u8]) -> Option<BusMessage> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn text(bytes: &[u8]) -> Option<String> {
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
    let mut rest = bytes;
    let count = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let mut attributes = BTreeMap::new();
    for _ in 0..count {
        let key_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let key = text(take(&mut rest, usize::from(key_len))?)?;
        let value_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
        let value = text(take(&mut rest, value_len as usize)?)?;
        attributes.insert(key, value);
    }
    Some(BusMessage::new(Bytes::copy_from_slice(rest), attributes))
}

/// A message ready for the subscriber.
struct Ready {
    place: Place,
    message: BusMessage,
    attempt: u32,
}

/// Where a message ready for the subscriber is in the log: what its ack names.
enum Place {
    /// Known: read back at open.
    Known(Position),
    /// Told by the writer thread once the message is written (dropped if the write fails).
    Coming(oneshot::Receiver<Position>),
}

impl Place {
    /// The position, once written; `None` if the write failed (nothing to ack).
    async fn resolve(self) -> Option<Position> {
        match self {
            Self::Known(position) => Some(position),
            Self::Coming(told) => told.await.ok(),
        }
    }
}

struct Inner {
    log: BusLog,
    config: EmbeddedBusConfig,
    ready_tx: mpsc::Sender<Ready>,
    ready_rx: Mutex<Option<mpsc::Receiver<Ready>>>,
}

/// The embedded bus. Cloneable handle.
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

fn unavailable(err: AdapterError) -> BusError {
    BusError::Unavailable(err.to_string())
}

impl EmbeddedBus {
    /// Moves the messages an older version left pending in `from` (the queues' redb file)
    /// onto this bus, in order; returns how many moved.
    ///
    /// Each is on the bus log durably before it is deleted from `from`: a crash in between
    /// only duplicates some, and the processor dedupes by `messageId`.
    pub async fn adopt_pending(&self, from: &EmbeddedDb) -> Result<usize, AdapterError> {
        let rows = from
            .read(|txn| {
                let rows = read_rows(txn, LEGACY_PENDING, |seq, bytes| {
                    (seq.value(), bytes.value().to_vec())
                })?;
                Ok(rows.unwrap_or_default())
            })
            .await?;
        let mut moved = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            match decode_legacy(&bytes) {
                Some(message) => self
                    .publish(message)
                    .await
                    .map_err(|e| AdapterError::Database(e.to_string()))?,
                None => warn!(seq, "skipping an undecodable legacy bus message"),
            }
            moved.push(seq);
        }
        let count = moved.len();
        if count > 0 {
            from.write(move |txn| {
                let mut pending = txn.open_table(LEGACY_PENDING)?;
                for seq in &moved {
                    pending.remove(*seq)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(count)
    }

    /// Opens the bus log in `dir` and queues every message left unacked by an earlier run.
    ///
    /// Recovered messages count as redeliveries (attempt 2): an earlier run may have routed them.
    pub async fn open(dir: &Path, config: EmbeddedBusConfig) -> Result<Self, AdapterError> {
        let dir = dir.to_path_buf();
        let segment_bytes = config.segment_bytes;
        let (log, recovered) =
            tokio::task::spawn_blocking(move || BusLog::open(&dir, segment_bytes))
                .await
                .map_err(|e| AdapterError::Database(e.to_string()))??;
        let (ready_tx, ready_rx) = mpsc::channel(config.capacity.max(1));
        let bus = Self {
            inner: Arc::new(Inner {
                log,
                config,
                ready_tx: ready_tx.clone(),
                ready_rx: Mutex::new(Some(ready_rx)),
            }),
        };
        if !recovered.is_empty() {
            info!(
                count = recovered.len(),
                "redelivering bus messages left unacked by the previous run"
            );
        }
        tokio::spawn(async move {
            for entry in recovered {
                let Some(message) = decode(&entry.bytes) else {
                    warn!(seq = entry.seq, "skipping undecodable pending bus message");
                    continue;
                };
                let ready = Ready {
                    place: Place::Known(Position {
                        seq: entry.seq,
                        segment: entry.segment,
                    }),
                    message,
                    attempt: 2,
                };
                if ready_tx.send(ready).await.is_err() {
                    return;
                }
            }
        });
        Ok(bus)
    }

    /// Makes every lazy write so far durable (graceful shutdown).
    pub async fn flush(&self) -> Result<(), AdapterError> {
        self.inner.log.flush().await
    }
}

/// Decodes a message as versions before the bus log stored it: JSON with `attributes` and
/// `data` (a string, or an array of bytes).
fn decode_legacy(bytes: &[u8]) -> Option<BusMessage> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Data {
        Text(String),
        Raw(Vec<u8>),
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        attributes: BTreeMap<String, String>,
        data: Data,
    }
    let stored: Stored = serde_json::from_slice(bytes).ok()?;
    let data = match stored.data {
        Data::Text(text) => Bytes::from(text.into_bytes()),
        Data::Raw(raw) => Bytes::from(raw),
    };
    Some(BusMessage::new(data, stored.attributes))
}

#[async_trait]
impl EnvelopeBus for EmbeddedBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let inner = &self.inner;
        let permit = tokio::time::timeout(
            inner.config.publish_timeout,
            inner.ready_tx.clone().reserve_owned(),
        )
        .await
        .map_err(|_| BusError::Unavailable("bus is full; the processor is behind".into()))?
        .map_err(|_| BusError::Closed)?;
        let bytes = encode(&message)?;
        // Handed to the subscriber as soon as its append is queued, from this task: the
        // recipient waits neither for the writer thread nor for the sync (docs/guarantees.md:
        // "A recipient may get an envelope before its sender gets the 202"). The ack waits
        // for the position the writer thread tells once the message is written.
        let (tell, told) = oneshot::channel();
        let on_written = Box::new(move |written: Result<Position, String>| {
            if let Ok(position) = written {
                let _ = tell.send(position);
            }
        });
        let synced = inner
            .log
            .append(bytes, on_written)
            .await
            .map_err(unavailable)?;
        permit.send(Ready {
            place: Place::Coming(told),
            message,
            attempt: 1,
        });
        synced.wait().await.map_err(unavailable)
    }

    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, BusError> {
        let receiver = self
            .inner
            .ready_rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| BusError::Unavailable("the embedded bus has one subscriber".into()))?;
        Ok(Box::new(EmbeddedSubscription {
            inner: self.inner.clone(),
            receiver,
        }))
    }

    async fn dead_letter(&self, message: BusMessage, reason: &str) -> Result<(), BusError> {
        let mut message = message;
        message.attributes.insert("deadLetterReason", reason);
        let bytes = encode(&message)?;
        self.inner.log.dead_letter(bytes).await.map_err(unavailable)
    }

    async fn check(&self) -> Result<(), BusError> {
        if self.inner.ready_tx.is_closed() {
            return Err(BusError::Closed);
        }
        if !self.inner.log.is_running() {
            return Err(BusError::Unavailable("the bus log writer stopped".into()));
        }
        Ok(())
    }
}

struct EmbeddedSubscription {
    inner: Arc<Inner>,
    receiver: mpsc::Receiver<Ready>,
}

#[async_trait]
impl BusSubscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<ReceivedMessage> {
        let Ready {
            place,
            message,
            attempt,
        } = self.receiver.recv().await?;
        Some(ReceivedMessage::new(
            message,
            attempt,
            Box::new(EmbeddedAcker {
                inner: self.inner.clone(),
                place,
                attempt,
            }),
        ))
    }
}

/// Settles one delivered message: its place in the log and its attempt. A nack gets the
/// message back to queue it again, so the acker keeps no copy of it.
struct EmbeddedAcker {
    inner: Arc<Inner>,
    place: Place,
    attempt: u32,
}

#[async_trait]
impl Acknowledger for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        // A lost ack only redelivers the message after a crash; the processor dedupes it.
        // A message whose write failed is not in the log: nothing to ack.
        let Some(position) = self.place.resolve().await else {
            return Ok(());
        };
        self.inner.log.ack(position).await.map_err(unavailable)
    }

    async fn nack(self: Box<Self>, message: BusMessage) -> Result<(), BusError> {
        let Self {
            inner,
            place,
            attempt,
        } = *self;
        let delay = inner
            .config
            .redelivery_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(inner.config.max_backoff);
        let ready = Ready {
            place,
            message,
            attempt: attempt + 1,
        };
        let sender = inner.ready_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The message stays in the log; if the bus closed, the next run redelivers it.
            let _ = sender.send(ready).await;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::ports::BusAttributes;

    #[test]
    fn messages_round_trip_through_the_log_encoding() {
        let mut attributes = BTreeMap::new();
        attributes.insert("recipient".to_owned(), "urn:a:user:b".to_owned());
        attributes.insert("messageId".to_owned(), "m-1".to_owned());
        let message = BusMessage::new(Bytes::from_static(b"{\"x\":1}\xff"), attributes);
        let bytes = encode(&message).unwrap();
        assert_eq!(decode(&bytes), Some(message));
        assert_eq!(decode(&bytes[..5]), None, "a cut message does not decode");
    }

    #[test]
    fn an_ingestors_typed_attributes_are_logged_as_their_text_would_be() {
        let recipient = pipeline::UserUrn::parse("urn:a:user:b").unwrap();
        let id = pipeline::MessageId::parse("m-1").unwrap();
        let typed = BusAttributes::ingested(&recipient, &id, 1_700_000_000_123, "http");
        let data = Bytes::from_static(b"{}");
        let as_text = BusMessage::new(data.clone(), typed.to_map());
        let message = BusMessage::new(data, typed);
        let bytes = encode(&message).unwrap();
        assert_eq!(bytes, encode(&as_text).unwrap(), "the same record bytes");
        let read = decode(&bytes).unwrap();
        assert_eq!(read, message);
        assert_eq!(read.attributes.ingested_at_ms(), Some(1_700_000_000_123));
        assert_eq!(read.attributes.recipient(), Some("urn:a:user:b"));
    }

    #[tokio::test]
    async fn an_ack_waits_for_the_position_and_a_message_never_written_acks_nothing() {
        let dir = crate::embedded::bus_log::tests::temp_dir("place");
        let bus = EmbeddedBus::open(&dir, EmbeddedBusConfig::default())
            .await
            .unwrap();
        let acker = |place| {
            Box::new(EmbeddedAcker {
                inner: bus.inner.clone(),
                place,
                attempt: 1,
            })
        };
        let (tell, told) = oneshot::channel();
        let mut ack = tokio::spawn(acker(Place::Coming(told)).ack());
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut ack)
                .await
                .is_err(),
            "the ack waits until the writer tells the position"
        );
        tell.send(Position { seq: 1, segment: 1 }).unwrap();
        assert!(ack.await.unwrap().is_ok());
        let (tell, told) = oneshot::channel::<Position>();
        drop(tell);
        assert!(
            acker(Place::Coming(told)).ack().await.is_ok(),
            "a failed write leaves nothing to ack"
        );
        bus.flush().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn legacy_json_messages_decode() {
        let text = br#"{"attributes":{"messageId":"m"},"data":"{}"}"#;
        let message = decode_legacy(text).unwrap();
        assert_eq!(&message.data[..], b"{}");
        let raw = br#"{"attributes":{},"data":[1,2]}"#;
        assert_eq!(&decode_legacy(raw).unwrap().data[..], &[1, 2]);
    }
}
