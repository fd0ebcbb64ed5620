//! One WebSocket session: the stored backlog first (express lane first, then oldest first), then
//! live envelopes; acks delete; pings detect dead peers; every write has a deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use foldhash::{HashSet, HashSetExt};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pipeline::ports::envelope_store::BacklogCursor;
use pipeline::ports::presence::Protocol;
use pipeline::{MessageId, UserUrn};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::frames::{ClientFrame, envelope_frame, error_frame, parse_client_frame};
use crate::manager::{CloseReason, ConnectionManager, Outbound, SessionHandle};

/// WebSocket close code: the server restarts, reconnect (RFC 6455 registry).
pub const CLOSE_RESTART: u16 = 1012;
/// WebSocket close code: try again later (the session fell behind).
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// WebSocket close code: going away (peer stopped answering pings).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: internal error.
pub const CLOSE_INTERNAL: u16 = 1011;

/// Most live envelopes written to a session before one flush.
const LIVE_BATCH: usize = 64;

/// After the backlog is sent, ids sent from it are remembered this long to drop live copies.
const BACKLOG_ID_MEMORY: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug)]
enum End {
    Closed(CloseReason),
    ClientClosed,
    Timeout,
    WriteFailed,
    StoreFailed,
}

type Sink = SplitSink<WebSocket, Message>;

/// Backlog state: pages read from the store, ids already sent, live items held back meanwhile.
struct Backlog {
    cursor: Option<BacklogCursor>,
    page: VecDeque<(MessageId, Arc<str>)>,
    reading: bool,
    last_page: bool,
    sent: HashSet<MessageId>,
    held_live: VecDeque<Arc<Outbound>>,
    rescan: bool,
    forget_sent_at: Option<Instant>,
}

/// Serves `socket` as a session of `user` until it ends.
pub async fn serve_websocket(
    manager: Arc<ConnectionManager>,
    mut socket: WebSocket,
    user: UserUrn,
) {
    let handle = match manager.open_session(&user, Protocol::WebSocket).await {
        Ok(handle) => handle,
        Err(err) => {
            warn!(recipient = %user, cause = %err, "cannot open session");
            let code = if manager.is_closing() {
                CLOSE_RESTART
            } else {
                CLOSE_INTERNAL
            };
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static("presence unavailable; retry"),
                })))
                .await;
            return;
        }
    };
    info!(recipient = %user, session = %handle.id, "websocket session opened");
    metrics::gauge!("envelope_router_live_sessions", "protocol" => "websocket").increment(1.0);
    let (mut sink, stream) = socket.split();
    let mut handle = handle;
    let end = run(&manager, &mut handle, &mut sink, stream).await;
    let close = match end {
        End::Closed(CloseReason::Restart) => Some((CLOSE_RESTART, "server restarting; reconnect")),
        End::Closed(CloseReason::Overflow) => {
            Some((CLOSE_TRY_AGAIN, "session fell behind; reconnect to resume"))
        }
        End::Timeout => Some((CLOSE_GOING_AWAY, "no pong received")),
        End::StoreFailed => Some((CLOSE_INTERNAL, "store unavailable; reconnect")),
        End::ClientClosed | End::WriteFailed => None,
    };
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = tokio::time::timeout(manager.config().write_timeout, sink.send(frame)).await;
    }
    let _ = tokio::time::timeout(manager.config().write_timeout, sink.close()).await;
    info!(recipient = %user, session = %handle.id, reason = ?end, "websocket session closed");
    metrics::gauge!("envelope_router_live_sessions", "protocol" => "websocket").decrement(1.0);
    manager.close_session(handle).await;
}

async fn send_text(manager: &ConnectionManager, sink: &mut Sink, text: String) -> Result<(), End> {
    match tokio::time::timeout(
        manager.config().write_timeout,
        sink.send(Message::Text(text.into())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::WriteFailed),
    }
}

/// Writes one envelope and starts its ack timer (unless ephemeral).
async fn send_envelope(
    manager: &ConnectionManager,
    sink: &mut Sink,
    user: &UserUrn,
    id: &MessageId,
    json: &str,
    ephemeral: bool,
) -> Result<(), End> {
    send_text(manager, sink, envelope_frame(id, json)).await?;
    if !ephemeral {
        manager.written(user, id);
    }
    manager.metrics().written_websocket.increment(1);
    Ok(())
}

