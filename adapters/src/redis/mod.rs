//! Redis backends (`PRESENCE=redis`, `STORE=redis`, `RATE_LIMIT=redis`, `DELIVERY=redis`,
//! `DEVICE_TOKENS=redis`): one
//! shared truth for many router instances, as operators run it on Memorystore.
//!
//! Every key of one user shares the hash tag `{<urn>}`, so scripts touch one slot and the same
//! code works on Redis Cluster.

pub mod connection;
pub mod delivery_channel;
pub mod device_tokens;
pub mod envelope_store;
pub mod keys;
pub mod presence;
pub mod rate_limit;

pub use connection::{RedisConfig, RedisHandle};
pub use delivery_channel::RedisDeliveryChannel;
pub use device_tokens::RedisDeviceTokenStore;
pub use envelope_store::RedisEnvelopeStore;
pub use keys::Keys;
pub use presence::RedisPresenceStore;
pub use rate_limit::RedisRateLimiter;
