//! JWKS (ES256) with key rotation, issuer and audience checks, and the `handle` claim.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{SECRET, Server, envelope, token_with, user};

/// One ES256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: Value,
}

fn signing_key(kid: &str) -> Result<SigningKey> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())?;
    let point = pair.public_key().as_ref();
    anyhow::ensure!(
        point.len() == 65 && point[0] == 4,
        "uncompressed P-256 point"
    );
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Ok(SigningKey {
        kid: kid.to_owned(),
        encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk,
    })
}

fn es256_token(key: &SigningKey, claims: Value) -> Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(&header, &claims, &key.encoding)?)
}

fn claims(sub: &str, extra: Value) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = json!({"sub": sub, "iat": now, "exp": now + 600, "iss": "https://issuer.test", "aud": "envelope-router"});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    claims
}

/// Serves a JWKS whose keys the test can change; counts fetches.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>, fetches: Arc<Mutex<u32>>) -> Result<String> {
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.clone();
            let fetches = fetches.clone();
            async move {
                *fetches.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                axum::Json(json!({"keys": keys.lock().unwrap_or_else(|p| p.into_inner()).clone()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/jwks.json"))
}

#[tokio::test]
async fn es256_tokens_from_a_jwks_are_accepted_and_rotation_is_picked_up() -> Result<()> {
    let first = signing_key("key-1")?;
    let second = signing_key("key-2")?;
    let keys = Arc::new(Mutex::new(vec![first.jwk.clone()]));
    let fetches = Arc::new(Mutex::new(0));
    let url = jwks_server(keys.clone(), fetches.clone()).await?;
    let server = Server::start(&[
        ("JWT_JWKS_URL", url.as_str()),
        ("JWT_ISSUER", "https://issuer.test"),
        ("JWT_AUDIENCE", "envelope-router"),
        ("JWKS_REFETCH_COOLDOWN", "1s"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    server
        .send_ok(
            &es256_token(&first, claims(&alice, json!({})))?,
            &envelope(&bob),
        )
        .await?;

    // Wrong issuer, wrong audience, a key the JWKS does not have, HS256 when only JWKS is set.
    for bad in [
        es256_token(&first, claims(&alice, json!({"iss": "https://other.test"})))?,
        es256_token(&first, claims(&alice, json!({"aud": "someone-else"})))?,
        es256_token(&second, claims(&alice, json!({})))?,
        token_with(
            &alice,
            SECRET,
            600,
            json!({"iss": "https://issuer.test", "aud": "envelope-router"}),
        ),
    ] {
        assert_eq!(
            server.send(&bad, &envelope(&bob)).await?.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Many unknown kids within the cooldown cause no refetch storm.
    let before = *fetches.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..5 {
        server
            .send(
                &es256_token(&second, claims(&alice, json!({})))?,
                &envelope(&bob),
            )
            .await?;
    }
    assert!(
        *fetches.lock().unwrap_or_else(|p| p.into_inner()) <= before + 1,
        "refetches are rate limited"
    );

    // Rotation: the issuer publishes key-2; after the cooldown it is fetched and accepted.
    keys.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(second.jwk.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server
        .send_ok(
            &es256_token(&second, claims(&alice, json!({})))?,
            &envelope(&bob),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn handle_claim_names_the_user_before_sub() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let bearer = token_with("some-opaque-subject", SECRET, 600, json!({"handle": alice}));
    let mut body = envelope(&bob);
    body["senderId"] = json!(alice);
    server.send_ok(&bearer, &body).await?;
    Ok(())
}
