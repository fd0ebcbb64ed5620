//! Wake-ups through FCM and APNs, against local fakes that check the exact wire format, with
//! device tokens in Google's Firestore emulator.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, Version};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{CIPHERTEXT_B64, Server, envelope, token, unique, user};

/// One request a fake received.
#[derive(Clone, Debug)]
struct Recorded {
    at: Instant,
    path: String,
    version: Version,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Everything sent, as text, to search for things that must never be there.
    fn everything(&self) -> String {
        format!(
            "{} {:?} {}",
            self.path,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A fake provider: records requests, answers from a script (default 200).
#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl Fake {
    fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn answer_next(&self, status: u16, headers: Vec<(&'static str, String)>, body: Value) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((status, headers, body.to_string()));
    }

    fn router(&self, ok_body: &'static str) -> axum::Router {
        let fake = self.clone();
        axum::Router::new().fallback(move |request: Request<Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 1 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let headers = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                fake.requests
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Recorded {
                        at: Instant::now(),
                        path: parts.uri.path().to_owned(),
                        version: parts.version,
                        headers,
                        body,
                    });
                let next = fake
                    .script
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                let (status, headers, body) = next.unwrap_or((200, Vec::new(), ok_body.to_owned()));
                let mut response = Response::builder()
                    .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                response.body(Body::from(body)).unwrap_or_default()
            }
        })
    }

    async fn wait_for(&self, count: usize, within: Duration) -> Result<Vec<Recorded>> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.requests();
            if seen.len() >= count {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                bail!("fake got {} requests, wanted {count}", seen.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// FCM fake: plain HTTP.
async fn serve_fcm(fake: &Fake) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = fake.router(r#"{"name":"projects/fake/messages/1"}"#);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// APNs fake: TLS with a certificate from a generated CA, HTTP/2 only. Returns the base URL
/// and the CA's PEM.
async fn serve_apns(fake: &Fake) -> Result<(String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&leaf_key, &issuer)?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
        .map_err(anyhow::Error::msg)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = fake.router("");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .http2_only()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    Ok((format!("https://localhost:{port}"), ca_cert.pem()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A service-account key (RSA) for FCM and the public key that verifies its tokens.
fn service_account(dir: &Path) -> Result<(std::path::PathBuf, jsonwebtoken::DecodingKey, String)> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048)?;
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)?;
    let email = "router@fake-project.iam.gserviceaccount.com".to_owned();
    let key = json!({
        "type": "service_account",
        "project_id": "fake-project",
        "private_key_id": "fake-key-id",
        "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
        "client_email": email,
        "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
        "universe_domain": "googleapis.com",
    });
    let path = dir.join("fcm-service-account.json");
    std::fs::write(&path, key.to_string())?;
    let public = jsonwebtoken::DecodingKey::from_rsa_der(pair.public_key().as_ref());
    Ok((path, public, email))
}

/// An APNs `.p8` key and the public key that verifies its provider tokens.
fn apns_key(dir: &Path) -> Result<(std::path::PathBuf, jsonwebtoken::DecodingKey)> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())?;
    let point = pair.public_key().as_ref();
    let public = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )?;
    let path = dir.join("AuthKey_FAKEKEY123.p8");
    std::fs::write(&path, pem("PRIVATE KEY", pkcs8.as_ref()))?;
    Ok((path, public))
}

fn bearer(request: &Recorded) -> Result<String> {
    let value = request
        .header("authorization")
        .context("no authorization header")?;
    let (_, token) = value.split_once(' ').context("not a bearer token")?;
    Ok(token.to_owned())
}

/// Checks one FCM request: path, a valid service-account token, a content-free body.
fn check_fcm(
    request: &Recorded,
    key: &jsonwebtoken::DecodingKey,
    email: &str,
    device: &str,
) -> Result<String> {
    assert_eq!(request.path, "/v1/projects/fake-firebase/messages:send");
    let token = bearer(request)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&[email]);
    let claims = jsonwebtoken::decode::<Value>(&token, key, &validation)
        .context("FCM token does not verify")?
        .claims;
    assert!(
        claims["scope"]
            .as_str()
            .unwrap_or("")
            .contains("firebase.messaging"),
        "{claims}"
    );
    let body: Value = serde_json::from_slice(&request.body)?;
    assert_eq!(body["message"]["token"], device);
    assert_eq!(
        body["message"]["data"],
        json!({"type": "wake"}),
        "data-only wake-up"
    );
    assert_eq!(body["message"]["android"]["priority"], "HIGH");
    assert_eq!(body["message"]["android"]["collapse_key"], "wake");
    assert!(
        body["message"]["android"]["ttl"]
            .as_str()
            .unwrap_or("")
            .ends_with('s')
    );
    assert!(
        body["message"].get("notification").is_none(),
        "no visible notification content"
    );
    Ok(token)
}