/// Writes `first` and the live envelopes already waiting behind it (up to [`LIVE_BATCH`]),
/// skipping ids the backlog sent, then flushes once: one socket write for a burst instead of
/// one per frame. Each written envelope starts its ack timer (unless ephemeral).
async fn write_live(
    manager: &ConnectionManager,
    sink: &mut Sink,
    user: &UserUrn,
    sent: &HashSet<MessageId>,
    first: Arc<Outbound>,
    receiver: &mut mpsc::Receiver<Arc<Outbound>>,
) -> Result<(), End> {
    let write = async {
        let mut next = Some(first);
        let mut taken = 0;
        let mut written = 0;
        while let Some(live) = next.take() {
            taken += 1;
            if !sent.contains(&live.message_id) {
                let frame = envelope_frame(&live.message_id, &live.json);
                sink.feed(Message::Text(frame.into())).await?;
                if !live.ephemeral {
                    manager.written(user, &live.message_id);
                }
                written += 1;
            }
            if taken < LIVE_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        sink.flush().await?;
        Ok::<u64, axum::Error>(written)
    };
    match tokio::time::timeout(manager.config().write_timeout, write).await {
        Ok(Ok(written)) => {
            manager.metrics().written_websocket.increment(written);
            Ok(())
        }
        Ok(Err(_)) | Err(_) => Err(End::WriteFailed),
    }
}

async fn run(
    manager: &ConnectionManager,
    handle: &mut SessionHandle,
    sink: &mut Sink,
    mut stream: SplitStream<WebSocket>,
) -> End {
    let config = manager.config().clone();
    let user = handle.user.clone();
    let mut backlog = Backlog {
        cursor: None,
        page: VecDeque::new(),
        reading: true,
        last_page: false,
        sent: HashSet::new(),
        held_live: VecDeque::new(),
        rescan: false,
        forget_sent_at: None,
    };
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + config.ping_interval, config.ping_interval);
    let mut heartbeat =
        tokio::time::interval_at(start + config.heartbeat_interval, config.heartbeat_interval);
    let mut last_heard = Instant::now();

    loop {
        if let Err(end) = refill_backlog(manager, sink, &user, &mut backlog).await {
            return end;
        }
        if backlog
            .forget_sent_at
            .is_some_and(|at| Instant::now() >= at)
        {
            backlog.sent = HashSet::new();
            backlog.forget_sent_at = None;
        }
        tokio::select! {
            biased;
            _ = handle.close.cancelled() => {
                return End::Closed(handle.close_reason().unwrap_or(CloseReason::Restart));
            }
            incoming = stream.next() => {
                let Some(Ok(message)) = incoming else { return End::ClientClosed };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        if let Err(end) = handle_text(manager, sink, &user, text.as_str()).await {
                            return end;
                        }
                    }
                    Message::Binary(_) => {
                        if let Err(end) = send_text(manager, sink, error_frame("binary frames are not supported; send JSON text frames")).await {
                            return end;
                        }
                    }
                    Message::Close(_) => return End::ClientClosed,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.ping_interval * 2 {
                    return End::Timeout;
                }
                let ping = Message::Ping(Default::default());
                if !matches!(tokio::time::timeout(config.write_timeout, sink.send(ping)).await, Ok(Ok(()))) {
                    return End::WriteFailed;
                }
            }
            _ = heartbeat.tick() => manager.heartbeat(handle, Protocol::WebSocket).await,
            live = handle.receiver.recv() => {
                let Some(live) = live else { return End::Closed(CloseReason::Restart) };
                if backlog.reading {
                    if backlog.held_live.len() < config.backlog_live_buffer {
                        backlog.held_live.push_back(live);
                    } else if !live.ephemeral {
                        // Stored anyway: a second pass over the backlog picks it up.
                        backlog.rescan = true;
                    }
                } else if let Err(end) = write_live(manager, sink, &user, &backlog.sent, live, &mut handle.receiver).await {
                    return end;
                }
            }
            _ = std::future::ready(()), if !backlog.page.is_empty() => {
                if let Some((id, json)) = backlog.page.pop_front()
                    && backlog.sent.insert(id.clone())
                    && let Err(end) = send_envelope(manager, sink, &user, &id, &json, false).await
                {
                    return end;
                }
            }
        }
    }
}

/// Reads the next backlog page when the current one is used up; at the end of the backlog,
/// sends the live envelopes held back meanwhile and switches to live mode.
async fn refill_backlog(
    manager: &ConnectionManager,
    sink: &mut Sink,
    user: &UserUrn,
    backlog: &mut Backlog,
) -> Result<(), End> {
    if !backlog.reading || !backlog.page.is_empty() {
        return Ok(());
    }
    if !backlog.last_page {
        let page = manager
            .store()
            .backlog(user, backlog.cursor.as_ref(), manager.config().backlog_page)
            .await
            .map_err(|err| {
                warn!(recipient = %user, cause = %err, "backlog read failed");
                End::StoreFailed
            })?;
        backlog.last_page = page.next.is_none();
        backlog.cursor = page.next;
        backlog
            .page
            .extend(page.envelopes.into_iter().map(|e| (e.message_id, e.json)));
        if !backlog.page.is_empty() {
            return Ok(());
        }
    }
    if backlog.rescan {
        debug!(recipient = %user, "live envelopes overflowed during backlog; reading it again");
        backlog.rescan = false;
        backlog.last_page = false;
        backlog.cursor = None;
        backlog.held_live.clear();
        return Ok(());
    }
    backlog.reading = false;
    metrics::histogram!("envelope_router_backlog_envelopes").record(backlog.sent.len() as f64);
    while let Some(live) = backlog.held_live.pop_front() {
        if !backlog.sent.contains(&live.message_id) {
            send_envelope(
                manager,
                sink,
                user,
                &live.message_id,
                &live.json,
                live.ephemeral,
            )
            .await?;
        }
    }
    backlog.forget_sent_at = Some(Instant::now() + BACKLOG_ID_MEMORY);
    Ok(())
}

async fn handle_text(
    manager: &ConnectionManager,
    sink: &mut Sink,
    user: &UserUrn,
    text: &str,
) -> Result<(), End> {
    match parse_client_frame(text) {
        Ok(ClientFrame::Ack(ids)) => match manager.ack(user, &ids).await {
            Ok(_) => Ok(()),
            Err(err) => {
                warn!(recipient = %user, cause = %err, "ack failed");
                send_text(manager, sink, error_frame("ack failed; send it again")).await
            }
        },
        Err(err) => send_text(manager, sink, error_frame(&err.to_string())).await,
    }
}
