//! The one shutdown signal of a process: Ctrl-C or SIGTERM cancels a token that every
//! task and every backoff sleep watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        // Cancel first: should logging fail or block (a closed pipe), shutdown still happens.
        cancel.cancel();
        tracing::info!("Shutdown signal received.");
    });
    token
}

/// Sleeps for `duration` unless shutdown comes first; returns false on shutdown.
pub async fn sleep_or_cancel(duration: std::time::Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = shutdown.cancelled() => false,
    }
}
