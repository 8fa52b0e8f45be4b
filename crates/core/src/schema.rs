//! The one owner of how rows and reports are laid out in InfluxDB: measurement, tag and
//! field names, the line-protocol encoding of a raw row, the typed records the report
//! measurements hold (which are also what the API answers and verify reads back), and the
//! InfluxQL statements that read them. An hour is a timestamp, never a tag; a zip code in a
//! report is a field, so the series count stays bounded.
//!
//! Report field names are the serde names of [`AverageFields`], [`ZipExtremeFields`] and
//! [`StateExtremeFields`]; the encoder and the statements use the constants below, and a
//! test ties the two together.

use chrono::NaiveDate;
use influxdb_line_protocol::LineProtocolBuilder;
use serde::{Deserialize, Serialize};

use crate::influx::quote_literal;
use crate::report::{ExtremePair, StateAverage};
use crate::row::{Metric, NUMERIC_COLUMNS, WeatherRow};
use crate::{Generation, HourKey};

/// Every input row; tags `state` and `zip_code`, every numeric column a float field.
pub const WEATHER_DATA: &str = "weather_data";
/// Per hour and state (tag `state`): [`AverageFields`].
pub const WEATHER_AVERAGES: &str = "weather_averages";
/// Per hour, state and metric (tags `state`, `metric`): [`ZipExtremeFields`].
pub const ZIP_CODE_EXTREMES: &str = "zip_code_extremes";
/// Per hour and metric (tag `metric`): [`StateExtremeFields`].
pub const STATE_EXTREMES: &str = "state_extremes";
/// Per hour: which generation of the hour's content InfluxDB holds (field `generation`)
/// and how many rows it has (`rows`). Written with the hour's reports, so it names the
/// content the reports were computed from; the ingester reads it to decide whether an
/// hour's old rows must go before the new ones are written.
pub const HOUR_GENERATIONS: &str = "hour_generations";

pub const TAG_STATE: &str = "state";
pub const TAG_ZIP_CODE: &str = "zip_code";
pub const TAG_METRIC: &str = "metric";
/// The string fields of a raw row (every other column is a float field).
pub const FIELD_NAME: &str = "name";
pub const FIELD_WIND_DIR: &str = "wind_dir";
pub const FIELD_COUNT: &str = "count";
pub const FIELD_MAX_ZIP_CODE: &str = "max_zip_code";
pub const FIELD_MIN_ZIP_CODE: &str = "min_zip_code";
pub const FIELD_MAX_STATE: &str = "max_state";
pub const FIELD_MIN_STATE: &str = "min_state";
pub const FIELD_MAX_VALUE: &str = "max_value";
pub const FIELD_MIN_VALUE: &str = "min_value";
pub const FIELD_GENERATION: &str = "generation";
pub const FIELD_ROWS: &str = "rows";

/// The `weather_averages` field of a metric's mean.
pub fn average_field(metric: Metric) -> &'static str {
    match metric {
        Metric::TempC => "avg_temp_c",
        Metric::PressureMb => "avg_pressure_mb",
        Metric::Humidity => "avg_humidity",
        Metric::PrecipMm => "avg_precip_mm",
    }
}

/// The fields of one `weather_averages` point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AverageFields {
    pub avg_temp_c: f64,
    pub avg_pressure_mb: f64,
    pub avg_humidity: f64,
    pub avg_precip_mm: f64,
    pub count: u64,
}

impl AverageFields {
    /// The means in [`Metric::ALL`] order.
    pub fn means(&self) -> [f64; 4] {
        [
            self.avg_temp_c,
            self.avg_pressure_mb,
            self.avg_humidity,
            self.avg_precip_mm,
        ]
    }
}

impl From<&StateAverage> for AverageFields {
    fn from(average: &StateAverage) -> Self {
        let [avg_temp_c, avg_pressure_mb, avg_humidity, avg_precip_mm] = average.means;
        Self {
            avg_temp_c,
            avg_pressure_mb,
            avg_humidity,
            avg_precip_mm,
            count: average.count,
        }
    }
}

