//! The discovery endpoints: which dates (`/dates`), hours (`/hours`) and states
//! (`/states`) have reports, and the pipeline's progress on a date (`/status`: hours
//! reported, the last report, hours with rows stored but no report yet). Answered from
//! the report measurements (and, for `/status`, the raw rows' hourly counts) in InfluxDB.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weathervane_core::HourKey;
use weathervane_core::schema;

use crate::answer::Timed;
use crate::openapi::ErrorResponses;
use crate::params::{self, RawParams};
use crate::reports::{Params, raw, reported_hours};
use crate::{AppError, AppState};

/// `/dates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatesAnswer {
    /// Every UTC date with at least one reported hour, oldest first.
    #[schema(example = json!(["2023-09-19", "2023-09-20"]))]
    pub dates: Vec<String>,
}

/// `/hours`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoursAnswer {
    #[schema(example = "2023-09-19")]
    pub date: String,
    /// The reported hours of the date, two digits each, in order.
    #[schema(example = json!(["00", "01", "02"]))]
    pub hours: Vec<String>,
}

/// `/states`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatesAnswer {
    #[schema(example = "2023-09-19")]
    pub date: String,
    /// The hour asked for, or null for any hour of the date.
    #[schema(example = "05")]
    pub hour: Option<String>,
    /// The states with a report, in alphabetical order.
    #[schema(example = json!(["AK", "AL", "CA"]))]
    pub states: Vec<String>,
}

/// An hour of `/status`: how many raw rows InfluxDB holds for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredHour {
    #[schema(example = "05")]
    pub hour: String,
    pub rows: u64,
}

/// A reported hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportedHour {
    #[schema(example = "2023-09-19")]
    pub date: String,
    #[schema(example = "23")]
    pub hour: String,
}

/// `/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusAnswer {
    /// The date described (null when nothing is reported yet and no date was given).
    #[schema(example = "2023-09-19")]
    pub date: Option<String>,
    /// The date's reported hours, in order.
    pub hours_reported: Vec<String>,
    /// The hours of the date with raw rows stored, and how many.
    pub hours_stored: Vec<StoredHour>,
    /// Hours of the date with rows stored but no report yet (being computed, or waiting
    /// for the rest of their batches).
    pub pending: Vec<String>,
    /// The latest reported hour of any date, or null.
    pub last_report: Option<ReportedHour>,
}

/// The query of `/hours` and `/status`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its OpenAPI description is used; `params` validates.
pub struct DateQuery {
    /// UTC date `YYYY-MM-DD`; without it, the latest date with reports.
    #[param(value_type = Option<String>, format = Date, example = "2023-09-19")]
    date: Option<String>,
}

/// The query of `/states`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its OpenAPI description is used; `params` validates.
pub struct StatesQuery {
    /// UTC date `YYYY-MM-DD`; without it, the latest date with reports.
    #[param(value_type = Option<String>, format = Date, example = "2023-09-19")]
    date: Option<String>,
    /// Hour of the day, 0-23; without it, the states reported at any hour of the date.
    #[param(example = "05", pattern = "^[0-9]{1,2}$")]
    hour: Option<String>,
}

