//! What keeps clients, one or many, from exhausting the API: the limits (flags with env
//! fallbacks), and the layers around the routes that enforce those of a request (the
//! server, `server`, enforces those of a connection). A query string is bounded, a body is refused, requests in flight are limited (past the
//! limit a request is answered 503 at once, not queued, so a flood cannot pile up waiting
//! requests) and each has a time limit. Every error status, including those of axum's
//! router (405) and tower-http (413), comes back as the API's JSON error.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::{BoxError, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;

use crate::AppError;

/// The largest request body accepted. Only `POST /exports` takes one, a small JSON object
/// (its longest, with 60 states, is about 400 bytes), so one limit serves every route and
/// keeps a client from streaming a body in; a body announced larger is a 413. The request
/// timeout bounds the time to a response's head, not its body: an export download
/// streams for as long as it takes, and frees its request slot as soon as it starts.
pub const MAX_BODY_BYTES: usize = 1024;

#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Seconds a client has to send a request's line and headers, on a new connection or
    /// between requests on a kept-alive one, before the connection is closed.
    #[arg(long, env = "API_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Connections open at once (each costs a file descriptor and up to 16 KiB); past
    /// that a new connection is answered 503 and closed.
    #[arg(long, env = "API_MAX_CONNECTIONS", default_value_t = 1024, value_parser = at_least_one)]
    pub max_connections: usize,
    /// Seconds a request may take before it is answered 503 (two InfluxDB queries of at
    /// most 2 s each fit in the default).
    #[arg(long, env = "API_REQUEST_TIMEOUT", default_value = "5", value_parser = seconds)]
    pub request_timeout: Duration,
    /// Requests answered at once; past that a request is answered 503 with Retry-After.
    #[arg(long, env = "API_MAX_REQUESTS", default_value_t = 64, value_parser = at_least_one)]
    pub max_requests: usize,
    /// Longest query string accepted, in bytes; a longer one is answered 414.
    #[arg(long, env = "API_MAX_QUERY_BYTES", default_value_t = 1024)]
    pub max_query_bytes: usize,
}

/// `routes` behind the request limits, answering every error status as JSON.
pub fn protect(routes: Router, limits: &Limits) -> Router {
    let (max_requests, request_timeout) = (limits.max_requests, limits.request_timeout);
    // One stack around the whole router rather than `Router::layer`, which would give
    // each route a concurrency limit of its own.
    let guarded = ServiceBuilder::new()
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(
            limits.max_query_bytes,
            bound_query,
        ))
        .layer(HandleErrorLayer::new(move |error: BoxError| async move {
            overload(error, max_requests, request_timeout)
        }))
        .load_shed()
        .concurrency_limit(max_requests)
        .timeout(request_timeout)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .service(routes);
    Router::new().fallback_service(guarded)
}

/// The answer for a request the load-shedding, concurrency and timeout layers refused.
fn overload(error: BoxError, max_requests: usize, request_timeout: Duration) -> AppError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        tracing::debug!(max_requests, "Request limit reached; answering 503.");
        AppError::Busy {
            limit: max_requests,
        }
    } else if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!(timeout = ?request_timeout, "Request timed out; answering 503.");
        AppError::TimedOut(request_timeout)
    } else {
        tracing::error!(%error, "Request failed in a layer.");
        AppError::Internal
    }
}

/// 414 for a query string over `max` bytes, before it is parsed or holds a request slot.
async fn bound_query(State(max): State<usize>, request: Request, next: Next) -> Response {
    let length = request.uri().query().map_or(0, str::len);
    if length > max {
        return AppError::QueryTooLong { length, limit: max }.into_response();
    }
    next.run(request).await
}

/// Replaces the body of an error response that is not JSON (axum's 405, tower-http's 413)
/// by the API's JSON error, keeping its status and headers (such as `Allow`).
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let error = match status.as_u16() {
        405 => AppError::MethodNotAllowed(method),
        413 => AppError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        },
        _ => AppError::Status(status),
    };
    let (parts, _) = response.into_parts();
    let mut json = error.into_response();
    *json.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

/// A positive, finite number of seconds (fractions allowed).
fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{value:?} is not a positive number of seconds"))
}

