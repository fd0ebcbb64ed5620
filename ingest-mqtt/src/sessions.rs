//! MQTT-connected clients: a device announces itself by publishing its JWT to
//! `clients/<urn>/connect` (QoS 1, repeated as its heartbeat) with its Last Will on
//! `clients/<urn>/disconnect`; it receives `{"messageId","envelope"}` on `clients/<urn>/receive`
//! (QoS 1) and acks with `{"messageIds":[…]}` on `clients/<urn>/ack`.
//!
//! Instances share the control topics through one shared-subscription group, so each announce is
//! handled once. The instance that opened a device's session holds it; a later announce handled
//! elsewhere only refreshes its presence. A session ends on the will, or when no announce
//! refreshed it within the session TTL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use delivery::ConnectionManager;
use delivery::frames::parse_ack_ids;
use ingest_http::auth::Authenticator;
use pipeline::ports::presence::Protocol;
use pipeline::{MessageId, SessionId, UserUrn};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::transport::{InboundMessage, MqttTransport};

/// What a control topic says.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Connect,
    Disconnect,
    Ack,
}

/// Names of the per-client topics under a prefix (`clients`).
#[derive(Clone, Debug)]
pub struct ClientTopics {
    prefix: String,
}

impl ClientTopics {
    /// Topics under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The shared subscriptions of the control topics for `group`.
    pub fn subscriptions(&self, group: &str) -> Vec<String> {
        ["connect", "disconnect", "ack"]
            .iter()
            .map(|kind| format!("$share/{group}/{}/+/{kind}", self.prefix))
            .collect()
    }

    /// Where `user` receives envelopes.
    pub fn receive(&self, user: &UserUrn) -> String {
        format!("{}/{user}/receive", self.prefix)
    }

    fn parse(&self, topic: &str) -> Option<(UserUrn, Control)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (urn, kind) = rest.rsplit_once('/')?;
        let control = match kind {
            "connect" => Control::Connect,
            "disconnect" => Control::Disconnect,
            "ack" => Control::Ack,
            _ => return None,
        };
        Some((UserUrn::parse(urn).ok()?, control))
    }
}

