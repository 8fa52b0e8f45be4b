//! `RedisServer` and `InfluxServer`: a private daemon on a free 127.0.0.1 port with its
//! own temp dir, started and restarted only once it answers its readiness probe. It owns
//! the daemons' command lines and configs; it does not create databases, keys or users.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{HarnessError, ManagedProcess, Result, free_port};

const POLL: Duration = Duration::from_millis(50);
/// Per probe attempt; a paused or still-booting daemon must not stall the polling loop.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
const START_ATTEMPTS: u32 = 3;
const RESTART_ATTEMPTS: u32 = 5;
const RESTART_BACKOFF: Duration = Duration::from_millis(200);

/// What "ready" means for one kind of daemon.
#[derive(Debug)]
struct Probe {
    program: &'static str,
    request: &'static str,
    timeout: Duration,
    answered: fn(u16) -> bool,
}

static REDIS: Probe = Probe {
    program: "redis-server",
    request: "PING",
    timeout: Duration::from_secs(10),
    answered: |port| matches!(redis_ping(port, PROBE_TIMEOUT), Ok(r) if r.starts_with("+PONG")),
};

static INFLUX: Probe = Probe {
    program: "influxd",
    request: "/ping",
    timeout: Duration::from_secs(30),
    answered: |port| matches!(http(port, "GET", "/ping", "", PROBE_TIMEOUT), Ok((204, _))),
};

/// An `https://` influxd: the harness speaks no TLS, so "ready" is "accepts connections"
/// (influxd opens its HTTP listener last, once it can serve). Clients still ride out the
/// moment after.
static INFLUX_HTTPS: Probe = Probe {
    program: "influxd",
    request: "TCP connect",
    timeout: Duration::from_secs(30),
    answered: |port| connect(port, PROBE_TIMEOUT).is_ok(),
};

/// Certificate files (PEM) for a server's TLS listener.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// The CA client certificates must be signed by.
    pub ca: std::path::PathBuf,
    /// Refuse clients without a certificate signed by `ca` (Redis only).
    pub require_client_certificate: bool,
}

/// The common half of both servers: the process, its port and its dir.
#[derive(Debug)]
struct Daemon {
    // Declared before `_dir` so the process is killed before its dir is deleted under it.
    process: ManagedProcess,
    probe: &'static Probe,
    port: u16,
    // Only held so the data and log are deleted on drop.
    _dir: TempDir,
}

impl Daemon {
    /// `configure` builds the process for a port, with the dir for its data and log.
    fn launch(
        probe: &'static Probe,
        configure: impl Fn(&Path, u16) -> Result<ManagedProcess>,
    ) -> Result<Self> {
        let program = probe.program;
        let dir = tempfile::Builder::new()
            .prefix(&format!("weathervane-{program}-"))
            .tempdir()
            .map_err(|source| HarnessError::TempDir { program, source })?;
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let mut process = configure(dir.path(), port)?;
            process.start()?;
            match wait_ready(&mut process, probe, port, probe.timeout) {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        probe,
                        port,
                        _dir: dir,
                    });
                }
                // Most likely another process took the port between free_port() and the bind.
                Err(error @ HarnessError::ExitedEarly { .. }) if attempt < START_ATTEMPTS => {
                    tracing::warn!(%error, "retrying on a fresh port");
                    attempt += 1;
                }
                Err(error) => {
                    // Keep the dir so the log named in the error can still be read.
                    let _kept = dir.keep();
                    return Err(error);
                }
            }
        }
    }

    fn start_again(&mut self) -> Result<()> {
        let mut attempt = 1;
        loop {
            self.process.start()?;
            match self.wait_ready(self.probe.timeout) {
                Ok(()) => return Ok(()),
                // The port must stay the same, so wait for whoever holds it briefly to let go.
                Err(error @ HarnessError::ExitedEarly { .. }) if attempt < RESTART_ATTEMPTS => {
                    tracing::warn!(%error, "retrying on the same port");
                    sleep(RESTART_BACKOFF);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        wait_ready(&mut self.process, self.probe, self.port, timeout)
    }
}

fn wait_ready(
    process: &mut ManagedProcess,
    probe: &'static Probe,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let (program, request) = (probe.program, probe.request);
    loop {
        if (probe.answered)(port) {
            tracing::debug!(program, port, elapsed = ?started.elapsed(), "ready");
            return Ok(());
        }
        let log = process.log_path().to_owned();
        if !process.is_running() {
            let status = process
                .exit_status()
                .map_or("never started".to_owned(), |s| s.to_string());
            let tail = log_tail(&log);
            return Err(HarnessError::ExitedEarly {
                program,
                port,
                probe: request,
                status,
                log,
                tail,
            });
        }
        if started.elapsed() >= timeout {
            let tail = log_tail(&log);
            return Err(HarnessError::NotReady {
                program,
                port,
                probe: request,
                timeout,
                log,
                tail,
            });
        }
        sleep(POLL);
    }
}

/// The last log lines, so an error explains itself even after the dir is gone.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    match lines.len() {
        0 => String::new(),
        n => format!(
            "; last log lines: {}",
            lines[n.saturating_sub(5)..].join(" | ")
        ),
    }
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Sends an inline `PING` and returns the raw reply (`+PONG\r\n` when healthy).
pub(crate) fn redis_ping(port: u16, timeout: Duration) -> io::Result<String> {
    let mut stream = connect(port, timeout)?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0; 64];
    let n = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

/// One HTTP/1.0 request, returning status and body. HTTP/1.0 makes the server close the
/// connection after the response, so reading to EOF needs no length or chunk parsing.
pub(crate) fn http(
    port: u16,
    method: &str,
    target: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = connect(port, timeout)?;
    let length = body.len();
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n{body}"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok());
    let not_http = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {head:?}"),
        )
    };
    Ok((status.ok_or_else(not_http)?, body.to_owned()))
}

