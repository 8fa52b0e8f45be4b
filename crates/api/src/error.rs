//! `AppError`: every failure of a request, mapped to a status and a JSON body. Internal
//! details are logged, not shown.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weathervane_core::influx::InfluxError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("InfluxDB is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl From<InfluxError> for AppError {
    fn from(error: InfluxError) -> Self {
        match error {
            InfluxError::Unavailable { .. } => {
                tracing::warn!(%error, "Answering 503.");
                AppError::Unavailable
            }
            InfluxError::DatabaseNotFound { .. } => AppError::NotFound("no reports yet".into()),
            error => {
                tracing::error!(%error, "Query failed.");
                AppError::Internal
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
