//! FCM HTTP v1: `POST {base}/v1/projects/{project}/messages:send` with an OAuth2 access token
//! (service-account key file or Application Default Credentials; cached until shortly before
//! expiry by the auth library). Data-only, high-priority wake-ups with a collapse key and a TTL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder as KeyBuilder};
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder as AdcBuilder};
use pipeline::error::PushError;
use pipeline::ports::push::{PushOutcome, PushSender};
use pipeline::{DeviceRegistration, Platform};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::error::AdapterError;
use crate::push::retry::RetryPolicy;

/// The OAuth2 scope FCM needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// FCM settings.
#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// Firebase project id (`FCM_PROJECT_ID`).
    pub project_id: String,
    /// API base (`FCM_BASE_URL`, default `https://fcm.googleapis.com`); tests point it at a fake.
    pub base_url: String,
    /// Service-account key JSON file (`FCM_CREDENTIALS_FILE`); `None` uses ADC.
    pub credentials_file: Option<std::path::PathBuf>,
    /// Collapse key of wake-ups: one pending wake-up per device.
    pub collapse_key: String,
    /// How long FCM keeps an undelivered wake-up.
    pub ttl: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of 429 and 5xx.
    pub retry: RetryPolicy,
}

/// Sends FCM wake-ups.
pub struct FcmPushSender {
    config: FcmConfig,
    credentials: AccessTokenCredentials,
    client: reqwest::Client,
    in_flight: Arc<Semaphore>,
}

impl FcmPushSender {
    /// Builds the sender: credentials from the key file or ADC, an HTTP/2-capable client.
    pub fn new(config: FcmConfig) -> Result<Self, AdapterError> {
        let invalid = |reason: String| AdapterError::InvalidSetting {
            setting: "FCM_CREDENTIALS_FILE",
            reason,
        };
        let credentials = match &config.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                let key: Value = serde_json::from_str(&text)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                KeyBuilder::new(key)
                    .with_access_specifier(AccessSpecifier::from_scopes([SCOPE]))
                    .build_access_token_credentials()
                    .map_err(|e| invalid(e.to_string()))?
            }
            None => AdcBuilder::default()
                .with_scopes([SCOPE])
                .build_access_token_credentials()
                .map_err(|e| invalid(format!("Application Default Credentials: {e}")))?,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AdapterError::Unreachable {
                backend: "fcm",
                cause: e.to_string(),
            })?;
        Ok(Self {
            in_flight: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            credentials,
            client,
        })
    }

    fn body(&self, device: &DeviceRegistration) -> Value {
        json!({
            "message": {
                "token": device.token.expose(),
                "data": {"type": "wake"},
                "android": {
                    "priority": "HIGH",
                    "collapse_key": self.config.collapse_key,
                    "ttl": format!("{}s", self.config.ttl.as_secs()),
                },
            }
        })
    }
}

/// Whether an FCM error answer says the token is dead.
fn token_is_dead(status: reqwest::StatusCode, body: &Value) -> bool {
    let error = &body["error"];
    let code = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str());
    match status.as_u16() {
        404 => true,
        400 => {
            code.is_none_or(|c| c == "INVALID_ARGUMENT") || error["status"] == "INVALID_ARGUMENT"
        }
        _ => code == Some("UNREGISTERED"),
    }
}

#[async_trait]
impl PushSender for FcmPushSender {
    fn provider(&self, _platform: Platform) -> &'static str {
        "fcm"
    }

    async fn wake(&self, device: &DeviceRegistration) -> Result<PushOutcome, PushError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| PushError::Unavailable("closed".into()))?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.base_url.trim_end_matches('/'),
            self.config.project_id
        );
        let body = self.body(device);
        let mut attempt = 1;
        loop {
            let token = self
                .credentials
                .access_token()
                .await
                .map_err(|e| PushError::Rejected(format!("FCM credentials: {e}")))?;
            let response = self
                .client
                .post(&url)
                .bearer_auth(&token.token)
                .json(&body)
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(err) if attempt < self.config.retry.attempts => {
                    debug!(cause = %err, attempt, "FCM request failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.config.retry.delay(attempt, &Default::default())).await;
                    continue;
                }
                Err(err) => return Err(PushError::Unavailable(format!("FCM: {err}"))),
            };
            let status = response.status();
            if status.is_success() {
                return Ok(PushOutcome::Sent);
            }
            let headers = response.headers().clone();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if RetryPolicy::retryable(status) {
                if attempt < self.config.retry.attempts {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry.delay(attempt, &headers)).await;
                    continue;
                }
                return Err(PushError::Unavailable(format!(
                    "FCM answered {status} after {attempt} attempts"
                )));
            }
            if token_is_dead(status, &answer) {
                return Ok(PushOutcome::TokenInvalid);
            }
            return Err(PushError::Rejected(format!("FCM answered {status}")));
        }
    }
}
