//! Authentication: JWTs from `Authorization: Bearer`, or for WebSockets also from
//! `Sec-WebSocket-Protocol` and `?access_token=`.

mod jwks;
mod jwt;
mod verified_tokens;

pub use jwks::JwksCache;
pub use jwt::{AuthConfig, Authenticator, mint_dev_token};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use pipeline::UserUrn;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated user of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser(pub UserUrn);

/// The bearer token of an `Authorization` header, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized("missing bearer token (Authorization: Bearer <jwt>)".into())
        })?;
        state.auth.verify(token).await.map(AuthUser)
    }
}
