//! `serve`: builds every port from config, runs the roles, and shuts down in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::embedded::bus::EmbeddedBusConfig;
use adapters::embedded::{
    EmbeddedBus, EmbeddedDb, EmbeddedDeviceTokenStore, EmbeddedEnvelopeStore, LocalDeliveryChannel,
    LogPushSender, MemoryPresenceStore, MemoryRateLimiter,
};
use anyhow::Context;
use axum::http::HeaderValue;
use delivery::{ConnectionManager, DeliveryConfig};
use ingest_http::auth::{AuthConfig, Authenticator};
use ingest_http::{AppState, router};
use pipeline::InstanceId;
use pipeline::clock::{Clock, SystemClock, UuidV7Ids};
use pipeline::ports::{
    DeliveryChannel, DeviceTokenStore, EnvelopeBus, EnvelopeStore, PresenceStore, PushSender,
    Retention,
};
use pipeline::routing::{Processor, Wakeups};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{GlobalArgs, ServeArgs};
use crate::{dev_secret, shutdown, telemetry};

/// The embedded database file inside `DATA_DIR`.
const DB_FILE: &str = "router.redb";

fn auth_config(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<AuthConfig> {
    let mut secret = global.jwt_secret.clone();
    if secret.is_none() && global.jwt_jwks_url.is_none() {
        let (dev, created) = dev_secret::load_or_create(&global.data_dir)?;
        let path = global.data_dir.join("dev-jwt-secret");
        if created {
            warn!(path = %path.display(), "no JWT_SECRET or JWT_JWKS_URL: created a development secret; `envelope-router token --sub alice` prints a token");
        } else {
            warn!(path = %path.display(), "no JWT_SECRET or JWT_JWKS_URL: using the development secret");
        }
        secret = Some(dev);
    }
    Ok(AuthConfig {
        secret,
        jwks_url: global.jwt_jwks_url.clone(),
        jwks_refetch_cooldown: args.jwks_refetch_cooldown,
        issuer: global.jwt_issuer.clone(),
        audience: global.jwt_audience.clone(),
    })
}

fn cors_origins(args: &ServeArgs) -> anyhow::Result<Arc<[HeaderValue]>> {
    args.cors_allowed_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin {o:?}")))
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Into::into)
}

/// Runs `serve` until SIGINT/SIGTERM, then drains within the grace period and returns.
pub async fn run(global: GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let instance = args
        .instance_id
        .as_deref()
        .map(InstanceId::new)
        .unwrap_or_else(InstanceId::random);
    let auth =
        Arc::new(Authenticator::new(&auth_config(&global, &args)?).map_err(anyhow::Error::msg)?);

    let db_path = global.data_dir.join(DB_FILE);
    let db = EmbeddedDb::open(&db_path)?;
    info!(path = %db_path.display(), "embedded database open");
    let retention = Retention {
        envelopes: args.retention,
        dedupe: args.dedupe_window,
    };
    let store: Arc<dyn EnvelopeStore> =
        Arc::new(EmbeddedEnvelopeStore::new(db.clone(), retention, clock.clone()).await?);
    let bus_config = EmbeddedBusConfig {
        capacity: args.bus_capacity,
        publish_timeout: args.bus_publish_timeout,
        ..EmbeddedBusConfig::default()
    };
    let bus: Arc<dyn EnvelopeBus> = Arc::new(EmbeddedBus::open(db.clone(), bus_config).await?);
    let devices: Arc<dyn DeviceTokenStore> =
        Arc::new(EmbeddedDeviceTokenStore::new(db.clone(), clock.clone()).await?);
    let presence: Arc<dyn PresenceStore> = Arc::new(MemoryPresenceStore::new(clock.clone()));
    let channel: Arc<dyn DeliveryChannel> = Arc::new(LocalDeliveryChannel::new());
    let push: Arc<dyn PushSender> = Arc::new(LogPushSender);
    let rate_limiter = Arc::new(MemoryRateLimiter::new(
        args.rate_limit_sender_burst,
        args.rate_limit_sender_per_second,
        clock.clone(),
    ));
    let wakeups = Arc::new(Wakeups::new(
        devices.clone(),
        push,
        clock.clone(),
        args.wakeup_window,
    ));

    let delivery_config = DeliveryConfig {
        session_queue: args.session_queue,
        ping_interval: args.ping_interval,
        write_timeout: args.write_timeout,
        heartbeat_interval: args.heartbeat_interval,
        session_ttl: args.session_ttl,
        ack_timeout: args.ack_timeout,
        ..DeliveryConfig::default()
    };
    let manager = ConnectionManager::new(
        instance.clone(),
        delivery_config,
        presence.clone(),
        store.clone(),
        channel.clone(),
        wakeups.clone(),
        clock.clone(),
    );
    let shutdown_token = CancellationToken::new();
    let tasks = TaskTracker::new();
    if args.roles.routes() {
        let deliveries = manager.start().await.context("starting delivery")?;
        let processor = Arc::new(Processor::new(
            store.clone(),
            presence.clone(),
            channel,
            wakeups,
            clock.clone(),
        ));
        let subscription = bus.subscribe().await.context("subscribing to the bus")?;
        tasks.spawn(
            manager
                .clone()
                .run(deliveries, shutdown_token.child_token()),
        );
        tasks.spawn(processor.run(
            bus.clone(),
            subscription,
            args.processor_concurrency,
            shutdown_token.child_token(),
        ));
    } else {
        info!(roles = ?args.roles, "not routing: envelopes wait on the bus for a processor");
    }
    tasks.spawn(purge_loop(
        store.clone(),
        args.purge_interval,
        shutdown_token.child_token(),
    ));

    let state = AppState {
        auth,
        bus,
        store,
        presence,
        devices,
        rate_limiter,
        ids: Arc::new(UuidV7Ids),
        clock,
        delivery: args.roles.routes().then(|| manager.clone()),
        max_body: args.max_body_bytes,
        cors_origins: cors_origins(&args)?,
        metrics: Arc::new(move || metrics.render()),
    };
    let listener = TcpListener::bind(args.listen_addr())
        .await
        .with_context(|| format!("binding {}", args.listen_addr()))?;
    let local = listener.local_addr()?;
    info!(%instance, "envelope-router listening on http://{local}");

    let server_token = shutdown_token.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(server_token.cancelled_owned())
            .await
    });

    shutdown::signal().await;
    shutdown_token.cancel();
    let deadline = Instant::now() + args.shutdown_grace;
    tasks.close();
    if tokio::time::timeout_at(deadline.into(), tasks.wait())
        .await
        .is_err()
    {
        warn!("background work did not finish within the grace period");
    }
    while manager.session_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match tokio::time::timeout_at(deadline.into(), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => warn!(cause = %err, "HTTP server stopped with an error"),
        Ok(Err(err)) => warn!(cause = %err, "HTTP server task failed"),
        Err(_) => warn!("in-flight HTTP requests did not finish within the grace period"),
    }
    info!("envelope-router stopped");
    Ok(())
}

/// Deletes expired envelopes every `interval` until `shutdown`.
async fn purge_loop(
    store: Arc<dyn EnvelopeStore>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => match store.purge_expired().await {
                Ok(0) => {}
                Ok(purged) => info!(purged, "expired envelopes purged"),
                Err(err) => warn!(cause = %err, "purge failed"),
            },
        }
    }
}
