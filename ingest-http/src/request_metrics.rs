//! Counts and times every request by route and status, inside a span that carries the request's
//! trace id (from `X-Cloud-Trace-Context` or W3C `traceparent`) for the logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use tracing::Instrument;

/// Cloud Run's trace header, named once rather than parsed from text on every request.
static CLOUD_TRACE: HeaderName = HeaderName::from_static("x-cloud-trace-context");

/// The W3C trace header.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace id of a request: `X-Cloud-Trace-Context: TRACE/SPAN;o=1` or
/// `traceparent: 00-TRACE-SPAN-FLAGS`; only hex digits are taken.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let cloud = headers
        .get(&CLOUD_TRACE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('/').next());
    let w3c = || {
        headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
    };
    cloud
        .or_else(w3c)
        .map(str::trim)
        .filter(|t| (16..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The request counters and latency histograms by route, method and status, registered on
/// first use and then reused, so a request increments them without building their labels.
#[derive(Default)]
pub struct RequestMetrics {
    routes: Mutex<HashMap<Box<str>, RouteMetrics>>,
}

/// One route's latency histogram and its counters by method and status.
struct RouteMetrics {
    seconds: Histogram,
    requests: HashMap<(&'static str, u16), Counter>,
}

impl RequestMetrics {
    /// Counts one request to `route` with `method` answered `status`, which took `seconds`.
    fn record(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        if !routes.contains_key(route) {
            let seconds = metrics::histogram!("envelope_router_http_request_seconds", "route" => route.to_owned());
            routes.insert(
                route.into(),
                RouteMetrics {
                    seconds,
                    requests: HashMap::new(),
                },
            );
        }
        let Some(metrics) = routes.get_mut(route) else {
            return;
        };
        metrics.seconds.record(seconds);
        let method = method_label(method);
        metrics
            .requests
            .entry((method, status.as_u16()))
            .or_insert_with(|| {
                metrics::counter!("envelope_router_http_requests_total", "route" => route.to_owned(), "method" => method, "status" => status.as_str().to_owned())
            })
            .increment(1);
    }
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so clients cannot
/// add label values without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Records `envelope_router_http_requests_total` and `envelope_router_http_request_seconds`.
pub async fn record(
    State(metrics): State<Arc<RequestMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let span = match trace_id(request.headers()) {
        Some(trace) => tracing::info_span!("request", %method, %route, trace_id = %trace),
        None => tracing::info_span!("request", %method, %route),
    };
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    metrics.record(
        route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_any_other_is_other() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::GET), "GET");
        for custom in ["PROPFIND", "X-ANYTHING", "get"] {
            let method = Method::from_bytes(custom.as_bytes()).expect("a valid method token");
            assert_eq!(method_label(&method), "OTHER", "{custom}");
        }
    }
}