#[derive(Deserialize)]
struct TokenPayload {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckPayload {
    message_ids: Option<Vec<String>>,
}

/// Holds this instance's MQTT sessions.
pub struct MqttSessions {
    manager: Arc<ConnectionManager>,
    auth: Arc<Authenticator>,
    transport: Arc<dyn MqttTransport>,
    topics: ClientTopics,
    local: Mutex<HashMap<UserUrn, (SessionId, CancellationToken)>>,
}

impl MqttSessions {
    /// Sessions through `transport` (subscribed to [`ClientTopics::subscriptions`]).
    pub fn new(
        manager: Arc<ConnectionManager>,
        auth: Arc<Authenticator>,
        transport: Arc<dyn MqttTransport>,
        topics: ClientTopics,
    ) -> Arc<Self> {
        Arc::new(Self {
            manager,
            auth,
            transport,
            topics,
            local: Mutex::new(HashMap::new()),
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<UserUrn, (SessionId, CancellationToken)>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles control messages until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.transport.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            self.handle(&message, &shutdown).await;
            if let Err(err) = self.transport.ack(&message).await {
                warn!(cause = %err, "mqtt PUBACK failed");
            }
        }
        for (_, (_, session)) in self.local().drain() {
            session.cancel();
        }
    }

    async fn handle(self: &Arc<Self>, message: &InboundMessage, shutdown: &CancellationToken) {
        let Some((user, control)) = self.topics.parse(&message.topic) else {
            debug!(topic = %message.topic, "not a client control topic");
            return;
        };
        match control {
            Control::Connect => self.connect(&user, &message.payload, shutdown).await,
            Control::Disconnect => self.disconnect(&user).await,
            Control::Ack => {
                let ids = serde_json::from_slice::<AckPayload>(&message.payload)
                    .ok()
                    .and_then(|p| parse_ack_ids(p.message_ids).ok());
                match ids {
                    Some(ids) => {
                        if let Err(err) = self.manager.ack(&user, &ids).await {
                            warn!(recipient = %user, cause = %err, "mqtt ack failed");
                        }
                    }
                    None => {
                        metrics::counter!("envelope_router_mqtt_control_refused_total", "reason" => "malformed_ack").increment(1);
                    }
                }
            }
        }
    }

    async fn connect(
        self: &Arc<Self>,
        user: &UserUrn,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) {
        let text = String::from_utf8_lossy(payload);
        let token = serde_json::from_str::<TokenPayload>(&text)
            .map(|p| p.token)
            .unwrap_or_else(|_| text.trim().to_owned());
        match self.auth.verify(&token).await {
            Ok(authenticated) if &authenticated == user => {}
            Ok(_) => {
                metrics::counter!("envelope_router_mqtt_control_refused_total", "reason" => "forbidden").increment(1);
                warn!(topic_user = %user, "mqtt connect for another user's topic refused");
                return;
            }
            Err(_) => {
                metrics::counter!("envelope_router_mqtt_control_refused_total", "reason" => "unauthenticated").increment(1);
                return;
            }
        }
        let presence = self.manager.presence();
        let ttl = self.manager.config().session_ttl;
        // An announce for a session already held (here or elsewhere) is its heartbeat.
        if let Ok(sessions) = presence.sessions(user).await
            && let Some(existing) = sessions.iter().find(|s| s.protocol == Protocol::Mqtt)
        {
            if let Err(err) = presence.heartbeat(user, &existing.session, ttl).await {
                warn!(cause = %err, "mqtt session heartbeat failed");
            }
            return;
        }
        let handle = match self.manager.open_session(user, Protocol::Mqtt).await {
            Ok(handle) => handle,
            Err(err) => {
                warn!(recipient = %user, cause = %err, "cannot open mqtt session");
                return;
            }
        };
        let stop = shutdown.child_token();
        if let Some((_, old)) = self
            .local()
            .insert(user.clone(), (handle.id.clone(), stop.clone()))
        {
            old.cancel();
        }
        info!(recipient = %user, session = %handle.id, "mqtt session opened");
        let sessions = self.clone();
        tokio::spawn(async move { sessions.serve(handle, stop).await });
    }

    async fn disconnect(&self, user: &UserUrn) {
        if let Some((_, session)) = self.local().remove(user) {
            session.cancel();
        }
        let presence = self.manager.presence();
        if let Ok(sessions) = presence.sessions(user).await {
            for session in sessions.iter().filter(|s| s.protocol == Protocol::Mqtt) {
                if let Err(err) = presence.unregister(user, &session.session).await {
                    warn!(cause = %err, "could not remove mqtt session");
                }
            }
        }
    }

    async fn write(&self, user: &UserUrn, id: &MessageId, json: &str, ephemeral: bool) -> bool {
        let payload = format!(r#"{{"messageId":"{id}","envelope":{json}}}"#);
        match self
            .transport
            .publish(&self.topics.receive(user), Bytes::from(payload))
            .await
        {
            Ok(()) => {
                if !ephemeral {
                    self.manager.written(user, id);
                }
                metrics::counter!("envelope_router_envelopes_written_total", "protocol" => "mqtt")
                    .increment(1);
                true
            }
            Err(err) => {
                warn!(recipient = %user, cause = %err, "mqtt publish failed");
                false
            }
        }
    }

    /// One session: the backlog first, then live envelopes, until the will, an expiry or
    /// shutdown.
    async fn serve(&self, mut handle: delivery::SessionHandle, stop: CancellationToken) {
        let user = handle.user.clone();
        let config = self.manager.config().clone();
        let mut sent = HashSet::new();
        let mut cursor = None;
        'backlog: loop {
            let page = match self
                .manager
                .store()
                .backlog(&user, cursor.as_ref(), config.backlog_page)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    warn!(recipient = %user, cause = %err, "mqtt backlog read failed");
                    break 'backlog;
                }
            };
            for queued in &page.envelopes {
                if stop.is_cancelled()
                    || !self
                        .write(&user, &queued.message_id, &queued.json, false)
                        .await
                {
                    break 'backlog;
                }
                sent.insert(queued.message_id.clone());
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut check =
            tokio::time::interval(config.heartbeat_interval.min(config.session_ttl / 2));
        check.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = handle.close.cancelled() => break,
                live = handle.receiver.recv() => match live {
                    Some(live) if !sent.contains(&live.message_id) => {
                        self.write(&user, &live.message_id, &live.json, live.ephemeral).await;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = check.tick() => {
                    sent.clear();
                    let alive = self
                        .manager
                        .presence()
                        .sessions(&user)
                        .await
                        .map(|s| s.iter().any(|s| s.session == handle.id))
                        .unwrap_or(true);
                    if !alive {
                        info!(recipient = %user, "mqtt session expired (no announce within the session TTL)");
                        break;
                    }
                }
            }
        }
        {
            let mut local = self.local();
            if local.get(&user).is_some_and(|(id, _)| id == &handle.id) {
                local.remove(&user);
            }
        }
        info!(recipient = %user, session = %handle.id, "mqtt session closed");
        self.manager.close_session(handle).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_topics_parse() {
        let topics = ClientTopics::new("clients");
        let (user, control) = topics.parse("clients/urn:sm:user:bob/connect").unwrap();
        assert_eq!(
            (user.as_str(), control),
            ("urn:sm:user:bob", Control::Connect)
        );
        assert!(topics.parse("clients/urn:sm:user:bob/receive").is_none());
        assert!(topics.parse("other/urn:sm:user:bob/ack").is_none());
        assert_eq!(topics.subscriptions("g")[2], "$share/g/clients/+/ack");
    }
}
