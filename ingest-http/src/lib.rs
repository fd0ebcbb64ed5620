//! HTTP API of envelope-router.
//!
//! # Layout
//! * [`service`]: [`ApiService`], what the server runs: `POST /send` straight to its handler,
//!   everything else through the router of every route, mounted at `/` and again under `/api`.
//! * [`state`]: [`AppState`], a handle on [`ApiParts`], the ports the handlers use.
//! * [`auth`]: JWT verification (HS256 secret, JWKS for RS256/ES256) and the [`auth::AuthUser`]
//!   extractor.
//! * [`body`]: reading a JSON body: content type (415) and size limit (413).
//! * [`error`]: [`ApiError`], the one mapping from failures to status codes and JSON bodies.
//! * `routes/`: one file per resource: `send`, `connect`, `messages`, `devices`, `health`.
//! * [`cors`]: the browser allow-list.
//! * [`ingest_metrics`]: the per-envelope counter of `POST /send`, registered once.
//! * `request_metrics`: the layer counting and timing every request in its span.
#![warn(missing_docs)]

pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod ingest_metrics;
mod request_metrics;
mod routes;
pub mod service;
pub mod state;

pub use error::ApiError;
pub use service::ApiService;
pub use state::{ApiParts, AppState};

use axum::Router;
use axum::routing::{get, post};

/// Every route for `state`, at `/` and under `/api`, with its requests counted into `metrics`
/// ([`ApiService`] serves through it all but `POST /send`).
fn router(state: AppState, metrics: request_metrics::RequestMetricsLayer) -> Router {
    let routes = Router::new()
        .route("/send", post(routes::send::send))
        .route("/connect", get(routes::connect::connect))
        .route("/messages", get(routes::messages::list))
        .route("/messages/ack", post(routes::messages::ack))
        .route(
            "/register-device",
            post(routes::devices::register).delete(routes::devices::unregister),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics));
    let app = Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .fallback(routes::health::not_found)
        .layer(metrics);
    let app = match cors::layer(&state.cors_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}
