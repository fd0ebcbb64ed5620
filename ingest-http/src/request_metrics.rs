//! Counts and times every request by route and status, inside a span that carries the request's
//! trace id (from `X-Cloud-Trace-Context` or W3C `traceparent`) for the logs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::Response;
use foldhash::{HashMap, HashMapExt};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

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

/// The layer that counts and times every request (`envelope_router_http_requests_total`,
/// `envelope_router_http_request_seconds`) inside its request span. Written as a tower
/// service rather than with `axum::middleware::from_fn`, which clones the inner service
/// and boxes its future on every request.
#[derive(Clone, Default)]
pub struct RequestMetricsLayer {
    metrics: Arc<RequestMetrics>,
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// `inner` with every request counted, timed and run in its request span.
#[derive(Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

impl<S> Service<Request> for RequestMetricsService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(matched) => RouteLabel::Matched(matched.clone()),
            None => RouteLabel::Unmatched,
        };
        let inner = &mut self.inner;
        start(&self.metrics, route, request, |request| inner.call(request))
    }
}

impl RequestMetricsLayer {
    /// Runs `call` on `request` counted, timed and in its request span under the route label
    /// `route`, as this layer does for a request the router matched: for a request served
    /// without the router.
    pub fn around<F>(
        &self,
        route: &'static str,
        request: Request,
        call: impl FnOnce(Request) -> F,
    ) -> ResponseFuture<F> {
        start(&self.metrics, RouteLabel::Fixed(route), request, call)
    }
}

/// Opens `request`'s span, starts its clock and calls `call` on it inside the span.
fn start<F>(
    metrics: &Arc<RequestMetrics>,
    route: RouteLabel,
    request: Request,
    call: impl FnOnce(Request) -> F,
) -> ResponseFuture<F> {
    let method = request.method().clone();
    let span = {
        let route = route.as_str();
        match trace_id(request.headers()) {
            Some(trace) => tracing::info_span!("request", %method, %route, trace_id = %trace),
            None => tracing::info_span!("request", %method, %route),
        }
    };
    let started = Instant::now();
    let inner = span.in_scope(|| call(request)).instrument(span);
    ResponseFuture {
        inner,
        done: Some(Done {
            metrics: metrics.clone(),
            route,
            method,
            started,
        }),
    }
}

/// The route label of a request: the pattern of the route it matched, the fixed label of a
/// request served without the router, or `unmatched`.
enum RouteLabel {
    /// The router matched this pattern.
    Matched(MatchedPath),
    /// Served without the router under this label.
    Fixed(&'static str),
    /// No route matched.
    Unmatched,
}

impl RouteLabel {
    /// The label's text.
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(matched) => matched.as_str(),
            Self::Fixed(route) => route,
            Self::Unmatched => "unmatched",
        }
    }
}

/// What a finished request is recorded with.
struct Done {
    metrics: Arc<RequestMetrics>,
    route: RouteLabel,
    method: Method,
    started: Instant,
}

pin_project! {
    /// The response of [`RequestMetricsService`]: the inner one, recorded when it is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        done: Option<Done>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(done)) = (&result, this.done.take()) {
            done.metrics.record(
                done.route.as_str(),
                &done.method,
                response.status(),
                done.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// The statuses counted so far for `route`, by method.
    fn counted(metrics: &RequestMetrics, route: &str) -> Vec<(&'static str, u16)> {
        let routes = metrics.routes.lock().unwrap();
        let mut seen: Vec<_> = routes
            .get(route)
            .map(|r| r.requests.keys().copied().collect())
            .unwrap_or_default();
        seen.sort();
        seen
    }

    #[tokio::test]
    async fn every_request_is_counted_by_its_route_method_and_status() {
        let metrics = Arc::new(RequestMetrics::default());
        let app = Router::new()
            .route("/items/{id}", get(|| async { "ok" }))
            .layer(RequestMetricsLayer {
                metrics: metrics.clone(),
            });
        for (method, uri, status) in [
            ("GET", "/items/7", 200),
            ("POST", "/items/7", 405),
            ("GET", "/nowhere", 404),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{method} {uri}");
        }
        assert_eq!(
            counted(&metrics, "/items/{id}"),
            vec![("GET", 200), ("POST", 405)],
            "labelled by the route's pattern, not the path"
        );
        assert_eq!(counted(&metrics, "unmatched"), vec![("GET", 404)]);
    }

    #[tokio::test]
    async fn a_request_served_without_the_router_is_counted_under_its_label() {
        let layer = RequestMetricsLayer::default();
        let request = Request::builder()
            .method("POST")
            .uri("/api/send?x=1")
            .body(Body::empty())
            .unwrap();
        let response = layer
            .around("/api/send", request, |_| async {
                Ok::<_, std::convert::Infallible>(axum::response::IntoResponse::into_response(
                    StatusCode::ACCEPTED,
                ))
            })
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(counted(&layer.metrics, "/api/send"), vec![("POST", 202)]);
        assert_eq!(counted(&layer.metrics, "unmatched"), vec![]);
    }

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