fn at_least_one(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{value:?} is not a whole number of at least 1"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tokio::sync::{Notify, mpsc};
    use tower::ServiceExt;

    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            max_connections: 16,
            request_timeout: Duration::from_secs(5),
            max_requests: 2,
            max_query_bytes: 64,
        }
    }

    /// `/` answers at once; `/wait` tells `entered` it is being answered, then waits for
    /// `release` (or forever), so a test can hold request slots.
    fn test_app(limits: &Limits, entered: mpsc::Sender<()>, release: Arc<Notify>) -> Router {
        let routes = Router::new().route("/", get(|| async { "ok" })).route(
            "/wait",
            get(move || async move {
                entered.send(()).await.unwrap();
                release.notified().await;
                "done"
            }),
        );
        protect(routes, limits)
    }

    async fn send(
        app: &Router,
        request: Request<Body>,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (parts.status, parts.headers, json)
    }

    fn get_request(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn error_of(json: &serde_json::Value) -> &str {
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not a JSON error: {json}"))
    }

    #[tokio::test]
    async fn wrong_method_is_405_json_and_keeps_allow() {
        let (entered, _) = mpsc::channel(1);
        let app = test_app(&limits(), entered, Arc::new(Notify::new()));
        let (status, headers, json) =
            send(&app, Request::post("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(error_of(&json).contains("POST"), "{json}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let allow = headers[header::ALLOW].to_str().unwrap();
        assert!(allow.contains("GET"), "Allow: {allow}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_json() {
        let (entered, _) = mpsc::channel(1);
        let app = test_app(&limits(), entered, Arc::new(Notify::new()));
        let body = vec![b'x'; MAX_BODY_BYTES + 1];
        let request = Request::get("/")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let (status, headers, json) = send(&app, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(
            error_of(&json).contains(&MAX_BODY_BYTES.to_string()),
            "{json}"
        );
    }

    #[tokio::test]
    async fn a_query_string_over_the_limit_is_414_json_naming_it() {
        let (entered, _) = mpsc::channel(1);
        let app = test_app(&limits(), entered, Arc::new(Notify::new()));
        let at_limit = format!("/?q={}", "x".repeat(62));
        assert_eq!(send(&app, get_request(&at_limit)).await.0, StatusCode::OK);
        let over = format!("/?q={}", "x".repeat(63));
        let (status, _, json) = send(&app, get_request(&over)).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG);
        assert_eq!(
            error_of(&json),
            "the query string is 65 bytes, more than the 64 accepted"
        );
    }

    #[tokio::test]
    async fn past_the_request_limit_is_503_json_with_retry_after_until_a_slot_frees() {
        let (entered, mut entered_rx) = mpsc::channel(2);
        let release = Arc::new(Notify::new());
        let app = test_app(&limits(), entered, release.clone());
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(send_owned(app.clone(), "/wait")))
            .collect();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), entered_rx.recv())
                .await
                .expect("both slow requests started");
        }
        for uri in ["/", "/wait", "/nope"] {
            let (status, headers, json) = send(&app, get_request(uri)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert_eq!(headers[header::RETRY_AFTER], "1");
            assert!(error_of(&json).contains("limit"), "{json}");
        }
        release.notify_waiters();
        for request in held {
            let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), request)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(send(&app, get_request("/")).await.0, StatusCode::OK);
    }

    async fn send_owned(
        app: Router,
        uri: &'static str,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        send(&app, get_request(uri)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_time_is_503_json_and_frees_its_slot() {
        let (entered, _entered_rx) = mpsc::channel(4);
        let app = test_app(&limits(), entered, Arc::new(Notify::new()));
        let started = tokio::time::Instant::now();
        let (status, headers, json) = send(&app, get_request("/wait")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert!(error_of(&json).contains("5s"), "{json}");
        // Twice the limit of timed-out requests in a row: each gave its slot back.
        for _ in 0..4 {
            assert_eq!(
                send(&app, get_request("/wait")).await.0,
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        assert_eq!(send(&app, get_request("/")).await.0, StatusCode::OK);
    }

    #[test]
    fn limits_must_be_positive() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "NaN", "inf", "soon"] {
            assert!(seconds(bad).unwrap_err().contains(bad), "{bad}");
        }
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
    }
}
