//! Idle sessions: how much memory one open, idle session costs the server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::router_load::token;

/// Connections per source address (the ephemeral port range is ~28k per address).
const PER_SOURCE: usize = 20_000;
/// The baseline's connections come from 127.0.0.101 on: the router run's closed connections
/// still hold their ports of 127.0.0.1… in TIME_WAIT.
const BASELINE_FIRST: usize = 100 * PER_SOURCE;
/// Connection attempts in flight at once.
const CONNECTING: usize = 64;

/// What the idle scenario measured for one system.
#[derive(Clone, Debug, Serialize)]
pub struct IdleStats {
    /// Which system.
    pub system: String,
    /// Sessions that connected.
    pub sessions: usize,
    /// RSS before, KiB.
    pub rss_before_kib: u64,
    /// RSS with every session open, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / sessions, KiB.
    pub kib_per_session: f64,
}

/// The local address of connection `n`: 127.0.0.1, 127.0.0.2, … every [`PER_SOURCE`].
fn source(n: usize) -> SocketAddr {
    let host = 1 + (n / PER_SOURCE) as u8;
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))
}

async fn connect_from(n: usize, server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source(n))?;
    Ok(socket.connect(server).await?)
}

/// Opens `count` connections with `open`, keeping them all; returns how many opened.
async fn open_all<F, Fut, T>(count: usize, open: F) -> (Vec<T>, usize)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut kept = Vec::with_capacity(count);
    let mut failed = 0;
    let mut running = JoinSet::new();
    for n in 0..count {
        if running.len() >= CONNECTING
            && let Some(done) = running.join_next().await
        {
            match done {
                Ok(Ok(conn)) => kept.push(conn),
                _ => failed += 1,
            }
        }
        running.spawn(open(n));
    }
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(conn)) => kept.push(conn),
            _ => failed += 1,
        }
    }
    (kept, failed)
}

/// Opens `count` WebSocket sessions to the router at `addr` (distinct users).
pub async fn websocket_sessions(addr: &str, count: usize) -> Result<(Vec<impl Send>, usize)> {
    let server: SocketAddr = addr.parse().context("router address")?;
    let (kept, failed) = open_all(count, move |n| async move {
        let stream = connect_from(n, server).await?;
        let mut request = format!("ws://{server}/connect").into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "Bearer {}",
                token(&format!("urn:bench:idle:u{n}"))?
            ))?,
        );
        let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(socket)
    })
    .await;
    Ok((kept, failed))
}

/// Opens `count` idle MQTT 3.1.1 connections to the broker at `addr` (a bare CONNECT/CONNACK).
pub async fn mqtt_connections(addr: &str, count: usize) -> Result<(Vec<impl Send>, usize)> {
    let server: SocketAddr = addr.parse().context("broker address")?;
    let (kept, failed) = open_all(count, move |n| async move {
        let mut stream = connect_from(BASELINE_FIRST + n, server).await?;
        let client_id = format!("idle-{n}");
        let mut packet = vec![0x10];
        let remaining = 10 + 2 + client_id.len();
        packet.push(remaining as u8);
        packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x0e, 0x10]);
        packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        packet.extend_from_slice(client_id.as_bytes());
        stream.write_all(&packet).await?;
        let mut connack = [0_u8; 4];
        stream.read_exact(&mut connack).await?;
        anyhow::ensure!(connack[0] == 0x20 && connack[3] == 0, "CONNACK refused");
        Ok(stream)
    })
    .await;
    Ok((kept, failed))
}

/// Builds the stats from RSS readings.
pub fn stats(system: &str, sessions: usize, before: u64, after: u64) -> IdleStats {
    IdleStats {
        system: system.to_owned(),
        sessions,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_session: after.saturating_sub(before) as f64 / sessions.max(1) as f64,
    }
}

/// Lets the server settle after the last connection.
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}
