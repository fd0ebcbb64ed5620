//! The shared Redis connection: a reconnecting multiplexed connection with timeouts.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::aio::ConnectionManagerConfig;
use ::redis::io::tcp::TcpSettings;
use ::redis::{Client, IntoConnectionInfo};

use crate::error::AdapterError;
use crate::redis::keys::Keys;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Prefix of every key and channel (`REDIS_KEY_PREFIX`, default `er:`).
    pub key_prefix: String,
    /// Deadline of every command and of every connection attempt.
    pub timeout: Duration,
}

/// A connected Redis: cloneable, reconnects by itself after an outage.
#[derive(Clone)]
pub struct RedisHandle {
    pub(crate) client: Client,
    pub(crate) connection: ConnectionManager,
    pub(crate) keys: Keys,
}

impl RedisConfig {
    /// Connects (TCP_NODELAY on) and checks the server answers.
    pub async fn connect(&self) -> Result<RedisHandle, AdapterError> {
        let invalid = |reason: String| AdapterError::InvalidSetting {
            setting: "REDIS_URL",
            reason,
        };
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| invalid(e.to_string()))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info).map_err(|e| invalid(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some(self.timeout))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| AdapterError::Unreachable {
                backend: "redis",
                cause: e.to_string(),
            })?;
        Ok(RedisHandle {
            client,
            connection,
            keys: Keys::new(&self.key_prefix),
        })
    }
}

impl RedisHandle {
    /// A connection for one call (cheap: it shares the multiplexed connection).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), ::redis::RedisError> {
        ::redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(|_| ())
    }
}
