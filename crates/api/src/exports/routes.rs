//! The export routes: create, list, status, cancel, download. When a token is configured
//! every `/exports` route asks for it (`Authorization: Bearer ...`, compared in constant
//! time, never logged): creating and cancelling are writes, and the files hold raw rows
//! the rest of the API does not serve. Errors are the API's JSON `{"error": ...}`.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use utoipa::{IntoParams, ToSchema};

use super::job::{CancelAction, ExportSpec, Job, Status, is_valid_id};
use super::store::StoreError;
use super::{Exports, now_ms};
use crate::metrics::ROLE;

/// Longest job list answered.
const MAX_LIST: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    BadRequest(String),
    #[error("this endpoint needs the export token: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("no export job {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the export queue (Redis) is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for ExportError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => {
                tracing::warn!(%error, "Answering 503.");
                ExportError::Unavailable
            }
            error => {
                tracing::error!(%error, "Export store failed.");
                ExportError::Internal
            }
        }
    }
}

impl IntoResponse for ExportError {
    fn into_response(self) -> Response {
        let status = match self {
            ExportError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ExportError::Unauthorized => StatusCode::UNAUTHORIZED,
            ExportError::NotFound(_) => StatusCode::NOT_FOUND,
            ExportError::Conflict(_) => StatusCode::CONFLICT,
            ExportError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ExportError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        match self {
            ExportError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ExportError::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Whether `headers` carry `token` (any, when none is configured).
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn check(exports: &Exports, headers: &HeaderMap) -> Result<(), ExportError> {
    if authorized(exports.token.as_ref().map(|t| t.expose()), headers) {
        Ok(())
    } else {
        Err(ExportError::Unauthorized)
    }
}

/// The answer to `POST /exports`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub id: String,
    #[schema(value_type = String, example = "queued")]
    pub status: Status,
    /// Where to poll: `/exports/{id}`.
    pub location: String,
}

/// The body of `POST /exports`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Its OpenAPI description only: the body is read by ExportSpec::from_json.
pub struct ExportBody {
    /// `rows` (raw rows, every column) or `reports` (averages and extremes, a `kind` column).
    #[schema(example = "rows")]
    pub what: String,
    /// First date, UTC (YYYY-MM-DD).
    #[schema(example = "2023-09-19")]
    pub from: String,
    /// Last date, included; at most 31 days after `from`.
    #[schema(example = "2023-09-19")]
    pub to: String,
    /// Two-letter state codes; omitted: every state.
    pub states: Option<Vec<String>>,
    /// Only `csv`.
    pub format: Option<String>,
}

fn new_id() -> Result<String, ExportError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| {
        tracing::error!(%error, "No random bytes for an export id.");
        ExportError::Internal
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Queues an export job (CSV of raw rows or reports over a date range).
#[utoipa::path(
    post,
    path = "/exports",
    tag = "exports",
    request_body = ExportBody,
    responses(
        (status = 202, description = "Queued; poll the Location", body = Created),
        (status = 400, description = "A field is missing or malformed; the error names it", body = crate::openapi::ErrorBody),
        (status = 401, description = "The export token is missing or wrong", body = crate::openapi::ErrorBody),
        (status = 503, description = "Redis is unavailable", body = crate::openapi::ErrorBody)
    )
)]
pub async fn create(
    Extension(exports): Extension<Arc<Exports>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ExportError> {
    check(&exports, &headers)?;
    let spec = ExportSpec::from_json(&body).map_err(ExportError::BadRequest)?;
    let job = Job::new(new_id()?, &spec, now_ms());
    exports.store.create(&job).await?;
    weathervane_core::metrics::counter(ROLE, "export_jobs_total", &[("status", "queued")])
        .increment(1);
    tracing::info!(job = %job.id, what = job.what.as_str(), from = %job.from, to = %job.to, "Export job queued.");
    let location = format!("/exports/{}", job.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Created {
            id: job.id.clone(),
            status: job.status,
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// How many jobs, newest first (1-100, default 100).
    pub limit: Option<usize>,
}

/// The export jobs, newest first (jobs expire after the export TTL).
#[utoipa::path(
    get,
    path = "/exports",
    tag = "exports",
    params(ListParams),
    responses(
        (status = 200, description = "The jobs", body = [Job]),
        (status = 401, description = "The export token is missing or wrong", body = crate::openapi::ErrorBody)
    )
)]
pub async fn list(
    Extension(exports): Extension<Arc<Exports>>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Job>>, ExportError> {
    check(&exports, &headers)?;
    let limit = params.limit.unwrap_or(MAX_LIST).clamp(1, MAX_LIST);
    Ok(Json(exports.store.list(limit).await?))
}

async fn find(exports: &Exports, id: &str) -> Result<Job, ExportError> {
    if !is_valid_id(id) {
        return Err(ExportError::NotFound(format!("{id:?}")));
    }
    exports
        .store
        .get(id)
        .await?
        .ok_or_else(|| ExportError::NotFound(id.to_owned()))
}

/// One job: status, progress (hours done of total, and their fraction), rows and bytes.
#[utoipa::path(
    get,
    path = "/exports/{id}",
    tag = "exports",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job (or it expired)", body = crate::openapi::ErrorBody)
    )
)]
pub async fn status(
    Extension(exports): Extension<Arc<Exports>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ExportError> {
    check(&exports, &headers)?;
    Ok(Json(find(&exports, &id).await?))
}

/// Cancels a job: a queued one at once (200), a running one before its next query (202, poll
/// until `cancelled`); a finished one's file is deleted (200).
#[utoipa::path(
    delete,
    path = "/exports/{id}",
    tag = "exports",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled (or already final); the job", body = Job),
        (status = 202, description = "Its runner stops before its next query; the job", body = Job),
        (status = 404, description = "No such job", body = crate::openapi::ErrorBody)
    )
)]
pub async fn cancel(
    Extension(exports): Extension<Arc<Exports>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ExportError> {
    check(&exports, &headers)?;
    let job = find(&exports, &id).await?;
    let now = now_ms().to_string();
    let requested = (
        "cancel_requested_ms",
        job.cancel_requested_ms
            .map_or(now.clone(), |t| t.to_string()),
    );
    let status = match CancelAction::of(job.status) {
        CancelAction::CancelNow | CancelAction::DeleteFile => {
            if job.status == Status::Done {
                let file = exports.file(&id);
                if let Err(error) = tokio::fs::remove_file(&file).await
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(path = %file.display(), %error, "Cannot delete an export file.");
                    return Err(ExportError::Internal);
                }
            }
            exports
                .store
                .update(
                    &id,
                    &[
                        requested,
                        ("status", "cancelled".into()),
                        ("finished_ms", now.clone()),
                        ("updated_ms", now),
                    ],
                )
                .await?;
            StatusCode::OK
        }
        CancelAction::AskRunner => {
            exports
                .store
                .update(&id, &[requested, ("updated_ms", now)])
                .await?;
            StatusCode::ACCEPTED
        }
        CancelAction::Nothing => StatusCode::OK,
    };
    tracing::info!(job = %id, "Export job cancel asked.");
    let job = find(&exports, &id).await?;
    Ok((status, Json(job)).into_response())
}

