//! Runs the real binary and talks to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret every test server uses.
pub const SECRET: &str = "e2e-test-secret-0123456789abcdef";

/// Base64 of the ciphertext tests send; must never appear in logs.
pub const CIPHERTEXT_B64: &str = "c2VjcmV0LWNpcGhlcnRleHQtZG8tbm90LWxvZw==";

/// A unique name for this test run (ports, dirs, users).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A user URN unique to one test.
pub fn user(name: &str) -> String {
    format!("urn:e2e:user:{}", unique(name))
}

/// Mints an HS256 token for `sub` with `SECRET`, valid for an hour.
pub fn token(sub: &str) -> String {
    token_with(sub, SECRET, 3600, json!({}))
}

/// Mints an HS256 token with `secret`, `exp` `ttl_secs` from now (negative: expired), and
/// extra claims.
pub fn token_with(sub: &str, secret: &str, ttl_secs: i64, extra: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut claims = json!({"sub": sub, "iat": now, "exp": now + ttl_secs});
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("mint token: {e}"))
}

/// An envelope body for `recipient` with the test ciphertext.
pub fn envelope(recipient: &str) -> Value {
    json!({"recipientId": recipient, "encryptedData": CIPHERTEXT_B64})
}

/// The backends every test server uses: `E2E_BACKENDS=redis` runs the suite on Redis
/// presence, store and rate limits (with a key prefix of its own per server).
pub fn backend_profile() -> Result<Vec<(String, String)>> {
    match std::env::var("E2E_BACKENDS").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => Ok(Vec::new()),
        Ok("redis") => Ok(redis_profile(&redis_url()?, &unique("er-e2e-"))),
        Ok(other) => bail!("unknown E2E_BACKENDS={other}"),
    }
}

/// Settings for Redis presence, store, rate limits and delivery under `prefix`.
pub fn redis_profile(url: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("PRESENCE", "redis"),
        ("STORE", "redis"),
        ("RATE_LIMIT", "redis"),
        ("DEVICE_TOKENS", "redis"),
        ("REDIS_URL", url),
        ("REDIS_KEY_PREFIX", &format!("{prefix}:")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `REDIS_URL`, which `infra/test.sh` sets after starting redis-server.
pub fn redis_url() -> Result<String> {
    std::env::var("REDIS_URL")
        .context("REDIS_URL is not set: run ./infra/test.sh, which starts redis-server")
}

/// A running server process.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws_base: String,
    /// Its `DATA_DIR`.
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Server {
    /// Starts a server with a fresh `DATA_DIR` and these extra env vars.
    pub async fn start(env: &[(&str, &str)]) -> Result<Self> {
        let data_dir = std::env::temp_dir().join(unique("er-e2e-"));
        let mut all = backend_profile()?;
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::spawn(data_dir, all).await
    }

    /// Starts a server with exactly these env vars (no backend profile).
    pub async fn start_exact(env: Vec<(String, String)>) -> Result<Self> {
        let data_dir = std::env::temp_dir().join(unique("er-e2e-"));
        Self::spawn(data_dir, env).await
    }

    /// The settings this server was started with.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    async fn spawn(data_dir: PathBuf, env: Vec<(String, String)>) -> Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_envelope-router"));
        command
            .arg("serve")
            .env_clear()
            .env("DATA_DIR", &data_dir)
            .env("LISTEN", "127.0.0.1:0")
            .env("LOG_LEVEL", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !env
            .iter()
            .any(|(k, _)| k == "JWT_SECRET" || k == "JWT_JWKS_URL")
        {
            command.env("JWT_SECRET", SECRET);
        }
        for (key, value) in &env {
            command.env(key, value);
        }
        let mut child = command.spawn().context("spawn envelope-router")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Store the line before announcing the address, so a test that reads it right
                // after start finds it.
                let addr = line.split("listening on http://").nth(1).map(|rest| {
                    rest.chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect::<String>()
                });
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                if let Some(addr) = addr {
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let addr =
            tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(30)))
                .await?
                .map_err(|_| {
                    let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                    anyhow!("server did not start listening; logs:\n{logs}")
                });
        let addr = match addr {
            Ok(addr) => addr,
            Err(err) => {
                // A server that never listened leaves nothing behind: no Server drops it.
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(err);
            }
        };
        Ok(Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            data_dir,
            env,
            child,
            logs,
            http: reqwest::Client::new(),
        })
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .collect()
    }

    /// Waits until `count` log lines contain all `needles`.
    pub async fn wait_for_log(
        &self,
        needles: &[&str],
        count: usize,
        within: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.log_lines_with(needles).len();
            if found >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "expected {count} log lines with {needles:?}, found {found}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails if any log line contains one of `secrets` (payloads, tokens).
    pub fn assert_not_logged(&self, secrets: &[&str]) {
        for line in self.logs() {
            for secret in secrets {
                assert!(!line.contains(secret), "log line leaks a secret: {line}");
            }
        }
    }

    /// A request builder for `path`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `POST /send` with `body` as `user`'s token.
    pub async fn send(&self, bearer: &str, body: &Value) -> Result<reqwest::Response> {
        Ok(self
            .request(reqwest::Method::POST, "/send")
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await?)
    }

    /// `POST /send` that must be accepted; returns the messageId.
    pub async fn send_ok(&self, bearer: &str, body: &Value) -> Result<String> {
        let response = self.send(bearer, body).await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("send answered {status}: {body}");
        }
        body["messageId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no messageId in {body}"))
    }

    /// The `GET /metrics` text.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?
            .text()
            .await?)
    }

    /// `GET /messages` as `bearer`; the message ids.
    pub async fn pending_ids(&self, bearer: &str) -> Result<Vec<String>> {
        let body: Value = self
            .request(reqwest::Method::GET, "/messages?limit=500")
            .bearer_auth(bearer)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(body["messages"]
            .as_array()
            .ok_or_else(|| anyhow!("no messages in {body}"))?
            .iter()
            .filter_map(|m| m["messageId"].as_str().map(str::to_owned))
            .collect())
    }

    /// Opens a WebSocket session with the token in the Authorization header.
    pub async fn connect(&self, bearer: &str) -> Result<WsClient> {
        let mut request = format!("{}/connect", self.ws_base).into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {bearer}"))?,
        );
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }

    /// Sends SIGINT and waits for a clean exit (status 0).
    pub async fn stop(mut self) -> Result<Self> {
        signal(self.child.id(), "-INT")?;
        let status = wait_exit(&mut self.child, Duration::from_secs(20)).await?;
        if !status.success() {
            bail!(
                "server exited with {status}; logs:\n{}",
                self.logs().join("\n")
            );
        }
        Ok(self)
    }

    /// Kills the process with SIGKILL (a crash).
    pub async fn kill9(mut self) -> Result<Self> {
        self.child.kill()?;
        wait_exit(&mut self.child, Duration::from_secs(10)).await?;
        Ok(self)
    }

    /// Starts a new process on the same `DATA_DIR` and settings.
    pub async fn restart(self) -> Result<Self> {
        let env = self.env.clone();
        self.restart_with(env).await
    }

    /// Starts a new process on the same `DATA_DIR` with other settings.
    pub async fn restart_with(self, env: Vec<(String, String)>) -> Result<Self> {
        let data_dir = self.data_dir.clone();
        let mut old = self;
        // Keep the data dir: only the process changes (Drop skips an empty path).
        old.data_dir = PathBuf::new();
        drop(old);
        Self::spawn(data_dir, env).await
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        wait_exit(&mut self.child, within).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // An empty data dir means a restart took the data over: leave it (and Redis) alone.
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let setting = |name: &str| {
                self.env
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            if let (Some(url), Some(prefix)) = (setting("REDIS_URL"), setting("REDIS_KEY_PREFIX")) {
                delete_redis_prefix(&url, &prefix);
            }
        }
    }
}

