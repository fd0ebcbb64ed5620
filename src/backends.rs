//! Builds the ports from config: the only place that knows which backends exist.

use std::sync::Arc;

use adapters::embedded::bus::EmbeddedBusConfig;
use adapters::embedded::{
    EmbeddedBus, EmbeddedDb, EmbeddedDeviceTokenStore, EmbeddedEnvelopeStore, LocalDeliveryChannel,
    LogPushSender, MemoryPresenceStore, MemoryRateLimiter,
};
use adapters::firestore::{FirestoreConfig, FirestoreDeviceTokenStore};
use adapters::pubsub::{DeliveryJanitor, PubSubBus, PubSubConfig, PubSubDeliveryChannel};
use adapters::push::apns::{self, ApnsPushType};
use adapters::push::retry::RetryPolicy;
use adapters::push::{ApnsConfig, ApnsPushSender, FcmConfig, FcmPushSender, PlatformPushRouter};
use adapters::redis::{
    RedisConfig, RedisDeliveryChannel, RedisDeviceTokenStore, RedisEnvelopeStore, RedisHandle,
    RedisPresenceStore, RedisRateLimiter,
};
use anyhow::{Context, bail};
use pipeline::clock::Clock;
use pipeline::ports::{
    DeliveryChannel, DeviceTokenStore, EnvelopeBus, EnvelopeStore, PresenceStore, PushSender,
    RateLimiter, Retention,
};
use tracing::{info, warn};

use crate::config::{
    ApnsEnvironment, ApnsPushKind, BusBackend, DeliveryBackend, DeviceTokenBackend, GlobalArgs,
    PresenceBackend, PushBackend, RateLimitBackend, ServeArgs, StoreBackend,
};

/// The embedded database file inside `DATA_DIR`: queues and device tokens.
const DB_FILE: &str = "router.redb";
/// The embedded bus's log folder inside `DATA_DIR`: its own files and writer thread, so bus
/// appends commit in parallel with queue writes.
const BUS_DIR: &str = "bus";

/// Every port the roles use.
pub struct Backends {
    pub bus: Arc<dyn EnvelopeBus>,
    pub store: Arc<dyn EnvelopeStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub channel: Arc<dyn DeliveryChannel>,
    pub devices: Arc<dyn DeviceTokenStore>,
    pub push: Arc<dyn PushSender>,
    pub sender_limiter: Arc<dyn RateLimiter>,
    pub pair_limiter: Arc<dyn RateLimiter>,
    /// Deletes delivery topics of dead instances (`DELIVERY=pubsub` with the delivery role).
    pub janitor: Option<DeliveryJanitor>,
    /// The embedded database, flushed on graceful shutdown (lazy acks become durable).
    pub db: EmbeddedDb,
    /// The embedded bus (`BUS=memory`), whose log is flushed on graceful shutdown too.
    pub embedded_bus: Option<EmbeddedBus>,
}

/// Rejects combinations that cannot work, before anything starts.
fn validate(args: &ServeArgs) -> anyhow::Result<()> {
    let delivery = args.delivery_backend();
    if delivery != DeliveryBackend::Local && args.presence != PresenceBackend::Redis {
        bail!(
            "DELIVERY={delivery:?} spans instances and needs PRESENCE=redis: other instances must see this one's sessions"
        );
    }
    let roles = args.role_set();
    if delivery == DeliveryBackend::Local && roles.processor != roles.delivery {
        bail!(
            "DELIVERY=local hands envelopes over inside one process: run processor and delivery together, or use DELIVERY=redis|pubsub"
        );
    }
    if (delivery == DeliveryBackend::Pubsub || args.bus == BusBackend::Pubsub)
        && args.pubsub_project.is_none()
    {
        bail!("Pub/Sub is selected but PUBSUB_PROJECT is not set");
    }
    Ok(())
}

/// Pub/Sub settings from config.
fn pubsub_config(args: &ServeArgs) -> PubSubConfig {
    PubSubConfig {
        project: args.pubsub_project.clone().unwrap_or_default(),
        emulator_host: args.pubsub_emulator_host.clone(),
        ingress_topic: args.pubsub_ingress_topic.clone(),
        ingress_subscription: args.pubsub_subscription.clone(),
        dead_letter_topic: args.pubsub_dead_letter_topic.clone(),
        max_delivery_attempts: 5,
        max_outstanding_messages: args.pubsub_max_outstanding_messages,
        max_outstanding_bytes: args.pubsub_max_outstanding_bytes,
        max_in_flight_publishes: args.pubsub_max_in_flight_publishes,
        publish_timeout: args.bus_publish_timeout,
        create_resources: args.create_resources,
    }
}

