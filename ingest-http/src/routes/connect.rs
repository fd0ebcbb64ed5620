//! `GET /connect`: upgrade to a WebSocket session.

use std::collections::HashMap;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use delivery::websocket::serve_websocket;

use crate::auth::bearer_token;
use crate::cors::origin_allowed;
use crate::error::ApiError;
use crate::state::AppState;

/// Read buffer per session: small, since clients only send acks (it grows for a larger frame).
/// 4 KiB → 1 KiB cut idle memory from 11.7 to 8.8 KiB per session
/// (docs/performance-history.md, profiling log entry 4).
const READ_BUFFER: usize = 1024;
/// Write buffer per session before a flush.
const WRITE_BUFFER: usize = 8 * 1024;
/// Largest frame a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Where the token came from; a subprotocol token is echoed back as the chosen protocol.
enum TokenSource<'a> {
    Header(&'a str),
    Protocol(&'a str),
    Query(&'a str),
}

impl<'a> TokenSource<'a> {
    fn token(&self) -> &'a str {
        match self {
            TokenSource::Header(t) | TokenSource::Protocol(t) | TokenSource::Query(t) => t,
        }
    }
}

/// Offered subprotocols that look like a JWT (three base64url parts).
fn protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| p.split('.').count() == 3)
}

/// Authenticates, checks `Origin`, and hands the socket to the connection manager.
pub async fn connect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state.cors_origins, headers.get(header::ORIGIN)) {
        return Err(ApiError::Forbidden("origin not allowed".into()));
    }
    let source = bearer_token(&headers)
        .map(TokenSource::Header)
        .or_else(|| protocol_token(&headers).map(TokenSource::Protocol))
        .or_else(|| {
            query
                .get("access_token")
                .map(|t| TokenSource::Query(t.as_str()))
        })
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing token (Authorization: Bearer, Sec-WebSocket-Protocol or ?access_token=)"
                    .into(),
            )
        })?;
    let user = state.auth.verify(source.token()).await?;
    let manager = state
        .delivery
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this instance does not hold sessions".into()))?;
    if manager.is_closing() {
        return Err(ApiError::Unavailable("instance shutting down".into()));
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "expected a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // One frame must always fit: the largest envelope plus its frame wrapper.
        .max_write_buffer_size(WRITE_BUFFER + (state.max_body * 2).max(WRITE_BUFFER * 64))
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    if let TokenSource::Protocol(offered) = source {
        upgrade = upgrade.protocols([offered.to_owned()]);
    }
    Ok(upgrade
        .on_upgrade(move |socket| serve_websocket(manager, socket, user))
        .into_response())
}
