//! `serve`: builds every port from config, runs the roles, and shuts down in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::HeaderValue;
use axum::serve::ListenerExt;
use delivery::{ConnectionManager, DeliveryConfig};
use ingest_http::auth::{AuthConfig, Authenticator};
use ingest_http::state::ReadyChecks;
use ingest_http::{ApiParts, ApiService, AppState};
use ingest_mqtt::MqttConfig;
use ingest_mqtt::MqttIngestor;
use ingest_mqtt::rumqttc_transport::RumqttcTransport;
use ingest_mqtt::sessions::{ClientTopics, MqttSessions};
use pipeline::clock::{Clock, SystemClock, UuidV7Ids};
use pipeline::health::IngestGate;
use pipeline::ports::EnvelopeStore;
use pipeline::routing::{Processor, Wakeups};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{GlobalArgs, ServeArgs};
use crate::{backends, dev_secret, instance, shutdown, telemetry};

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

fn delivery_config(args: &ServeArgs) -> DeliveryConfig {
    DeliveryConfig {
        session_queue: args.session_queue,
        ping_interval: args.ping_interval,
        write_timeout: args.write_timeout,
        heartbeat_interval: args.heartbeat_interval,
        session_ttl: args.session_ttl,
        instance_beat: args.instance_beat,
        instance_ttl: args.instance_ttl,
        ack_timeout: args.ack_timeout,
        ..DeliveryConfig::default()
    }
}

/// Runs `serve` until SIGINT/SIGTERM, then drains within the grace period and returns.
pub async fn run(global: GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    // Every WebSocket is a file descriptor: use all the process may open.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open files limit"),
        Err(err) => warn!(cause = %err, "could not raise the open files limit"),
    }
    let metrics = telemetry::init_metrics()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let instance = instance::resolve(args.instance_id.as_deref()).await;
    let auth =
        Arc::new(Authenticator::new(&auth_config(&global, &args)?).map_err(anyhow::Error::msg)?);
    let ports = backends::build(&global, &args, clock.clone()).await?;
    let wakeups = Arc::new(Wakeups::new(
        ports.devices.clone(),
        ports.push.clone(),
        clock.clone(),
        args.wakeup_window,
    ));
    let manager = ConnectionManager::new(
        instance.clone(),
        delivery_config(&args),
        ports.presence.clone(),
        ports.store.clone(),
        ports.channel.clone(),
        wakeups.clone(),
        clock.clone(),
    );

    let db = ports.db.clone();
    let embedded_bus = ports.embedded_bus.clone();
    let roles = args.role_set();
    info!(?roles, "roles");
    let shutdown_token = CancellationToken::new();
    let tasks = TaskTracker::new();
    if roles.delivery {
        let deliveries = manager.start().await.context("starting delivery")?;
        tasks.spawn(
            manager
                .clone()
                .run(deliveries, shutdown_token.child_token()),
        );
    }
    if roles.processor {
        let processor = Arc::new(Processor::new(
            ports.store.clone(),
            ports.presence.clone(),
            ports.channel.clone(),
            wakeups,
            clock.clone(),
        ));
        let subscription = ports
            .bus
            .subscribe()
            .await
            .context("subscribing to the bus")?;
        tasks.spawn(processor.run(
            ports.bus.clone(),
            subscription,
            args.processor_concurrency,
            shutdown_token.child_token(),
        ));
    } else {
        info!("no processor role: envelopes wait on the bus for a processor");
    }
    tasks.spawn(purge_loop(
        ports.store.clone(),
        args.purge_interval,
        shutdown_token.child_token(),
    ));
    if let Some(janitor) = ports.janitor {
        tasks.spawn(janitor.run(args.janitor_interval, shutdown_token.child_token()));
    }
    if roles.mqtt {
        let url = args
            .mqtt_url
            .as_deref()
            .context("the ingest-mqtt role needs MQTT_URL")?;
        let client_id = args
            .mqtt_client_id
            .clone()
            .unwrap_or_else(|| format!("envelope-router-{instance}"));
        let mut config = MqttConfig::from_url(
            url,
            &client_id,
            &args.mqtt_share_group,
            &args.mqtt_ingest_topic,
        )
        .map_err(anyhow::Error::msg)?;
        if args.mqtt_username.is_some() {
            config.username = args.mqtt_username.clone();
        }
        if args.mqtt_password.is_some() {
            config.password = args.mqtt_password.clone();
        }
        info!(host = %config.host, port = config.port, topic = %config.shared_subscription(), "mqtt ingest");
        let transport = Arc::new(RumqttcTransport::start(
            &config,
            &config.client_id,
            vec![config.shared_subscription()],
            shutdown_token.child_token(),
        ));
        if roles.delivery {
            let topics = ClientTopics::new(&args.mqtt_client_topic_prefix);
            let control = Arc::new(RumqttcTransport::start(
                &config,
                &format!("{}-sessions", config.client_id),
                topics.subscriptions(&format!("{}-sessions", config.share_group)),
                shutdown_token.child_token(),
            ));
            let sessions = MqttSessions::new(manager.clone(), auth.clone(), control, topics);
            tasks.spawn(sessions.run(shutdown_token.child_token()));
        }
        let ingestor = Arc::new(MqttIngestor {
            bus: ports.bus.clone(),
            auth: auth.clone(),
            sender_limiter: ports.sender_limiter.clone(),
            pair_limiter: ports.pair_limiter.clone(),
            ids: Arc::new(UuidV7Ids),
            clock: clock.clone(),
            max_body: args.max_body_bytes,
        });
        tasks.spawn(ingestor.run(transport, shutdown_token.child_token()));
    }
    let gate = Arc::new(IngestGate::default());
    tasks.spawn(gate.clone().monitor(
        ports.bus.clone(),
        ports.store.clone(),
        args.health_interval,
        shutdown_token.child_token(),
    ));

    let state = AppState::new(ApiParts {
        auth,
        bus: ports.bus,
        store: ports.store,
        presence: ports.presence,
        devices: ports.devices,
        sender_limiter: ports.sender_limiter,
        pair_limiter: ports.pair_limiter,
        gate,
        ids: Arc::new(UuidV7Ids),
        clock,
        delivery: roles.delivery.then(|| manager.clone()),
        ingest: roles.api,
        ready: ReadyChecks {
            bus: roles.api || roles.processor,
            presence: roles.delivery || roles.processor,
        },
        max_body: args.max_body_bytes,
        cors_origins: cors_origins(&args)?,
        metrics: Arc::new(move || metrics.render()),
    });
    let listener = TcpListener::bind(args.listen_addr())
        .await
        .with_context(|| format!("binding {}", args.listen_addr()))?;
    let local = listener.local_addr()?;
    info!(%instance, "envelope-router listening on http://{local}");

    // Envelope frames go out as soon as they are written: with Nagle's algorithm a frame
    // written while the previous one is unacknowledged waits for the client's next packet,
    // which for a client that acks in batches is its ack timer (tens of milliseconds).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(cause = %err, "could not set TCP_NODELAY on a connection");
        }
    });
    let server_token = shutdown_token.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, ApiService::new(state))
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
    if let Err(err) = db.flush().await {
        warn!(cause = %err, "final flush of the embedded database failed");
    }
    if let Some(bus) = embedded_bus
        && let Err(err) = bus.flush().await
    {
        warn!(cause = %err, "final flush of the embedded bus log failed");
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
