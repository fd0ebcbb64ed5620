//! Counts and times every request by route and status, inside a span that carries the request's
//! trace id (from `X-Cloud-Trace-Context` or W3C `traceparent`) for the logs.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The trace id of a request: `X-Cloud-Trace-Context: TRACE/SPAN;o=1` or
/// `traceparent: 00-TRACE-SPAN-FLAGS`; only hex digits are taken.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let cloud = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('/').next());
    let w3c = || {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
    };
    cloud
        .or_else(w3c)
        .map(str::trim)
        .filter(|t| (16..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Records `envelope_router_http_requests_total` and `envelope_router_http_request_seconds`.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let span = match trace_id(request.headers()) {
        Some(trace) => tracing::info_span!("request", %method, %route, trace_id = %trace),
        None => tracing::info_span!("request", %method, %route),
    };
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("envelope_router_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("envelope_router_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
