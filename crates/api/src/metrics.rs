//! The API's request metrics: [`count`], layered around the whole app (outside the
//! request limits, so their 503s and 414s count too), counts every answer by endpoint and
//! status (`weathervane_api_http_requests_total{endpoint,status}`) and times it
//! (`weathervane_api_http_request_duration_seconds{endpoint}`); [`mark_route`], a route
//! layer, tells it which route answered. The endpoint label is the route's path as
//! declared (`/avg`), so its values are bounded by the routes; an answer no route gave
//! (an unknown path, a request the limits refused) is `other`. Also the role's admin side
//! (health and the InfluxDB probe beside the API server).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use weathervane_core::admin::{self, RoleAdmin};
use weathervane_core::influx::InfluxClient;
use weathervane_core::metrics;
use weathervane_core::supervise::Supervisor;

/// The role's name: its metrics' prefix and its health's.
pub const ROLE: &str = "api";
/// What its readiness checks: InfluxDB answering (it never talks to Redis).
pub const CHECKS: &[&str] = &["influxdb"];
/// The label of an answer no route gave (so junk paths cannot add series).
const OTHER: &str = "other";

/// Which route answered, handed from [`mark_route`] to [`count`] in the response.
#[derive(Clone, Debug)]
struct Route(String);

/// The route layer that names the route in its answer:
/// `.route_layer(axum::middleware::from_fn(metrics::mark_route))`.
pub async fn mark_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| Route(path.as_str().to_owned()));
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// The middleware that counts requests:
/// `router.layer(axum::middleware::from_fn(metrics::count))`.
pub async fn count(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let endpoint = response
        .extensions()
        .get::<Route>()
        .map_or(OTHER, |route| route.0.as_str())
        .to_owned();
    let status = response.status().as_u16().to_string();
    metrics::histogram(
        ROLE,
        "http_request_duration_seconds",
        &[("endpoint", &endpoint)],
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter(
        ROLE,
        "http_requests_total",
        &[("endpoint", &endpoint), ("status", &status)],
    )
    .increment(1);
    response
}

/// A cache lookup's outcome, counted.
pub fn count_cache(hit: bool) {
    let name = if hit {
        "cache_hits_total"
    } else {
        "cache_misses_total"
    };
    metrics::counter(ROLE, name, &[]).increment(1);
}

/// Spawns the role's watchdog, its admin server (when alone) and its InfluxDB probe.
pub fn supervise_admin(supervisor: &mut Supervisor, admin: RoleAdmin, influx: InfluxClient) {
    let health = admin.supervise(supervisor);
    admin::supervise_influx_probe(supervisor, influx, &health);
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::middleware::from_fn;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn answers_are_counted_by_the_route_that_gave_them_and_junk_paths_share_one_label() {
        let text = metrics::capture(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                // As the api wires it: the routes inside a fallback service (the limits),
                // the counter around everything.
                let routes = Router::new()
                    .route("/avg", get(|| async { "ok" }))
                    .fallback(|| async { (StatusCode::NOT_FOUND, "no") })
                    .route_layer(from_fn(mark_route));
                let app = Router::new().fallback_service(routes).layer(from_fn(count));
                for uri in ["/avg?state=CA", "/avg", "/no/such/1", "/no/such/2"] {
                    let request = Request::get(uri).body(Body::empty()).unwrap();
                    app.clone().oneshot(request).await.unwrap();
                }
            });
        });
        for line in [
            r#"weathervane_api_http_requests_total{endpoint="/avg",status="200"} 2"#,
            r#"weathervane_api_http_requests_total{endpoint="other",status="404"} 2"#,
            r#"weathervane_api_http_request_duration_seconds_count{endpoint="/avg"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("/no/such"), "{text}");
    }
}