/// Refuses parameters an endpoint does not take, naming them (a typo such as `dat=`
/// would otherwise be silently ignored).
fn only(params: &RawParams, known: &[&str]) -> Result<(), AppError> {
    match params.keys().find(|name| !known.contains(&name.as_str())) {
        Some(name) => Err(AppError::BadRequest(format!(
            "unknown parameter {name:?}; this endpoint takes {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

fn dates_of(hours: &BTreeSet<HourKey>) -> BTreeSet<NaiveDate> {
    hours.iter().map(|h| h.date()).collect()
}

/// `date` if given, else the latest date with reports; `None` when there is none.
async fn date_or_latest(
    state: &AppState,
    params: &RawParams,
) -> Result<Option<NaiveDate>, AppError> {
    match params::date(params)? {
        Some(date) => Ok(Some(date)),
        None => Ok(reported_hours(state).await?.last().map(|h| h.date())),
    }
}

fn no_reports_yet() -> AppError {
    AppError::NotFound("no reports yet".into())
}

/// The dates that have reports.
#[utoipa::path(
    get,
    path = "/dates",
    tag = "discovery",
    responses((status = 200, body = DatesAnswer), ErrorResponses)
)]
pub async fn dates(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<DatesAnswer>, AppError> {
    only(&raw(query)?, &[])?;
    let hours = reported_hours(&state).await?;
    Ok(Json(DatesAnswer {
        dates: dates_of(&hours).iter().map(ToString::to_string).collect(),
    }))
}

/// The reported hours of a date.
#[utoipa::path(
    get,
    path = "/hours",
    tag = "discovery",
    params(DateQuery),
    responses((status = 200, body = HoursAnswer), ErrorResponses)
)]
pub async fn hours(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<HoursAnswer>, AppError> {
    let params = raw(query)?;
    only(&params, &["date"])?;
    let date = date_or_latest(&state, &params)
        .await?
        .ok_or_else(no_reports_yet)?;
    let hours: Vec<String> = reported_hours(&state)
        .await?
        .iter()
        .filter(|h| h.date() == date)
        .map(|h| format!("{:02}", h.hour()))
        .collect();
    if hours.is_empty() {
        return Err(AppError::NotFound(format!("no report on {date}")));
    }
    Ok(Json(HoursAnswer {
        date: date.to_string(),
        hours,
    }))
}

#[derive(Deserialize)]
struct StateColumn {
    state: String,
}

/// The states with reports on a date, or at one hour of it.
#[utoipa::path(
    get,
    path = "/states",
    tag = "discovery",
    params(StatesQuery),
    responses((status = 200, body = StatesAnswer), ErrorResponses)
)]
pub async fn states(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<StatesAnswer>, AppError> {
    let params = raw(query)?;
    only(&params, &["date", "hour"])?;
    let hour = params::optional_hour(&params)?;
    let date = date_or_latest(&state, &params)
        .await?
        .ok_or_else(no_reports_yet)?;
    let statement = match hour {
        Some(hour) => schema::report_states_query(
            HourKey::from_date_hour(date, hour).expect("hour was validated to be 0-23"),
        ),
        None => schema::report_states_day_query(date),
    };
    let states: BTreeSet<String> = state
        .influx
        .query_records::<StateColumn>(&statement)
        .await?
        .into_iter()
        .map(|row| row.state)
        .collect();
    let hour = hour.map(|h| format!("{h:02}"));
    if states.is_empty() {
        return Err(AppError::NotFound(match &hour {
            Some(hour) => format!("no report at {date}T{hour}"),
            None => format!("no report on {date}"),
        }));
    }
    Ok(Json(StatesAnswer {
        date: date.to_string(),
        hour,
        states: states.into_iter().collect(),
    }))
}

#[derive(Deserialize)]
struct CountColumn {
    count: Option<u64>,
}

#[derive(Deserialize)]
struct RowsColumn {
    rows: Option<u64>,
}

/// The rows stored in each hour of `date` that has any, in hour order: a reported hour's
/// from its `hour_generations` record, the others counted in the raw rows from the first
/// hour without a report on (so a reported day costs no scan of a million rows).
async fn stored_rows(
    state: &AppState,
    date: NaiveDate,
    reported_on: &BTreeSet<u32>,
) -> Result<Vec<(u32, u64)>, AppError> {
    fn on_date<T>(timed: &Timed<T>, date: NaiveDate) -> Option<HourKey> {
        timed.hour().filter(|h| h.date() == date)
    }
    let mut stored = std::collections::BTreeMap::new();
    let recorded: Vec<Timed<RowsColumn>> = state
        .influx
        .query_records(&schema::reported_rows_query(date))
        .await?;
    for timed in &recorded {
        if let (Some(hour), Some(rows)) = (on_date(timed, date), timed.record.rows) {
            stored.insert(hour.hour(), rows);
        }
    }
    if let Some(first) = (0..24).find(|h| !reported_on.contains(h)) {
        let from = HourKey::from_date_hour(date, first).expect("0-23 is an hour");
        let counts: Vec<Timed<CountColumn>> = state
            .influx
            .query_records(&schema::hour_row_counts_query(from))
            .await?;
        for timed in &counts {
            if let Some(hour) = on_date(timed, date).filter(|h| !reported_on.contains(&h.hour())) {
                stored.insert(hour.hour(), timed.record.count.unwrap_or(0));
            }
        }
    }
    Ok(stored.into_iter().filter(|(_, rows)| *rows > 0).collect())
}

/// The pipeline's progress on a date: hours reported, rows stored per hour, hours
/// pending (rows stored, no report yet), and the last report of any date.
#[utoipa::path(
    get,
    path = "/status",
    tag = "discovery",
    params(DateQuery),
    responses((status = 200, body = StatusAnswer), ErrorResponses)
)]
pub async fn status(
    State(state): State<AppState>,
    query: Params,
) -> Result<Json<StatusAnswer>, AppError> {
    let params = raw(query)?;
    only(&params, &["date"])?;
    let reported = reported_hours(&state).await?;
    let last_report = reported.last().map(|h| ReportedHour {
        date: h.date().to_string(),
        hour: format!("{:02}", h.hour()),
    });
    let Some(date) = date_or_latest(&state, &params).await? else {
        return Ok(Json(StatusAnswer {
            date: None,
            hours_reported: Vec::new(),
            hours_stored: Vec::new(),
            pending: Vec::new(),
            last_report,
        }));
    };
    let reported_on: BTreeSet<u32> = reported
        .iter()
        .filter(|h| h.date() == date)
        .map(|h| h.hour())
        .collect();
    let stored = stored_rows(&state, date, &reported_on).await?;
    Ok(Json(StatusAnswer {
        date: Some(date.to_string()),
        hours_reported: reported_on.iter().map(|h| format!("{h:02}")).collect(),
        pending: stored
            .iter()
            .filter(|(hour, _)| !reported_on.contains(hour))
            .map(|(hour, _)| format!("{hour:02}"))
            .collect(),
        hours_stored: stored
            .into_iter()
            .map(|(hour, rows)| StoredHour {
                hour: format!("{hour:02}"),
                rows,
            })
            .collect(),
        last_report,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_refused_by_name() {
        let params: RawParams = [("dat".to_owned(), "2023-09-19".to_owned())].into();
        let error = only(&params, &["date"]).unwrap_err().to_string();
        assert!(
            error.contains("\"dat\"") && error.contains("date"),
            "{error}"
        );
        assert!(only(&params, &[]).unwrap_err().to_string().contains("none"));
        let params: RawParams = [("date".to_owned(), "2023-09-19".to_owned())].into();
        assert!(only(&params, &["date"]).is_ok());
    }

    #[test]
    fn dates_are_the_distinct_days_of_the_reported_hours() {
        let hours: BTreeSet<HourKey> = ["2023-09-19T00", "2023-09-19T23", "2023-09-21T05"]
            .map(|h| h.parse().unwrap())
            .into();
        let dates: Vec<String> = dates_of(&hours).iter().map(|d| d.to_string()).collect();
        assert_eq!(dates, ["2023-09-19", "2023-09-21"]);
    }
}
