//! Routing shared by every mode: bus → transformer → processor → delivery channel or wake-up.

pub mod processor;
pub mod transformer;
pub mod wakeup;

pub use processor::{ProcessError, Processor, Routed};
pub use transformer::{TransformError, transform};
pub use wakeup::{WakeReason, WakeReport, Wakeups};
