//! Instance ids: which router process holds a live session.

use std::fmt;
use std::sync::Arc;

/// The id of one running router instance (from `INSTANCE_ID`, the metadata server, or random).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Wraps `id`, keeping only characters safe in topic names and keys (`[A-Za-z0-9-]`).
    pub fn new(id: &str) -> Self {
        let clean: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        Self(clean.into())
    }

    /// A fresh random id (`i-` and 16 hex digits).
    pub fn random() -> Self {
        let raw = uuid::Uuid::now_v7().simple().to_string();
        Self::new(&format!("i-{}", &raw[raw.len() - 16..]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}