/// Checks one APNs request: HTTP/2, path, headers, a valid reusable provider token, payload.
fn check_apns(request: &Recorded, key: &jsonwebtoken::DecodingKey, device: &str) -> Result<String> {
    assert_eq!(request.version, Version::HTTP_2, "APNs speaks HTTP/2 only");
    assert_eq!(request.path, format!("/3/device/{device}"));
    assert_eq!(request.header("apns-topic"), Some("com.example.messenger"));
    assert_eq!(request.header("apns-push-type"), Some("background"));
    assert_eq!(request.header("apns-priority"), Some("5"));
    assert_eq!(request.header("apns-collapse-id"), Some("wake"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expiration: u64 = request
        .header("apns-expiration")
        .context("no apns-expiration")?
        .parse()?;
    assert!(expiration > now, "expiration in the future");
    let token = bearer(request)?;
    let header = jsonwebtoken::decode_header(&token)?;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("FAKEKEY123"));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_required_spec_claims(&["iss"]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&["TEAM123456"]);
    let claims = jsonwebtoken::decode::<Value>(&token, key, &validation)
        .context("APNs token does not verify")?
        .claims;
    assert!(claims["iat"].as_u64().is_some_and(|iat| iat <= now + 1));
    let body: Value = serde_json::from_slice(&request.body)?;
    assert_eq!(
        body,
        json!({"aps": {"content-available": 1}, "type": "wake"})
    );
    Ok(token)
}

async fn firestore_tokens(project: &str, who: &str) -> Result<usize> {
    let host = std::env::var("FIRESTORE_EMULATOR_HOST")?;
    let url = format!(
        "http://{host}/v1/projects/{project}/databases/(default)/documents/devices/{who}/tokens"
    );
    let listed: Value = reqwest::get(url).await?.json().await?;
    Ok(listed["documents"].as_array().map_or(0, Vec::len))
}

#[tokio::test]
async fn offline_users_are_woken_through_fcm_and_apns_with_the_exact_wire_format() -> Result<()> {
    let firestore = std::env::var("FIRESTORE_EMULATOR_HOST").context(
        "FIRESTORE_EMULATOR_HOST is not set: run ./infra/test.sh, which starts the emulator",
    )?;
    let dir = std::env::temp_dir().join(unique("er-push-"));
    std::fs::create_dir_all(&dir)?;
    let (fcm_fake, apns_fake) = (Fake::default(), Fake::default());
    let fcm_url = serve_fcm(&fcm_fake).await?;
    let (apns_url, ca_pem) = serve_apns(&apns_fake).await?;
    let ca_file = dir.join("apns-ca.pem");
    std::fs::write(&ca_file, ca_pem)?;
    let (sa_file, sa_public, sa_email) = service_account(&dir)?;
    let (p8_file, apns_public) = apns_key(&dir)?;
    let project = unique("er-push-");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let server = Server::start(&[
        ("PUSH", "fcm,apns"),
        ("DEVICE_TOKENS", "firestore"),
        ("FIRESTORE_PROJECT", project.as_str()),
        ("FIRESTORE_EMULATOR_HOST", firestore.as_str()),
        ("DEVICE_CACHE_TTL", "0s"),
        ("WAKEUP_WINDOW", "1500ms"),
        ("FCM_PROJECT_ID", "fake-firebase"),
        ("FCM_BASE_URL", fcm_url.as_str()),
        ("FCM_CREDENTIALS_FILE", path(&sa_file).as_str()),
        ("APNS_BASE_URL", apns_url.as_str()),
        ("APNS_CA_FILE", path(&ca_file).as_str()),
        ("APNS_KEY_FILE", path(&p8_file).as_str()),
        ("APNS_KEY_ID", "FAKEKEY123"),
        ("APNS_TEAM_ID", "TEAM123456"),
        ("APNS_TOPIC", "com.example.messenger"),
        ("RATE_LIMIT_PAIR_BURST", "1000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let (fcm_device, apns_device) = ("fcm-device-token-1", "a1b2c3d4e5f60718293a4b5c6d7e8f90");
    for (device, platform) in [(fcm_device, "fcm"), (apns_device, "apns")] {
        let registered = server
            .request(Method::POST, "/register-device")
            .bearer_auth(token(&bob))
            .json(&json!({"token": device, "platform": platform}))
            .send()
            .await?;
        assert_eq!(registered.status(), reqwest::StatusCode::NO_CONTENT);
    }
    assert_eq!(firestore_tokens(&project, &bob).await?, 2);

    // Three envelopes quickly: one wake-up per device (coalesced), exact wire format.
    let mut mine = Vec::new();
    for _ in 0..3 {
        let mut body = envelope(&bob);
        body["senderId"] = json!(alice);
        mine.push(server.send_ok(&token(&alice), &body).await?);
    }
    let fcm_seen = fcm_fake.wait_for(1, Duration::from_secs(10)).await?;
    let apns_seen = apns_fake.wait_for(1, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fcm_fake.requests().len(), 1, "coalesced");
    assert_eq!(apns_fake.requests().len(), 1, "coalesced");
    let fcm_token = check_fcm(&fcm_seen[0], &sa_public, &sa_email, fcm_device)?;
    let apns_token = check_apns(&apns_seen[0], &apns_public, apns_device)?;
    for request in fcm_seen.iter().chain(&apns_seen) {
        let text = request.everything();
        assert!(
            !text.contains(CIPHERTEXT_B64) && !text.contains(&alice),
            "leaks content: {text}"
        );
    }

    // The user connects and drains all three.
    let mut session = server.connect(&token(&bob)).await?;
    for id in &mine {
        assert_eq!(&session.envelope().await?.0, id);
    }
    session.ack(&mine).await?;
    session.close().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Next wake-up: FCM says UNREGISTERED (token deleted from Firestore); APNs says 429 with
    // Retry-After: 1 first (honoured), then accepts. Tokens are reused, not minted per request.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    fcm_fake.answer_next(404, vec![], json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}));
    apns_fake.answer_next(
        429,
        vec![("retry-after", "1".to_owned())],
        json!({"reason": "TooManyRequests"}),
    );
    let second_wake = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let fcm_seen = fcm_fake.wait_for(2, Duration::from_secs(10)).await?;
    let apns_seen = apns_fake.wait_for(3, Duration::from_secs(10)).await?;
    assert_eq!(
        check_fcm(&fcm_seen[1], &sa_public, &sa_email, fcm_device)?,
        fcm_token,
        "FCM token reused"
    );
    assert_eq!(
        check_apns(&apns_seen[1], &apns_public, apns_device)?,
        apns_token,
        "provider token reused"
    );
    let waited = apns_seen[2].at.duration_since(apns_seen[1].at);
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After honoured: waited {waited:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while firestore_tokens(&project, &bob).await? != 1 {
        if Instant::now() > deadline {
            bail!("the UNREGISTERED token was not deleted from Firestore");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A provider outage (every answer 503) neither blocks routing nor loses envelopes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..10 {
        apns_fake.answer_next(503, vec![], json!({"reason": "ServiceUnavailable"}));
    }
    let started = Instant::now();
    let mut during_outage = Vec::new();
    for _ in 0..3 {
        during_outage.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    let carol = user("carol");
    let mut carol_session = server.connect(&token(&carol)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let to_carol = server.send_ok(&token(&alice), &envelope(&carol)).await?;
    assert_eq!(
        carol_session.envelope().await?.0,
        to_carol,
        "routing goes on during the outage"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "routing did not wait for the provider"
    );
    let mut session = server.connect(&token(&bob)).await?;
    let mut expected = vec![second_wake];
    expected.extend(during_outage);
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(session.envelope().await?.0);
    }
    assert_eq!(got, expected, "nothing lost while the provider was down");
    server.assert_not_logged(&[fcm_device, apns_device, CIPHERTEXT_B64]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
