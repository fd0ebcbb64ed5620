//! JWT verification: HS256 with a shared secret, RS256/ES256 with keys from a JWKS URL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use pipeline::UserUrn;
use serde::{Deserialize, Serialize};

use crate::auth::jwks::JwksCache;
use crate::auth::verified_tokens::{CAPACITY, RECHECK_AFTER, VerifiedTokens};
use crate::error::ApiError;

/// How tokens are checked.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// HS256 secret (`JWT_SECRET`).
    pub secret: Option<String>,
    /// JWKS URL for RS256/ES256 (`JWT_JWKS_URL`).
    pub jwks_url: Option<String>,
    /// Minimum time between two JWKS fetches caused by unknown `kid`s.
    pub jwks_refetch_cooldown: Duration,
    /// Required `iss` (`JWT_ISSUER`).
    pub issuer: Option<String>,
    /// Required `aud` (`JWT_AUDIENCE`).
    pub audience: Option<String>,
}

/// Seconds a token is still accepted after its `exp`, for clock skew.
const LEEWAY_SECS: u64 = 30;

/// The claims the router reads.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    handle: Option<String>,
    /// Required by the validation; optional here so its absence is reported as such.
    exp: Option<u64>,
}

/// Verifies tokens and names their user.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    issuer: Option<String>,
    audience: Option<String>,
    verified: VerifiedTokens,
}

fn unauthorized(reason: &str) -> ApiError {
    ApiError::Unauthorized(format!("invalid token: {reason}"))
}

impl Authenticator {
    /// An authenticator for `config`; fails when neither a secret nor a JWKS URL is set.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        if config.secret.is_none() && config.jwks_url.is_none() {
            return Err("set JWT_SECRET or JWT_JWKS_URL".into());
        }
        let jwks = match &config.jwks_url {
            Some(url) => Some(JwksCache::new(url, config.jwks_refetch_cooldown)?),
            None => None,
        };
        Ok(Self {
            hs256: config
                .secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            verified: VerifiedTokens::new(CAPACITY, RECHECK_AFTER),
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = LEEWAY_SECS;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        validation
    }

    /// Verifies `token` and returns its user: the `handle` claim when present, else `sub`.
    ///
    /// A token verified less than a minute ago is answered from a cache, until its `exp`.
    pub async fn verify(&self, token: &str) -> Result<UserUrn, ApiError> {
        let now = Instant::now();
        // A clock before 1970 cannot say whether a cached token expired: verify afresh.
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok();
        if let Some(user) = now_unix.and_then(|unix| self.verified.get(token, now, unix)) {
            return Ok(user);
        }
        let (user, exp) = self.verify_signed(token).await?;
        if let Some(exp) = exp {
            self.verified
                .insert(token, user.clone(), exp.saturating_add(LEEWAY_SECS), now);
        }
        Ok(user)
    }

    /// Checks `token`'s signature and claims; returns its user and its `exp`.
    async fn verify_signed(&self, token: &str) -> Result<(UserUrn, Option<u64>), ApiError> {
        let header = decode_header(token).map_err(|_| unauthorized("malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or_else(|| unauthorized("HS256 tokens are not accepted"))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| unauthorized("asymmetric tokens are not accepted"))?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| unauthorized("missing kid"))?;
                jwks.key(kid, header.alg)
                    .await
                    .ok_or_else(|| unauthorized("unknown signing key"))?
            }
            _ => return Err(unauthorized("unsupported algorithm")),
        };
        let data = decode::<Claims>(token, &key, &self.validation(header.alg)).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::ExpiredSignature => unauthorized("expired"),
                ErrorKind::InvalidIssuer => unauthorized("wrong issuer"),
                ErrorKind::InvalidAudience => unauthorized("wrong audience"),
                ErrorKind::MissingRequiredClaim(claim) => unauthorized(&format!("missing {claim}")),
                ErrorKind::InvalidSignature => unauthorized("bad signature"),
                _ => unauthorized("rejected"),
            }
        })?;
        let exp = data.claims.exp;
        let subject = data
            .claims
            .handle
            .filter(|h| !h.is_empty())
            .or(data.claims.sub)
            .ok_or_else(|| unauthorized("no handle or sub claim"))?;
        let user = UserUrn::parse(&subject)
            .map_err(|_| unauthorized("subject is not a valid user URN"))?;
        Ok((user, exp))
    }
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for `sub` valid for `ttl` (the `token` command, tests).
pub fn mint_dev_token(
    secret: &str,
    sub: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = DevClaims {
        sub,
        iat: now,
        exp: now + ttl.as_secs(),
        iss: issuer,
        aud: audience,
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}