/// A private `redis-server`: no persistence, so a restart starts empty like a fresh cache.
#[derive(Debug)]
pub struct RedisServer {
    daemon: Daemon,
    /// With TLS, the port of its TLS listener (the plain one stays, for the probe).
    tls_port: Option<u16>,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// With `tls`, also listens for TLS on a port of its own, which [`Self::url`] names.
    pub fn start_with(tls: Option<&ServerTls>) -> Result<Self> {
        let tls_port = tls.map(|_| free_port()).transpose()?;
        let daemon = Daemon::launch(&REDIS, |dir, port| {
            let mut process = ManagedProcess::new("redis-server", "redis-server", dir)
                .args("--bind 127.0.0.1 --loglevel warning --appendonly no --port".split(' '))
                .arg(port.to_string())
                // An empty `--save` turns RDB snapshots off.
                .args(["--save", "", "--dir"])
                .arg(dir);
            if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
                let clients = if tls.require_client_certificate {
                    "yes"
                } else {
                    "no"
                };
                process = process
                    .arg("--tls-port")
                    .arg(tls_port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.certificate)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", clients]);
            }
            Ok(process)
        })?;
        Ok(Self { daemon, tls_port })
    }

    /// `rediss://` to the TLS listener if it has one, else `redis://`.
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(port) => format!("rediss://127.0.0.1:{port}"),
            None => self.plain_url(),
        }
    }

    /// `redis://` to the plain listener, which a TLS server keeps too.
    pub fn plain_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.daemon.port)
    }
}

/// A private InfluxDB 1.x `influxd`; its meta, data and wal dirs survive kill + start_again.
#[derive(Debug)]
pub struct InfluxServer {
    daemon: Daemon,
    https: bool,
}

impl InfluxServer {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// With `tls`, serves `https://` only (InfluxDB 1.x has one HTTP listener).
    pub fn start_with(tls: Option<&ServerTls>) -> Result<Self> {
        let probe = if tls.is_some() {
            &INFLUX_HTTPS
        } else {
            &INFLUX
        };
        let daemon = Daemon::launch(probe, |dir, http_port| {
            let config = dir.join("influxd.conf");
            let text = influx_config(dir, http_port, free_port()?, tls);
            fs::write(&config, text).map_err(|source| HarnessError::WriteConfig {
                path: config.clone(),
                source,
            })?;
            Ok(ManagedProcess::new("influxd", "influxd", dir)
                .args(["run", "-config"])
                .arg(&config))
        })?;
        Ok(Self {
            daemon,
            https: tls.is_some(),
        })
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.daemon.port)
    }
}

/// Keys follow `influxd config` of the installed 1.6.7, which ignores unknown keys silently.
fn influx_config(dir: &Path, http_port: u16, rpc_port: u16, tls: Option<&ServerTls>) -> String {
    // A Debug-quoted string is a valid TOML basic string for the paths tempfile creates.
    let quoted = |path: &Path| format!("{:?}", path.display().to_string());
    let path = |sub: &str| quoted(&dir.join(sub));
    let (meta, data, wal) = (path("meta"), path("data"), path("wal"));
    let https = match tls {
        Some(tls) => format!(
            "https-enabled = true\n  https-certificate = {}\n  https-private-key = {}",
            quoted(&tls.certificate),
            quoted(&tls.key)
        ),
        None => String::new(),
    };
    format!(
        r#"# The Debian 1.6.7 build spells it reporting-enabled; reporting-disabled is ignored.
reporting-enabled = false
# The backup/restore RPC port defaults to 8088 and would clash between parallel servers.
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {meta}
  logging-enabled = false

[data]
  dir = {data}
  wal-dir = {wal}
  query-log-enabled = false
  # Replayed data has whatever cardinality it has; never reject writes over it.
  max-series-per-database = 0
  max-values-per-tag = 0

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  {https}

# No _internal database, subscriptions or CQs competing with the pipeline under test.
[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"#
    )
}

/// The same fault actions on both servers.
macro_rules! fault_actions {
    ($server:ty) => {
        impl $server {
            pub fn port(&self) -> u16 {
                self.daemon.port
            }

            /// `None` after `kill` or `stop` until `start_again`.
            pub fn pid(&self) -> Option<u32> {
                self.daemon.process.pid()
            }

            pub fn log_path(&self) -> &Path {
                self.daemon.process.log_path()
            }

            /// SIGKILL, like a crash: no shutdown and no flush.
            pub fn kill(&mut self) {
                self.daemon.process.kill()
            }

            /// SIGTERM, then SIGKILL after 10 s; `None` if it was not running.
            pub fn stop(&mut self) -> Option<ExitStatus> {
                self.daemon.process.stop()
            }

            /// Restarts on the same port with the same dir and waits until it answers.
            pub fn start_again(&mut self) -> Result<()> {
                self.daemon.start_again()
            }

            /// SIGSTOP: connects still succeed (kernel backlog), requests hang.
            pub fn pause(&mut self) -> Result<()> {
                self.daemon.process.pause()
            }

            pub fn resume(&mut self) -> Result<()> {
                self.daemon.process.resume()
            }

            /// Polls the readiness probe; fails early if the process has exited.
            pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
                self.daemon.wait_ready(timeout)
            }
        }
    };
}

fault_actions!(RedisServer);
fault_actions!(InfluxServer);
