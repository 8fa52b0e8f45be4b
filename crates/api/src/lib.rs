//! The HTTP API: `/`, `/avg`, `/extremes`, `/state_extremes` over the reports in
//! InfluxDB, the discovery endpoints (`discovery`), `/openapi.json` and `/docs`
//! (`openapi`, which registers every route) and `/dashboard` (`dashboard`). Every parameter is validated before it reaches InfluxQL; errors are JSON
//! `{"error": ...}` with 400 (bad parameter), 404 (no such report or endpoint), 405, 413,
//! 414 (past a limit, see `limits`) or 503 (InfluxDB unreachable, answered within the
//! query timeout, or the API at its request limit or past its request timeout).
//!
//! It reads reports only and never writes: each replica holds the newest reports in
//! memory (`store`), kept current by the processor's `reports` messages, to which it only
//! subscribes, and by catching up from InfluxDB (`herd`); it answers those from memory,
//! with InfluxDB up or down, and asks InfluxDB only for what it does not hold. Its
//! `/readyz` is ready once it has warmed up (loaded the reports within its budget); an
//! InfluxDB or Redis outage shows there but does not make it unready.
//!
//! Export jobs (`exports`: `/exports`, CSV of raw rows or reports, queued in Redis and run
//! by any replica) are its other use of Redis and its one write: files in `--export-dir`.

mod answer;
mod cache;
mod cors;
mod dashboard;
mod discovery;
mod error;
pub mod exports;
mod herd;
mod limits;
mod metrics;
mod openapi;
mod params;
mod reports;
mod server;
mod store;
mod table;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;
use weathervane_core::admin::{API_ADMIN, AdminArgs, AdminError, RoleAdmin};
use weathervane_core::bus::{self, BusError, Subscription};
use weathervane_core::channel::Pattern;
use weathervane_core::config::{InfluxArgs, RedisArgs};
use weathervane_core::health::{self, Health};
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::supervise::{Supervisor, TaskFailed};

pub use crate::cache::ReportCache;
pub use crate::cors::CorsOrigins;
pub use crate::error::AppError;
use crate::exports::{ExportArgs, ExportSetupError, Exports};
pub use crate::limits::{Limits, MAX_BODY_BYTES};
pub use crate::metrics::CHECKS;
pub use crate::server::serve;
pub use crate::store::{ReportStore, StoreArgs};
/// Moved to core, where every role's admin address parses the same way.
pub use weathervane_core::listen::ListenAddr;

/// Long enough for a loaded InfluxDB, short enough that a client gets its 503 quickly.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long requests in flight may take after shutdown begins: a request waiting on a
/// hung InfluxDB must not hold the process past its 2 s to exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

#[derive(Clone, Debug, clap::Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub influx: InfluxArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub serve: ServeOptions,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub exports: ExportArgs,
}

/// Where and how the API serves; separate from the InfluxDB settings so `weathervane up`
/// can reuse it.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeOptions {
    /// Address the API listens on: host:port (a name such as localhost, or an IP; [::1]:9000
    /// for IPv6), or a bare port (9000 or :9000) on 127.0.0.1. 0.0.0.0:9000 listens on
    /// every interface.
    #[arg(long = "api-addr", env = "API_ADDR", default_value = "127.0.0.1:9000")]
    pub addr: ListenAddr,
    /// Seconds a report answer is served from memory before InfluxDB is asked again
    /// (0 = always ask).
    #[arg(long, env = "API_CACHE_TTL", default_value_t = 10)]
    pub cache_ttl: u64,
    #[command(flatten)]
    pub limits: Limits,
    /// Origins that browsers may read the API from (CORS): a list (repeat the flag, or
    /// commas), or * for any. None (the default): no CORS headers at all.
    #[arg(long = "cors-origin", env = "API_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', value_parser = cors_item)]
    pub cors_origins: Vec<String>,
    /// What each replica holds in memory, and how often it catches up.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Public base URL of the streamer's upload server (`--upload-addr`), as a browser
    /// reaches it (http://host:port, no path): the dashboard's upload box sends tus uploads
    /// there. The streamer must allow the api's origin (`--upload-cors-origin`). None (the
    /// default): no upload box.
    #[arg(long = "upload-url", env = "API_UPLOAD_URL", value_parser = upload_url)]
    pub upload_url: Option<String>,
    /// Test-only: the dashboard takes `upload_from=URL` and uploads that file as if picked
    /// (the end-to-end test drives the real page this way).
    #[arg(
        long = "dashboard-test-hooks",
        env = "API_DASHBOARD_TEST_HOOKS",
        hide = true
    )]
    pub dashboard_test_hooks: bool,
}

