//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Logging can never stop a role: a write to stderr that fails (a closed pipe under
//! `weathervane up | head`, a log collector that went away) is dropped, where the default
//! writer's fallback would panic. Strings from outside (channel names, payload errors) are
//! logged with `?` (Debug), so a newline in one cannot forge a log line.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests, `up` after another role) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Stderr that reports every write as done: a log line that cannot be written is lost,
/// and nothing else is.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}
