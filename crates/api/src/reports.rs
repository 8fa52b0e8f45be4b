//! The report endpoints: validate, find the hour (or the day), answer from the cache or
//! ask InfluxDB, shape the JSON or CSV (`table`). "No such report" is cached like an
//! answer (briefly, see `cache`), so only the first of many requests for a missing report
//! reaches InfluxDB. The `#[utoipa::path]` on each handler is its OpenAPI description
//! (`openapi`).
//!
//! An hour (or a date) this replica holds in its store (`store`, kept by `herd`) is
//! answered from memory, without InfluxDB and without the cache; only hours it does not
//! hold go through the cache to InfluxDB.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::influx::InfluxError;
use weathervane_core::payload::HourReports;
use weathervane_core::schema;

use crate::answer::{AverageAnswer, ExtremesAnswer, HourOrDay, Sides, StateExtremesAnswer, Timed};
use crate::cache::{Cached, latest_at};
use crate::openapi::{ErrorResponses, ReportQuery, StateExtremesQuery};
use crate::params::{self, Asked, RawParams};
use crate::table::{Format, Table, to_csv};
use crate::{AppError, AppState};

/// The query string as its pairs, in order, so a repeated parameter shows.
pub type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub fn raw(query: Params) -> Result<RawParams, AppError> {
    let Query(pairs) = query.map_err(|rejection| {
        AppError::BadRequest(format!("malformed query string: {rejection}"))
    })?;
    params::from_pairs(pairs)
}

/// Every hour with reports (asked at most once a second, see `cache`). A missing database
/// means no hour reported yet, an answer like any other.
pub async fn reported_hours(state: &AppState) -> Result<BTreeSet<HourKey>, AppError> {
    if let Some(hours) = state.cache.reported_hours() {
        return Ok(hours);
    }
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
    state.cache.set_reported_hours(hours.clone());
    Ok(hours)
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
    if let Some(latest) = state.store.lock().unwrap().latest_at(hour) {
        return Ok(latest);
    }
    let latest = match state.cache.latest_reported(hour) {
        Some(latest) => latest,
        None => latest_at(&reported_hours(state).await?, hour),
    };
    latest.ok_or_else(|| AppError::NotFound(format!("no report for hour {hour:02} yet")))
}