/// One `zip_code_extremes` point of a state: its `metric` tag and fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZipExtremeFields {
    pub metric: String,
    pub max_zip_code: String,
    pub max_value: f64,
    pub min_zip_code: String,
    pub min_value: f64,
}

/// One `state_extremes` point: its `metric` tag and fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateExtremeFields {
    pub metric: String,
    pub max_state: String,
    pub max_value: f64,
    pub min_state: String,
    pub min_value: f64,
}

impl ZipExtremeFields {
    pub fn new(metric: Metric, pair: &ExtremePair) -> Self {
        Self {
            metric: metric.name().to_owned(),
            max_zip_code: pair.max.holder.clone(),
            max_value: pair.max.value,
            min_zip_code: pair.min.holder.clone(),
            min_value: pair.min.value,
        }
    }
}

impl StateExtremeFields {
    pub fn new(metric: Metric, pair: &ExtremePair) -> Self {
        Self {
            metric: metric.name().to_owned(),
            max_state: pair.max.holder.clone(),
            max_value: pair.max.value,
            min_state: pair.min.holder.clone(),
            min_value: pair.min.value,
        }
    }
}

/// Appends one row to `lines` as a `weather_data` point (second precision).
pub fn encode_row(lines: Vec<u8>, row: &WeatherRow) -> Vec<u8> {
    let point = LineProtocolBuilder::new_with(lines)
        .measurement(WEATHER_DATA)
        .tag(TAG_STATE, &row.state)
        .tag(TAG_ZIP_CODE, &row.zip_code);
    // `name` and `wind_dir` are string fields; an empty string is still a value, and the
    // first field written makes the line valid whatever else is missing.
    let mut point = point
        .field(FIELD_NAME, row.name.as_str())
        .field(FIELD_WIND_DIR, row.wind_dir.as_str());
    for (column, value) in NUMERIC_COLUMNS.iter().zip(&row.values) {
        if let Some(value) = value {
            point = point.field(column, *value);
        }
    }
    point.timestamp(row.time).close_line().build()
}

/// Appends a `weather_averages` point of `state` at `time` (seconds).
pub fn encode_average(lines: Vec<u8>, state: &str, fields: &AverageFields, time: i64) -> Vec<u8> {
    let mut point = LineProtocolBuilder::new_with(lines)
        .measurement(WEATHER_AVERAGES)
        .tag(TAG_STATE, state)
        .field(average_field(Metric::ALL[0]), fields.means()[0]);
    for (metric, mean) in Metric::ALL.iter().zip(fields.means()).skip(1) {
        point = point.field(average_field(*metric), mean);
    }
    point
        .field(FIELD_COUNT, fields.count as i64)
        .timestamp(time)
        .close_line()
        .build()
}

/// Appends a `zip_code_extremes` point of `state` at `time` (seconds).
pub fn encode_zip_extreme(
    lines: Vec<u8>,
    state: &str,
    fields: &ZipExtremeFields,
    time: i64,
) -> Vec<u8> {
    LineProtocolBuilder::new_with(lines)
        .measurement(ZIP_CODE_EXTREMES)
        .tag(TAG_METRIC, &fields.metric)
        .tag(TAG_STATE, state)
        .field(FIELD_MAX_ZIP_CODE, fields.max_zip_code.as_str())
        .field(FIELD_MAX_VALUE, fields.max_value)
        .field(FIELD_MIN_ZIP_CODE, fields.min_zip_code.as_str())
        .field(FIELD_MIN_VALUE, fields.min_value)
        .timestamp(time)
        .close_line()
        .build()
}

