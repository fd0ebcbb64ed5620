//! A JWKS cache: keys fetched from `JWT_JWKS_URL`, refetched on an unknown `kid` (with a
//! cooldown, so unknown kids cannot make us hammer the issuer).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// The keys currently known, and when they were last fetched.
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    fetched_at: Option<Instant>,
}

/// Signing keys of the token issuer, by `kid`.
pub struct JwksCache {
    url: String,
    cooldown: Duration,
    client: reqwest::Client,
    keys: Mutex<Keys>,
}

impl JwksCache {
    /// A cache over `url`; nothing is fetched until the first token arrives.
    pub fn new(url: &str, cooldown: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.to_owned(),
            cooldown,
            client,
            keys: Mutex::new(Keys {
                by_kid: HashMap::new(),
                fetched_at: None,
            }),
        })
    }

    /// The key for `kid` usable with `alg`; refetches the set once per cooldown when unknown.
    pub async fn key(&self, kid: &str, alg: Algorithm) -> Option<DecodingKey> {
        let mut keys = self.keys.lock().await;
        let usable = |keys: &Keys| {
            keys.by_kid.get(kid).and_then(|(key, key_alg)| {
                (key_alg.is_none() || *key_alg == Some(alg)).then(|| key.clone())
            })
        };
        if let Some(key) = usable(&keys) {
            return Some(key);
        }
        let cooling = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.cooldown);
        if cooling {
            return None;
        }
        keys.fetched_at = Some(Instant::now());
        match self.fetch().await {
            Ok(fresh) => {
                info!(keys = fresh.len(), "fetched JWKS");
                keys.by_kid = fresh;
            }
            Err(err) => warn!(cause = %err, "JWKS fetch failed"),
        }
        usable(&keys)
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, String> {
        let set: JwkSet = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, (key, alg));
                }
                Err(err) => warn!(%kid, cause = %err, "skipping unusable JWK"),
            }
        }
        Ok(keys)
    }
}
