//! Broker settings.

use std::time::Duration;

/// How to reach the broker and what to subscribe to.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// `mqtts://`: TLS with the platform's roots.
    pub tls: bool,
    /// Username, from the URL or `MQTT_USERNAME`.
    pub username: Option<String>,
    /// Password, from the URL or `MQTT_PASSWORD`.
    pub password: Option<String>,
    /// Client id; stable per ingestor so its persistent session survives reconnects.
    pub client_id: String,
    /// Shared-subscription group: ingestors of one group split the load.
    pub share_group: String,
    /// Topic devices publish envelopes to (`envelopes/send`).
    pub ingest_topic: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Messages read from the broker but not yet handled (then the client stops reading).
    pub inbound_capacity: usize,
}

impl MqttConfig {
    /// Parses `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
    pub fn from_url(
        url: &str,
        client_id: &str,
        share_group: &str,
        ingest_topic: &str,
    ) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err("MQTT_URL must start with mqtt:// or mqtts://".into());
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                None => (Some(c.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("bad port in MQTT_URL: {port}"))?,
            ),
            None => (address, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err("MQTT_URL has no host".into());
        }
        if share_group.is_empty() || share_group.contains(['/', '+', '#']) {
            return Err("MQTT_SHARE_GROUP must be a non-empty name without / + #".into());
        }
        if ingest_topic.is_empty() || ingest_topic.contains(['+', '#']) {
            return Err("MQTT_INGEST_TOPIC must be a topic name without wildcards".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            username,
            password,
            client_id: client_id.to_owned(),
            share_group: share_group.to_owned(),
            ingest_topic: ingest_topic.to_owned(),
            keep_alive: Duration::from_secs(30),
            inbound_capacity: 256,
        })
    }

    /// `$share/<group>/<topic>`.
    pub fn shared_subscription(&self) -> String {
        format!("$share/{}/{}", self.share_group, self.ingest_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let c =
            MqttConfig::from_url("mqtt://dev:secret@broker.local:1884", "id", "g", "t").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls),
            ("broker.local", 1884, false)
        );
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("dev"), Some("secret"))
        );
        let c = MqttConfig::from_url("mqtts://broker", "id", "g", "t").unwrap();
        assert_eq!((c.port, c.tls, c.username.as_deref()), (8883, true, None));
        assert!(MqttConfig::from_url("http://x", "id", "g", "t").is_err());
        assert!(
            MqttConfig::from_url("mqtt://x", "id", "a/b", "t").is_err(),
            "group without slashes"
        );
        assert!(
            MqttConfig::from_url("mqtt://x", "id", "g", "t/#").is_err(),
            "no wildcards"
        );
        assert_eq!(c.shared_subscription(), "$share/g/t");
    }
}
