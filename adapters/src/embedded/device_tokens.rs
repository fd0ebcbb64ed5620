//! Device tokens in the embedded database: one record per (user, token fingerprint).

use std::sync::Arc;

use async_trait::async_trait;
use pipeline::clock::Clock;
use pipeline::error::DeviceTokenError;
use pipeline::ports::device_tokens::DeviceTokenStore;
use pipeline::{DeviceRegistration, DeviceToken, Platform, UserUrn};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::embedded::database::EmbeddedDb;
use crate::error::AdapterError;

const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");

/// A device as stored (the same fields the Firestore layout uses).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDevice {
    token: String,
    platform: Platform,
    created_at: u64,
    updated_at: u64,
}

fn unavailable(err: AdapterError) -> DeviceTokenError {
    DeviceTokenError::Unavailable(err.to_string())
}

/// The embedded device-token store.
#[derive(Clone)]
pub struct EmbeddedDeviceTokenStore {
    db: EmbeddedDb,
    clock: Arc<dyn Clock>,
}

impl EmbeddedDeviceTokenStore {
    /// A store in `db`.
    pub async fn new(db: EmbeddedDb, clock: Arc<dyn Clock>) -> Result<Self, AdapterError> {
        db.write(|txn| {
            txn.open_table(DEVICES)?;
            Ok(())
        })
        .await?;
        Ok(Self { db, clock })
    }
}

#[async_trait]
impl DeviceTokenStore for EmbeddedDeviceTokenStore {
    async fn register(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        platform: Platform,
    ) -> Result<(), DeviceTokenError> {
        let now = self.clock.now_ms();
        let (user, token) = (user.clone(), token.clone());
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(DEVICES)?;
                let key_id = token.fingerprint();
                let key = (user.as_str(), key_id.as_str());
                let created_at = table
                    .get(key)?
                    .and_then(|v| serde_json::from_slice::<StoredDevice>(v.value()).ok())
                    .map(|d| d.created_at)
                    .unwrap_or(now);
                let record = StoredDevice {
                    token: token.expose().to_owned(),
                    platform,
                    created_at,
                    updated_at: now,
                };
                let bytes = serde_json::to_vec(&record)
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                table.insert(key, bytes.as_slice())?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }

    async fn unregister(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
    ) -> Result<bool, DeviceTokenError> {
        let (user, key_id) = (user.clone(), token.fingerprint());
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(DEVICES)?;
                Ok(table.remove((user.as_str(), key_id.as_str()))?.is_some())
            })
            .await
            .map_err(unavailable)
    }

    async fn devices(&self, user: &UserUrn) -> Result<Vec<DeviceRegistration>, DeviceTokenError> {
        let owner = user.clone();
        let rows = self
            .db
            .read(move |txn| {
                let table = txn.open_table(DEVICES)?;
                let user = owner.as_str();
                let mut rows = Vec::new();
                for entry in table.range((user, "")..=(user, "\u{7f}"))? {
                    let (_, value) = entry?;
                    rows.push(value.value().to_vec());
                }
                Ok(rows)
            })
            .await
            .map_err(unavailable)?;
        let mut devices = Vec::with_capacity(rows.len());
        for bytes in rows {
            let Ok(stored) = serde_json::from_slice::<StoredDevice>(&bytes) else {
                continue;
            };
            let Ok(token) = DeviceToken::parse(&stored.token) else {
                continue;
            };
            devices.push(DeviceRegistration {
                user: user.clone(),
                token,
                platform: stored.platform,
                created_at_ms: stored.created_at,
                updated_at_ms: stored.updated_at,
            });
        }
        Ok(devices)
    }

    async fn remove_dead(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        send_started_ms: u64,
    ) -> Result<bool, DeviceTokenError> {
        let (user, key_id) = (user.clone(), token.fingerprint());
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(DEVICES)?;
                let key = (user.as_str(), key_id.as_str());
                let updated_at = table
                    .get(key)?
                    .and_then(|v| serde_json::from_slice::<StoredDevice>(v.value()).ok())
                    .map(|d| d.updated_at);
                match updated_at {
                    Some(at) if at < send_started_ms => {
                        table.remove(key)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await
            .map_err(unavailable)
    }
}
