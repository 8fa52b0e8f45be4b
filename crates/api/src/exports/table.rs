//! The CSV layout of an export, pure: the header of each kind and the records of one
//! chunk (an InfluxDB answer) in that layout, as bytes ready to append to the file.
//!
//! - **rows**: the 37 input columns in their documented order (`CSV_COLUMNS`: zip_code,
//!   state, name, time, lat, ...), `time` as `YYYY-MM-DD HH:MM` (UTC), numbers as InfluxDB
//!   stores them (floats, `49` for 49.0), an empty cell where the input had none.
//! - **reports**: one file with a `kind` column: `average` (per state and hour: count and
//!   the four means), `zip_extreme` (per state, hour and metric: the zip codes holding the
//!   maximum and minimum and their values) and `state_extreme` (per hour and metric: the
//!   states with the highest and lowest average). Columns: [`REPORT_COLUMNS`].

use chrono::DateTime;
use weathervane_core::influx::Series;
use weathervane_core::row::CSV_COLUMNS;
use weathervane_core::schema;

/// The columns of a reports export.
pub const REPORT_COLUMNS: [&str; 13] = [
    "kind",
    "time",
    "state",
    "metric",
    "count",
    "avg_temp_c",
    "avg_pressure_mb",
    "avg_humidity",
    "avg_precip_mm",
    "max_holder",
    "max_value",
    "min_holder",
    "min_value",
];

/// Which measurement a chunk's answer came from, for [`report_records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Average,
    ZipExtreme,
    StateExtreme,
}

impl ReportKind {
    pub const ALL: [ReportKind; 3] = [
        ReportKind::Average,
        ReportKind::ZipExtreme,
        ReportKind::StateExtreme,
    ];

    fn name(self) -> &'static str {
        match self {
            ReportKind::Average => "average",
            ReportKind::ZipExtreme => "zip_extreme",
            ReportKind::StateExtreme => "state_extreme",
        }
    }

    pub fn measurement(self) -> &'static str {
        match self {
            ReportKind::Average => schema::WEATHER_AVERAGES,
            ReportKind::ZipExtreme => schema::ZIP_CODE_EXTREMES,
            ReportKind::StateExtreme => schema::STATE_EXTREMES,
        }
    }

    /// Our column → the measurement's column it comes from.
    fn source(self, column: &str) -> Option<&'static str> {
        use ReportKind::*;
        Some(match (self, column) {
            (_, "time") => "time",
            (Average | ZipExtreme, "state") => schema::TAG_STATE,
            (ZipExtreme | StateExtreme, "metric") => schema::TAG_METRIC,
            (Average, "count") => schema::FIELD_COUNT,
            (Average, "avg_temp_c") => "avg_temp_c",
            (Average, "avg_pressure_mb") => "avg_pressure_mb",
            (Average, "avg_humidity") => "avg_humidity",
            (Average, "avg_precip_mm") => "avg_precip_mm",
            (ZipExtreme, "max_holder") => schema::FIELD_MAX_ZIP_CODE,
            (ZipExtreme, "min_holder") => schema::FIELD_MIN_ZIP_CODE,
            (StateExtreme, "max_holder") => schema::FIELD_MAX_STATE,
            (StateExtreme, "min_holder") => schema::FIELD_MIN_STATE,
            (ZipExtreme | StateExtreme, "max_value") => schema::FIELD_MAX_VALUE,
            (ZipExtreme | StateExtreme, "min_value") => schema::FIELD_MIN_VALUE,
            _ => return None,
        })
    }
}

/// The header line of a `rows` export.
pub fn rows_header() -> Vec<u8> {
    record_bytes(CSV_COLUMNS.iter().map(|c| c.to_string()))
}

/// The header line of a `reports` export.
pub fn reports_header() -> Vec<u8> {
    record_bytes(REPORT_COLUMNS.iter().map(|c| c.to_string()))
}

/// The records of `series` (a `SELECT *` of `weather_data`, times in epoch seconds) in the
/// rows layout, and how many.
pub fn row_records(series: &[Series]) -> (Vec<u8>, u64) {
    records(
        series,
        |column| Some(column).filter(|c| CSV_COLUMNS.contains(c)),
        &CSV_COLUMNS,
        None,
    )
}

