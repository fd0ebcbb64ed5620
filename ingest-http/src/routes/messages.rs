//! `GET /messages` and `POST /messages/ack`: the pull path of an app woken by a push.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use delivery::frames::parse_ack_ids;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::AuthUser;
use crate::body::read_json;
use crate::error::ApiError;
use crate::state::AppState;

/// Default page size of `GET /messages`.
const DEFAULT_LIMIT: usize = 50;
/// Largest page size of `GET /messages`.
const MAX_LIMIT: usize = 500;

/// `?limit=N`, kept as text to answer a clear 400.
#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
}

/// One queued envelope.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    message_id: String,
    envelope: Box<RawValue>,
}

/// The `GET /messages` body.
#[derive(Serialize)]
pub struct ListBody {
    messages: Vec<Listed>,
}

/// The `POST /messages/ack` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AckBody {
    message_ids: Option<Vec<String>>,
}

fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be an integer from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// The first `limit` queued envelopes, express lane first, then oldest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListBody>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let page = state
        .store
        .backlog(&user.0, None, limit)
        .await
        .map_err(|err| ApiError::Unavailable(format!("backlog read failed: {err}")))?;
    let mut messages = Vec::with_capacity(page.envelopes.len());
    for queued in page.envelopes {
        let envelope = RawValue::from_string(queued.json.to_string())
            .map_err(|err| ApiError::Unavailable(format!("stored envelope unreadable: {err}")))?;
        messages.push(Listed {
            message_id: queued.message_id.to_string(),
            envelope,
        });
    }
    Ok(Json(ListBody { messages }))
}

/// Deletes acked envelopes; 204 only after the deletion happened.
pub async fn ack(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let bytes = read_json(request, state.max_body).await?;
    let body: AckBody = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::BadRequest(format!("malformed JSON: {err}")))?;
    let ids = parse_ack_ids(body.message_ids)?;
    match &state.delivery {
        Some(manager) => manager.ack(&user.0, &ids).await,
        None => state.store.ack(&user.0, &ids).await,
    }
    .map_err(|err| ApiError::Unavailable(format!("ack failed: {err}")))?;
    Ok(StatusCode::NO_CONTENT)
}
