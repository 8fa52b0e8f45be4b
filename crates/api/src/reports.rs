//! The report endpoints: validate, find the hour, answer from the cache or ask InfluxDB,
//! shape the JSON. "No such report" is cached like an answer (briefly, see `cache`), so
//! only the first of many requests for a missing report reaches InfluxDB.

use std::collections::BTreeSet;
use std::future::Future;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::influx::InfluxError;
use weathervane_core::schema;

use crate::answer::{AverageAnswer, ExtremesAnswer, Sides, StateExtremesAnswer};
use crate::cache::{Cached, latest_at};
use crate::params::{self, RawParams};
use crate::{AppError, AppState};

/// The query string as its pairs, in order, so a repeated parameter shows.
type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn raw(query: Params) -> Result<RawParams, AppError> {
    let Query(pairs) = query.map_err(|rejection| {
        AppError::BadRequest(format!("malformed query string: {rejection}"))
    })?;
    params::from_pairs(pairs)
}

/// The hour asked for: `hour` on `date`, or the latest reported hour at `hour` (so one
/// stray future date cannot hide every other hour).
async fn report_hour(
    state: &AppState,
    hour: u32,
    date: Option<NaiveDate>,
) -> Result<HourKey, AppError> {
    if let Some(date) = date {
        return Ok(HourKey::from_date_hour(date, hour).expect("hour was validated to be 0-23"));
    }
    let latest = match state.cache.latest_reported(hour) {
        Some(latest) => latest,
        None => {
            // No database yet means no hour reported yet, an answer to cache like any other.
            let series = match state.influx.query(&schema::reported_hours_query()).await {
                Err(InfluxError::DatabaseNotFound { .. }) => Vec::new(),
                series => series?,
            };
            let hours: BTreeSet<HourKey> = series
                .iter()
                .flat_map(|s| &s.values)
                .filter_map(|row| row.first().and_then(Value::as_i64))
                .filter_map(|secs| chrono::DateTime::from_timestamp(secs, 0))
                .map(HourKey::containing)
                .collect();
            let latest = latest_at(&hours, hour);
            state.cache.set_reported_hours(hours);
            latest
        }
    };
    latest.ok_or_else(|| AppError::NotFound(format!("no report for hour {hour:02} yet")))
}

/// The answer under `key` from the cache, or computed by `answer` and cached; a 404 is
/// cached too (errors that may pass, such as an unreachable InfluxDB, are not).
async fn cached(
    state: &AppState,
    key: String,
    answer: impl Future<Output = Result<impl Serialize, AppError>>,
) -> Result<Response, AppError> {
    let body = match state.cache.get(&key) {
        Some(Cached::Answer(body)) => body,
        Some(Cached::Missing(message)) => return Err(AppError::NotFound(message)),
        None => match answer.await {
            Ok(answer) => {
                let body = Bytes::from(serde_json::to_vec(&answer).expect("answers serialize"));
                state.cache.put(key, body.clone());
                body
            }
            Err(AppError::NotFound(message)) => {
                state.cache.put_missing(key, message.clone());
                return Err(AppError::NotFound(message));
            }
            Err(error) => return Err(error),
        },
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The validated `state` and the hour asked for, for the per-state endpoints.
async fn state_and_hour(state: &AppState, query: Params) -> Result<(String, HourKey), AppError> {
    let params = raw(query)?;
    let code = params::state(&params)?;
    Ok((code, hour_asked(state, &params).await?))
}

/// The validated `hour` on the validated `date` (or the latest date with reports).
async fn hour_asked(state: &AppState, params: &RawParams) -> Result<HourKey, AppError> {
    let (hour, date) = (params::hour(params)?, params::date(params)?);
    report_hour(state, hour, date).await
}

pub async fn avg(State(state): State<AppState>, query: Params) -> Result<Response, AppError> {
    let (code, hour) = state_and_hour(&state, query).await?;
    cached(
        &state,
        format!("avg {code} {hour}"),
        avg_answer(&state, code, hour),
    )
    .await
}

async fn avg_answer(
    state: &AppState,
    code: String,
    hour: HourKey,
) -> Result<AverageAnswer, AppError> {
    let record = state
        .influx
        .query_records(&schema::average_query(&code, hour))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| AppError::NotFound(format!("no report for state {code} at {hour}")))?;
    Ok(AverageAnswer {
        state: code,
        when: hour.into(),
        fields: record,
    })
}

pub async fn extremes(State(state): State<AppState>, query: Params) -> Result<Response, AppError> {
    let (code, hour) = state_and_hour(&state, query).await?;
    cached(
        &state,
        format!("extremes {code} {hour}"),
        extremes_answer(&state, code, hour),
    )
    .await
}

async fn extremes_answer(
    state: &AppState,
    code: String,
    hour: HourKey,
) -> Result<ExtremesAnswer, AppError> {
    let sides = Sides::from_zip(
        state
            .influx
            .query_records(&schema::zip_extremes_query(&code, hour))
            .await?,
    );
    if !sides.is_complete() {
        return Err(AppError::NotFound(format!(
            "no report for state {code} at {hour}"
        )));
    }
    Ok(ExtremesAnswer {
        state: code,
        when: hour.into(),
        sides,
    })
}

pub async fn state_extremes(
    State(state): State<AppState>,
    query: Params,
) -> Result<Response, AppError> {
    let hour = hour_asked(&state, &raw(query)?).await?;
    cached(
        &state,
        format!("state_extremes {hour}"),
        state_extremes_answer(&state, hour),
    )
    .await
}

async fn state_extremes_answer(
    state: &AppState,
    hour: HourKey,
) -> Result<StateExtremesAnswer, AppError> {
    let sides = Sides::from_states(
        state
            .influx
            .query_records(&schema::state_extremes_query(hour))
            .await?,
    );
    if !sides.is_complete() {
        return Err(AppError::NotFound(format!("no report at {hour}")));
    }
    Ok(StateExtremesAnswer {
        when: hour.into(),
        sides,
    })
}