/// The records of `series` (a `SELECT *` of `kind`'s measurement) in the reports layout.
pub fn report_records(kind: ReportKind, series: &[Series]) -> (Vec<u8>, u64) {
    records(
        series,
        |column| kind.source(column),
        &REPORT_COLUMNS,
        Some(kind.name()),
    )
}

fn records<'a>(
    series: &[Series],
    source: impl Fn(&'a str) -> Option<&'a str>,
    columns: &[&'a str],
    kind: Option<&str>,
) -> (Vec<u8>, u64) {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut count = 0;
    for one in series {
        let index: Vec<Option<usize>> = columns
            .iter()
            .map(|column| source(column).and_then(|name| one.column(name)))
            .collect();
        for values in &one.values {
            let record = columns.iter().zip(&index).map(|(column, at)| {
                if *column == "kind" {
                    return kind.unwrap_or_default().to_owned();
                }
                let value = at.and_then(|i| values.get(i));
                if *column == "time" {
                    value
                        .and_then(serde_json::Value::as_i64)
                        .map(minute)
                        .unwrap_or_default()
                } else {
                    cell(value)
                }
            });
            writer.write_record(record).expect("writing to memory");
            count += 1;
        }
    }
    (writer.into_inner().expect("writing to memory"), count)
}

/// One CSV line of `cells`.
fn record_bytes(cells: impl Iterator<Item = String>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(cells).expect("writing to memory");
    writer.into_inner().expect("writing to memory")
}

/// Epoch seconds as the input writes times: `YYYY-MM-DD HH:MM` (UTC).
fn minute(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn series(columns: &[&str], values: Vec<Vec<serde_json::Value>>) -> Series {
        Series {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            values,
        }
    }

    #[test]
    fn raw_rows_follow_the_input_column_order() {
        let header = String::from_utf8(rows_header()).unwrap();
        assert!(header.starts_with("zip_code,state,name,time,lat,lon,temp_c,"));
        assert!(header.ends_with(",gust_mph,gust_kph,uv\n"));
        // InfluxDB answers columns alphabetically, tags among them.
        let answer = series(
            &[
                "time", "lat", "name", "state", "temp_c", "wind_dir", "zip_code",
            ],
            vec![vec![
                json!(1_695_099_600),
                json!(42.35),
                json!("Allston, MA"),
                json!("MA"),
                json!(49),
                json!("SSW"),
                json!("02134"),
            ]],
        );
        let (bytes, count) = row_records(&[answer]);
        assert_eq!(count, 1);
        let line = String::from_utf8(bytes).unwrap();
        let cells: Vec<&str> = line.trim_end().splitn(8, ',').collect();
        assert_eq!(cells[0], "02134");
        assert_eq!(cells[1], "MA");
        assert_eq!(line.matches(',').count(), 36 + 1, "{line}"); // one comma is quoted
        assert!(
            line.starts_with("02134,MA,\"Allston, MA\",2023-09-19 05:00,42.35,,49,"),
            "{line}"
        );
    }

    #[test]
    fn reports_carry_their_kind() {
        let averages = series(
            &[
                "time",
                "avg_humidity",
                "avg_precip_mm",
                "avg_pressure_mb",
                "avg_temp_c",
                "count",
                "state",
            ],
            vec![vec![
                json!(0),
                json!(50.5),
                json!(0),
                json!(1013.25),
                json!(20.5),
                json!(3),
                json!("CA"),
            ]],
        );
        let (bytes, count) = report_records(ReportKind::Average, &[averages]);
        assert_eq!(count, 1);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "average,1970-01-01 00:00,CA,,3,20.5,1013.25,50.5,0,,,,\n"
        );
        let extremes = series(
            &[
                "time",
                "max_state",
                "max_value",
                "metric",
                "min_state",
                "min_value",
            ],
            vec![vec![
                json!(3600),
                json!("TX"),
                json!(30),
                json!("temp_c"),
                json!("AK"),
                json!(-2.5),
            ]],
        );
        let (bytes, _) = report_records(ReportKind::StateExtreme, &[extremes]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "state_extreme,1970-01-01 01:00,,temp_c,,,,,,TX,30,AK,-2.5\n"
        );
        assert_eq!(
            String::from_utf8(reports_header()).unwrap(),
            REPORT_COLUMNS.join(",") + "\n"
        );
    }
}
