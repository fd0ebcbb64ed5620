//! Routing shared by every mode: bus → transformer → processor → delivery channel or wake-up.

pub mod ingest;
pub mod processor;
pub mod processor_metrics;
pub mod transformer;
pub mod wakeup;

pub use ingest::to_bus_message;
pub use processor::{ProcessError, Processor, Routed};
pub use transformer::{TransformError, transform};
pub use wakeup::{WakeReason, WakeReport, Wakeups};
