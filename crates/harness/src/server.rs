//! `RedisServer`, `InfluxServer` and `PrometheusServer`: a private daemon on a free
//! 127.0.0.1 port with its own temp dir, started and restarted only once it answers its
//! readiness probe. It owns the daemons' command lines and configs (Prometheus's scrape
//! config too), and the one login each needs to be usable under access control (the
//! probe's Redis user from the caller's ACL file, InfluxDB's first admin); other
//! databases, keys and users are the caller's.

use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
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

/// A user name and password; `Debug` shows the name only.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl Login {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({:?}, ***)", self.user)
    }
}

/// A Redis ACL file (`--aclfile`). With its `default` user off, an unauthenticated PING
/// gets NOAUTH, so the readiness probe logs in as `probe` first.
#[derive(Clone, Debug)]
pub struct RedisAcl {
    pub file: PathBuf,
    /// A user the file allows PING (the shipped file's `healthcheck`).
    pub probe: Login,
}

/// What "ready" means for one kind of daemon.
#[derive(Debug)]
struct Probe {
    program: &'static str,
    request: &'static str,
    timeout: Duration,
    /// Whether the daemon on the port answered, asked with the login if there is one.
    answered: fn(u16, Option<&Login>) -> bool,
}

fn redis_answered(port: u16, login: Option<&Login>) -> bool {
    matches!(redis_ping(port, login, PROBE_TIMEOUT), Ok(r) if r.starts_with("+PONG"))
}

static REDIS: Probe = Probe {
    program: "redis-server",
    request: "PING",
    timeout: Duration::from_secs(10),
    answered: redis_answered,
};

/// The same probe, named for what it sends, so a refused login reads as such in errors.
static REDIS_ACL: Probe = Probe {
    program: "redis-server",
    request: "AUTH (the ACL file's probe user) and PING",
    timeout: Duration::from_secs(10),
    answered: redis_answered,
};

/// `/ping` needs no credentials, even with auth-enabled.
static INFLUX: Probe = Probe {
    program: "influxd",
    request: "/ping",
    timeout: Duration::from_secs(30),
    answered: |port, _| matches!(http(port, "GET", "/ping", "", PROBE_TIMEOUT), Ok((204, _))),
};

/// An `https://` influxd: the harness speaks no TLS, so "ready" is "accepts connections"
/// (influxd opens its HTTP listener last, once it can serve). Clients still ride out the
/// moment after.
static INFLUX_HTTPS: Probe = Probe {
    program: "influxd",
    request: "TCP connect",
    timeout: Duration::from_secs(30),
    answered: |port, _| connect(port, PROBE_TIMEOUT).is_ok(),
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
    /// How the probe logs in, if the daemon asks.
    login: Option<Login>,
    port: u16,
    // Only held so the data and log are deleted on drop.
    _dir: TempDir,
}

