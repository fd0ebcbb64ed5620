//! Port traits: what the routing logic needs from the outside world, one role per file.
//!
//! Every port is object-safe (`Arc<dyn …>`), so `src/` picks a backend at start-up from config.

pub mod bus;
pub mod bus_attributes;
pub mod delivery_channel;
pub mod device_tokens;
pub mod envelope_store;
pub mod presence;
pub mod push;
pub mod rate_limit;

pub use bus::{Acknowledger, BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage};
pub use bus_attributes::BusAttributes;
pub use delivery_channel::{DeliveryChannel, DeliveryItem, DeliveryReceiver, DeliverySink};
pub use device_tokens::DeviceTokenStore;
pub use envelope_store::{
    BacklogCursor, BacklogPage, EnqueueOutcome, EnvelopeStore, QueuedEnvelope, Retention,
};
pub use presence::{PresenceStore, Protocol, SessionInfo};
pub use push::{PushOutcome, PushSender};
pub use rate_limit::{RateDecision, RateLimiter};