/// Appends a `state_extremes` point at `time` (seconds).
pub fn encode_state_extreme(lines: Vec<u8>, fields: &StateExtremeFields, time: i64) -> Vec<u8> {
    LineProtocolBuilder::new_with(lines)
        .measurement(STATE_EXTREMES)
        .tag(TAG_METRIC, &fields.metric)
        .field(FIELD_MAX_STATE, fields.max_state.as_str())
        .field(FIELD_MAX_VALUE, fields.max_value)
        .field(FIELD_MIN_STATE, fields.min_state.as_str())
        .field(FIELD_MIN_VALUE, fields.min_value)
        .timestamp(time)
        .close_line()
        .build()
}

/// Appends the `hour_generations` point of `hour`: it holds `rows` rows of `generation`.
pub fn encode_hour_generation(
    lines: Vec<u8>,
    hour: HourKey,
    generation: Generation,
    rows: u64,
) -> Vec<u8> {
    LineProtocolBuilder::new_with(lines)
        .measurement(HOUR_GENERATIONS)
        .field(FIELD_GENERATION, generation.to_string().as_str())
        .field(FIELD_ROWS, rows as i64)
        .timestamp(hour.start_secs())
        .close_line()
        .build()
}

/// `WHERE time >= <start of hour> AND time < <start of next hour>`.
fn within(hour: HourKey) -> String {
    format!(
        "time >= '{}' AND time < '{}'",
        hour.rfc3339(),
        hour.next().rfc3339()
    )
}

/// The state, zip code and four metrics of every row of `hour` (what the reports need).
pub fn hour_rows_query(hour: HourKey) -> String {
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    format!(
        "SELECT {}, {TAG_STATE}, {TAG_ZIP_CODE} FROM {WEATHER_DATA} WHERE {}",
        metrics.join(", "),
        within(hour)
    )
}

/// The `weather_averages` point of `state` at `hour`: [`AverageFields`] columns.
pub fn average_query(state: &str, hour: HourKey) -> String {
    let fields: Vec<&str> = Metric::ALL.iter().map(|m| average_field(*m)).collect();
    format!(
        "SELECT {}, \"{FIELD_COUNT}\" FROM {WEATHER_AVERAGES} WHERE {TAG_STATE} = {} AND time = '{}'",
        fields.join(", "),
        quote_literal(state),
        hour.rfc3339()
    )
}

/// The `zip_code_extremes` points of `state` at `hour`: [`ZipExtremeFields`] columns.
pub fn zip_extremes_query(state: &str, hour: HourKey) -> String {
    format!(
        "SELECT {TAG_METRIC}, {FIELD_MAX_ZIP_CODE}, {FIELD_MAX_VALUE}, {FIELD_MIN_ZIP_CODE}, {FIELD_MIN_VALUE} FROM {ZIP_CODE_EXTREMES} WHERE {TAG_STATE} = {} AND time = '{}'",
        quote_literal(state),
        hour.rfc3339()
    )
}

/// The `state_extremes` points at `hour`: [`StateExtremeFields`] columns.
pub fn state_extremes_query(hour: HourKey) -> String {
    format!(
        "SELECT {TAG_METRIC}, {FIELD_MAX_STATE}, {FIELD_MAX_VALUE}, {FIELD_MIN_STATE}, {FIELD_MIN_VALUE} FROM {STATE_EXTREMES} WHERE time = '{}'",
        hour.rfc3339()
    )
}

/// The generation InfluxDB holds for `hour` (one row, `generation` column), if any.
pub fn hour_generation_query(hour: HourKey) -> String {
    format!(
        "SELECT {FIELD_GENERATION} FROM {HOUR_GENERATIONS} WHERE time = '{}'",
        hour.rfc3339()
    )
}

/// How many rows InfluxDB holds for `hour` (one row, `count` column; none if zero).
pub fn hour_row_count_query(hour: HourKey) -> String {
    format!(
        "SELECT COUNT({}) FROM {WEATHER_DATA} WHERE {}",
        Metric::ALL[0].name(),
        within(hour)
    )
}