/// `--upload-url`: http(s)://host[:port], with no path (a trailing slash is dropped).
fn upload_url(value: &str) -> Result<String, String> {
    let trimmed = value.trim().trim_end_matches('/');
    CorsOrigins::from_list(&[trimmed.to_owned()])
        .ok()
        .filter(|origins| matches!(origins, CorsOrigins::List(_)))
        .map(|_| trimmed.to_owned())
        .ok_or_else(|| {
            format!(
                "{value:?} is not the base URL of an upload server such as http://127.0.0.1:9200 (scheme, host and port, no path)"
            )
        })
}

impl ServeOptions {
    /// The CORS origins given.
    pub fn cors(&self) -> Result<CorsOrigins, String> {
        CorsOrigins::from_list(&self.cors_origins)
    }
}

use weathervane_core::cors::parse_item as cors_item;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("--cors-origin: {0}")]
    Cors(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error(transparent)]
    Exports(#[from] ExportSetupError),
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub influx: InfluxClient,
    pub cache: Arc<ReportCache>,
    /// The reports this replica holds in memory.
    pub store: herd::SharedStore,
}

/// The api's health: ready once warmed up; InfluxDB and Redis are shown (and their
/// outages counted) but do not make it unready, since it answers from memory meanwhile.
pub fn api_health() -> Health {
    Health::new(metrics::ROLE, &["influxdb", "redis", health::WARMED])
        .informational(&["influxdb", "redis"])
}

/// The routes behind the request limits.
pub fn app(state: AppState, limits: &Limits) -> Router {
    limits::protect(routes(state), limits).layer(axum::middleware::from_fn(metrics::count))
}

fn routes(state: AppState) -> Router {
    Router::new()
        .merge(openapi::routes())
        .fallback(|| async {
            AppError::NotFound(
                "no such endpoint; try /avg, /extremes or /state_extremes, or see /docs".into(),
            )
        })
        .route_layer(axum::middleware::from_fn(metrics::mark_route))
        .with_state(state)
}

/// Serves until `shutdown`, then finishes the requests in flight.
pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> Result<(), ApiError> {
    let admin = RoleAdmin::serve_health(api_health, &config.admin, API_ADMIN).await?;
    run_with(config, shutdown, admin).await
}

/// [`run`] under `weathervane up`: the shared admin server shows `health`.
pub async fn run_shared(
    config: ApiConfig,
    shutdown: CancellationToken,
    health: Health,
) -> Result<(), ApiError> {
    run_with(config, shutdown, RoleAdmin::shared(health)).await
}

