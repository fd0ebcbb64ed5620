//! This instance's id: `INSTANCE_ID`, else the Cloud Run metadata server's, else random.

use std::time::Duration;

use pipeline::InstanceId;
use tracing::{debug, info};

/// Where the metadata server is: `GCE_METADATA_HOST` (the variable Google's libraries honour).
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Resolves the instance id. The metadata server is asked only on Cloud Run (`K_SERVICE` set)
/// or when `GCE_METADATA_HOST` points somewhere, so local runs start without a network wait.
pub async fn resolve(configured: Option<&str>) -> InstanceId {
    if let Some(id) = configured {
        return InstanceId::new(id);
    }
    let host = std::env::var("GCE_METADATA_HOST").ok();
    let on_cloud_run = std::env::var_os("K_SERVICE").is_some();
    if host.is_some() || on_cloud_run {
        let host = host.as_deref().unwrap_or(DEFAULT_METADATA_HOST);
        match metadata_instance_id(host).await {
            Ok(id) => {
                info!("instance id from the metadata server");
                return InstanceId::new(&id);
            }
            Err(err) => debug!(cause = %err, "metadata server did not give an instance id"),
        }
    }
    InstanceId::random()
}

async fn metadata_instance_id(host: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let id = client
        .get(format!("http://{host}/computeMetadata/v1/instance/id"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let id = id.trim();
    if id.is_empty() {
        return Err("empty instance id".into());
    }
    // Cloud Run ids are long hex strings; keep a readable, unique tail.
    let tail: String = id
        .chars()
        .rev()
        .take(32)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Ok(tail)
}
