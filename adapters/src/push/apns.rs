//! APNs with token-based auth: an ES256 provider token (`.p8` key, key id, team id) reused for
//! 40 minutes, never minted per request; HTTP/2 only; `apns-topic`, `apns-push-type`,
//! `apns-priority`, `apns-collapse-id`, `apns-expiration`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pipeline::error::PushError;
use pipeline::ports::push::{PushOutcome, PushSender};
use pipeline::{DeviceRegistration, Platform};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use tracing::debug;

use crate::error::AdapterError;
use crate::push::retry::RetryPolicy;

/// Apple's production host.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's sandbox host.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// A provider token is reused this long (Apple: refresh between 20 and 60 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(40 * 60);

/// How the wake-up is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsPushType {
    /// Silent `content-available` push (priority 5).
    Background,
    /// A visible, content-free alert (priority 10).
    Alert,
}

/// APNs settings.
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// Host (`APNS_BASE_URL`): production, sandbox, or a fake in tests.
    pub base_url: String,
    /// The `.p8` signing key file (`APNS_KEY_FILE`).
    pub key_file: PathBuf,
    /// The key's id (`APNS_KEY_ID`).
    pub key_id: String,
    /// The Apple developer team id (`APNS_TEAM_ID`).
    pub team_id: String,
    /// The app's bundle id (`APNS_TOPIC`).
    pub topic: String,
    /// `background` or `alert` (`APNS_PUSH_TYPE`).
    pub push_type: ApnsPushType,
    /// The alert text when `push_type` is alert: generic, never content.
    pub alert_text: String,
    /// How long APNs keeps an undelivered wake-up.
    pub ttl: Duration,
    /// Extra trusted CA certificate (PEM), e.g. a test fake's.
    pub ca_file: Option<PathBuf>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of 429 and 5xx.
    pub retry: RetryPolicy,
}

/// Sends APNs wake-ups.
pub struct ApnsPushSender {
    config: ApnsConfig,
    key: EncodingKey,
    client: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
    in_flight: Arc<Semaphore>,
}

impl ApnsPushSender {
    /// Reads the key, builds an HTTP/2 client.
    pub fn new(config: ApnsConfig) -> Result<Self, AdapterError> {
        let invalid = |setting: &'static str, reason: String| AdapterError::InvalidSetting {
            setting,
            reason,
        };
        let pem = std::fs::read(&config.key_file).map_err(|e| {
            invalid(
                "APNS_KEY_FILE",
                format!("{}: {e}", config.key_file.display()),
            )
        })?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| invalid("APNS_KEY_FILE", format!("not an ES256 .p8 key: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| invalid("APNS_CA_FILE", format!("{}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| invalid("APNS_CA_FILE", e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| AdapterError::Unreachable {
            backend: "apns",
            cause: e.to_string(),
        })?;
        Ok(Self {
            in_flight: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            key,
            client,
            token: Mutex::new(None),
        })
    }

    /// The current provider token, minted again only after [`TOKEN_LIFETIME`] (or when
    /// `stale` is the token APNs just rejected).
    async fn provider_token(&self, stale: Option<&str>) -> Result<String, PushError> {
        let mut slot = self.token.lock().await;
        if let Some((token, minted)) = slot.as_ref()
            && minted.elapsed() < TOKEN_LIFETIME
            && stale != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.config.key_id.clone());
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = jsonwebtoken::encode(
            &header,
            &json!({"iss": self.config.team_id, "iat": iat}),
            &self.key,
        )
        .map_err(|e| PushError::Rejected(format!("APNs provider token: {e}")))?;
        *slot = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    fn payload(&self) -> Value {
        match self.config.push_type {
            ApnsPushType::Background => json!({"aps": {"content-available": 1}, "type": "wake"}),
            ApnsPushType::Alert => {
                json!({"aps": {"alert": {"body": self.config.alert_text}, "sound": "default"}, "type": "wake"})
            }
        }
    }
}

#[async_trait]
impl PushSender for ApnsPushSender {
    fn provider(&self, _platform: Platform) -> &'static str {
        "apns"
    }

    async fn wake(&self, device: &DeviceRegistration) -> Result<PushOutcome, PushError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| PushError::Unavailable("closed".into()))?;
        let url = format!(
            "{}/3/device/{}",
            self.config.base_url.trim_end_matches('/'),
            device.token.expose()
        );
        let (push_type, priority) = match self.config.push_type {
            ApnsPushType::Background => ("background", "5"),
            ApnsPushType::Alert => ("alert", "10"),
        };
        let expiration = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + self.config.ttl.as_secs();
        let body = self.payload().to_string();
        let mut rejected_token = None;
        let mut attempt = 1;
        loop {
            let token = self.provider_token(rejected_token.as_deref()).await?;
            let sent = self
                .client
                .post(&url)
                .header("authorization", format!("bearer {token}"))
                .header("apns-topic", &self.config.topic)
                .header("apns-push-type", push_type)
                .header("apns-priority", priority)
                .header("apns-collapse-id", "wake")
                .header("apns-expiration", expiration.to_string())
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(err) if attempt < self.config.retry.attempts => {
                    debug!(cause = %err, attempt, "APNs request failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.config.retry.delay(attempt, &Default::default())).await;
                    continue;
                }
                Err(err) => return Err(PushError::Unavailable(format!("APNs: {err}"))),
            };
            let status = response.status();
            if status.is_success() {
                return Ok(PushOutcome::Sent);
            }
            let headers = response.headers().clone();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let reason = answer["reason"].as_str().unwrap_or_default().to_owned();
            match (status.as_u16(), reason.as_str()) {
                (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
                    return Ok(PushOutcome::TokenInvalid);
                }
                (403, "ExpiredProviderToken") if attempt < self.config.retry.attempts => {
                    rejected_token = Some(token);
                    attempt += 1;
                }
                _ if RetryPolicy::retryable(status) && attempt < self.config.retry.attempts => {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry.delay(attempt, &headers)).await;
                }
                _ if RetryPolicy::retryable(status) => {
                    return Err(PushError::Unavailable(format!(
                        "APNs answered {status} {reason}"
                    )));
                }
                _ => {
                    return Err(PushError::Rejected(format!(
                        "APNs answered {status} {reason}"
                    )));
                }
            }
        }
    }
}
