//! Logging setup: `tracing` to stderr, as text or JSON lines (`--log-format`), filtered by
//! `RUST_LOG` (default `info`). Each role runs inside a `role` span, so under `weathervane
//! up` every line says which role wrote it.
//!
//! Logging can never stop a role: a write to stderr that fails (a closed pipe under
//! `weathervane up | head`, a log collector that went away) is dropped, where the default
//! writer's fallback would panic. Strings from outside (channel names, payload errors) are
//! logged with `?` (Debug), so a newline in one cannot forge a log line.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::progress;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, spans (the role) as a prefix.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields and its spans (the role).
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr);
    // A second init (tests, `up` after another role) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// The span a role runs in: every line it logs carries `role`.
pub fn role_span(role: &'static str) -> tracing::Span {
    tracing::info_span!("role", role)
}

/// Stderr that reports every write as done: a log line that cannot be written is lost,
/// and nothing else is. Lines go through [`progress::write_log`], so that on a terminal
/// they scroll above the progress bars instead of into them.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        progress::write_log(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}