/// Deletes every row of `hour` (before an hour whose content changed is written again,
/// so rows removed from the input go too).
pub fn delete_hour_rows(hour: HourKey) -> String {
    format!("DELETE FROM {WEATHER_DATA} WHERE {}", within(hour))
}

/// The states with an average at `hour` (`state` column).
pub fn report_states_query(hour: HourKey) -> String {
    format!(
        "SELECT \"{FIELD_COUNT}\", {TAG_STATE} FROM {WEATHER_AVERAGES} WHERE time = '{}'",
        hour.rfc3339()
    )
}

/// Deletes the per-state reports of `state` at `hour` (a state no longer in the hour's
/// rows).
pub fn delete_state_reports(state: &str, hour: HourKey) -> String {
    [WEATHER_AVERAGES, ZIP_CODE_EXTREMES]
        .map(|measurement| {
            format!(
                "DELETE FROM {measurement} WHERE {TAG_STATE} = {} AND {}",
                quote_literal(state),
                within(hour)
            )
        })
        .join("; ")
}

/// One row per reported hour, its time first: the `state_extremes` point of one metric
/// (written last of an hour's reports, once per hour).
pub fn reported_hours_query() -> String {
    format!(
        "SELECT {FIELD_MAX_VALUE} FROM {STATE_EXTREMES} WHERE {TAG_METRIC} = {}",
        quote_literal(Metric::ALL[0].name())
    )
}

/// Every `hour_generations` point: `time` (epoch seconds), `generation` and `rows`. One
/// point per reported hour (written last of its reports), so this is the list of
/// reported hours and which content each holds; an api replica compares it with what it
/// holds.
pub fn hour_generations_query() -> String {
    format!("SELECT {FIELD_GENERATION}, {FIELD_ROWS} FROM {HOUR_GENERATIONS}")
}

/// `time >= <start of from> AND time < <start of until>`.
fn between(from: HourKey, until: HourKey) -> String {
    format!(
        "time >= '{}' AND time < '{}'",
        from.rfc3339(),
        until.rfc3339()
    )
}

/// Every `weather_averages` point from `from` to before `until`: `time`, `state` and the
/// [`AverageFields`] columns.
pub fn averages_between_query(from: HourKey, until: HourKey) -> String {
    let fields: Vec<&str> = Metric::ALL.iter().map(|m| average_field(*m)).collect();
    format!(
        "SELECT {TAG_STATE}, {}, \"{FIELD_COUNT}\" FROM {WEATHER_AVERAGES} WHERE {}",
        fields.join(", "),
        between(from, until)
    )
}

/// Every `zip_code_extremes` point from `from` to before `until`: `time`, `state` and
/// the [`ZipExtremeFields`] columns.
pub fn zip_extremes_between_query(from: HourKey, until: HourKey) -> String {
    format!(
        "SELECT {TAG_STATE}, {TAG_METRIC}, {FIELD_MAX_ZIP_CODE}, {FIELD_MAX_VALUE}, {FIELD_MIN_ZIP_CODE}, {FIELD_MIN_VALUE} FROM {ZIP_CODE_EXTREMES} WHERE {}",
        between(from, until)
    )
}

/// Every `state_extremes` point from `from` to before `until`: `time` and the
/// [`StateExtremeFields`] columns.
pub fn state_extremes_between_query(from: HourKey, until: HourKey) -> String {
    format!(
        "SELECT {TAG_METRIC}, {FIELD_MAX_STATE}, {FIELD_MAX_VALUE}, {FIELD_MIN_STATE}, {FIELD_MIN_VALUE} FROM {STATE_EXTREMES} WHERE {}",
        between(from, until)
    )
}

