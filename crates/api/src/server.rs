//! The accept loop, in place of `axum::serve`, for the limits a connection can break:
//! the time to send a request's head (hyper's header-read timeout, which `axum::serve`
//! leaves off for want of a timer), the size of that head, and the number of connections
//! open at once. It owns every connection task (a `JoinSet`), so shutdown lets the
//! requests in flight finish within a bound and leaves no task behind.
//!
//! Past the connection limit a new connection is accepted, told 503 in JSON and closed at
//! once. Leaving it unaccepted instead would park it in the kernel's backlog with no
//! answer until a slot frees, which is the very exhaustion this guards against. The 503
//! is best effort: one write that never waits, and a client whose request is already in
//! (unread) may see the close as a reset before it reads the 503. Lingering to read the
//! request first would hold the very descriptors the limit is there to cap.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{AppError, Limits};

/// The largest request head (request line and headers) read, in bytes; hyper answers 431
/// past it. Heads here are a few hundred bytes; hyper's default (about 400 KiB) times the
/// connection limit would let stalled clients hold hundreds of MiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long to wait before accepting again after an error that is not one connection's
/// own (out of file descriptors): long enough for connections to close meanwhile.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown`, then gives the requests in flight `grace`
/// to finish and closes every connection still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusal = refusal(limits.max_connections);
    let mut connections = JoinSet::new();
    // Whether the last connection was refused, so a flood logs once, not per connection.
    let mut at_limit = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(ended) = connections.join_next() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "A connection task panicked.");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(%error, "Cannot accept connections; pausing.");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !at_limit {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    %peer,
                    "Connection limit reached; refusing new connections with 503."
                );
                at_limit = true;
            }
            refuse(stream, &refusal);
            continue;
        };
        at_limit = false;
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        connections.spawn(serve_connection(connection, slot, shutdown.clone()));
    }
    // Stop accepting: from here the kernel refuses new connections.
    drop(listener);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "Connections still open after the shutdown grace period; closing them."
        );
        connections.shutdown().await;
    }
}

/// Serves one connection, holding its slot until it closes; on shutdown, finishes the
/// request in flight and closes (an idle connection closes at once).
async fn serve_connection<S>(
    connection: http1::Connection<TokioIo<TcpStream>, S>,
    _slot: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Clients that time out, reset or send garbage are routine for a server, not news.
    if let Err(error) = ended {
        tracing::debug!(%error, timeout = error.is_timeout(), "Connection ended with an error.");
    }
}

/// The bytes of a complete 503 response, sent to a connection refused at the limit.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": AppError::TooManyConnections { limit: max_connections }.to_string(),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Tells a connection past the limit why, if its send buffer takes the answer at once
/// (a new socket's does), and closes it.
fn refuse(stream: TcpStream, refusal: &[u8]) {
    if let Err(error) = stream.try_write(refusal) {
        tracing::debug!(%error, "Could not tell a refused connection why.");
    }
}

/// Errors of one incoming connection (it went away before it was accepted), after which
/// accepting the next one works.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