/// A finished job's CSV, with Content-Length; resumable with `Range: bytes=N-` (206).
#[utoipa::path(
    get,
    path = "/exports/{id}/file",
    tag = "exports",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The CSV", content_type = "text/csv"),
        (status = 206, description = "The requested range of the CSV", content_type = "text/csv"),
        (status = 404, description = "No such job", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job has no file (not finished, failed or cancelled)", body = crate::openapi::ErrorBody),
        (status = 416, description = "The range is outside the file")
    )
)]
pub async fn file(
    Extension(exports): Extension<Arc<Exports>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ExportError> {
    check(&exports, request.headers())?;
    let job = find(&exports, &id).await?;
    if job.status != Status::Done {
        return Err(ExportError::Conflict(format!(
            "export job {id} is {}; its file is served once it is done",
            job.status.as_str()
        )));
    }
    let path = exports.file(&id);
    if !path.exists() {
        return Err(ExportError::Conflict(format!(
            "export job {id} is done but its file has expired or was deleted"
        )));
    }
    let (parts, _) = request.into_parts();
    let request = Request::from_parts(parts, Body::empty());
    let served = ServeFile::new(&path)
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let mut response = served.map(Body::new);
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", job.file_name()))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use http_body_util::BodyExt;
    use weathervane_core::config::{InfluxArgs, RedisArgs};
    use weathervane_core::influx::InfluxClient;

    use super::*;
    use crate::exports::ExportArgs;

    /// The export routes with a token, on a Redis and an InfluxDB that are closed ports:
    /// what is refused before Redis is asked shows here.
    fn app_with_token(dir: &std::path::Path) -> Router {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let args = ExportArgs {
            export_dir: Some(dir.join("exports")),
            max_export_jobs: 1,
            export_ttl: 60,
            export_claim_after: 30,
            export_token_file: Some(token),
        };
        let influx = InfluxClient::new(
            &InfluxArgs::plain(format!("http://127.0.0.1:{closed}"), "weather"),
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let exports = Exports::new(
            &args,
            &RedisArgs::plain(format!("redis://127.0.0.1:{closed}")),
            influx,
        )
        .unwrap();
        crate::openapi::routes()
            .with_state(crate::AppState {
                influx: exports.influx.clone(),
                cache: Arc::new(crate::ReportCache::new(std::time::Duration::from_secs(1))),
                store: Arc::new(std::sync::Mutex::new(crate::store::ReportStore::new(
                    &crate::store::StoreArgs::default(),
                ))),
            })
            .layer(Extension(exports))
    }

    async fn send(
        app: &Router,
        request: axum::http::Request<Body>,
    ) -> (StatusCode, HeaderMap, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    fn post(body: &str, token: Option<&str>) -> axum::http::Request<Body> {
        let mut request = axum::http::Request::post("/exports");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn without_the_token_every_route_is_401_and_with_it_bad_input_is_400_or_404() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_token(dir.path());
        let body = r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19"}"#;
        let (status, headers, text) = send(&app, post(body, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!text.contains("s3cret"));
        let (status, _, _) = send(&app, post(body, Some("wrong"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let id = "0".repeat(32);
        for (method, uri) in [
            ("GET", "/exports".to_owned()),
            ("GET", format!("/exports/{id}")),
            ("DELETE", format!("/exports/{id}")),
            ("GET", format!("/exports/{id}/file")),
        ] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            assert_eq!(
                send(&app, request).await.0,
                StatusCode::UNAUTHORIZED,
                "{method} {uri}"
            );
        }
        // With the token: a bad field is 400 naming it, a malformed id 404, before Redis.
        let bad = r#"{"what":"rows","from":"2023-09-19","to":"2023-08-19"}"#;
        let (status, headers, text) = send(&app, post(bad, Some("s3cret"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(text.contains("\\\"to\\\""), "{text}");
        let request = axum::http::Request::get("/exports/..%2Fsecret")
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, request).await.0, StatusCode::NOT_FOUND);
        // A valid request while Redis is down: 503 with Retry-After, not a hang.
        let (status, headers, _) = send(&app, post(body, Some("s3cret"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }

    #[test]
    fn the_token_is_checked_only_when_configured() {
        let mut headers = HeaderMap::new();
        assert!(authorized(None, &headers));
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert!(!authorized(Some("s3cret"), &headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(Some("s3cret"), &headers));
    }
}