impl Daemon {
    /// `configure` builds the process for a port, with the dir for its data and log.
    fn launch(
        probe: &'static Probe,
        login: Option<Login>,
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
            match wait_ready(&mut process, probe, login.as_ref(), port, probe.timeout) {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        probe,
                        login,
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
        wait_ready(
            &mut self.process,
            self.probe,
            self.login.as_ref(),
            self.port,
            timeout,
        )
    }
}

fn wait_ready(
    process: &mut ManagedProcess,
    probe: &'static Probe,
    login: Option<&Login>,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let (program, request) = (probe.program, probe.request);
    loop {
        if (probe.answered)(port, login) {
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

/// Sends an inline `PING`, after `AUTH` with `login` if given, and returns the raw reply
/// line (`+PONG\r\n` when healthy; a refused login's error instead of PING's reply).
pub(crate) fn redis_ping(
    port: u16,
    login: Option<&Login>,
    timeout: Duration,
) -> io::Result<String> {
    let mut stream = connect(port, timeout)?;
    let mut request = Vec::new();
    if let Some(login) = login {
        // As a RESP array rather than inline, so a password may hold spaces or quotes.
        let words = [
            b"AUTH".as_slice(),
            login.user.as_bytes(),
            login.password.as_bytes(),
        ];
        write!(request, "*{}\r\n", words.len())?;
        for word in words {
            write!(request, "${}\r\n", word.len())?;
            request.extend_from_slice(word);
            request.extend_from_slice(b"\r\n");
        }
    }
    request.extend_from_slice(b"PING\r\n");
    stream.write_all(&request)?;
    let mut reader = BufReader::new(stream).take(1024);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if login.is_some() && line.starts_with("+OK") {
        line.clear();
        reader.read_line(&mut line)?;
    }
    Ok(line)
}

/// `Authorization: Basic` for `login`.
fn basic_auth(login: &Login) -> String {
    use base64::Engine;
    let pair = format!("{}:{}", login.user, login.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `text` percent-encoded for a query string or form body (all but RFC 3986 unreserved).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `statement` with the text of every InfluxQL string literal (`'...'`, where passwords
/// go) replaced by `***`, for errors.
pub(crate) fn redact_literals(statement: &str) -> String {
    let mut shown = String::with_capacity(statement.len());
    let mut chars = statement.chars();
    while let Some(c) = chars.next() {
        shown.push(c);
        if c != '\'' {
            continue;
        }
        // Skip to the closing quote; a backslash escapes the next character.
        while let Some(inner) = chars.next() {
            match inner {
                '\\' => {
                    chars.next();
                }
                '\'' => break,
                _ => {}
            }
        }
        shown.push_str("***'");
    }
    shown
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
    http_with(port, method, target, &[], body, timeout)
}

/// [`http`] with extra header lines (`Name: value`).
fn http_with(
    port: u16,
    method: &str,
    target: &str,
    headers: &[String],
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = connect(port, timeout)?;
    let length = body.len();
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {length}\r\n\r\n{body}"
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
        Self::start_with_acl(tls, None)
    }

    /// Like [`Self::start_with`], and with `acl`, its users come from the ACL file (which
    /// redis-server checks at start: a malformed file ends it before it is ready).
    pub fn start_with_acl(tls: Option<&ServerTls>, acl: Option<&RedisAcl>) -> Result<Self> {
        let tls_port = tls.map(|_| free_port()).transpose()?;
        let probe = if acl.is_some() { &REDIS_ACL } else { &REDIS };
        let login = acl.map(|acl| acl.probe.clone());
        let daemon = Daemon::launch(probe, login, |dir, port| {
            let mut process = ManagedProcess::new("redis-server", "redis-server", dir)
                .args("--bind 127.0.0.1 --loglevel warning --appendonly no --port".split(' '))
                .arg(port.to_string())
                // An empty `--save` turns RDB snapshots off.
                .args(["--save", "", "--dir"])
                .arg(dir);
            if let Some(acl) = acl {
                process = process.arg("--aclfile").arg(&acl.file);
            }
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
    /// With authentication on, the admin user this server was started with.
    admin: Option<Login>,
}

/// How long one statement of [`InfluxServer::admin_query`] may take.
const ADMIN_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

impl InfluxServer {
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// With `tls`, serves `https://` only (InfluxDB 1.x has one HTTP listener).
    pub fn start_with(tls: Option<&ServerTls>) -> Result<Self> {
        Self::start_with_auth(tls, None)
    }

    /// Like [`Self::start_with`], and with `admin`, authentication on (`auth-enabled`):
    /// `admin` is created as the first user, with all privileges (the one statement
    /// influxd takes without credentials, and only while it has no admin). Other users
    /// and databases are the caller's, through [`Self::admin_query`]. Not with `tls`: the
    /// harness speaks no TLS.
    pub fn start_with_auth(tls: Option<&ServerTls>, admin: Option<&Login>) -> Result<Self> {
        if tls.is_some() && admin.is_some() {
            return Err(HarnessError::Unsupported(
                "InfluxDB with both https and authentication (the harness creates users over plain HTTP)",
            ));
        }
        let probe = if tls.is_some() {
            &INFLUX_HTTPS
        } else {
            &INFLUX
        };
        let auth = admin.is_some();
        let daemon = Daemon::launch(probe, None, |dir, http_port| {
            let config = dir.join("influxd.conf");
            let text = influx_config(dir, http_port, free_port()?, tls, auth);
            fs::write(&config, text).map_err(|source| HarnessError::WriteConfig {
                path: config.clone(),
                source,
            })?;
            Ok(ManagedProcess::new("influxd", "influxd", dir)
                .args(["run", "-config"])
                .arg(&config))
        })?;
        let mut server = Self {
            daemon,
            https: tls.is_some(),
            admin: None,
        };
        if let Some(admin) = admin {
            server.send_statement(
                &format!(
                    "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
                    influx_identifier(&admin.user),
                    influx_string(&admin.password)
                ),
                None,
            )?;
            server.admin = Some(admin.clone());
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.daemon.port)
    }

    /// The admin this server was started with, if authentication is on.
    pub fn admin(&self) -> Option<&Login> {
        self.admin.as_ref()
    }

    /// Runs InfluxQL `statement` (`POST /query`) as the admin, if authentication is on,
    /// else without credentials; an error if InfluxDB reports one. Build statements with
    /// [`influx_identifier`] and [`influx_string`].
    pub fn admin_query(&self, statement: &str) -> Result<()> {
        self.send_statement(statement, self.admin.as_ref())
    }

    fn send_statement(&self, statement: &str, login: Option<&Login>) -> Result<()> {
        let headers: Vec<String> = login
            .map(|login| format!("Authorization: {}", basic_auth(login)))
            .into_iter()
            .chain(["Content-Type: application/x-www-form-urlencoded".to_owned()])
            .collect();
        let body = format!("q={}", percent_encode(statement));
        let shown = || redact_literals(statement);
        let (status, answer) = http_with(
            self.daemon.port,
            "POST",
            "/query",
            &headers,
            &body,
            ADMIN_QUERY_TIMEOUT,
        )
        .map_err(|source| HarnessError::InfluxStatementSend {
            port: self.daemon.port,
            statement: shown(),
            source,
        })?;
        // InfluxDB answers 200 with `"error"` in a result when one statement fails.
        if status != 200 || answer.contains("\"error\"") {
            return Err(HarnessError::InfluxStatement {
                port: self.daemon.port,
                statement: shown(),
                status,
                answer,
            });
        }
        Ok(())
    }
}

/// `name` as an InfluxQL identifier (double-quoted).
pub fn influx_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `text` as an InfluxQL string literal (single-quoted).
pub fn influx_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Keys follow `influxd config` of the installed 1.6.7, which ignores unknown keys silently.
fn influx_config(
    dir: &Path,
    http_port: u16,
    rpc_port: u16,
    tls: Option<&ServerTls>,
    auth: bool,
) -> String {
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
  auth-enabled = {auth}
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
fault_actions!(PrometheusServer);

/// Prometheus says it is ready once its TSDB is open and it will scrape.
static PROMETHEUS: Probe = Probe {
    program: "prometheus",
    request: "/-/ready",
    timeout: Duration::from_secs(30),
    answered: |port, _| {
        matches!(
            http(port, "GET", "/-/ready", "", PROBE_TIMEOUT),
            Ok((200, _))
        )
    },
};

/// How long one query of [`PrometheusServer::query`] may take.
const PROMETHEUS_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A private Debian `prometheus` scraping `targets` (`host:port`, plain http, `/metrics`)
/// every second, with its TSDB in its own temp dir.
#[derive(Debug)]
pub struct PrometheusServer {
    daemon: Daemon,
}

impl PrometheusServer {
    /// Starts Prometheus with one scrape job per `(job, target)`.
    pub fn start(targets: &[(String, String)]) -> Result<Self> {
        let daemon = Daemon::launch(&PROMETHEUS, None, |dir, port| {
            let config = dir.join("prometheus.yml");
            fs::write(&config, prometheus_config(targets)).map_err(|source| {
                HarnessError::WriteConfig {
                    path: config.clone(),
                    source,
                }
            })?;
            Ok(ManagedProcess::new("prometheus", "prometheus", dir)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn"))
        })?;
        Ok(Self { daemon })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }

    /// `GET /api/v1/query?query=<promql>`: the raw JSON answer (the caller parses it).
    pub fn query(&self, promql: &str) -> Result<String> {
        let target = format!("/api/v1/query?query={}", percent_encode(promql));
        let port = self.daemon.port;
        let failed = |reason: String| HarnessError::PrometheusQuery {
            port,
            query: promql.to_owned(),
            reason,
        };
        let (status, body) = http(port, "GET", &target, "", PROMETHEUS_QUERY_TIMEOUT)
            .map_err(|error| failed(error.to_string()))?;
        if status != 200 {
            return Err(failed(format!("status {status}: {body}")));
        }
        Ok(body)
    }
}

/// The config of [`PrometheusServer`]: every target scraped each second.
fn prometheus_config(targets: &[(String, String)]) -> String {
    let mut text =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, target) in targets {
        text.push_str(&format!(
            "  - job_name: {job:?}\n    static_configs:\n      - targets: [{target:?}]\n"
        ));
    }
    text
}
