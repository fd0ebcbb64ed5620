//! Google Pub/Sub backends (`BUS=pubsub`, `DELIVERY=pubsub`), with the official
//! `google-cloud-pubsub` client: streaming pull with lease extension and flow control, batched
//! publishing. Against the emulator (`PUBSUB_EMULATOR_HOST`) every client gets the emulator's
//! endpoint and anonymous credentials (the client does not read the variable by itself).

pub mod admin;
pub mod bus;
pub mod config;
pub mod delivery_channel;
pub mod janitor;

pub use bus::PubSubBus;
pub use config::PubSubConfig;
pub use delivery_channel::PubSubDeliveryChannel;
pub use janitor::DeliveryJanitor;