/// Connects to Redis when any backend needs it.
async fn redis(args: &ServeArgs) -> anyhow::Result<Option<RedisHandle>> {
    let needed = args.presence == PresenceBackend::Redis
        || args.store == StoreBackend::Redis
        || args.delivery_backend() == DeliveryBackend::Redis
        || args.rate_limit == RateLimitBackend::Redis
        || args.device_tokens == DeviceTokenBackend::Redis;
    if !needed {
        return Ok(None);
    }
    let url = args
        .redis_url
        .clone()
        .context("a Redis backend is selected but REDIS_URL is not set")?;
    let handle = RedisConfig {
        url,
        key_prefix: args.redis_key_prefix.clone(),
        timeout: args.redis_timeout,
    }
    .connect()
    .await
    .context("connecting to REDIS_URL")?;
    info!(prefix = %args.redis_key_prefix, "redis connected");
    Ok(Some(handle))
}

/// The push sender: FCM and/or APNs as configured, the log for platforms without one.
fn push_sender(args: &ServeArgs) -> anyhow::Result<Arc<dyn PushSender>> {
    let log: Arc<dyn PushSender> = Arc::new(LogPushSender);
    let retry = RetryPolicy {
        attempts: args.push_attempts.max(1),
        ..RetryPolicy::default()
    };
    let fcm: Arc<dyn PushSender> = if args.push.contains(&PushBackend::Fcm) {
        Arc::new(FcmPushSender::new(FcmConfig {
            project_id: args
                .fcm_project_id
                .clone()
                .context("PUSH=fcm needs FCM_PROJECT_ID")?,
            base_url: args.fcm_base_url.clone(),
            credentials_file: args.fcm_credentials_file.clone(),
            collapse_key: "wake".into(),
            ttl: args.push_ttl,
            concurrency: args.push_concurrency,
            retry,
        })?)
    } else {
        log.clone()
    };
    let apns: Arc<dyn PushSender> = if args.push.contains(&PushBackend::Apns) {
        let required = |value: &Option<String>, name: &str| {
            value
                .clone()
                .with_context(|| format!("PUSH=apns needs {name}"))
        };
        Arc::new(ApnsPushSender::new(ApnsConfig {
            base_url: args.apns_base_url.clone().unwrap_or_else(|| {
                match args.apns_environment {
                    ApnsEnvironment::Production => apns::PRODUCTION,
                    ApnsEnvironment::Sandbox => apns::SANDBOX,
                }
                .to_owned()
            }),
            key_file: args
                .apns_key_file
                .clone()
                .context("PUSH=apns needs APNS_KEY_FILE")?,
            key_id: required(&args.apns_key_id, "APNS_KEY_ID")?,
            team_id: required(&args.apns_team_id, "APNS_TEAM_ID")?,
            topic: required(&args.apns_topic, "APNS_TOPIC")?,
            push_type: match args.apns_push_type {
                ApnsPushKind::Background => ApnsPushType::Background,
                ApnsPushKind::Alert => ApnsPushType::Alert,
            },
            alert_text: args.apns_alert_text.clone(),
            ttl: args.push_ttl,
            ca_file: args.apns_ca_file.clone(),
            concurrency: args.push_concurrency,
            retry,
        })?)
    } else {
        log
    };
    Ok(Arc::new(PlatformPushRouter::new(fcm, apns)))
}

