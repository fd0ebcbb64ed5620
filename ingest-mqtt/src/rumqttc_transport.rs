//! [`MqttTransport`] on `rumqttc` v5: manual acks, a persistent session (so unacknowledged
//! messages come back after a reconnect), resubscription on every CONNACK, and a bounded inbound
//! queue (when it is full the event loop stops reading: backpressure to the broker).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::Transport;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::transport::{InboundMessage, MqttError, MqttTransport};

/// Session kept by the broker for an offline ingestor (seconds): unacked messages survive a
/// restart of the same client id.
const SESSION_EXPIRY_SECS: u32 = 3600;

/// An MQTT connection subscribed to the shared ingest topic.
pub struct RumqttcTransport {
    client: AsyncClient,
    inbound: Mutex<mpsc::Receiver<Publish>>,
}

impl RumqttcTransport {
    /// Connects as `client_id` (lazily, by the event loop) and keeps `subscriptions` across
    /// reconnects until `shutdown`.
    pub fn start(
        config: &MqttConfig,
        client_id: &str,
        subscriptions: Vec<String>,
        shutdown: CancellationToken,
    ) -> Self {
        let mut options = MqttOptions::new(client_id.to_owned(), config.host.clone(), config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_manual_acks(true)
            .set_clean_start(false)
            .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
        if let Some(username) = &config.username {
            options.set_credentials(
                username.clone(),
                config.password.clone().unwrap_or_default(),
            );
        }
        if config.tls {
            options.set_transport(Transport::tls_with_default_config());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (sender, inbound) = mpsc::channel(config.inbound_capacity.max(1));
        let subscriber = client.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = subscriber.disconnect().await;
                        return;
                    }
                    event = eventloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(?subscriptions, "mqtt connected; subscribing");
                        // The request queue is drained by this loop: never await it here.
                        for subscription in &subscriptions {
                            if let Err(err) =
                                subscriber.try_subscribe(subscription.clone(), QoS::AtLeastOnce)
                            {
                                warn!(cause = %err, "mqtt subscribe request failed");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if sender.send(publish).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        warn!(cause = %err, "mqtt connection lost; reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        Self {
            client,
            inbound: Mutex::new(inbound),
        }
    }
}

#[async_trait]
impl MqttTransport for RumqttcTransport {
    async fn next(&self) -> Option<InboundMessage> {
        let publish = self.inbound.lock().await.recv().await?;
        let properties = publish.properties.clone().unwrap_or_default();
        Some(InboundMessage {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload.clone(),
            user_properties: properties.user_properties,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data,
            ack_token: Box::new(publish),
        })
    }

    async fn ack(&self, message: &InboundMessage) -> Result<(), MqttError> {
        let publish = message
            .ack_token
            .downcast_ref::<Publish>()
            .ok_or_else(|| MqttError("foreign ack token".into()))?;
        self.client
            .ack(publish)
            .await
            .map_err(|e| MqttError(e.to_string()))
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), MqttError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| MqttError(e.to_string()))
    }

    async fn reply(
        &self,
        topic: &str,
        payload: Bytes,
        correlation_data: Option<Bytes>,
    ) -> Result<(), MqttError> {
        let properties = PublishProperties {
            correlation_data,
            content_type: Some("application/json".into()),
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtMostOnce, false, payload, properties)
            .await
            .map_err(|e| MqttError(e.to_string()))
    }
}
