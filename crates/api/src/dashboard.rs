//! `GET /dashboard`: a page for people, served offline. The HTML, CSS and script are
//! embedded in the binary (`assets/`); the script fetches the JSON endpoints (`/dates`,
//! `/status`, `/states`, `/avg`, `/extremes`, `/state_extremes`) and draws SVG line charts
//! and tables, every drawn point and cell carrying its value in a `data-` attribute. Its
//! second script, `exports.js`, is the export form and job list (`/exports`).

use axum::http::header;
use axum::response::{Html, IntoResponse};

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