/// Deletes every key under `prefix`, so tests leave nothing behind in a shared Redis.
pub fn delete_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
    }
}

/// Sends a signal (`-INT`, `-TERM`) to `pid`.
pub fn signal(pid: u32, which: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill {which} {pid} failed");
    }
    Ok(())
}

async fn wait_exit(child: &mut Child, within: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("process did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket client session.
pub struct WsClient {
    /// The raw stream, for tests that need it.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Next {
    /// A JSON text frame.
    Json(Value),
    /// A close frame with its code.
    Closed(Option<u16>),
    /// Nothing within the wait.
    Silent,
}

impl WsClient {
    /// The next frame that is not a ping or pong, within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Next> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Ok(Next::Silent),
                Ok(None) => return Ok(Next::Closed(None)),
                Ok(Some(frame)) => frame,
            };
            match frame {
                Ok(Message::Text(text)) => {
                    return Ok(Next::Json(serde_json::from_str(text.as_str())?));
                }
                Ok(Message::Close(frame)) => {
                    return Ok(Next::Closed(frame.map(|f| u16::from(f.code))));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => bail!("unexpected frame {other:?}"),
                Err(err) => bail!("websocket error: {err}"),
            }
        }
    }

    /// The next JSON frame; fails on anything else.
    pub async fn json(&mut self) -> Result<Value> {
        match self.next(Duration::from_secs(10)).await? {
            Next::Json(value) => Ok(value),
            other => bail!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next envelope frame's messageId and envelope.
    pub async fn envelope(&mut self) -> Result<(String, Value)> {
        let frame = self.json().await?;
        if frame["type"] != "envelope" {
            bail!("expected an envelope frame, got {frame}");
        }
        let id = frame["messageId"]
            .as_str()
            .ok_or_else(|| anyhow!("no messageId"))?
            .to_owned();
        if frame["envelope"]["messageId"] != frame["messageId"] {
            bail!("frame and envelope disagree on the id: {frame}");
        }
        Ok((id, frame["envelope"].clone()))
    }

    /// Asserts nothing arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) -> Result<()> {
        match self.next(within).await? {
            Next::Silent => Ok(()),
            other => bail!("expected silence, got {other:?}"),
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.stream.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Acks `ids`.
    pub async fn ack(&mut self, ids: &[String]) -> Result<()> {
        self.send_text(&json!({"type": "ack", "messageIds": ids}).to_string())
            .await
    }

    /// Closes the session politely.
    pub async fn close(mut self) -> Result<()> {
        self.stream.close(None).await?;
        // Drain until the server's close arrives.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
        Ok(())
    }
}