/// Builds every port for `args`.
pub async fn build(
    global: &GlobalArgs,
    args: &ServeArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Backends> {
    validate(args)?;
    let db_path = global.data_dir.join(DB_FILE);
    let db = EmbeddedDb::open(&db_path, global.embedded_commit_interval)?;
    info!(path = %db_path.display(), "embedded database open");
    let mut embedded_bus = None;
    let redis = redis(args).await?;
    let need_redis = || redis.clone().context("Redis backend without a connection");

    let bus_config = EmbeddedBusConfig {
        capacity: args.bus_capacity,
        publish_timeout: args.bus_publish_timeout,
        segment_bytes: args.bus_segment_bytes,
        ..EmbeddedBusConfig::default()
    };
    let bus: Arc<dyn EnvelopeBus> = match args.bus {
        BusBackend::Memory => {
            let bus = EmbeddedBus::open(&global.data_dir.join(BUS_DIR), bus_config).await?;
            embedded_bus = Some(bus.clone());
            // Messages an older version left pending in the queues' file move onto the log
            // (in the background: publishing waits for room the processor makes).
            let adopting = bus.clone();
            let legacy = db.clone();
            tokio::spawn(async move {
                match adopting.adopt_pending(&legacy).await {
                    Ok(0) => {}
                    Ok(adopted) => info!(adopted, "moved pending bus messages onto the bus log"),
                    Err(err) => {
                        warn!(cause = %err, "could not move an older version's pending bus messages; they stay in {DB_FILE} for the next start")
                    }
                }
            });
            Arc::new(bus)
        }
        BusBackend::Pubsub => Arc::new(
            PubSubBus::connect(pubsub_config(args), args.role_set().processor)
                .await
                .context("connecting to Pub/Sub")?,
        ),
    };

    let retention = Retention {
        envelopes: args.retention,
        dedupe: args.dedupe_window,
    };
    let store: Arc<dyn EnvelopeStore> = match args.store {
        StoreBackend::Embedded => {
            Arc::new(EmbeddedEnvelopeStore::new(db.clone(), retention, clock.clone()).await?)
        }
        StoreBackend::Redis => Arc::new(RedisEnvelopeStore::new(
            need_redis()?,
            retention,
            clock.clone(),
        )),
    };
    let presence: Arc<dyn PresenceStore> = match args.presence {
        PresenceBackend::Memory => Arc::new(MemoryPresenceStore::new(clock.clone())),
        PresenceBackend::Redis => Arc::new(RedisPresenceStore::new(need_redis()?, clock.clone())),
    };
    let channel: Arc<dyn DeliveryChannel> = match args.delivery_backend() {
        DeliveryBackend::Local => Arc::new(LocalDeliveryChannel::new()),
        DeliveryBackend::Redis => Arc::new(RedisDeliveryChannel::new(need_redis()?)),
        DeliveryBackend::Pubsub => Arc::new(
            PubSubDeliveryChannel::connect(pubsub_config(args))
                .await
                .context("connecting to Pub/Sub for delivery")?,
        ),
    };
    let (sender_limiter, pair_limiter): (Arc<dyn RateLimiter>, Arc<dyn RateLimiter>) =
        match args.rate_limit {
            RateLimitBackend::Memory => (
                Arc::new(MemoryRateLimiter::new(
                    args.rate_limit_sender_burst,
                    args.rate_limit_sender_per_second,
                    clock.clone(),
                )),
                Arc::new(MemoryRateLimiter::new(
                    args.rate_limit_pair_burst,
                    args.rate_limit_pair_per_second,
                    clock.clone(),
                )),
            ),
            RateLimitBackend::Redis => (
                Arc::new(RedisRateLimiter::new(
                    need_redis()?,
                    args.rate_limit_sender_burst,
                    args.rate_limit_sender_per_second,
                )),
                Arc::new(RedisRateLimiter::new(
                    need_redis()?,
                    args.rate_limit_pair_burst,
                    args.rate_limit_pair_per_second,
                )),
            ),
        };
    let devices: Arc<dyn DeviceTokenStore> = match args.device_tokens {
        DeviceTokenBackend::Embedded => {
            Arc::new(EmbeddedDeviceTokenStore::new(db.clone(), clock.clone()).await?)
        }
        DeviceTokenBackend::Redis => {
            Arc::new(RedisDeviceTokenStore::new(need_redis()?, clock.clone()))
        }
        DeviceTokenBackend::Firestore => Arc::new(
            FirestoreDeviceTokenStore::connect(
                FirestoreConfig {
                    project: args
                        .firestore_project
                        .clone()
                        .context("DEVICE_TOKENS=firestore needs FIRESTORE_PROJECT")?,
                    database: args.firestore_database.clone(),
                    cache_ttl: args.device_cache_ttl,
                    cache_size: args.device_cache_size,
                },
                clock.clone(),
            )
            .await
            .context("connecting to Firestore")?,
        ),
    };
    let janitor = match (args.delivery_backend(), &redis) {
        (DeliveryBackend::Pubsub, Some(redis)) if args.role_set().delivery => Some(
            DeliveryJanitor::new(pubsub_config(args), presence.clone(), redis.clone()),
        ),
        _ => None,
    };
    Ok(Backends {
        db: db.clone(),
        embedded_bus,
        janitor,
        bus,
        store,
        presence,
        channel,
        devices,
        push: push_sender(args)?,
        sender_limiter,
        pair_limiter,
    })
}
