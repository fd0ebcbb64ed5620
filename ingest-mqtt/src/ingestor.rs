//! The MQTT ingestor: the same validation and identity rules as `POST /send`, PUBACK only after
//! the bus confirmed. An invalid message is acknowledged (it would fail forever), counted by
//! reason, and answered on its response topic when the publisher set one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ingest_http::auth::Authenticator;
use pipeline::EnvelopeDraft;
use pipeline::clock::{Clock, IdGenerator};
use pipeline::ports::{EnvelopeBus, RateDecision, RateLimiter};
use pipeline::routing::to_bus_message;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::transport::{InboundMessage, MqttTransport};

/// Why a message was refused (the metrics label), and what the reply says.
struct Refusal {
    reason: &'static str,
    message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// The MQTT 3.1.1 form: the token travels in the payload.
#[derive(Deserialize)]
struct Wrapped<'a> {
    token: Option<String>,
    #[serde(borrow)]
    envelope: Option<&'a RawValue>,
}

/// Ingests envelopes from MQTT into the bus.
pub struct MqttIngestor {
    /// Where accepted envelopes go.
    pub bus: Arc<dyn EnvelopeBus>,
    /// Verifies device tokens.
    pub auth: Arc<Authenticator>,
    /// Per-sender buckets.
    pub sender_limiter: Arc<dyn RateLimiter>,
    /// Per (sender, recipient) buckets.
    pub pair_limiter: Arc<dyn RateLimiter>,
    /// Ids for envelopes without one.
    pub ids: Arc<dyn IdGenerator>,
    /// Ingest timestamps.
    pub clock: Arc<dyn Clock>,
    /// Largest payload.
    pub max_body: usize,
}

impl MqttIngestor {
    /// Handles messages from `transport` one by one (PUBACKs go out in order) until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        transport: Arc<dyn MqttTransport>,
        shutdown: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                message = transport.next() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            if !self.handle(transport.as_ref(), message, &shutdown).await {
                return;
            }
        }
    }

    /// Handles one message; false when shutdown interrupted it (it stays unacknowledged, and the
    /// broker delivers it again).
    async fn handle(
        &self,
        transport: &dyn MqttTransport,
        message: InboundMessage,
        shutdown: &CancellationToken,
    ) -> bool {
        let outcome = self.accept(&message).await;
        let (label, reply) = match outcome {
            Ok(bus_message) => {
                let id = bus_message
                    .attributes
                    .message_id()
                    .map(str::to_owned)
                    .unwrap_or_default();
                if !self.publish_until_confirmed(bus_message, shutdown).await {
                    return false;
                }
                ("accepted", serde_json::json!({"messageId": id}))
            }
            Err(refusal) => {
                debug!(reason = refusal.reason, "mqtt envelope refused");
                (
                    refusal.reason,
                    serde_json::json!({"error": refusal.message}),
                )
            }
        };
        metrics::counter!("envelope_router_envelopes_total", "stage" => "ingest", "source" => "mqtt", "outcome" => label).increment(1);
        if let Err(err) = transport.ack(&message).await {
            warn!(cause = %err, "mqtt PUBACK failed; the broker will deliver the message again");
        }
        if let Some(topic) = &message.response_topic
            && let Err(err) = transport
                .reply(
                    topic,
                    Bytes::from(reply.to_string()),
                    message.correlation_data.clone(),
                )
                .await
        {
            warn!(cause = %err, "mqtt reply failed");
        }
        true
    }

    /// Publishes, retrying while the bus is down; never gives up before shutdown, since the
    /// message must not be acknowledged unpublished.
    async fn publish_until_confirmed(
        &self,
        message: pipeline::ports::BusMessage,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.bus.publish(message.clone()).await {
                Ok(()) => return true,
                Err(err) => {
                    warn!(cause = %err, "bus unavailable; holding the mqtt message unacknowledged");
                    metrics::counter!("envelope_router_mqtt_publish_retries_total").increment(1);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn accept(
        &self,
        message: &InboundMessage,
    ) -> Result<pipeline::ports::BusMessage, Refusal> {
        if message.payload.len() > self.max_body {
            return Err(refuse(
                "oversized",
                format!("payload larger than {} bytes", self.max_body),
            ));
        }
        let property_token = message
            .user_properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| {
                v.split_once(' ')
                    .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            })
            .map(|(_, t)| t.trim().to_owned());
        let (token, body): (String, Vec<u8>) = match property_token {
            Some(token) => (token, message.payload.to_vec()),
            None => {
                let wrapped: Wrapped<'_> = serde_json::from_slice(&message.payload)
                    .map_err(|e| refuse("malformed", format!("malformed JSON: {e}")))?;
                let token = wrapped.token.ok_or_else(|| {
                    refuse(
                        "unauthenticated",
                        "missing token (user property authorization or payload token)",
                    )
                })?;
                let envelope = wrapped
                    .envelope
                    .ok_or_else(|| refuse("malformed", "missing envelope"))?;
                (token, envelope.get().as_bytes().to_vec())
            }
        };
        let user = self
            .auth
            .verify(&token)
            .await
            .map_err(|e| refuse("unauthenticated", e.to_string()))?;
        let draft =
            EnvelopeDraft::from_json(&body).map_err(|e| refuse("malformed", e.to_string()))?;
        if draft.sender.as_ref().is_some_and(|s| s != &user) {
            return Err(refuse(
                "forbidden",
                "senderId does not match the authenticated user",
            ));
        }
        for (limiter, key, scope) in [
            (&self.sender_limiter, format!("sender:{user}"), "sender"),
            (
                &self.pair_limiter,
                format!("pair:{user}|{}", draft.recipient),
                "pair",
            ),
        ] {
            if let Ok(RateDecision::Limited { .. }) = limiter.check(&key).await {
                metrics::counter!("envelope_router_rate_limited_total", "scope" => scope)
                    .increment(1);
                return Err(refuse("rate_limited", "rate limited; retry later"));
            }
        }
        let envelope = draft.into_envelope(self.ids.as_ref());
        Ok(to_bus_message(&envelope, "mqtt", self.clock.now_ms()))
    }
}
