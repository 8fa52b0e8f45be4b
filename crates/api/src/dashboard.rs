//! `GET /dashboard`: a page for people, served offline. The HTML, CSS and script are
//! embedded in the binary (`assets/`); the script fetches the JSON endpoints (`/dates`,
//! `/status`, `/states`, `/avg`, `/extremes`, `/state_extremes`) and draws SVG line charts
//! and tables, every drawn point and cell carrying its value in a `data-` attribute. Its
//! second script, `exports.js`, is the export form and job list (`/exports`); its third,
//! `uploads.js`, is the upload box: a tus client that sends a CSV in chunks to the
//! streamer's upload server, whose public URL the page reads from `/dashboard/config.json`
//! (`--upload-url`; no URL, no box).

use axum::Extension;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

/// What the dashboard's scripts need to know about the deployment.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct DashboardConfig {
    /// The public base URL of the streamer's upload server (`--upload-url`), to which the
    /// upload box sends `/uploads`; null: no upload box.
    pub upload_url: Option<String>,
    /// Whether the page takes test-only query parameters (`upload_from`: a URL whose file
    /// the upload box sends as if picked). Only the end-to-end tests turn this on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_hooks: bool,
}

/// The dashboard's settings (`upload_url`).
#[utoipa::path(
    get,
    path = "/dashboard/config.json",
    tag = "pages",
    responses((status = 200, description = "The dashboard's settings", body = DashboardConfig))
)]
pub async fn config(config: Option<Extension<DashboardConfig>>) -> impl IntoResponse {
    let config = config.map(|Extension(c)| c).unwrap_or_default();
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(config))
}

/// The dashboard's upload box (a tus client).
#[utoipa::path(
    get,
    path = "/dashboard/uploads.js",
    tag = "pages",
    responses((status = 200, description = "The dashboard's upload box (a tus client)", content_type = "text/javascript"))
)]
pub async fn uploads_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/uploads.js"),
    )
}

/// The dashboard: a date's averages per state across the hours, an hour's extremes and
/// the pipeline's progress.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "pages",
    responses((status = 200, description = "The dashboard (HTML; its script and style are served below)", content_type = "text/html"))
)]
pub async fn page() -> Html<&'static str> {
    Html(include_str!("assets/dashboard.html"))
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "pages",
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript"))
)]
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/dashboard.js"),
    )
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "pages",
    responses((status = 200, description = "The dashboard's style sheet", content_type = "text/css"))
)]
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/dashboard.css"),
    )
}

/// The dashboard's export form and job list.
#[utoipa::path(
    get,
    path = "/dashboard/exports.js",
    tag = "pages",
    responses((status = 200, description = "The dashboard's export form and job list", content_type = "text/javascript"))
)]
pub async fn exports_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/exports.js"),
    )
}
