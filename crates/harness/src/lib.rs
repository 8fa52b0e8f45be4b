//! Private, throwaway infrastructure for tests, the `replay` tool and the benchmark:
//! `redis-server`, `influxd`, `prometheus` and `weathervane` role processes on free 127.0.0.1 ports,
//! each in its own temp dir, with real fault actions (SIGKILL, SIGTERM, SIGSTOP/SIGCONT);
//! the whole stack wired once (`stack`); a docker-compose project driven from outside
//! (`compose`); and the roles' typed events read back from their logs (`events`).
//!
//! It owns process lifetimes (nothing outlives its owner), port picking, readiness waits,
//! the generated server configs and the wiring of the roles. It does not speak the Redis
//! or InfluxDB protocols beyond the one-line readiness probes (logged in, under access
//! control) and the InfluxQL statements that create a stack's database and users, and
//! knows of the roles only their subcommands, their environment and their event lines:
//! clients, payloads and assertions belong to the callers.
//!
//! The API is synchronous (std::process, std::net, sleeps) so it works from plain tests
//! and, via `spawn_blocking` or directly at setup time, from tokio code.

pub mod compose;
pub mod events;
mod process;
mod server;
pub mod stack;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

pub use process::ManagedProcess;
pub use server::{
    InfluxServer, Login, PrometheusServer, RedisAcl, RedisServer, ServerTls, influx_identifier,
    influx_string,
};
pub use stack::{ApiReplica, InfluxUsers, LocalStack, LocalStackBuilder, Role};
pub use weathervane_core::tls::install_provider as install_tls_provider;

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("could not bind 127.0.0.1:0 to pick a free port: {0}")]
    FreePort(#[source] io::Error),
    #[error("could not create a temp dir for {program}: {source}")]
    TempDir {
        program: &'static str,
        source: io::Error,
    },
    #[error("could not write {path}: {source}")]
    WriteConfig { path: PathBuf, source: io::Error },
    #[error("could not open log {path} for {name}: {source}")]
    OpenLog {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("could not spawn {name} ({program}); log: {log}: {source}")]
    Spawn {
        name: String,
        program: PathBuf,
        log: PathBuf,
        source: io::Error,
    },
    #[error("{name} is already running as pid {pid}")]
    AlreadyRunning { name: String, pid: u32 },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("could not send {signal:?} to {name} (pid {pid}): {source}")]
    Signal {
        name: String,
        pid: u32,
        signal: Signal,
        source: nix::errno::Errno,
    },
    #[error("could not check whether {name} (pid {pid}) exited: {source}")]
    Wait {
        name: String,
        pid: u32,
        source: io::Error,
    },
    #[error(
        "{program} on 127.0.0.1:{port} did not answer {probe} within {timeout:?}; log: {log}{tail}"
    )]
    NotReady {
        program: &'static str,
        port: u16,
        probe: &'static str,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{program} on 127.0.0.1:{port} exited ({status}) before answering {probe}; log: {log}{tail}"
    )]
    ExitedEarly {
        program: &'static str,
        port: u16,
        probe: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("Prometheus on 127.0.0.1:{port} could not answer {query:?}: {reason}")]
    PrometheusQuery {
        port: u16,
        query: String,
        reason: String,
    },
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// Passwords in `statement` are shown as `***`.
    #[error("could not send `{statement}` to influxd on 127.0.0.1:{port}: {source}")]
    InfluxStatementSend {
        port: u16,
        statement: String,
        source: io::Error,
    },
    /// Passwords in `statement` are shown as `***`.
    #[error("influxd on 127.0.0.1:{port} refused `{statement}` ({status}): {answer}")]
    InfluxStatement {
        port: u16,
        statement: String,
        status: u16,
        answer: String,
    },
    #[error("neither `docker compose` nor `docker-compose` answers `version`")]
    NoCompose,
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("compose service {service} has no container")]
    NoContainer { service: String },
    #[error("container {container} not healthy within {timeout:?}")]
    NotHealthy {
        container: String,
        timeout: Duration,
    },
    #[error(
        "WEATHERVANE_BIN={path} is not a file; build it first with `cargo build --bin weathervane`"
    )]
    BinaryEnv { path: PathBuf },
    #[error("could not locate the running executable to find `weathervane` next to it: {0}")]
    CurrentExe(#[source] io::Error),
    #[error(
        "no `weathervane` binary next to {exe} or in its parent dirs; \
         build it first with `cargo build --bin weathervane` (or set WEATHERVANE_BIN)"
    )]
    BinaryNotFound { exe: PathBuf },
}

/// A port that was free a moment ago. Another process can take it before ours binds it,
/// which is why the servers retry with a fresh port when they exit during startup.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(HarnessError::FreePort)?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::FreePort)?
        .port())
}

/// The built `weathervane` binary: `$WEATHERVANE_BIN`, else a sibling of the running
/// executable or of one of its parent dirs (tests run from `target/<profile>/deps/`,
/// tools from `target/<profile>/`).
pub fn weathervane_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEATHERVANE_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::BinaryEnv { path })
        };
    }
    let exe = std::env::current_exe().map_err(HarnessError::CurrentExe)?;
    // Three levels cover deps/, examples/ and the profile dir itself; going higher could
    // pick up an unrelated file that merely happens to be called `weathervane`.
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("weathervane"))
        .find(|candidate| candidate.is_file())
        .ok_or(HarnessError::BinaryNotFound { exe })
}
