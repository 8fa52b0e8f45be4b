//! The one shutdown signal of a process: Ctrl-C or SIGTERM cancels a token that every
//! task and every backoff sleep watches.

use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// The signal that cancelled the token, 0 before one arrives.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// A token cancelled on the first Ctrl-C (SIGINT) or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        let signal = tokio::select! {
            _ = ctrl_c => SIGINT,
            _ = term.recv() => SIGTERM,
        };
        RECEIVED.store(signal, Ordering::SeqCst);
        // Cancel first: should logging fail or block (a closed pipe), shutdown still happens.
        cancel.cancel();
        tracing::info!(signal, "Shutdown signal received.");
    });
    token
}

/// The signal that ended the process's work, if one did: a run that was to finish by
/// itself (`--once`) and was interrupted exits with 128 + this, as shells expect.
pub fn received_signal() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Sleeps for `duration` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_cancel(duration: std::time::Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = shutdown.cancelled() => false,
    }
}
