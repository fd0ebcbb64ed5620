//! Configuration: one `clap` tree; every setting is a flag with an env var.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Parses durations like `30s`, `15m`, `30d`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// Routes end-to-end-encrypted SecureEnvelopes between users.
#[derive(Parser, Debug)]
#[command(name = "envelope-router", version, about, long_about = None)]
pub struct Cli {
    /// Settings every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the router (all roles in one process by default).
    Serve(Box<ServeArgs>),
    /// Run only the MQTT ingestor (a sidecar): `serve` with `ROLES=ingest-mqtt`.
    IngestMqtt(Box<ServeArgs>),
    /// Print a development token (HS256, signed with JWT_SECRET or the dev secret in DATA_DIR).
    Token(TokenArgs),
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings shared by every command.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Directory of the embedded store (`router.redb`, its dedupe log in `dedupe/`), the
    /// embedded bus log (`bus/`) and the dev JWT secret.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Longest the embedded store keeps applied queue writes before committing them (one
    /// commit, one fsync, for everything applied meanwhile). Envelopes are delivered at once;
    /// their bus messages are acked after the commit, so a crash redelivers, never loses. An
    /// envelope acked by its client before the commit never reaches the queue tables.
    #[arg(long, env = "EMBEDDED_COMMIT_INTERVAL", value_parser = duration, default_value = "50ms", global = true)]
    pub embedded_commit_interval: Duration,
    /// HS256 secret for JWTs. Unset (and no JWT_JWKS_URL): a dev secret is created in DATA_DIR.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL for RS256/ES256 tokens; keys are cached and refetched on an unknown kid.
    #[arg(long, env = "JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Project of the trace ids in JSON logs (`logging.googleapis.com/trace`).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", global = true)]
    pub log_project: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,envelope_router=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

/// The bus backend.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusBackend {
    /// In-process, at-least-once, unacked messages kept in DATA_DIR.
    Memory,
    /// Google Pub/Sub topic `envelope-ingress` (PUBSUB_PROJECT, PUBSUB_EMULATOR_HOST).
    Pubsub,
}

/// The presence backend.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceBackend {
    /// This process only.
    Memory,
    /// Shared by every instance through REDIS_URL.
    Redis,
}

/// The per-instance delivery channel.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryBackend {
    /// In-process channel (one instance).
    Local,
    /// Redis pub/sub channel per instance (`<prefix>delivery:<instanceId>`); needs PRESENCE=redis.
    Redis,
    /// Pub/Sub topic `delivery-<instanceId>` per instance; needs a shared PRESENCE.
    Pubsub,
}

/// The envelope store.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// On-disk database in DATA_DIR.
    Embedded,
    /// Per-recipient queues in Redis (REDIS_URL).
    Redis,
}

/// Where token buckets live.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitBackend {
    /// Per process.
    Memory,
    /// Shared by every instance through REDIS_URL.
    Redis,
}

/// Where device tokens live.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTokenBackend {
    /// On-disk database in DATA_DIR.
    Embedded,
    /// Shared by every instance through REDIS_URL.
    Redis,
    /// Firestore `devices/{userUrn}/tokens/{sha256(token)}` (FIRESTORE_PROJECT).
    Firestore,
}

/// How wake-ups are sent.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushBackend {
    /// One log line per wake-up.
    Log,
    /// Firebase Cloud Messaging HTTP v1 for `fcm` devices.
    Fcm,
    /// Apple Push Notification service for `apns` devices.
    Apns,
}

/// APNs environment.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsEnvironment {
    /// api.push.apple.com
    Production,
    /// api.sandbox.push.apple.com
    Sandbox,
}

/// APNs push type.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsPushKind {
    /// Silent background push (content-available).
    Background,
    /// A visible, content-free alert.
    Alert,
}

/// A role this process runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every role: api, delivery and processor.
    All,
    /// HTTP ingest and the pull path (`/send`, `/messages`, `/register-device`).
    Api,
    /// WebSocket sessions (`/connect`) and this instance's delivery channel.
    Delivery,
    /// Consumes the bus and routes envelopes.
    Processor,
    /// Ingests envelopes from the MQTT broker (MQTT_URL); part of `all` when MQTT_URL is set.
    IngestMqtt,
}

