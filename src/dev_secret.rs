//! The development JWT secret: created once in `DATA_DIR` when no JWT settings are given.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;

/// File name of the dev secret inside `DATA_DIR`.
const FILE: &str = "dev-jwt-secret";

/// Reads the dev secret from `data_dir`, creating it (mode 0600) when missing.
/// Returns the secret and whether it was just created.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    let path = data_dir.join(FILE);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_owned();
        if !secret.is_empty() {
            return Ok((secret, false));
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating DATA_DIR {}", data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok((secret, true))
}
