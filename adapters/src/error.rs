//! Errors raised while building an adapter (bad settings, unreachable backends).

use thiserror::Error;

/// Why an adapter could not be built.
#[derive(Debug, Error)]
pub enum AdapterError {
    /// The embedded database could not be opened or created.
    #[error("cannot open embedded database at {path}: {cause}")]
    OpenDatabase {
        /// The database file.
        path: String,
        /// What went wrong.
        cause: String,
    },
    /// The embedded database failed while reading or writing.
    #[error("embedded database failure: {0}")]
    Database(String),
    /// A backend did not answer at start-up.
    #[error("cannot reach {backend}: {cause}")]
    Unreachable {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        cause: String,
    },
    /// A setting is invalid.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}
