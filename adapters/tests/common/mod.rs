//! What the embedded adapters' test files share.

use std::path::PathBuf;

/// A fresh directory name under the system's temp dir, unique to this process, `name` and
/// the moment (nanoseconds), so tests run in parallel without sharing files.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("er-{name}-{}-{nanos}", std::process::id()))
}
