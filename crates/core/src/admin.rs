//! The admin server every role serves beside its work: `GET /livez`, `GET /readyz` (JSON,
//! 200 or 503, from [`crate::health`]) and `GET /metrics` (the Prometheus text of the
//! process's one registry, [`crate::metrics`]). It owns the `--admin-addr` setting and the
//! role defaults, the tasks that keep health current (the watchdog, the InfluxDB probe)
//! and the tiny client behind `weathervane probe` (a container healthcheck without curl).
//!
//! Under `weathervane up` one server answers for the four roles: `/readyz` is ready only
//! when every role is, and says which is not and why.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::influx::InfluxClient;
use crate::listen::ListenAddr;
use crate::shutdown::sleep_or_cancel;
use crate::supervise::{Supervisor, TaskExit};

/// The default admin addresses (loopback), one per role; the compose file and its
/// Prometheus scrape config use the same ports.
pub const STREAMER_ADMIN: &str = "127.0.0.1:9101";
pub const INGESTER_ADMIN: &str = "127.0.0.1:9102";
pub const PROCESSOR_ADMIN: &str = "127.0.0.1:9103";
pub const API_ADMIN: &str = "127.0.0.1:9104";
/// `weathervane up`: one admin server for the four roles.
pub const UP_ADMIN: &str = "127.0.0.1:9100";

/// How often the watchdog beats and InfluxDB is pinged.
const INTERVAL: Duration = Duration::from_secs(1);
/// A `/ping` that takes longer counts as InfluxDB not answering.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Histograms are drained this often even when nobody scrapes, so memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin server (GET /livez, /readyz, /metrics): host:port or a bare
    /// port on 127.0.0.1. Default 127.0.0.1:9101 (streamer), :9102 (ingester), :9103
    /// (processor), :9104 (api), :9100 (up).
    #[arg(id = "admin_addr", long = "admin-addr", env = "WEATHERVANE_ADMIN_ADDR")]
    pub addr: Option<ListenAddr>,
}

