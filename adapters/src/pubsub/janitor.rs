//! The delivery-topic janitor: deletes `delivery-<id>` topics and subscriptions whose instance's
//! liveness lapsed (a crashed instance never deletes its own), so nothing leaks for long.
//! Any instance may run it; a Redis lock lets one sweep at a time.

use std::sync::Arc;
use std::time::Duration;

use pipeline::InstanceId;
use pipeline::ports::presence::PresenceStore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::AdapterError;
use crate::pubsub::admin::{delete_subscription, delete_topic};
use crate::pubsub::config::PubSubConfig;
use crate::redis::RedisHandle;

/// Sweeps stale delivery topics.
pub struct DeliveryJanitor {
    config: PubSubConfig,
    presence: Arc<dyn PresenceStore>,
    redis: RedisHandle,
}

impl DeliveryJanitor {
    /// A janitor for `config`'s project, judging liveness by `presence`, locking in `redis`.
    pub fn new(config: PubSubConfig, presence: Arc<dyn PresenceStore>, redis: RedisHandle) -> Self {
        Self {
            config,
            presence,
            redis,
        }
    }

    /// Takes the sweep lock for `hold`; false when another janitor has it.
    async fn lock(&self, hold: Duration) -> Result<bool, AdapterError> {
        let taken: Option<String> = ::redis::cmd("SET")
            .arg(self.redis.keys.janitor_lock())
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(hold.as_millis() as u64)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| AdapterError::Database(e.to_string()))?;
        Ok(taken.is_some())
    }

    /// One sweep: returns the instance ids whose delivery topics were deleted, or `None` when
    /// another janitor holds the lock.
    pub async fn sweep_once(&self, hold: Duration) -> Result<Option<Vec<String>>, AdapterError> {
        if !self.lock(hold).await? {
            return Ok(None);
        }
        let topics = self.config.topic_admin().await?;
        let subscriptions = self.config.subscription_admin().await?;
        let prefix = self.config.topic_path("delivery-");
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = topics
                .list_topics()
                .set_project(format!("projects/{}", self.config.project))
                .set_page_token(page_token.clone())
                .send()
                .await
                .map_err(|e| AdapterError::Unreachable {
                    backend: "pubsub",
                    cause: format!("listing topics: {e}"),
                })?;
            names.extend(page.topics.into_iter().map(|t| t.name));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let mut deleted = Vec::new();
        for name in names {
            let Some(id) = name.strip_prefix(&prefix) else {
                continue;
            };
            let instance = InstanceId::new(id);
            match self.presence.instance_live(&instance).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(err) => {
                    warn!(cause = %err, "janitor cannot check liveness; skipping this sweep");
                    return Ok(Some(deleted));
                }
            }
            let short = format!("delivery-{id}");
            delete_subscription(&subscriptions, &self.config.subscription_path(&short)).await?;
            delete_topic(&topics, &name).await?;
            info!(
                instance = id,
                "deleted the delivery topic of a dead instance"
            );
            deleted.push(id.to_owned());
        }
        Ok(Some(deleted))
    }

    /// Sweeps every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(err) = self.sweep_once(interval).await {
                        warn!(cause = %err, "delivery janitor sweep failed");
                    }
                }
            }
        }
    }
}
