//! `POST /send`: accept an envelope, answer 202 once the bus confirmed it.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipeline::ports::{RateDecision, RateLimiter};
use pipeline::routing::to_bus_message;
use pipeline::{EnvelopeDraft, MessageId};
use tracing::{debug, instrument, warn};

use crate::auth::AuthUser;
use crate::body::read_json;
use crate::error::ApiError;
use crate::state::AppState;

/// The 202 body, `{"messageId":"…"}`, written directly and sized exactly: message ids are
/// `A-Z a-z 0-9 . _ : -` (nothing to escape), and a body whose length is its capacity becomes
/// the response's bytes without another allocation.
fn accepted_body(message_id: &MessageId) -> String {
    [r#"{"messageId":""#, message_id.as_str(), r#""}"#].concat()
}

/// Takes one token from `key`'s bucket in `limiter`, or answers 429. A limiter outage lets
/// traffic through (logged).
async fn take_token(
    limiter: &dyn RateLimiter,
    key: &str,
    scope: &'static str,
) -> Result<(), ApiError> {
    match limiter.check(key).await {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after }) => {
            metrics::counter!("envelope_router_rate_limited_total", "scope" => scope).increment(1);
            metrics::counter!("envelope_router_envelopes_total", "stage" => "ingest", "source" => "http", "outcome" => "rate_limited").increment(1);
            Err(ApiError::RateLimited { retry_after })
        }
        Err(err) => {
            warn!(cause = %err, scope, key, "rate limiter unavailable; letting the request through");
            Ok(())
        }
    }
}

/// Validates the envelope, fixes its id and publishes it; 202 only after the bus confirmed.
///
/// Its span (with the sender) is at debug level: at the default level a span per request
/// costs its formatting and bookkeeping on every request, and the request span already
/// names the route and trace.
#[instrument(level = "debug", skip_all, fields(sender = %user.0))]
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<Response, ApiError> {
    take_token(
        state.sender_limiter.as_ref(),
        &["sender:", user.0.as_str()].concat(),
        "sender",
    )
    .await?;
    let bytes = read_json(request, state.max_body).await?;
    let draft = EnvelopeDraft::from_json(&bytes).inspect_err(|_| {
        metrics::counter!("envelope_router_envelopes_total", "stage" => "ingest", "source" => "http", "outcome" => "invalid").increment(1);
    })?;
    if draft
        .sender
        .as_ref()
        .is_some_and(|sender| sender != &user.0)
    {
        return Err(ApiError::Forbidden(
            "senderId does not match the authenticated user".into(),
        ));
    }
    let pair = ["pair:", user.0.as_str(), "|", draft.recipient.as_str()].concat();
    take_token(state.pair_limiter.as_ref(), &pair, "pair").await?;
    if let Err(component) = state.gate.accepting() {
        return Err(ApiError::Unavailable(format!("{component} is down")));
    }
    let envelope = draft.into_envelope(state.ids.as_ref());
    let message = to_bus_message(&envelope, "http", state.clock.now_ms());
    state
        .bus
        .publish(message)
        .await
        .map_err(|err| ApiError::Unavailable(format!("bus publish failed: {err}")))?;
    state.ingest_metrics().accepted.increment(1);
    debug!(message_id = %envelope.message_id, recipient = %envelope.recipient, "envelope accepted");
    Ok((
        StatusCode::ACCEPTED,
        // A static value: a `&str` one is copied into a new buffer on every response.
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        accepted_body(&envelope.message_id),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_body_is_json_naming_the_id_and_sized_exactly() {
        let id = MessageId::parse("0193e5a1-7c2b-7def-8a12-3456789abcde").unwrap();
        let body = accepted_body(&id);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value, serde_json::json!({"messageId": id.as_str()}));
        assert_eq!(body.len(), body.capacity());
    }
}
