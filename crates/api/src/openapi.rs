//! The API's description: every route is registered here through `utoipa_axum`, so the
//! router and the OpenAPI document (`GET /openapi.json`) come from the same handlers and
//! cannot drift apart; the types only the document needs (query parameters, error bodies,
//! the per-metric shape of extremes); and `GET /docs`, a self-contained page (embedded,
//! no CDN) that lists the document's endpoints and tries them.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::answer::{StateHolder, ZipHolder};
use crate::{AppState, dashboard, discovery, exports, reports};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WeatherVane API",
        description = "Hourly weather reports per US state (averages, zip-code extremes, state extremes), computed by the WeatherVane pipeline and read from InfluxDB. Every endpoint answers GET only, except the export jobs (`/exports`: POST to queue, DELETE to cancel). Errors are JSON `{\"error\": \"...\"}` naming the parameter or the cause. Report endpoints answer CSV with `format=csv` or `Accept: text/csv`."
    ),
    // Named by `ErrorResponses` only, which does not register it.
    components(schemas(ErrorBody)),
    tags(
        (name = "reports", description = "The hourly reports, one hour or a whole day"),
        (name = "discovery", description = "Which dates, hours and states have reports, and the pipeline's progress"),
        (name = "exports", description = "Export jobs: CSV of raw rows or reports over a date range, run in the background, cancellable, downloaded with Range"),
        (name = "pages", description = "Pages for people: the dashboard, this document and its explorer")
    )
)]
struct ApiDoc;

/// Every route of the API, each with its OpenAPI description.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(root))
        .routes(routes!(reports::avg))
        .routes(routes!(reports::extremes))
        .routes(routes!(reports::state_extremes))
        .routes(routes!(discovery::dates))
        .routes(routes!(discovery::hours))
        .routes(routes!(discovery::states))
        .routes(routes!(discovery::status))
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(dashboard::exports_script))
        .routes(routes!(dashboard::uploads_script))
        .routes(routes!(dashboard::config))
        .routes(routes!(exports::routes::create, exports::routes::list))
        .routes(routes!(exports::routes::status, exports::routes::cancel))
        .routes(routes!(exports::routes::file))
}

/// The routes, for `routes` in lib.rs.
pub fn routes() -> Router<AppState> {
    api_router().split_for_parts().0
}

/// The OpenAPI document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The document as served: built once, it depends on the code only.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// Says the API is online.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    responses((status = 200, description = "The API is online", body = String, content_type = "text/plain"))
)]
async fn root() -> &'static str {
    "WeatherVane API is online.\n"
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "pages",
    responses((status = 200, description = "The OpenAPI document of every endpoint", content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// A page that lists every endpoint of this document, with a form to try each.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "pages",
    responses((status = 200, description = "The API explorer (HTML, works offline)", content_type = "text/html"))
)]
async fn docs() -> Html<&'static str> {
    Html(include_str!("assets/docs.html"))
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the parameter or the cause.
    #[schema(example = "hour \"24\" is not an hour 0-23 such as 05")]
    pub error: String,
}

/// The errors every data endpoint may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its OpenAPI description is used; `AppError` is what answers.
pub enum ErrorResponses {
    /// A parameter is missing, malformed or given twice; the error names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No report for what was asked (or no reports yet).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// InfluxDB cannot be reached, or the API is at its limits; come back after
    /// `Retry-After` seconds.
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds to wait before asking again")))]
    Unavailable(ErrorBody),
}

/// The query of `/avg` and `/extremes`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its OpenAPI description is used; `params` validates.
pub struct ReportQuery {
    /// Two-letter state code, any case.
    #[param(example = "CA")]
    state: String,
    /// Hour of the day, 0-23 (`05` or `5`). Without it, `date` is required and the answer
    /// is every reported hour of that date.
    #[param(example = "05", pattern = "^[0-9]{1,2}$")]
    hour: Option<String>,
    /// UTC date `YYYY-MM-DD` (1678-2261). With `hour` and without `date`: the latest date
    /// that has a report for that hour.
    #[param(value_type = Option<String>, format = Date, example = "2023-09-19")]
    date: Option<String>,
    /// `json` (the default) or `csv`; without it, `Accept: text/csv` asks for CSV.
    #[param(value_type = Option<String>, pattern = "^(?i)(csv|json)$")]
    format: Option<String>,
}

/// The query of `/state_extremes`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its OpenAPI description is used; `params` validates.
pub struct StateExtremesQuery {
    /// Hour of the day, 0-23 (`05` or `5`). Without it, `date` is required and the answer
    /// is every reported hour of that date.
    #[param(example = "05", pattern = "^[0-9]{1,2}$")]
    hour: Option<String>,
    /// UTC date `YYYY-MM-DD` (1678-2261). With `hour` and without `date`: the latest date
    /// that has a report for that hour.
    #[param(value_type = Option<String>, format = Date, example = "2023-09-19")]
    date: Option<String>,
    /// `json` (the default) or `csv`; without it, `Accept: text/csv` asks for CSV.
    #[param(value_type = Option<String>, pattern = "^(?i)(csv|json)$")]
    format: Option<String>,
}

/// The per-metric holders of one side, in the order temp_c, pressure_mb, humidity,
/// precip_mm (`answer::Sides` serialized).
#[derive(ToSchema)]
#[allow(dead_code)] // A description of `Sides<ZipHolder>`'s JSON.
pub struct ZipByMetric {
    temp_c: ZipHolder,
    pressure_mb: ZipHolder,
    humidity: ZipHolder,
    precip_mm: ZipHolder,
}

/// The highest (`max`) and lowest (`min`) zip code of each metric.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ZipSides {
    max: ZipByMetric,
    min: ZipByMetric,
}

/// The per-metric holders of one side (`answer::Sides` serialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StateByMetric {
    temp_c: StateHolder,
    pressure_mb: StateHolder,
    humidity: StateHolder,
    precip_mm: StateHolder,
}

/// The state with the highest (`max`) and lowest (`min`) average of each metric.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StateSides {
    max: StateByMetric,
    min: StateByMetric,
}

#[cfg(test)]
mod tests {
    use weathervane_core::row::Metric;

    use super::*;

    #[test]
    fn the_document_is_openapi_3_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
        for path in [
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
            "/dashboard/app.js",
            "/dashboard/style.css",
            "/dashboard/uploads.js",
            "/dashboard/config.json",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path} missing");
        }
        let params: Vec<&str> = doc["paths"]["/avg"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["state", "hour", "date", "format"]);
        let responses = &doc["paths"]["/avg"]["get"]["responses"];
        for status in ["200", "400", "404", "503"] {
            assert!(responses[status].is_object(), "/avg {status}");
        }
        assert!(responses["503"]["headers"]["Retry-After"].is_object());
        assert!(responses["200"]["content"]["text/csv"].is_object());
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(reference) = map.get("$ref").and_then(|r| r.as_str()) {
                        found.push(reference);
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                serde_json::Value::Array(list) => list.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 10, "{found:?}");
        for reference in found {
            let name = reference.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{reference} does not resolve"
            );
        }
    }

    #[test]
    fn the_described_metrics_are_the_schema_metrics() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT_JSON).unwrap();
        for by_metric in ["ZipByMetric", "StateByMetric"] {
            let schema = &doc["components"]["schemas"][by_metric];
            let names: Vec<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut want: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            let mut names = names;
            names.sort_unstable();
            want.sort_unstable();
            assert_eq!(names, want, "{by_metric}");
        }
    }
}