/// `time >= '<date>T00:00:00Z' AND time < '<next date>T00:00:00Z'`: the 24 hours of a UTC
/// date.
fn within_day(date: NaiveDate) -> String {
    let next = date.succ_opt().unwrap_or(NaiveDate::MAX);
    format!(
        "time >= '{}T00:00:00Z' AND time < '{}T00:00:00Z'",
        date.format("%Y-%m-%d"),
        next.format("%Y-%m-%d")
    )
}

/// The `weather_averages` points of `state` on `date`, hour by hour: `time` (epoch
/// seconds) and the [`AverageFields`] columns.
pub fn average_day_query(state: &str, date: NaiveDate) -> String {
    let fields: Vec<&str> = Metric::ALL.iter().map(|m| average_field(*m)).collect();
    format!(
        "SELECT {}, \"{FIELD_COUNT}\" FROM {WEATHER_AVERAGES} WHERE {TAG_STATE} = {} AND {}",
        fields.join(", "),
        quote_literal(state),
        within_day(date)
    )
}

/// The `zip_code_extremes` points of `state` on `date`: `time` and the
/// [`ZipExtremeFields`] columns.
pub fn zip_extremes_day_query(state: &str, date: NaiveDate) -> String {
    format!(
        "SELECT {TAG_METRIC}, {FIELD_MAX_ZIP_CODE}, {FIELD_MAX_VALUE}, {FIELD_MIN_ZIP_CODE}, {FIELD_MIN_VALUE} FROM {ZIP_CODE_EXTREMES} WHERE {TAG_STATE} = {} AND {}",
        quote_literal(state),
        within_day(date)
    )
}

/// The `state_extremes` points on `date`: `time` and the [`StateExtremeFields`] columns.
pub fn state_extremes_day_query(date: NaiveDate) -> String {
    format!(
        "SELECT {TAG_METRIC}, {FIELD_MAX_STATE}, {FIELD_MAX_VALUE}, {FIELD_MIN_STATE}, {FIELD_MIN_VALUE} FROM {STATE_EXTREMES} WHERE {}",
        within_day(date)
    )
}

/// The states with an average on `date`: `time` and `state` columns, one row per
/// reported state and hour.
pub fn report_states_day_query(date: NaiveDate) -> String {
    format!(
        "SELECT \"{FIELD_COUNT}\", {TAG_STATE} FROM {WEATHER_AVERAGES} WHERE {}",
        within_day(date)
    )
}

/// How many raw rows InfluxDB holds in each hour from `from` to the end of its date:
/// `time` and `count` columns, one row per hour (0 for an hour without rows). Callers
/// start at the first hour without a report, so a reported day costs no scan of its rows.
pub fn hour_row_counts_query(from: HourKey) -> String {
    let next_day = from.date().succ_opt().unwrap_or(NaiveDate::MAX);
    format!(
        "SELECT COUNT({}) FROM {WEATHER_DATA} WHERE time >= '{}' AND time < '{}T00:00:00Z' GROUP BY time(1h)",
        Metric::ALL[0].name(),
        from.rfc3339(),
        next_day.format("%Y-%m-%d")
    )
}

