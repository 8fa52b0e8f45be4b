//! `AppError`: every failure of a request, mapped to a status and a JSON body. Internal
//! details are logged, not shown.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weathervane_core::influx::InfluxError;

/// What a client told to come back later (503 for overload) should wait, in seconds: long
/// enough that a retrying crowd does not keep the limit full, short for a single client.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed here; the API answers GET, and POST or DELETE on /exports")]
    MethodNotAllowed(Method),
    #[error("the request has a body of more than {limit} bytes, more than any endpoint takes")]
    BodyTooLarge { limit: usize },
    #[error("the query string is {length} bytes, more than the {limit} accepted")]
    QueryTooLong { length: usize, limit: usize },
    #[error("InfluxDB is unavailable; try again shortly")]
    Unavailable,
    #[error("the API is already answering {limit} requests, its limit; try again shortly")]
    Busy { limit: usize },
    #[error("the API has {limit} connections open, its limit; try again shortly")]
    TooManyConnections { limit: usize },
    #[error("the request took longer than {0:?} to answer; try again shortly")]
    TimedOut(Duration),
    #[error("internal error")]
    Internal,
    /// Any other error status, from a layer that answers without a body of ours.
    #[error("{}", .0.canonical_reason().unwrap_or("error").to_lowercase())]
    Status(StatusCode),
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

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::QueryTooLong { .. } => StatusCode::URI_TOO_LONG,
            AppError::Unavailable
            | AppError::Busy { .. }
            | AppError::TooManyConnections { .. }
            | AppError::TimedOut(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Status(status) => *status,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        // Overload and InfluxDB outages pass by themselves (the roles ride them out): say
        // when to come back, so clients need not guess.
        if matches!(
            self,
            AppError::Busy { .. }
                | AppError::TooManyConnections { .. }
                | AppError::TimedOut(_)
                | AppError::Unavailable
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
