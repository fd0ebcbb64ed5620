//! CORS for browsers: an allow-list of origins (`CORS_ALLOWED_ORIGINS`); none means no headers.

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer for `origins`, or `None` when the list is empty.
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Whether a WebSocket upgrade's `Origin` may connect: always when no list is set or the client
/// sent no `Origin` (not a browser); otherwise only an origin on the list.
pub fn origin_allowed(origins: &[HeaderValue], origin: Option<&HeaderValue>) -> bool {
    match origin {
        _ if origins.is_empty() => true,
        None => true,
        Some(origin) => origins.iter().any(|allowed| allowed == origin),
    }
}