/// The roles this process runs, resolved from `ROLES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSet {
    /// Runs HTTP ingest.
    pub api: bool,
    /// Holds sessions.
    pub delivery: bool,
    /// Routes envelopes.
    pub processor: bool,
    /// Ingests from MQTT.
    pub mqtt: bool,
}

impl RoleSet {
    /// The union of `roles`; `all` includes MQTT ingest when a broker is configured.
    pub fn from_roles(roles: &[Role], mqtt_configured: bool) -> Self {
        let has = |r: Role| roles.contains(&Role::All) || roles.contains(&r);
        Self {
            api: has(Role::Api),
            delivery: has(Role::Delivery),
            processor: has(Role::Processor),
            mqtt: roles.contains(&Role::IngestMqtt)
                || (roles.contains(&Role::All) && mqtt_configured),
        }
    }
}

/// Settings of `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Listen address (host:port). Overrides HOST and PORT.
    #[arg(long, env = "LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Listen host, used with PORT when LISTEN is unset (Cloud Run: 0.0.0.0).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Listen port, used with HOST when LISTEN is unset.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Roles to run, comma-separated: `all` or any of `api`, `delivery`, `processor`.
    #[arg(
        long,
        env = "ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub roles: Vec<Role>,
    /// Bus backend.
    #[arg(long, env = "BUS", value_enum, default_value = "memory")]
    pub bus: BusBackend,
    /// Google Cloud project of the Pub/Sub resources (BUS=pubsub, DELIVERY=pubsub).
    #[arg(long, env = "PUBSUB_PROJECT")]
    pub pubsub_project: Option<String>,
    /// Pub/Sub emulator `host:port`; clients then use it with anonymous credentials.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// Ingress topic.
    #[arg(long, env = "PUBSUB_INGRESS_TOPIC", default_value = "envelope-ingress")]
    pub pubsub_ingress_topic: String,
    /// The processors' subscription on the ingress topic.
    #[arg(
        long,
        env = "PUBSUB_SUBSCRIPTION",
        default_value = "envelope-ingress-router"
    )]
    pub pubsub_subscription: String,
    /// Dead-letter topic of the ingress subscription.
    #[arg(
        long,
        env = "PUBSUB_DEAD_LETTER_TOPIC",
        default_value = "envelope-ingress-dead"
    )]
    pub pubsub_dead_letter_topic: String,
    /// Flow control: messages the processor holds at once.
    #[arg(long, env = "PUBSUB_MAX_OUTSTANDING_MESSAGES", default_value_t = 1000)]
    pub pubsub_max_outstanding_messages: i64,
    /// Flow control: bytes the processor holds at once.
    #[arg(long, env = "PUBSUB_MAX_OUTSTANDING_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub pubsub_max_outstanding_bytes: i64,
    /// Publishes awaiting confirmation at once (then `/send` waits, then 503).
    #[arg(long, env = "PUBSUB_MAX_IN_FLIGHT_PUBLISHES", default_value_t = 1000)]
    pub pubsub_max_in_flight_publishes: usize,
    /// How often a delivery instance sweeps delivery topics of dead instances (DELIVERY=pubsub).
    #[arg(long, env = "JANITOR_INTERVAL", value_parser = duration, default_value = "60s")]
    pub janitor_interval: Duration,
    /// Create missing topics and subscriptions (dev, emulator). Without it they must exist.
    #[arg(long, env = "CREATE_RESOURCES")]
    pub create_resources: bool,
    /// Presence backend.
    #[arg(long, env = "PRESENCE", value_enum, default_value = "memory")]
    pub presence: PresenceBackend,
    /// Delivery channel between instances (default: `pubsub` with BUS=pubsub, else `local`).
    #[arg(long, env = "DELIVERY", value_enum)]
    pub delivery: Option<DeliveryBackend>,
    /// Envelope store backend.
    #[arg(long, env = "STORE", value_enum, default_value = "embedded")]
    pub store: StoreBackend,
    /// Device-token store backend.
    #[arg(long, env = "DEVICE_TOKENS", value_enum, default_value = "embedded")]
    pub device_tokens: DeviceTokenBackend,
    /// Push senders, comma-separated (`fcm,apns`); a platform without one is logged.
    #[arg(
        long,
        env = "PUSH",
        value_enum,
        value_delimiter = ',',
        default_value = "log"
    )]
    pub push: Vec<PushBackend>,
    /// Firestore project of the device tokens (DEVICE_TOKENS=firestore).
    #[arg(long, env = "FIRESTORE_PROJECT")]
    pub firestore_project: Option<String>,
    /// Firestore database id.
    #[arg(long, env = "FIRESTORE_DATABASE", default_value = "(default)")]
    pub firestore_database: String,
    /// How long a user's device list is cached in this instance.
    #[arg(long, env = "DEVICE_CACHE_TTL", value_parser = duration, default_value = "10s")]
    pub device_cache_ttl: Duration,
    /// Users whose device lists are cached at most.
    #[arg(long, env = "DEVICE_CACHE_SIZE", default_value_t = 10_000)]
    pub device_cache_size: usize,
    /// How long FCM/APNs keep an undelivered wake-up.
    #[arg(long, env = "PUSH_TTL", value_parser = duration, default_value = "1h")]
    pub push_ttl: Duration,
    /// Push requests in flight at once, per provider.
    #[arg(long, env = "PUSH_CONCURRENCY", default_value_t = 64)]
    pub push_concurrency: usize,
    /// Attempts per wake-up (429 and 5xx are retried, honouring Retry-After).
    #[arg(long, env = "PUSH_ATTEMPTS", default_value_t = 3)]
    pub push_attempts: u32,
    /// Firebase project id for FCM.
    #[arg(long, env = "FCM_PROJECT_ID")]
    pub fcm_project_id: Option<String>,
    /// Service-account key JSON for FCM; unset uses Application Default Credentials.
    #[arg(long, env = "FCM_CREDENTIALS_FILE")]
    pub fcm_credentials_file: Option<PathBuf>,
    /// FCM API base URL.
    #[arg(
        long,
        env = "FCM_BASE_URL",
        default_value = "https://fcm.googleapis.com"
    )]
    pub fcm_base_url: String,
    /// APNs `.p8` signing key file.
    #[arg(long, env = "APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,
    /// APNs key id.
    #[arg(long, env = "APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// Apple developer team id.
    #[arg(long, env = "APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// The app's bundle id (`apns-topic`).
    #[arg(long, env = "APNS_TOPIC")]
    pub apns_topic: Option<String>,
    /// APNs environment.
    #[arg(
        long,
        env = "APNS_ENVIRONMENT",
        value_enum,
        default_value = "production"
    )]
    pub apns_environment: ApnsEnvironment,
    /// APNs base URL; overrides APNS_ENVIRONMENT (tests point it at a fake).
    #[arg(long, env = "APNS_BASE_URL")]
    pub apns_base_url: Option<String>,
    /// APNs push type.
    #[arg(long, env = "APNS_PUSH_TYPE", value_enum, default_value = "background")]
    pub apns_push_type: ApnsPushKind,
    /// The generic alert text of APNS_PUSH_TYPE=alert (never content).
    #[arg(long, env = "APNS_ALERT_TEXT", default_value = "New message")]
    pub apns_alert_text: String,
    /// Extra CA certificate (PEM) trusted for APNs, e.g. a test fake's.
    #[arg(long, env = "APNS_CA_FILE")]
    pub apns_ca_file: Option<PathBuf>,
    /// MQTT broker of the IoT ingestor: `mqtt://[user[:password]@]host[:port]` or `mqtts://`.
    #[arg(long, env = "MQTT_URL", hide_env_values = true)]
    pub mqtt_url: Option<String>,
    /// MQTT username (overrides the URL's).
    #[arg(long, env = "MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// MQTT password (overrides the URL's).
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<String>,
    /// MQTT client id (default `envelope-router-<instanceId>`); keep it stable per sidecar so its
    /// persistent session survives restarts.
    #[arg(long, env = "MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Shared-subscription group: ingestors of one group split the load.
    #[arg(long, env = "MQTT_SHARE_GROUP", default_value = "envelope-router")]
    pub mqtt_share_group: String,
    /// Topic devices publish envelopes to.
    #[arg(long, env = "MQTT_INGEST_TOPIC", default_value = "envelopes/send")]
    pub mqtt_ingest_topic: String,
    /// Prefix of the per-client topics (`<prefix>/<urn>/connect|disconnect|receive|ack`).
    #[arg(long, env = "MQTT_CLIENT_TOPIC_PREFIX", default_value = "clients")]
    pub mqtt_client_topic_prefix: String,
    /// Where token buckets live.
    #[arg(long, env = "RATE_LIMIT", value_enum, default_value = "memory")]
    pub rate_limit: RateLimitBackend,
    /// Redis URL: `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "er:")]
    pub redis_key_prefix: String,
    /// Deadline of every Redis command and connection attempt.
    #[arg(long, env = "REDIS_TIMEOUT", value_parser = duration, default_value = "2s")]
    pub redis_timeout: Duration,
    /// This instance's id (default: the Cloud Run metadata server's, else random).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Instance liveness beat interval.
    #[arg(long, env = "INSTANCE_BEAT", value_parser = duration, default_value = "5s")]
    pub instance_beat: Duration,
    /// Instance liveness TTL: sessions of an instance silent this long stop counting.
    #[arg(long, env = "INSTANCE_TTL", value_parser = duration, default_value = "15s")]
    pub instance_ttl: Duration,
    /// How often the bus and store are checked for the ingest gate (503 while down).
    #[arg(long, env = "HEALTH_INTERVAL", value_parser = duration, default_value = "1s")]
    pub health_interval: Duration,
    /// Largest request body in bytes (413 above it).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Sender rate limit: bucket size (requests allowed in a burst).
    #[arg(long, env = "RATE_LIMIT_SENDER_BURST", default_value_t = 120)]
    pub rate_limit_sender_burst: u32,
    /// Sender rate limit: tokens refilled per second.
    #[arg(long, env = "RATE_LIMIT_SENDER_PER_SECOND", default_value_t = 20.0)]
    pub rate_limit_sender_per_second: f64,
    /// How long an unacked envelope is kept.
    #[arg(long, env = "RETENTION", value_parser = duration, default_value = "30d")]
    pub retention: Duration,
    /// How long a messageId is remembered for dedupe (the embedded store keeps the window in
    /// memory, ~30 bytes per envelope within it).
    #[arg(long, env = "DEDUPE_WINDOW", value_parser = duration, default_value = "24h")]
    pub dedupe_window: Duration,
    /// Pair rate limit (sender, recipient): bucket size.
    #[arg(long, env = "RATE_LIMIT_PAIR_BURST", default_value_t = 60)]
    pub rate_limit_pair_burst: u32,
    /// Pair rate limit (sender, recipient): tokens refilled per second.
    #[arg(long, env = "RATE_LIMIT_PAIR_PER_SECOND", default_value_t = 1.0)]
    pub rate_limit_pair_per_second: f64,
    /// A written envelope not acked within this time wakes the recipient.
    #[arg(long, env = "ACK_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub ack_timeout: Duration,
    /// At most one wake-up per device per window.
    #[arg(long, env = "WAKEUP_WINDOW", value_parser = duration, default_value = "30s")]
    pub wakeup_window: Duration,
    /// WebSocket ping interval; a session silent for two intervals is dropped.
    #[arg(long, env = "PING_INTERVAL", value_parser = duration, default_value = "25s")]
    pub ping_interval: Duration,
    /// Deadline of every write to a client.
    #[arg(long, env = "WRITE_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub write_timeout: Duration,
    /// Presence heartbeat interval of a session.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_parser = duration, default_value = "30s")]
    pub heartbeat_interval: Duration,
    /// Presence TTL of a session without heartbeat.
    #[arg(long, env = "SESSION_TTL", value_parser = duration, default_value = "90s")]
    pub session_ttl: Duration,
    /// Live envelopes queued per session before the slow session is closed.
    #[arg(long, env = "SESSION_QUEUE", default_value_t = 256)]
    pub session_queue: usize,
    /// Processor workers; envelopes are sharded among them by recipient (1: the consuming
    /// task routes everything itself, in bus order).
    #[arg(long, env = "PROCESSOR_CONCURRENCY", default_value_t = 64)]
    pub processor_concurrency: usize,
    /// Embedded bus: messages waiting for the processor before publishers wait (then 503).
    #[arg(long, env = "BUS_CAPACITY", default_value_t = 10_000)]
    pub bus_capacity: usize,
    /// Embedded bus: how long `/send` waits for room on a full bus before answering 503.
    #[arg(long, env = "BUS_PUBLISH_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub bus_publish_timeout: Duration,
    /// Embedded bus: bytes of log after which a segment file takes no more appends; a fully
    /// acked segment is kept (two at most) to be written again.
    #[arg(long, env = "BUS_SEGMENT_BYTES", default_value_t = adapters::embedded::bus_log::SEGMENT_BYTES,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub bus_segment_bytes: u64,
    /// How often expired envelopes are purged.
    #[arg(long, env = "PURGE_INTERVAL", value_parser = duration, default_value = "60s")]
    pub purge_interval: Duration,
    /// Comma-separated browser origins allowed (CORS and WebSocket Origin). Unset: no CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Seconds to finish in-flight work after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE", value_parser = duration, default_value = "10s")]
    pub shutdown_grace: Duration,
    /// Minimum time between JWKS refetches caused by unknown kids.
    #[arg(long, env = "JWKS_REFETCH_COOLDOWN", value_parser = duration, default_value = "30s")]
    pub jwks_refetch_cooldown: Duration,
}

