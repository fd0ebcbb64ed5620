//! `GET /healthz`, `GET /readyz`, `GET /metrics` and the 404 fallback.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

fn component(result: Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({"status": "ok"}),
        Err(cause) => json!({"status": "down", "error": cause}),
    }
}

/// Readiness of the components this instance's roles use; 503 when any is down or the instance
/// is closing.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut components = BTreeMap::new();
    components.insert(
        "bus",
        component(state.bus.check().await.map_err(|e| e.to_string())),
    );
    components.insert(
        "store",
        component(state.store.check().await.map_err(|e| e.to_string())),
    );
    components.insert(
        "presence",
        component(state.presence.check().await.map_err(|e| e.to_string())),
    );
    if let Some(manager) = &state.delivery {
        let delivery = if manager.is_closing() {
            Err("shutting down".to_owned())
        } else {
            Ok(())
        };
        components.insert("delivery", component(delivery));
    }
    let ready = components.values().all(|c| c["status"] == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "components": components,
    });
    (status, Json(body))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.metrics)(),
    )
}

/// Unknown routes: a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
