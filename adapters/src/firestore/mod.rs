//! Firestore backends (`DEVICE_TOKENS=firestore`). The `firestore` crate reads
//! `FIRESTORE_EMULATOR_HOST` itself; on Cloud Run it authenticates with Application Default
//! Credentials.

pub mod device_tokens;

pub use device_tokens::{FirestoreConfig, FirestoreDeviceTokenStore};
