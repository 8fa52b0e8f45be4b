//! The report endpoints: validate, find the hour, answer from the cache or ask InfluxDB,
//! shape the JSON.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use weathervane_core::HourKey;
use weathervane_core::influx::{Series, quote_literal};
use weathervane_core::row::Metric;
use weathervane_core::schema::{STATE_EXTREMES, WEATHER_AVERAGES, ZIP_CODE_EXTREMES};

use crate::params::{self, RawParams};
use crate::{AppError, AppState};

type Params = Result<Query<RawParams>, QueryRejection>;

fn raw(query: Params) -> Result<RawParams, AppError> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| AppError::BadRequest(format!("malformed query string: {rejection}")))
}

/// The hour asked for: `hour` on `date`, or on the latest date that has reports.
async fn report_hour(
    state: &AppState,
    hour: u32,
    date: Option<NaiveDate>,
) -> Result<HourKey, AppError> {
    let date = match date.or_else(|| state.cache.latest_date()) {
        Some(date) => date,
        None => {
            let series = state
                .influx
                .query(&format!("SELECT LAST(\"count\") FROM {WEATHER_AVERAGES}"))
                .await?;
            let latest = series
                .first()
                .and_then(|s| s.values.first())
                .and_then(|row| row.first())
                .and_then(Value::as_i64);
            let time = latest.and_then(|secs| chrono::DateTime::from_timestamp(secs, 0));
            let date = time
                .ok_or_else(|| AppError::NotFound("no reports yet".into()))?
                .date_naive();
            state.cache.set_latest_date(date);
            date
        }
    };
    Ok(HourKey::from_date_hour(date, hour).expect("hour was validated to be 0-23"))
}

/// Every row of every series as a column → value map.
fn records(series: &[Series]) -> Vec<Map<String, Value>> {
    series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|row| s.columns.iter().cloned().zip(row.iter().cloned()).collect())
        })
        .collect()
}

/// The answer under `key` from the cache, or computed by `answer` and cached.
async fn cached(
    state: &AppState,
    key: String,
    answer: impl Future<Output = Result<Value, AppError>>,
) -> Result<Response, AppError> {
    let body = match state.cache.get(&key) {
        Some(body) => body,
        None => {
            let body =
                Bytes::from(serde_json::to_vec(&answer.await?).expect("JSON values serialize"));
            state.cache.put(key, body.clone());
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn when(hour: HourKey) -> (String, String) {
    (hour.date().to_string(), format!("{:02}", hour.hour()))
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

async fn avg_answer(state: &AppState, code: String, hour: HourKey) -> Result<Value, AppError> {
    let statement = format!(
        "SELECT avg_temp_c, avg_pressure_mb, avg_humidity, avg_precip_mm, \"count\" FROM {WEATHER_AVERAGES} WHERE state = {} AND time = '{}'",
        quote_literal(&code),
        hour.rfc3339()
    );
    let record = records(&state.influx.query(&statement).await?)
        .into_iter()
        .next();
    let record = record
        .ok_or_else(|| AppError::NotFound(format!("no report for state {code} at {hour}")))?;
    let (date, hour) = when(hour);
    let mut body = json!({ "state": code, "date": date, "hour": hour });
    for key in [
        "avg_temp_c",
        "avg_pressure_mb",
        "avg_humidity",
        "avg_precip_mm",
        "count",
    ] {
        body[key] = record.get(key).cloned().unwrap_or(Value::Null);
    }
    Ok(body)
}

/// `{"max": {metric: {holder_key: .., "value": ..}}, "min": {..}}` from rows with a
/// `metric` column and `max_<holder>`, `max_value`, `min_<holder>`, `min_value`.
fn extremes_body(records: &[Map<String, Value>], holder: &str) -> Option<Value> {
    let mut body = json!({ "max": {}, "min": {} });
    for metric in Metric::ALL {
        let record = records
            .iter()
            .find(|r| r.get("metric").and_then(Value::as_str) == Some(metric.name()))?;
        for side in ["max", "min"] {
            body[side][metric.name()] = json!({
                holder: record.get(&format!("{side}_{holder}"))?,
                "value": record.get(&format!("{side}_value"))?,
            });
        }
    }
    Some(body)
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

async fn extremes_answer(state: &AppState, code: String, hour: HourKey) -> Result<Value, AppError> {
    let statement = format!(
        "SELECT metric, max_zip_code, max_value, min_zip_code, min_value FROM {ZIP_CODE_EXTREMES} WHERE state = {} AND time = '{}'",
        quote_literal(&code),
        hour.rfc3339()
    );
    let records = records(&state.influx.query(&statement).await?);
    let mut body = extremes_body(&records, "zip_code")
        .ok_or_else(|| AppError::NotFound(format!("no report for state {code} at {hour}")))?;
    let (date, hour) = when(hour);
    body["state"] = json!(code);
    body["date"] = json!(date);
    body["hour"] = json!(hour);
    Ok(body)
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

async fn state_extremes_answer(state: &AppState, hour: HourKey) -> Result<Value, AppError> {
    let statement = format!(
        "SELECT metric, max_state, max_value, min_state, min_value FROM {STATE_EXTREMES} WHERE time = '{}'",
        hour.rfc3339()
    );
    let records = records(&state.influx.query(&statement).await?);
    let mut body = extremes_body(&records, "state")
        .ok_or_else(|| AppError::NotFound(format!("no report at {hour}")))?;
    let (date, hour) = when(hour);
    body["date"] = json!(date);
    body["hour"] = json!(hour);
    Ok(body)
}
