//! Graceful shutdown: sessions closed with 1012, exit status 0.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::harness::{Next, Server, signal, token, user};

#[tokio::test]
async fn sigterm_closes_websockets_with_1012_and_exits_zero() -> Result<()> {
    let mut server = Server::start(&[]).await?;
    let mut session = server.connect(&token(&user("bob"))).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(server.pid(), "-TERM")?;
    match session.next(Duration::from_secs(10)).await? {
        Next::Closed(Some(1012)) => {}
        other => bail!("expected close 1012, got {other:?}"),
    }
    let status = server.wait_exit(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status {status}");
    // The log reader may still be draining the last lines of the exited process.
    server
        .wait_for_log(&["SIGTERM received"], 1, Duration::from_secs(5))
        .await?;
    Ok(())
}

#[tokio::test]
async fn sigint_stops_the_server_cleanly() -> Result<()> {
    let server = Server::start(&[]).await?;
    server.stop().await?;
    Ok(())
}
