//! Session ids: one live connection (a WebSocket or an MQTT client) of a user.

use std::fmt;
use std::sync::Arc;

/// The id of one live session, unique across instances.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// A fresh, globally unique session id.
    pub fn random() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string().into())
    }

    /// Wraps an id read back from a presence backend.
    pub fn from_stored(id: &str) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}
