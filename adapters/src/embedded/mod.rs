//! The embedded backends of `serve` with no configuration.

pub mod bus;
pub mod bus_log;
pub mod database;
pub mod delivery_channel;
pub mod device_tokens;
pub mod envelope_store;
pub mod linger;
pub mod presence;
pub mod push_log;
pub mod rate_limit;

pub use bus::EmbeddedBus;
pub use database::EmbeddedDb;
pub use delivery_channel::LocalDeliveryChannel;
pub use device_tokens::EmbeddedDeviceTokenStore;
pub use envelope_store::EmbeddedEnvelopeStore;
pub use presence::MemoryPresenceStore;
pub use push_log::LogPushSender;
pub use rate_limit::MemoryRateLimiter;
