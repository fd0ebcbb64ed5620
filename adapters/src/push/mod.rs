//! Push senders: FCM HTTP v1 and APNs (token auth, HTTP/2), and the router that picks one by the
//! device's platform. Every wake-up is content-free: `{"type":"wake"}`, no sender, no ciphertext.

pub mod apns;
pub mod fcm;
pub mod platform_router;
pub mod retry;

pub use apns::{ApnsConfig, ApnsPushSender};
pub use fcm::{FcmConfig, FcmPushSender};
pub use platform_router::PlatformPushRouter;
