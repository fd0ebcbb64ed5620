//! `POST /register-device` and `DELETE /register-device`: a user's push tokens.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use pipeline::{DeviceToken, Platform};
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::body::read_json;
use crate::error::ApiError;
use crate::state::AppState;

/// `{"token":"…","platform":"fcm"|"apns"}`.
#[derive(Deserialize)]
struct DeviceBody {
    token: Option<String>,
    platform: Option<String>,
}

async fn read_device(
    state: &AppState,
    request: Request,
) -> Result<(DeviceToken, Platform), ApiError> {
    let bytes = read_json(request, state.max_body).await?;
    let body: DeviceBody = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::BadRequest(format!("malformed JSON: {err}")))?;
    let token = DeviceToken::parse(
        body.token
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("missing required field token".into()))?,
    )?;
    let platform = body
        .platform
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("missing required field platform".into()))?
        .parse()?;
    Ok((token, platform))
}

/// Registers (upserts) a push token of the authenticated user.
pub async fn register(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let (token, platform) = read_device(&state, request).await?;
    state
        .devices
        .register(&user.0, &token, platform)
        .await
        .map_err(|err| ApiError::Unavailable(format!("device register failed: {err}")))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a push token of the authenticated user (idempotent).
pub async fn unregister(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let (token, _) = read_device(&state, request).await?;
    state
        .devices
        .unregister(&user.0, &token)
        .await
        .map_err(|err| ApiError::Unavailable(format!("device unregister failed: {err}")))?;
    Ok(StatusCode::NO_CONTENT)
}
