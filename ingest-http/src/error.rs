//! The API's errors: the only place that maps failures to HTTP status codes.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipeline::error::EnvelopeError;
use thiserror::Error;
use tracing::warn;

/// A failed request, answered as `{"error": "<message>"}` with its status.
#[derive(Debug, Error)]
pub enum ApiError {
    /// 400: malformed JSON, base64, URN or field.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or invalid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed (senderId of another user, foreign Origin).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route.
    #[error("not found")]
    NotFound,
    /// 413: the body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: the body is not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 429: the sender's bucket is empty.
    #[error("rate limited; retry later")]
    RateLimited {
        /// When to retry (`Retry-After`).
        retry_after: Duration,
    },
    /// 503: a backend (bus, store) is unavailable; the cause is logged, not sent.
    #[error("service temporarily unavailable; retry")]
    Unavailable(String),
}

impl From<EnvelopeError> for ApiError {
    fn from(err: EnvelopeError) -> Self {
        ApiError::BadRequest(err.to_string())
    }
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(cause) = &self {
            // Don't expose backend details to the client.
            warn!(%cause, "answering 503");
        }
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