impl AdminArgs {
    /// The address given, or `default`.
    pub fn addr_or(&self, default: &str) -> ListenAddr {
        self.addr
            .clone()
            .unwrap_or_else(|| default.parse().expect("the default admin addresses parse"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The cause is in the message, not a `source`, so `{:#}` does not print it twice.
    #[error("cannot listen for the admin server on {addr} (--admin-addr): {cause}")]
    Bind {
        addr: ListenAddr,
        cause: std::io::Error,
    },
}

/// Binds the admin address; also installs the metrics recorder, so everything the role
/// counts from here on is exported.
pub async fn bind(addr: &ListenAddr) -> Result<TcpListener, AdminError> {
    crate::metrics::install();
    let listener = TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .map_err(|cause| AdminError::Bind {
            addr: addr.clone(),
            cause,
        })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "Admin server listening (/livez, /readyz, /metrics).");
    }
    Ok(listener)
}

/// Where a role's health goes: its own admin server, or (under `up`) the shared one.
#[derive(Debug)]
pub struct RoleAdmin {
    pub health: Health,
    listener: Option<TcpListener>,
}

impl RoleAdmin {
    /// A role alone: binds its admin address (`args`, else `default`) and registers its
    /// metrics; `targets` are its checks (`redis`, `influxdb`).
    pub async fn serve(
        role: &'static str,
        targets: &[&'static str],
        args: &AdminArgs,
        default: &str,
    ) -> Result<Self, AdminError> {
        let listener = bind(&args.addr_or(default)).await?;
        crate::metrics::register(role);
        Ok(Self {
            health: Health::new(role, targets),
            listener: Some(listener),
        })
    }

    /// A role alone whose health `health` makes (for checks beyond its targets), after
    /// the metrics recorder is installed so its outage gauges are exported: binds its
    /// admin address (`args`, else `default`).
    pub async fn serve_health(
        health: impl FnOnce() -> Health,
        args: &AdminArgs,
        default: &str,
    ) -> Result<Self, AdminError> {
        let listener = bind(&args.addr_or(default)).await?;
        let health = health();
        crate::metrics::register(health.role());
        Ok(Self {
            health,
            listener: Some(listener),
        })
    }

    /// A role under `up`, whose health the shared admin server shows.
    pub fn shared(health: Health) -> Self {
        crate::metrics::register(health.role());
        Self {
            health,
            listener: None,
        }
    }

    /// Spawns the role's watchdog and, for a role alone, its admin server.
    pub fn supervise(self, supervisor: &mut Supervisor) -> Health {
        let health = self.health.clone();
        supervise_watchdog(supervisor, health.clone());
        if let Some(listener) = self.listener {
            supervise_server(supervisor, listener, vec![health.clone()]);
        }
        health
    }
}

/// The watchdog: beats every second, so a runtime that stops running tasks shows as not
/// live.
pub fn supervise_watchdog(supervisor: &mut Supervisor, health: Health) {
    let token = supervisor.token();
    supervisor.spawn_until_stopped("watchdog", async move {
        loop {
            health.beat();
            if !sleep_or_cancel(INTERVAL, &token).await {
                return;
            }
        }
    });
}

/// Serves `/livez`, `/readyz` and `/metrics` for `roles` until the supervisor stops, and
/// keeps the metrics' histograms drained.
pub fn supervise_server(supervisor: &mut Supervisor, listener: TcpListener, roles: Vec<Health>) {
    let token = supervisor.token();
    let app = router(roles);
    supervisor.spawn("admin-server", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .map_err(|error| format!("admin server: {error}"))?;
        Ok(TaskExit::Stopped)
    });
    let token = supervisor.token();
    supervisor.spawn_until_stopped("metrics-upkeep", async move {
        while sleep_or_cancel(UPKEEP_INTERVAL, &token).await {
            if let Some(handle) = crate::metrics::handle() {
                handle.run_upkeep();
            }
        }
    });
}

/// Pings InfluxDB every second and reports the outcome as `health`'s `influxdb` check.
pub fn supervise_influx_probe(supervisor: &mut Supervisor, influx: InfluxClient, health: &Health) {
    let token = supervisor.token();
    let check = health.check("influxdb");
    supervisor.spawn_until_stopped("influxdb-probe", async move {
        loop {
            let pinged = tokio::select! {
                pinged = tokio::time::timeout(PING_TIMEOUT, influx.ping()) => pinged,
                _ = token.cancelled() => return,
            };
            match pinged {
                Ok(Ok(())) => check.ok(),
                Ok(Err(error)) => check.failed(error.to_string()),
                Err(_) => check.failed(format!(
                    "no answer to /ping within {} s (InfluxDB hung?)",
                    PING_TIMEOUT.as_secs()
                )),
            }
            if !sleep_or_cancel(INTERVAL, &token).await {
                return;
            }
        }
    });
}

/// The admin routes over the health of `roles` (one, or the four under `up`).
pub fn router(roles: Vec<Health>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "no such endpoint; try /livez, /readyz or /metrics"})),
            )
        })
        .with_state(roles)
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn livez(State(roles): State<Vec<Health>>) -> Response {
    let problems: serde_json::Map<String, serde_json::Value> = roles
        .iter()
        .filter_map(|h| {
            h.liveness()
                .err()
                .map(|why| (h.role().to_owned(), why.into()))
        })
        .collect();
    let live = problems.is_empty();
    let body = if live {
        json!({"live": true})
    } else {
        json!({"live": false, "problems": problems})
    };
    (status(live), axum::Json(body)).into_response()
}