/// The answer under `key` in `format` from the cache, or computed by `answer` and cached;
/// a 404 is cached too (errors that may pass, such as an unreachable InfluxDB, are not).
async fn cached<A: Serialize + Table>(
    state: &AppState,
    format: Format,
    key: String,
    answer: impl Future<Output = Result<A, AppError>>,
) -> Result<Response, AppError> {
    let key = format!("{} {key}", format.name());
    let cached = state.cache.get(&key);
    count_answer(if cached.is_some() {
        "cache"
    } else {
        "influxdb"
    });
    let body = match cached {
        Some(Cached::Answer(body)) => body,
        Some(Cached::Missing(message)) => return Err(AppError::NotFound(message)),
        None => match answer.await {
            Ok(answer) => {
                let body = Bytes::from(match format {
                    Format::Json => serde_json::to_vec(&answer).expect("answers serialize"),
                    Format::Csv => to_csv(&answer),
                });
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
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// Counts a report answer by where it came from: `memory` (the store), `cache`, or
/// `influxdb`.
fn count_answer(source: &'static str) {
    weathervane_core::metrics::counter(
        crate::metrics::ROLE,
        "report_answers_total",
        &[("source", source)],
    )
    .increment(1);
}

/// The hour's reports, if this replica holds them.
fn held(state: &AppState, hour: HourKey) -> Option<Arc<HourReports>> {
    state.store.lock().unwrap().get(hour)
}

/// The date's reported hours, if this replica holds the date.
fn held_day(state: &AppState, date: NaiveDate) -> Option<Vec<Arc<HourReports>>> {
    let day = state.store.lock().unwrap().day(date);
    (!day.is_empty()).then_some(day)
}

/// An answer from the store, shaped like any other.
fn from_memory<A: Serialize + Table>(
    format: Format,
    answer: Result<A, AppError>,
) -> Result<Response, AppError> {
    count_answer("memory");
    let answer = answer?;
    let body = match format {
        Format::Json => serde_json::to_vec(&answer).expect("answers serialize"),
        Format::Csv => to_csv(&answer),
    };
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn avg_held(reports: &HourReports, code: &str) -> Option<AverageAnswer> {
    let state = reports.states.iter().find(|s| s.state == code)?;
    Some(AverageAnswer {
        state: code.to_owned(),
        when: reports.hour.into(),
        fields: state.average.clone(),
    })
}

fn extremes_held(reports: &HourReports, code: &str) -> Option<ExtremesAnswer> {
    let state = reports.states.iter().find(|s| s.state == code)?;
    let sides = Sides::from_zip(state.extremes.clone());
    sides.is_complete().then(|| ExtremesAnswer {
        state: code.to_owned(),
        when: reports.hour.into(),
        sides,
    })
}

fn state_extremes_held(reports: &HourReports) -> Option<StateExtremesAnswer> {
    let sides = Sides::from_states(reports.state_extremes.clone());
    sides.is_complete().then(|| StateExtremesAnswer {
        when: reports.hour.into(),
        sides,
    })
}

/// The answer from the store when it holds the hour (or the date) asked: `answer` of its
/// reports, 404 (`missing` + " at <hour>" or " on <date>") where it gives none. `None`:
/// not held, ask InfluxDB.
fn memory<T: utoipa::ToSchema + Serialize>(
    state: &AppState,
    span: &Span,
    format: Format,
    answer: impl Fn(&HourReports) -> Option<T>,
    missing: impl Fn() -> String,
) -> Option<Result<Response, AppError>>
where
    HourOrDay<T>: Table,
{
    let answer = match *span {
        Span::Hour(hour) => {
            let reports = held(state, hour)?;
            answer(&reports)
                .map(HourOrDay::Hour)
                .ok_or_else(|| AppError::NotFound(format!("{} at {hour}", missing())))
        }
        Span::Day(date) => {
            let hours = held_day(state, date)?;
            let answers: Vec<T> = hours.iter().filter_map(|h| answer(h)).collect();
            if answers.is_empty() {
                Err(AppError::NotFound(format!("{} on {date}", missing())))
            } else {
                Ok(HourOrDay::Day(answers))
            }
        }
    };
    Some(from_memory(format, answer))
}

/// What a report endpoint was asked, validated: the format, then the rest in the order
/// the handler checks it.
struct Request {
    format: Format,
    params: RawParams,
}

impl Request {
    fn new(query: Params, headers: &HeaderMap) -> Result<Self, AppError> {
        let params = raw(query)?;
        let format = Format::asked(&params, headers)?;
        Ok(Self { format, params })
    }
}

/// One hour (the latest date with that hour when `date` is left out) or a whole day.
enum Span {
    Hour(HourKey),
    Day(NaiveDate),
}

async fn span_asked(state: &AppState, params: &RawParams) -> Result<Span, AppError> {
    Ok(match params::hour_or_day(params)? {
        Asked::Hour(hour, date) => Span::Hour(report_hour(state, hour, date).await?),
        Asked::Day(date) => Span::Day(date),
    })
}

/// The records of a day's query grouped by hour, in hour order (records InfluxDB could not
/// have written, outside the day, are left out).
fn by_hour<T>(date: NaiveDate, records: Vec<Timed<T>>) -> Vec<(HourKey, Vec<T>)> {
    let mut hours: std::collections::BTreeMap<HourKey, Vec<T>> = Default::default();
    for timed in records {
        if let Some(hour) = timed.hour().filter(|h| h.date() == date) {
            hours.entry(hour).or_default().push(timed.record);
        }
    }
    hours.into_iter().collect()
}

/// A state's means and row count: of one hour, or of every reported hour of a day.
#[utoipa::path(
    get,
    path = "/avg",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The state's averages. One hour: an object; `date` without `hour`: an array of the day's hours in order. CSV columns: state,date,hour,avg_temp_c,avg_pressure_mb,avg_humidity,avg_precip_mm,count (one row per hour).",
            content(
                (HourOrDay<AverageAnswer> = "application/json"),
                (String = "text/csv")
            )),
        ErrorResponses
    )
)]
pub async fn avg(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, AppError> {
    let Request { format, params } = Request::new(query, &headers)?;
    let code = params::state(&params)?;
    let span = span_asked(&state, &params).await?;
    if let Some(held) = memory(
        &state,
        &span,
        format,
        |reports| avg_held(reports, &code),
        || format!("no report for state {code}"),
    ) {
        return held;
    }
    match span {
        Span::Hour(hour) => {
            let key = format!("avg {code} {hour}");
            let answer = async { avg_answer(&state, code, hour).await.map(HourOrDay::Hour) };
            cached(&state, format, key, answer).await
        }
        Span::Day(date) => {
            let key = format!("avg {code} {date}");
            cached(&state, format, key, avg_day(&state, code, date)).await
        }
    }
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

async fn avg_day(
    state: &AppState,
    code: String,
    date: NaiveDate,
) -> Result<HourOrDay<AverageAnswer>, AppError> {
    let records = state
        .influx
        .query_records(&schema::average_day_query(&code, date))
        .await?;
    let answers: Vec<AverageAnswer> = by_hour(date, records)
        .into_iter()
        .filter_map(|(hour, records)| {
            records.into_iter().next().map(|fields| AverageAnswer {
                state: code.clone(),
                when: hour.into(),
                fields,
            })
        })
        .collect();
    if answers.is_empty() {
        return Err(AppError::NotFound(format!(
            "no report for state {code} on {date}"
        )));
    }
    Ok(HourOrDay::Day(answers))
}

/// Per metric, the zip codes of a state with the highest and lowest value: of one hour,
/// or of every reported hour of a day.
#[utoipa::path(
    get,
    path = "/extremes",
    tag = "reports",
    params(ReportQuery),
    responses(
        (status = 200, description = "The state's zip-code extremes. One hour: an object; `date` without `hour`: an array of the day's hours in order. CSV columns: state,date,hour,metric,max_zip_code,max_value,min_zip_code,min_value (one row per hour and metric, metrics in the order temp_c, pressure_mb, humidity, precip_mm).",
            content(
                (HourOrDay<ExtremesAnswer> = "application/json"),
                (String = "text/csv")
            )),
        ErrorResponses
    )
)]
pub async fn extremes(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, AppError> {
    let Request { format, params } = Request::new(query, &headers)?;
    let code = params::state(&params)?;
    let span = span_asked(&state, &params).await?;
    if let Some(held) = memory(
        &state,
        &span,
        format,
        |reports| extremes_held(reports, &code),
        || format!("no report for state {code}"),
    ) {
        return held;
    }
    match span {
        Span::Hour(hour) => {
            let key = format!("extremes {code} {hour}");
            let answer = async {
                extremes_answer(&state, code, hour)
                    .await
                    .map(HourOrDay::Hour)
            };
            cached(&state, format, key, answer).await
        }
        Span::Day(date) => {
            let key = format!("extremes {code} {date}");
            cached(&state, format, key, extremes_day(&state, code, date)).await
        }
    }
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

async fn extremes_day(
    state: &AppState,
    code: String,
    date: NaiveDate,
) -> Result<HourOrDay<ExtremesAnswer>, AppError> {
    let records = state
        .influx
        .query_records(&schema::zip_extremes_day_query(&code, date))
        .await?;
    let answers: Vec<ExtremesAnswer> = by_hour(date, records)
        .into_iter()
        .map(|(hour, records)| (hour, Sides::from_zip(records)))
        .filter(|(_, sides)| sides.is_complete())
        .map(|(hour, sides)| ExtremesAnswer {
            state: code.clone(),
            when: hour.into(),
            sides,
        })
        .collect();
    if answers.is_empty() {
        return Err(AppError::NotFound(format!(
            "no report for state {code} on {date}"
        )));
    }
    Ok(HourOrDay::Day(answers))
}

/// Per metric, the states with the highest and lowest average: of one hour, or of every
/// reported hour of a day.
#[utoipa::path(
    get,
    path = "/state_extremes",
    tag = "reports",
    params(StateExtremesQuery),
    responses(
        (status = 200, description = "The state extremes. One hour: an object; `date` without `hour`: an array of the day's hours in order. CSV columns: date,hour,metric,max_state,max_value,min_state,min_value (one row per hour and metric).",
            content(
                (HourOrDay<StateExtremesAnswer> = "application/json"),
                (String = "text/csv")
            )),
        ErrorResponses
    )
)]
pub async fn state_extremes(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, AppError> {
    let Request { format, params } = Request::new(query, &headers)?;
    let span = span_asked(&state, &params).await?;
    if let Some(held) = memory(&state, &span, format, state_extremes_held, || {
        "no report".to_owned()
    }) {
        return held;
    }
    match span {
        Span::Hour(hour) => {
            let key = format!("state_extremes {hour}");
            let answer = async {
                state_extremes_answer(&state, hour)
                    .await
                    .map(HourOrDay::Hour)
            };
            cached(&state, format, key, answer).await
        }
        Span::Day(date) => {
            let key = format!("state_extremes {date}");
            cached(&state, format, key, state_extremes_day(&state, date)).await
        }
    }
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

async fn state_extremes_day(
    state: &AppState,
    date: NaiveDate,
) -> Result<HourOrDay<StateExtremesAnswer>, AppError> {
    let records = state
        .influx
        .query_records(&schema::state_extremes_day_query(date))
        .await?;
    let answers: Vec<StateExtremesAnswer> = by_hour(date, records)
        .into_iter()
        .map(|(hour, records)| (hour, Sides::from_states(records)))
        .filter(|(_, sides)| sides.is_complete())
        .map(|(hour, sides)| StateExtremesAnswer {
            when: hour.into(),
            sides,
        })
        .collect();
    if answers.is_empty() {
        return Err(AppError::NotFound(format!("no report on {date}")));
    }
    Ok(HourOrDay::Day(answers))
}