/// The row count of every reported hour of `date`, as the processor recorded it with
/// the reports: `time` and `rows` columns.
pub fn reported_rows_query(date: NaiveDate) -> String {
    format!(
        "SELECT {FIELD_ROWS} FROM {HOUR_GENERATIONS} WHERE {}",
        within_day(date)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_becomes_one_point_with_float_fields_and_escaped_tags() {
        let mut values = [None; NUMERIC_COLUMNS.len()];
        values[2] = Some(49.0);
        values[3] = Some(120.2);
        let row = WeatherRow {
            zip_code: "02134".into(),
            state: "MA".into(),
            name: "Allston \"North\", MA".into(),
            time: 1_695_099_600,
            wind_dir: "SSW".into(),
            values,
        };
        let line = String::from_utf8(encode_row(Vec::new(), &row)).unwrap();
        assert_eq!(
            line,
            "weather_data,state=MA,zip_code=02134 name=\"Allston \\\"North\\\", MA\",wind_dir=\"SSW\",temp_c=49,temp_f=120.2 1695099600\n"
        );
    }

    /// The names a record serializes with are the names the encoder writes and the
    /// statements select: one spelling of each field.
    #[test]
    fn record_field_names_are_the_encoded_names() {
        fn keys(value: impl Serialize) -> Vec<String> {
            let value = serde_json::to_value(value).unwrap();
            value.as_object().unwrap().keys().cloned().collect()
        }
        let average = AverageFields {
            avg_temp_c: 1.0,
            avg_pressure_mb: 2.0,
            avg_humidity: 3.0,
            avg_precip_mm: 4.0,
            count: 5,
        };
        let line = String::from_utf8(encode_average(Vec::new(), "CA", &average, 0)).unwrap();
        assert_eq!(
            line,
            "weather_averages,state=CA avg_temp_c=1,avg_pressure_mb=2,avg_humidity=3,avg_precip_mm=4,count=5i 0\n"
        );
        for key in keys(&average) {
            assert!(line.contains(&format!("{key}=")), "{key}");
            assert!(average_query("CA", "2023-09-19T05".parse().unwrap()).contains(&key));
        }
        let zip = ZipExtremeFields {
            metric: "temp_c".into(),
            max_zip_code: "90001".into(),
            max_value: 30.5,
            min_zip_code: "90002".into(),
            min_value: 10.0,
        };
        let line = String::from_utf8(encode_zip_extreme(Vec::new(), "CA", &zip, 0)).unwrap();
        let query = zip_extremes_query("CA", "2023-09-19T05".parse().unwrap());
        for key in keys(&zip) {
            assert!(line.contains(&format!("{key}=")), "{key} in {line}");
            assert!(query.contains(&key), "{key} in {query}");
        }
        let state = StateExtremeFields {
            metric: "humidity".into(),
            max_state: "FL".into(),
            max_value: 90.0,
            min_state: "AZ".into(),
            min_value: 10.0,
        };
        let line = String::from_utf8(encode_state_extreme(Vec::new(), &state, 0)).unwrap();
        let query = state_extremes_query("2023-09-19T05".parse().unwrap());
        for key in keys(&state) {
            assert!(line.contains(&format!("{key}=")), "{key} in {line}");
            assert!(query.contains(&key), "{key} in {query}");
        }
    }

    #[test]
    fn an_hour_query_covers_exactly_that_hour() {
        let query = hour_rows_query("2023-09-19T23".parse().unwrap());
        assert_eq!(
            query,
            "SELECT temp_c, pressure_mb, humidity, precip_mm, state, zip_code FROM weather_data WHERE time >= '2023-09-19T23:00:00Z' AND time < '2023-09-20T00:00:00Z'"
        );
    }

    #[test]
    fn a_day_query_covers_exactly_that_utc_date() {
        let date = NaiveDate::from_ymd_opt(2023, 12, 31).unwrap();
        let range = "time >= '2023-12-31T00:00:00Z' AND time < '2024-01-01T00:00:00Z'";
        for query in [
            average_day_query("CA", date),
            zip_extremes_day_query("CA", date),
            state_extremes_day_query(date),
            report_states_day_query(date),
            reported_rows_query(date),
        ] {
            assert!(query.ends_with(range), "{query}");
        }
        assert_eq!(
            average_day_query("CA", date),
            format!(
                "SELECT avg_temp_c, avg_pressure_mb, avg_humidity, avg_precip_mm, \"count\" FROM weather_averages WHERE state = 'CA' AND {range}"
            )
        );
        assert_eq!(
            hour_row_counts_query("2023-12-31T05".parse().unwrap()),
            "SELECT COUNT(temp_c) FROM weather_data WHERE time >= '2023-12-31T05:00:00Z' AND time < '2024-01-01T00:00:00Z' GROUP BY time(1h)"
        );
    }
}