async fn readyz(State(roles): State<Vec<Health>>) -> Response {
    let body = match roles.as_slice() {
        [one] => {
            let readiness = one.readiness();
            json!({"ready": readiness.ready, "role": one.role(), "checks": readiness.checks})
        }
        many => {
            let by_role: serde_json::Map<String, serde_json::Value> = many
                .iter()
                .map(|h| (h.role().to_owned(), json!(h.readiness())))
                .collect();
            let ready = by_role.values().all(|r| r["ready"] == true);
            let not_ready: Vec<&String> = by_role
                .iter()
                .filter(|(_, r)| r["ready"] != true)
                .map(|(role, _)| role)
                .collect();
            json!({"ready": ready, "not_ready": not_ready, "roles": by_role})
        }
    };
    let ready = body["ready"] == true;
    (status(ready), axum::Json(body)).into_response()
}

async fn metrics(State(roles): State<Vec<Health>>) -> Response {
    for health in &roles {
        health.count_outages();
    }
    let text = crate::metrics::handle().map_or_else(String::new, |handle| handle.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Why `weathervane probe` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url} is not an http://host:port/path URL")]
    Url { url: String },
    #[error("cannot reach {url}: {cause}")]
    Io { url: String, cause: std::io::Error },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: String,
        body: String,
    },
}

/// `GET url` (plain http), within `timeout` in all: `Ok` with the body on a 200.
/// Blocking and dependency-free, for a container healthcheck (`weathervane probe`).
pub fn probe(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let bad = || ProbeError::Url {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let io = |cause| ProbeError::Io {
        url: url.to_owned(),
        cause,
    };
    let deadline = std::time::Instant::now() + timeout;
    let addr = authority
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(bad)?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    let left = || {
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left())).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left())).map_err(io)?;
        match stream.read(&mut chunk).map_err(io)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
        if answer.len() > 1 << 20 || std::time::Instant::now() >= deadline {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("no status")
        .to_owned();
    if status == "200" {
        Ok(body.to_owned())
    } else {
        Err(ProbeError::Status {
            url: url.to_owned(),
            status,
            body: body.chars().take(500).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_admin_address_parses_and_differs() {
        let defaults = [
            STREAMER_ADMIN,
            INGESTER_ADMIN,
            PROCESSOR_ADMIN,
            API_ADMIN,
            UP_ADMIN,
        ];
        let ports: std::collections::HashSet<u16> = defaults
            .iter()
            .map(|d| AdminArgs::default().addr_or(d).port)
            .collect();
        assert_eq!(ports.len(), defaults.len());
    }

    #[tokio::test]
    async fn readyz_is_503_naming_the_failing_check_then_200_and_probe_agrees() {
        let health = Health::new("ingester", &["redis", "influxdb"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server =
            tokio::spawn(axum::serve(listener, router(vec![health.clone()])).into_future());
        let get = |path: &str| {
            let url = format!("http://127.0.0.1:{port}{path}");
            tokio::task::spawn_blocking(move || probe(&url, Duration::from_secs(2)))
        };
        let answer = get("/readyz").await.unwrap().unwrap_err();
        let ProbeError::Status { status, body, .. } = answer else {
            panic!("{answer}")
        };
        assert_eq!(status, "503");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["ready"], false);
        assert_eq!(body["role"], "ingester");
        assert_eq!(body["checks"]["redis"]["detail"], "not checked yet");

        health.check("redis").ok();
        health.check("influxdb").failed("connection refused");
        let ProbeError::Status { body, .. } = get("/readyz").await.unwrap().unwrap_err() else {
            panic!("not a status")
        };
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["checks"]["redis"]["ok"], true);
        assert_eq!(body["checks"]["influxdb"]["detail"], "connection refused");

        health.check("influxdb").ok();
        let body = get("/readyz").await.unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["ready"], true);
        let live = get("/livez").await.unwrap().unwrap();
        assert!(live.contains("true"), "{live}");
        server.abort();
    }

    #[test]
    fn probe_refuses_what_it_cannot_ask() {
        for url in ["https://h:1/readyz", "h:1", "http:///x", "http://u:p@h:1/"] {
            assert!(matches!(
                probe(url, Duration::from_millis(100)),
                Err(ProbeError::Url { .. })
            ));
        }
    }
}
