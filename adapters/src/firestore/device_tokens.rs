//! Device tokens in Firestore: `devices/{userUrn}/tokens/{sha256(token)}` →
//! `{token, platform, createdAt, updatedAt}`. One document per token: a user's devices never
//! contend, upserts are idempotent. A small in-process cache (bounded, short TTL, invalidated by
//! this instance's writes) makes a burst of envelopes to one offline user read Firestore once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use firestore::errors::FirestoreError;
use firestore::{FirestoreDb, FirestoreDbOptions, FirestoreWritePrecondition};
use pipeline::clock::Clock;
use pipeline::error::DeviceTokenError;
use pipeline::ports::device_tokens::DeviceTokenStore;
use pipeline::{DeviceRegistration, DeviceToken, Platform, UserUrn};
use serde::{Deserialize, Serialize};

use crate::error::AdapterError;

const USERS: &str = "devices";
const TOKENS: &str = "tokens";

/// Firestore settings.
#[derive(Clone, Debug)]
pub struct FirestoreConfig {
    /// Project (`FIRESTORE_PROJECT`).
    pub project: String,
    /// Database id (`FIRESTORE_DATABASE`, default `(default)`).
    pub database: String,
    /// How long a user's device list is cached.
    pub cache_ttl: Duration,
    /// Users whose device lists are cached at most.
    pub cache_size: usize,
}

/// A device document.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDevice {
    token: String,
    platform: Platform,
    created_at: i64,
    updated_at: i64,
}

fn unavailable(err: FirestoreError) -> DeviceTokenError {
    DeviceTokenError::Unavailable(err.to_string())
}

/// Device tokens in Firestore.
pub struct FirestoreDeviceTokenStore {
    db: FirestoreDb,
    clock: Arc<dyn Clock>,
    config: FirestoreConfig,
    cache: Mutex<HashMap<UserUrn, (Instant, Vec<DeviceRegistration>)>>,
}

impl FirestoreDeviceTokenStore {
    /// Connects to Firestore (or the emulator named by `FIRESTORE_EMULATOR_HOST`).
    pub async fn connect(
        config: FirestoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AdapterError> {
        let options = FirestoreDbOptions::new(config.project.clone())
            .with_database_id(config.database.clone());
        let db =
            FirestoreDb::with_options(options)
                .await
                .map_err(|e| AdapterError::Unreachable {
                    backend: "firestore",
                    cause: e.to_string(),
                })?;
        Ok(Self {
            db,
            clock,
            config,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn parent(&self, user: &UserUrn) -> Result<String, DeviceTokenError> {
        self.db
            .parent_path(USERS, user.as_str())
            .map(|p| p.to_string())
            .map_err(unavailable)
    }

    fn forget(&self, user: &UserUrn) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }

    fn cached(&self, user: &UserUrn) -> Option<Vec<DeviceRegistration>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(user)
            .filter(|(at, _)| at.elapsed() < self.config.cache_ttl)
            .map(|(_, devices)| devices.clone())
    }

    fn remember(&self, user: &UserUrn, devices: &[DeviceRegistration]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config.cache_size && !cache.contains_key(user) {
            let ttl = self.config.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= self.config.cache_size
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(u, _)| u.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(user.clone(), (Instant::now(), devices.to_vec()));
    }
}

#[async_trait]
impl DeviceTokenStore for FirestoreDeviceTokenStore {
    async fn register(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        platform: Platform,
    ) -> Result<(), DeviceTokenError> {
        let parent = self.parent(user)?;
        let id = token.fingerprint();
        let now = self.clock.now_ms() as i64;
        let fresh = StoredDevice {
            token: token.expose().to_owned(),
            platform,
            created_at: now,
            updated_at: now,
        };
        self.forget(user);
        let inserted: Result<StoredDevice, _> = self
            .db
            .fluent()
            .insert()
            .into(TOKENS)
            .document_id(&id)
            .parent(&parent)
            .object(&fresh)
            .execute()
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(FirestoreError::DataConflictError(_)) => {
                // Only the masked fields are written: `createdAt` keeps its first value.
                let refresh = fresh;
                let _: StoredDevice = self
                    .db
                    .fluent()
                    .update()
                    .fields(["token", "platform", "updatedAt"])
                    .in_col(TOKENS)
                    .document_id(&id)
                    .parent(&parent)
                    .object(&refresh)
                    .execute()
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn unregister(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
    ) -> Result<bool, DeviceTokenError> {
        let parent = self.parent(user)?;
        let id = token.fingerprint();
        self.forget(user);
        let existing = self
            .db
            .fluent()
            .select()
            .by_id_in(TOKENS)
            .parent(&parent)
            .one(&id)
            .await
            .map_err(unavailable)?;
        if existing.is_none() {
            return Ok(false);
        }
        self.db
            .fluent()
            .delete()
            .from(TOKENS)
            .parent(&parent)
            .document_id(&id)
            .execute()
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn devices(&self, user: &UserUrn) -> Result<Vec<DeviceRegistration>, DeviceTokenError> {
        if let Some(devices) = self.cached(user) {
            return Ok(devices);
        }
        let parent = self.parent(user)?;
        let stored: Vec<StoredDevice> = self
            .db
            .fluent()
            .select()
            .from(TOKENS)
            .parent(&parent)
            .obj()
            .query()
            .await
            .map_err(unavailable)?;
        let devices: Vec<DeviceRegistration> = stored
            .into_iter()
            .filter_map(|d| {
                Some(DeviceRegistration {
                    user: user.clone(),
                    token: DeviceToken::parse(&d.token).ok()?,
                    platform: d.platform,
                    created_at_ms: d.created_at.max(0) as u64,
                    updated_at_ms: d.updated_at.max(0) as u64,
                })
            })
            .collect();
        self.remember(user, &devices);
        Ok(devices)
    }

    async fn remove_dead(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        send_started_ms: u64,
    ) -> Result<bool, DeviceTokenError> {
        let parent = self.parent(user)?;
        let id = token.fingerprint();
        self.forget(user);
        let Some(document) = self
            .db
            .fluent()
            .select()
            .by_id_in(TOKENS)
            .parent(&parent)
            .one(&id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        let stored: StoredDevice =
            FirestoreDb::deserialize_doc_to(&document).map_err(unavailable)?;
        if stored.updated_at.max(0) as u64 >= send_started_ms {
            return Ok(false);
        }
        // Compare-and-delete: a registration landing between the read and here wins.
        let mut delete = self
            .db
            .fluent()
            .delete()
            .from(TOKENS)
            .parent(&parent)
            .document_id(&id);
        if let Some(updated) = document.update_time {
            let at = firestore::timestamp_utils::from_timestamp(updated).map_err(unavailable)?;
            delete = delete.precondition(FirestoreWritePrecondition::UpdateTime(at));
        }
        match delete.execute().await {
            Ok(()) => Ok(true),
            Err(FirestoreError::DataConflictError(_)) => Ok(false),
            Err(err) => Err(unavailable(err)),
        }
    }
}
