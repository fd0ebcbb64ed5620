//! [`ApiService`]: the HTTP API as the server runs it. `POST /send`, the request every
//! envelope makes, goes straight to its handler; every other request goes through the
//! router of every route.
//!
//! Between hyper and a handler, axum's router matches the path, clones the route's boxed
//! service and boxes its future, and the extractors run in a boxed future of their own: about
//! 6 % of the router's instructions per envelope (`docs/performance.md`, log entry 60). The
//! direct path runs the same extractor, handler, request span and metrics, and answers alike.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::serve::{IncomingStream, Listener};
use pin_project_lite::pin_project;
use tower::Service;

use crate::auth::AuthUser;
use crate::request_metrics::{RequestMetricsLayer, ResponseFuture};
use crate::routes::send::send;
use crate::state::AppState;

/// The HTTP API for `axum::serve`: one clone per connection, each request to `POST /send`
/// (or `/api/send`) answered directly, everything else by the router.
#[derive(Clone)]
pub struct ApiService {
    state: AppState,
    router: Router,
    metrics: RequestMetricsLayer,
}

impl ApiService {
    /// The API for `state`.
    pub fn new(state: AppState) -> Self {
        let metrics = RequestMetricsLayer::default();
        Self {
            router: crate::router(state.clone(), metrics.clone()),
            state,
            metrics,
        }
    }

    /// The route label `request` is answered directly under, if it is a `POST /send`. Never
    /// with a CORS allow-list set: its layer wraps the router.
    fn direct_route(&self, request: &Request) -> Option<&'static str> {
        if !self.state.cors_origins.is_empty() || request.method() != Method::POST {
            return None;
        }
        match request.uri().path() {
            "/send" => Some("/send"),
            "/api/send" => Some("/api/send"),
            _ => None,
        }
    }
}

/// A boxed `POST /send` answer.
type SendFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Authenticates `request` and runs the `/send` handler on it, as the router would.
fn send_directly(state: AppState, request: Request) -> SendFuture {
    Box::pin(async move {
        let (mut parts, body) = request.into_parts();
        let user = match AuthUser::from_request_parts(&mut parts, &state).await {
            Ok(user) => user,
            Err(rejection) => return Ok(rejection.into_response()),
        };
        let request = Request::from_parts(parts, body);
        Ok(send(State(state), user, request).await.into_response())
    })
}

impl Service<Request> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> ApiFuture {
        match self.direct_route(&request) {
            Some(route) => {
                let state = self.state.clone();
                ApiFuture::Direct {
                    inner: self
                        .metrics
                        .around(route, request, |request| send_directly(state, request)),
                }
            }
            None => ApiFuture::Routed {
                inner: self.router.call(request),
            },
        }
    }
}

/// `axum::serve` asks for one service per connection: a clone.
impl<L: Listener> Service<IncomingStream<'_, L>> for ApiService {
    type Response = ApiService;
    type Error = Infallible;
    type Future = Ready<Result<ApiService, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _stream: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(self.clone()))
    }
}

pin_project! {
    /// The answer of [`ApiService`]: a direct `POST /send` or the router's. (Fields cannot
    /// carry docs inside `pin_project!`; each variant says what its `inner` is.)
    #[allow(missing_docs)]
    #[project = ApiFutureProjection]
    pub enum ApiFuture {
        /// `POST /send`: the handler's answer, counted and timed in its span.
        Direct {
            #[pin]
            inner: ResponseFuture<SendFuture>,
        },
        /// Anything else: the router's answer.
        Routed {
            #[pin]
            inner: RouteFuture<Infallible>,
        },
    }
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ApiFutureProjection::Direct { inner } => inner.poll(cx),
            ApiFutureProjection::Routed { inner } => inner.poll(cx),
        }
    }
}
