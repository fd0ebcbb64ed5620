//! The embedded bus (`BUS=memory`): in-process at-least-once delivery whose unacked messages are
//! kept in the embedded database, so a message confirmed by `publish` survives `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pipeline::error::BusError;
use pipeline::ports::bus::{
    Acknowledger, BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage,
};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::embedded::database::EmbeddedDb;
use crate::error::AdapterError;

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("bus_pending");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("bus_dead_letter");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SEQ_KEY: &str = "bus_seq";

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
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            publish_timeout: Duration::from_secs(5),
            redelivery_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A message as kept in the `bus_pending` table.
#[derive(Serialize, Deserialize)]
struct StoredMessage {
    attributes: BTreeMap<String, String>,
    #[serde(with = "serde_bytes_as_vec")]
    data: Vec<u8>,
}

/// Serde for raw bytes as a JSON array is slow; keep data as a UTF-8 string when it is one.
mod serde_bytes_as_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(data) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(data),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Raw(Vec<u8>),
        }
        Ok(match Either::deserialize(d)? {
            Either::Text(text) => text.into_bytes(),
            Either::Raw(raw) => raw,
        })
    }
}

/// A message ready for the subscriber.
struct Ready {
    seq: u64,
    message: BusMessage,
    attempt: u32,
}

struct Inner {
    db: EmbeddedDb,
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

fn encode(message: &BusMessage) -> Result<Vec<u8>, BusError> {
    serde_json::to_vec(&StoredMessage {
        attributes: message.attributes.clone(),
        data: message.data.to_vec(),
    })
    .map_err(|e| BusError::Unavailable(e.to_string()))
}

fn decode(bytes: &[u8]) -> Option<BusMessage> {
    let stored: StoredMessage = serde_json::from_slice(bytes).ok()?;
    Some(BusMessage {
        data: Bytes::from(stored.data),
        attributes: stored.attributes,
    })
}

impl EmbeddedBus {
    /// Opens the bus in `db` and queues every message left unacked by an earlier run.
    ///
    /// Recovered messages count as redeliveries (attempt 2): an earlier run may have routed them.
    pub async fn open(db: EmbeddedDb, config: EmbeddedBusConfig) -> Result<Self, AdapterError> {
        db.write(|txn| {
            txn.open_table(PENDING)?;
            txn.open_table(DEAD)?;
            txn.open_table(META)?;
            Ok(())
        })
        .await?;
        let recovered = db
            .read(|txn| {
                let table = txn.open_table(PENDING)?;
                let mut rows = Vec::new();
                for entry in table.iter()? {
                    let (seq, bytes) = entry?;
                    rows.push((seq.value(), bytes.value().to_vec()));
                }
                Ok(rows)
            })
            .await?;
        let (ready_tx, ready_rx) = mpsc::channel(config.capacity.max(1));
        let bus = Self {
            inner: Arc::new(Inner {
                db,
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
            for (seq, bytes) in recovered {
                let Some(message) = decode(&bytes) else {
                    warn!(seq, "skipping undecodable pending bus message");
                    continue;
                };
                if ready_tx
                    .send(Ready {
                        seq,
                        message,
                        attempt: 2,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(bus)
    }
}

#[async_trait]
impl EnvelopeBus for EmbeddedBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let inner = &self.inner;
        let permit = tokio::time::timeout(inner.config.publish_timeout, inner.ready_tx.reserve())
            .await
            .map_err(|_| BusError::Unavailable("bus is full; the processor is behind".into()))?
            .map_err(|_| BusError::Closed)?;
        let bytes = encode(&message)?;
        let seq = inner
            .db
            .write(move |txn| {
                let mut meta = txn.open_table(META)?;
                let seq = meta.get(SEQ_KEY)?.map(|v| v.value()).unwrap_or(0) + 1;
                meta.insert(SEQ_KEY, seq)?;
                txn.open_table(PENDING)?.insert(seq, bytes.as_slice())?;
                Ok(seq)
            })
            .await
            .map_err(unavailable)?;
        permit.send(Ready {
            seq,
            message,
            attempt: 1,
        });
        Ok(())
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
        park_dead(&self.inner.db, &message, reason).await
    }

    async fn check(&self) -> Result<(), BusError> {
        if self.inner.ready_tx.is_closed() {
            return Err(BusError::Closed);
        }
        self.inner
            .db
            .read(|txn| {
                txn.open_table(PENDING)?.len()?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }
}

async fn park_dead(db: &EmbeddedDb, message: &BusMessage, reason: &str) -> Result<(), BusError> {
    let mut message = message.clone();
    message
        .attributes
        .insert("deadLetterReason".into(), reason.to_owned());
    let bytes = encode(&message)?;
    db.write(move |txn| {
        let mut meta = txn.open_table(META)?;
        let seq = meta.get(SEQ_KEY)?.map(|v| v.value()).unwrap_or(0) + 1;
        meta.insert(SEQ_KEY, seq)?;
        txn.open_table(DEAD)?.insert(seq, bytes.as_slice())?;
        Ok(())
    })
    .await
    .map_err(unavailable)
}

struct EmbeddedSubscription {
    inner: Arc<Inner>,
    receiver: mpsc::Receiver<Ready>,
}

#[async_trait]
impl BusSubscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<ReceivedMessage> {
        let ready = self.receiver.recv().await?;
        let message = ready.message.clone();
        let attempt = ready.attempt;
        Some(ReceivedMessage::new(
            message,
            attempt,
            Box::new(EmbeddedAcker {
                inner: self.inner.clone(),
                ready,
            }),
        ))
    }
}

struct EmbeddedAcker {
    inner: Arc<Inner>,
    ready: Ready,
}

#[async_trait]
impl Acknowledger for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let seq = self.ready.seq;
        // A lost ack only redelivers the message after a crash; the processor dedupes it.
        self.inner
            .db
            .write_lazy(move |txn| {
                txn.open_table(PENDING)?.remove(seq)?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }

    async fn nack(self: Box<Self>) -> Result<(), BusError> {
        let Self { inner, mut ready } = *self;
        let delay = inner
            .config
            .redelivery_backoff
            .saturating_mul(1 << ready.attempt.saturating_sub(1).min(16))
            .min(inner.config.max_backoff);
        ready.attempt += 1;
        let sender = inner.ready_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The message stays in `bus_pending`; if the bus closed, the next run redelivers it.
            let _ = sender.send(ready).await;
        });
        Ok(())
    }
}