impl ServeArgs {
    /// The roles to run.
    pub fn role_set(&self) -> RoleSet {
        RoleSet::from_roles(&self.roles, self.mqtt_url.is_some())
    }

    /// The delivery channel: as configured, else `pubsub` with the Pub/Sub bus, else `local`.
    pub fn delivery_backend(&self) -> DeliveryBackend {
        self.delivery.unwrap_or(match self.bus {
            BusBackend::Pubsub => DeliveryBackend::Pubsub,
            BusBackend::Memory => DeliveryBackend::Local,
        })
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::new(self.host, self.port))
    }
}

/// Settings of `token`.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The user: a URN or a bare id (`alice` becomes `urn:sm:user:alice`).
    #[arg(long)]
    pub sub: String,
    /// How long the token is valid.
    #[arg(long, value_parser = duration, default_value = "24h")]
    pub ttl: Duration,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// The commit interval of `serve` parsed from `args`, or clap's error.
    fn commit_interval(args: &[&str]) -> Result<std::time::Duration, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        assert!(matches!(cli.command, Command::Serve(_)));
        Ok(cli.global.embedded_commit_interval)
    }

    #[test]
    fn the_commit_interval_defaults_to_50ms_and_takes_durations() {
        assert_eq!(
            commit_interval(&["envelope-router", "serve"]).ok(),
            Some(std::time::Duration::from_millis(50))
        );
        assert_eq!(
            commit_interval(&[
                "envelope-router",
                "serve",
                "--embedded-commit-interval",
                "1h"
            ])
            .ok(),
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn a_commit_interval_that_is_not_a_duration_is_refused() {
        let err = commit_interval(&[
            "envelope-router",
            "serve",
            "--embedded-commit-interval",
            "soon",
        ])
        .err()
        .map(|e| e.kind());
        assert_eq!(err, Some(clap::error::ErrorKind::ValueValidation));
    }

    /// The bus segment size of `serve` parsed from `args`, or clap's error.
    fn segment_bytes(args: &[&str]) -> Result<u64, clap::Error> {
        match Cli::try_parse_from(args)?.command {
            Command::Serve(serve) => Ok(serve.bus_segment_bytes),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_bus_segment_size_defaults_to_32_mib_and_refuses_less_than_4_kib() {
        let base = ["envelope-router", "serve"];
        assert_eq!(segment_bytes(&base).ok(), Some(32 * 1024 * 1024));
        let with = |value: &str| {
            let flag = format!("--bus-segment-bytes={value}");
            segment_bytes(&[base[0], base[1], flag.as_str()])
        };
        assert_eq!(with("4096").ok(), Some(4096));
        for bad in ["4095", "0", "-1", "lots"] {
            assert_eq!(
                with(bad).err().map(|e| e.kind()),
                Some(clap::error::ErrorKind::ValueValidation),
                "{bad}"
            );
        }
    }
}