async fn run_with(
    config: ApiConfig,
    shutdown: CancellationToken,
    admin: RoleAdmin,
) -> Result<(), ApiError> {
    let cors = config.serve.cors().map_err(ApiError::Cors)?;
    let influx = InfluxClient::new(&config.influx, QUERY_TIMEOUT)?.with_metrics(metrics::ROLE);
    let subscription = Subscription::new(&config.redis, &[Pattern::Reports])?
        .with_health(admin.health.check("redis"));
    bus::check_certificates(&config.redis).await?;
    influx.check_certificates().await?;
    let store_args = &config.serve.store;
    let state = AppState {
        influx,
        cache: Arc::new(ReportCache::new(Duration::from_secs(
            config.serve.cache_ttl,
        ))),
        store: Arc::new(std::sync::Mutex::new(ReportStore::new(store_args))),
    };
    let exports = Exports::new(
        &config.exports,
        &config.redis,
        InfluxClient::new(&config.influx, exports::CHUNK_QUERY_TIMEOUT)?
            .with_metrics(metrics::ROLE),
    )?;
    let warmed = admin.health.check(health::WARMED);
    let addr = &config.serve.addr;
    let listener = tokio::net::TcpListener::bind((addr.host.as_str(), addr.port))
        .await
        .map_err(|source| ApiError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    tracing::info!(%addr, "API listening.");
    let mut supervisor = Supervisor::new();
    metrics::supervise_admin(&mut supervisor, admin, state.influx.clone());
    let token = supervisor.token();
    supervisor.spawn_until_stopped(
        "export-worker",
        exports::runner::work(exports.clone(), token),
    );
    let token = supervisor.token();
    supervisor.spawn_until_stopped(
        "export-sweep",
        exports::runner::sweep(exports.clone(), exports::SWEEP_EVERY, token),
    );
    herd::supervise(
        &mut supervisor,
        subscription,
        state.store.clone(),
        state.influx.clone(),
        config.redis.deployment(),
        warmed,
        Duration::from_secs_f64(store_args.catch_up_interval),
    );
    let (limits, token) = (config.serve.limits.clone(), supervisor.token());
    let dashboard_config = dashboard::DashboardConfig {
        upload_url: config.serve.upload_url.clone(),
        test_hooks: config.serve.dashboard_test_hooks,
    };
    supervisor.spawn_until_stopped("api-server", async move {
        serve(
            listener,
            cors::allow(
                app(state, &limits)
                    .layer(axum::Extension(exports))
                    .layer(axum::Extension(dashboard_config)),
                &cors,
            ),
            &limits,
            token,
            SHUTDOWN_GRACE,
        )
        .await
    });
    supervisor.run(&shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// An app whose InfluxDB is a closed loopback port: every query fails to connect.
    fn app_without_influx() -> Router {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = InfluxArgs::plain(format!("http://127.0.0.1:{port}"), "weather");
        app(
            AppState {
                influx: InfluxClient::new(&args, QUERY_TIMEOUT).unwrap(),
                cache: Arc::new(ReportCache::new(Duration::from_secs(10))),
                store: Arc::new(std::sync::Mutex::new(ReportStore::new(
                    &StoreArgs::default(),
                ))),
            },
            &Limits {
                header_timeout: Duration::from_secs(10),
                max_connections: 16,
                request_timeout: Duration::from_secs(5),
                max_requests: 8,
                max_query_bytes: 1024,
            },
        )
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn send(request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app_without_influx().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[test]
    fn listen_addresses_take_names_ips_and_bare_ports() {
        let addr = |text: &str| text.parse::<ListenAddr>().map(|a| a.to_string());
        assert_eq!(addr("127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(addr("localhost:9000").unwrap(), "localhost:9000");
        assert_eq!(addr(":9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(addr("9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(addr("0.0.0.0:80").unwrap(), "0.0.0.0:80");
        assert_eq!(addr("[::1]:9000").unwrap(), "[::1]:9000");
        for bad in [
            "",
            "localhost",
            "host:99999",
            "a b:9000",
            ":x",
            "http://h:1",
        ] {
            let error = addr(bad).unwrap_err();
            assert!(error.contains("host:port"), "{bad:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_when_binding() {
        let addr: ListenAddr = "localhost:0".parse().unwrap();
        let listener = tokio::net::TcpListener::bind((addr.host.as_str(), addr.port))
            .await
            .unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
    }

    #[tokio::test]
    async fn root_says_online() {
        let response = app_without_influx()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("online"));
    }

    #[tokio::test]
    async fn bad_parameters_are_400_with_a_json_error_before_any_query() {
        for uri in [
            "/avg?state=CA%27%20OR%20%271%27=%271&hour=05",
            "/avg?state=CA&hour=24",
            "/avg?state=CA&hour=ab",
            "/avg?hour=05",
            "/extremes?state=CA",
            "/state_extremes?hour=5&date=2023-13-01",
            "/state_extremes?hour=5&date=0001-01-01",
            "/avg?state=CA&hour=5&date=9999-12-31",
            "/avg?state=CA&hour=5&hour=6",
            "/state_extremes?hour=5&date=2023-09-19&date=2023-09-20",
            "/avg?state=CA",
            "/avg?state=CA&date=2023-09-19&format=xml",
            "/extremes?state=CA&date=2023-9-19",
            "/state_extremes?format=csv",
            "/dates?date=2023-09-19",
            "/hours?date=19.09.2023",
            "/states?hour=25",
            "/states?date=2023-09-19&state=CA",
            "/status?dat=2023-09-19",
        ] {
            let (status, body) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{uri}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn unreachable_influxdb_is_503_with_a_json_error() {
        for uri in [
            "/avg?state=CA&hour=05&date=2023-09-19",
            "/extremes?state=CA&hour=5",
            "/state_extremes?hour=23",
            "/avg?state=CA&date=2023-09-19",
            "/extremes?state=CA&date=2023-09-19&format=csv",
            "/state_extremes?date=2023-09-19",
            "/dates",
            "/hours",
            "/states?date=2023-09-19",
            "/status?date=2023-09-19",
        ] {
            let response = app_without_influx()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                Some("1"),
                "{uri}: a 503 says when to come back"
            );
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("unavailable"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_404_json() {
        let (status, body) = get("/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].is_string());
    }

    #[tokio::test]
    async fn each_bad_parameter_is_named_in_its_400() {
        for (uri, named) in [
            ("/avg?state=CA", "hour"),
            ("/avg?state=CA&date=2023-09-19&format=xml", "format"),
            ("/hours?date=19.09.2023", "date"),
            ("/states?hour=25", "hour"),
            ("/status?dat=2023-09-19", "dat"),
            ("/dates?x=1", "x"),
        ] {
            let (status, body) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(named), "{uri}: {error}");
        }
    }

    #[tokio::test]
    async fn the_pages_and_the_document_are_served_without_influxdb() {
        for (uri, content_type, contains) in [
            ("/openapi.json", "application/json", "\"openapi\": \"3.1"),
            ("/docs", "text/html", "/openapi.json"),
            ("/dashboard", "text/html", "/dashboard/app.js"),
            ("/dashboard/app.js", "text/javascript", "/state_extremes"),
            ("/dashboard/style.css", "text/css", "@media"),
            ("/dashboard/uploads.js", "text/javascript", "Upload-Offset"),
            (
                "/dashboard/config.json",
                "application/json",
                "\"upload_url\":null",
            ),
        ] {
            let response = app_without_influx()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let header = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(header.starts_with(content_type), "{uri}: {header}");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            assert!(
                String::from_utf8_lossy(&bytes).contains(contains),
                "{uri} lacks {contains}"
            );
        }
    }

    #[tokio::test]
    async fn cors_is_off_by_default_and_answers_the_origins_given() {
        async fn ask(router: Router, method: &str, origin: &str) -> axum::response::Response {
            let request = Request::builder()
                .method(method)
                .uri("/dates")
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .body(Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap()
        }
        let off = cors::allow(app_without_influx(), &CorsOrigins::Off);
        let response = ask(off, "GET", "https://a.example").await;
        assert!(
            !response
                .headers()
                .keys()
                .any(|name| name.as_str().starts_with("access-control-")),
            "no CORS header at all by default: {:?}",
            response.headers()
        );

        let origins = CorsOrigins::from_list(&["https://a.example".into()]).unwrap();
        let on = || cors::allow(app_without_influx(), &origins);
        let response = ask(on(), "GET", "https://a.example").await;
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let preflight = ask(on(), "OPTIONS", "https://a.example").await;
        assert_eq!(preflight.status(), StatusCode::OK);
        assert!(
            preflight.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("GET")
        );
        let other = ask(on(), "GET", "https://b.example").await;
        assert!(other.headers().get("access-control-allow-origin").is_none());

        let any = cors::allow(app_without_influx(), &CorsOrigins::Any);
        let response = ask(any, "GET", "https://b.example").await;
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
    }

    #[test]
    fn cors_origins_come_from_the_flag_or_the_environment_list() {
        use clap::Parser;
        let cors = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.serve.cors());
        assert_eq!(cors(&["api"]).unwrap(), Ok(CorsOrigins::Off));
        assert_eq!(
            cors(&["api", "--cors-origin", "*"]).unwrap(),
            Ok(CorsOrigins::Any)
        );
        let Ok(Ok(CorsOrigins::List(list))) = cors(&[
            "api",
            "--cors-origin",
            "https://a.example,http://localhost:3000",
            "--cors-origin",
            "https://c.example",
        ]) else {
            panic!("a list of three origins");
        };
        assert_eq!(list.len(), 3);
        let error = cors(&["api", "--cors-origin", "a.example"]).unwrap_err();
        assert!(error.to_string().contains("a.example"), "{error}");
    }

    #[test]
    fn the_upload_url_is_a_base_url_without_a_path() {
        use clap::Parser;
        let url = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.serve.upload_url);
        assert_eq!(url(&["api"]).unwrap(), None);
        assert_eq!(
            url(&["api", "--upload-url", "http://127.0.0.1:9200/"]).unwrap(),
            Some("http://127.0.0.1:9200".into())
        );
        for bad in ["127.0.0.1:9200", "http://h:9200/uploads", "*"] {
            let error = url(&["api", "--upload-url", bad]).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeOptions,
    }

    #[test]
    fn the_limits_have_their_documented_defaults_and_refuse_zero() {
        use clap::Parser;
        let limits = Cli::try_parse_from(["api"]).unwrap().serve.limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections, 1024);
        assert_eq!(limits.request_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_requests, 64);
        assert_eq!(limits.max_query_bytes, 1024);
        let limits = Cli::try_parse_from(["api", "--request-timeout", "0.25"])
            .unwrap()
            .serve
            .limits;
        assert_eq!(limits.request_timeout, Duration::from_millis(250));
        for flag in [
            "--header-timeout",
            "--max-connections",
            "--request-timeout",
            "--max-requests",
        ] {
            let error = Cli::try_parse_from(["api", flag, "0"]).unwrap_err();
            assert!(error.to_string().contains(flag), "{error}");
        }
    }

    #[tokio::test]
    async fn every_route_is_behind_the_limits() {
        for uri in [
            "/",
            "/avg",
            "/extremes",
            "/state_extremes",
            "/dates",
            "/hours",
            "/states",
            "/status",
            "/openapi.json",
            "/docs",
            "/dashboard",
            "/nope",
        ] {
            let (status, body) = send(Request::delete(uri).body(Body::empty()).unwrap()).await;
            let expected = if uri == "/nope" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::METHOD_NOT_ALLOWED
            };
            assert_eq!(status, expected, "{uri}");
            assert!(body["error"].is_string(), "{uri}: {body}");
        }
        let long = format!("/avg?state=CA&hour=5&pad={}", "x".repeat(1024));
        let (status, body) = get(&long).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");
    }
}
