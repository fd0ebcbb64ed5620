//! Handlers, one file per resource.

pub mod connect;
pub mod devices;
pub mod health;
pub mod messages;
pub mod send;
