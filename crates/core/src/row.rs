//! The row schema (one station, one hour) and reading it from CSV files: column mapping by
//! header name, per-row validation with file and line in every error, and skipping a record
//! too long to be a row (with [`crate::record_cap`]) without losing the place.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::HourKey;
use crate::record_cap::RecordCap;

/// The input layout (WeatherAPI hourly style), in the order `weathervane gen` writes it.
/// Files may order their columns differently; columns are found by name.
pub const CSV_COLUMNS: [&str; 37] = [
    "zip_code",
    "state",
    "name",
    "time",
    "lat",
    "lon",
    "temp_c",
    "temp_f",
    "is_day",
    "wind_mph",
    "wind_kph",
    "wind_degree",
    "wind_dir",
    "pressure_mb",
    "pressure_in",
    "precip_mm",
    "precip_in",
    "snow_cm",
    "humidity",
    "cloud",
    "feelslike_c",
    "feelslike_f",
    "windchill_c",
    "windchill_f",
    "heatindex_c",
    "heatindex_f",
    "dewpoint_c",
    "dewpoint_f",
    "will_it_rain",
    "chance_of_rain",
    "will_it_snow",
    "chance_of_snow",
    "vis_km",
    "vis_miles",
    "gust_mph",
    "gust_kph",
    "uv",
];

/// The numeric columns, in the order of [`WeatherRow::values`]. Every one is stored as a
/// float, always, so a column holding `49` in one row and `49.5` in another never causes
/// a field-type conflict in InfluxDB.
pub const NUMERIC_COLUMNS: [&str; 32] = [
    "lat",
    "lon",
    "temp_c",
    "temp_f",
    "is_day",
    "wind_mph",
    "wind_kph",
    "wind_degree",
    "pressure_mb",
    "pressure_in",
    "precip_mm",
    "precip_in",
    "snow_cm",
    "humidity",
    "cloud",
    "feelslike_c",
    "feelslike_f",
    "windchill_c",
    "windchill_f",
    "heatindex_c",
    "heatindex_f",
    "dewpoint_c",
    "dewpoint_f",
    "will_it_rain",
    "chance_of_rain",
    "will_it_snow",
    "chance_of_snow",
    "vis_km",
    "vis_miles",
    "gust_mph",
    "gust_kph",
    "uv",
];

/// The earliest and latest hour a row may fall in: InfluxDB stores nanosecond timestamps
/// in an i64, 1677-09-21 to 2262-04-11; whole years inside that span keep a year typo
/// (`0023`, `+10000`) out, and leave room for the hour after the last.
pub const FIRST_YEAR: i32 = 1678;
pub const LAST_YEAR: i32 = 2261;
/// InfluxDB 1.x refuses string fields longer than 64 KiB.
pub const MAX_STRING_FIELD_BYTES: usize = 65_535;
/// The longest record (row) read into memory: a record longer than this is rejected without
/// being read whole. Far above any row that could pass the checks (its two string fields are
/// at most [`MAX_STRING_FIELD_BYTES`] each, its numbers are short), so only a broken or
/// hostile file meets it, and a 64 MB one-field line costs 1 MiB of memory, not 64 MB.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// The field delimiters a file may use; the header row says which (see
/// [`detect_delimiter`]).
pub const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];
/// How much of a file's start is read to find its header row's delimiter.
const HEADER_SNIFF_BYTES: u64 = 64 * 1024;
/// The largest magnitude any stage accepts: sums of up to 10^200 such values stay finite,
/// so no report can overflow. The streamer's own limit (`--max-abs-value`) is tighter.
pub const HARD_MAX_ABS_VALUE: f64 = 1e100;
/// The streamer's default limit on a value's magnitude: far beyond any weather reading,
/// close enough to catch a unit or decimal-point mistake.
pub const DEFAULT_MAX_ABS_VALUE: f64 = 1e9;

/// The four metrics every hourly report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    TempC,
    PressureMb,
    Humidity,
    PrecipMm,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::TempC,
        Metric::PressureMb,
        Metric::Humidity,
        Metric::PrecipMm,
    ];

    /// The column (and InfluxDB field) name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::TempC => "temp_c",
            Metric::PressureMb => "pressure_mb",
            Metric::Humidity => "humidity",
            Metric::PrecipMm => "precip_mm",
        }
    }

    /// Position of this metric in [`WeatherRow::values`].
    pub fn index(self) -> usize {
        numeric_index(self.name()).expect("every metric is a numeric column")
    }
}

fn numeric_index(name: &str) -> Option<usize> {
    NUMERIC_COLUMNS.iter().position(|column| *column == name)
}

/// One observation: one station (identified by its zip code) at one time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeatherRow {
    /// A string, so `02134` keeps its leading zero.
    pub zip_code: String,
    /// Two uppercase letters.
    pub state: String,
    pub name: String,
    /// Seconds since the Unix epoch (UTC).
    pub time: i64,
    pub wind_dir: String,
    /// Values of [`NUMERIC_COLUMNS`] in that order; `None` where the cell was empty.
    /// The report metrics are never `None`.
    pub values: [Option<f64>; NUMERIC_COLUMNS.len()],
}

impl WeatherRow {
    pub fn hour(&self) -> HourKey {
        HourKey::containing(self.time_utc())
    }

    pub fn time_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.time, 0).unwrap_or_default()
    }

    /// The value of a report metric, which a parsed row always has.
    pub fn metric(&self, metric: Metric) -> f64 {
        self.values[metric.index()].unwrap_or(f64::NAN)
    }

    /// Checks the invariants a parsed row has, for rows that arrive from elsewhere
    /// (a channel payload) rather than from [`CsvSource`].
    pub fn validate(&self) -> Result<(), String> {
        validate_state(&self.state)?;
        validate_zip(&self.zip_code)?;
        validate_year(self.time_utc().year_ce(), &self.time.to_string())?;
        validate_string("name", &self.name)?;
        validate_string("wind_dir", &self.wind_dir)?;
        for (column, value) in NUMERIC_COLUMNS.iter().zip(&self.values) {
            if let Some(value) = value {
                validate_value(column, *value, &value.to_string(), HARD_MAX_ABS_VALUE)?;
            }
        }
        for metric in Metric::ALL {
            if self.values[metric.index()].is_none() {
                return Err(format!("{} is missing", metric.name()));
            }
        }
        Ok(())
    }
}

fn validate_year((after_ce, year): (bool, u32), time: &str) -> Result<(), String> {
    let year = if after_ce {
        year as i32
    } else {
        1 - year as i32
    };
    if (FIRST_YEAR..=LAST_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(format!(
            "time {time:?} is in year {year}, outside {FIRST_YEAR}-{LAST_YEAR} (InfluxDB's range); a typo in the year?"
        ))
    }
}

fn validate_string(column: &str, text: &str) -> Result<(), String> {
    if text.len() <= MAX_STRING_FIELD_BYTES {
        Ok(())
    } else {
        Err(format!(
            "{column} is {} bytes; InfluxDB takes at most {MAX_STRING_FIELD_BYTES}",
            text.len()
        ))
    }
}

fn validate_value(column: &str, value: f64, text: &str, max_abs: f64) -> Result<(), String> {
    if !value.is_finite() {
        return Err(format!("{column} {text:?} is not a finite number"));
    }
    if value.abs() > max_abs {
        return Err(format!(
            "{column} {text:?} is beyond ±{max_abs:e} (--max-abs-value)"
        ));
    }
    Ok(())
}

fn validate_state(state: &str) -> Result<(), String> {
    if state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("state {state:?} is not two uppercase letters"))
    }
}

fn validate_zip(zip: &str) -> Result<(), String> {
    if !zip.is_empty()
        && zip.len() <= 16
        && zip.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "zip_code {zip:?} is not 1-16 letters, digits or '-'"
        ))
    }
}

/// Parses `YYYY-MM-DD HH:MM` (UTC), with optional seconds, or RFC 3339.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|time| time.to_utc())
        })
}

/// A row (or a whole file) that could not be read, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: bad header: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("{}", .0)]
    Row(#[from] RowError),
}

#[derive(Debug, thiserror::Error)]
pub struct RowError {
    pub path: PathBuf,
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// Where a record starts in its file, so an hour can be read again later without keeping
/// its rows in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowLocation {
    pub position: csv::Position,
}

/// Which CSV column holds which field of [`WeatherRow`]; built from the header, so column
/// order may differ between files and unknown columns are ignored.
#[derive(Clone, Debug)]
struct ColumnMap {
    zip_code: usize,
    state: usize,
    name: Option<usize>,
    time: TimeSource,
    wind_dir: Option<usize>,
    numeric: [Option<usize>; NUMERIC_COLUMNS.len()],
    /// The largest magnitude a value may have.
    max_abs_value: f64,
    /// The header's field count: a row with fewer is cut short.
    header_fields: usize,
    /// The last column a row must reach.
    last_required: usize,
}

/// Which column gives a row's UTC time.
#[derive(Clone, Copy, Debug)]
enum TimeSource {
    /// `time`: `YYYY-MM-DD HH:MM` taken as UTC, or RFC 3339.
    Text(usize),
    /// `time_epoch`: seconds since 1970-01-01 UTC.
    Epoch(usize),
}

/// Which column the row's time comes from (`--time-column`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeColumn {
    /// `time_epoch` when the file has that column (WeatherAPI's UTC time), else `time`.
    #[default]
    Auto,
    /// `time`, even when the file has `time_epoch`.
    Time,
    /// `time_epoch`; a file without it is refused.
    TimeEpoch,
}

/// How input files are read; the streamer's flags choose.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// Values beyond ±this are rejected (at most [`HARD_MAX_ABS_VALUE`]).
    pub max_abs_value: f64,
    pub time_column: TimeColumn,
    /// A record longer than this is rejected without being read whole.
    pub max_record_bytes: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_abs_value: DEFAULT_MAX_ABS_VALUE,
            time_column: TimeColumn::Auto,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }
}

/// The delimiter the header row `line` (the file's first line) uses: of [`DELIMITERS`],
/// the one that splits it into the most fields (a comma when none splits it).
pub fn detect_delimiter(line: &[u8]) -> u8 {
    let fields = |delimiter: u8| {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .from_reader(line)
            .byte_records()
            .next()
            .and_then(Result::ok)
            .map_or(0, |record| record.len())
    };
    // max_by_key keeps the last of equals; reversed, the first (the comma) wins ties.
    DELIMITERS
        .iter()
        .rev()
        .copied()
        .max_by_key(|delimiter| fields(*delimiter))
        .unwrap_or(b',')
}

/// A printable name for a delimiter, for messages.
fn delimiter_name(delimiter: u8) -> &'static str {
    match delimiter {
        b',' => "commas",
        b';' => "semicolons",
        b'\t' => "tabs",
        b'|' => "'|'",
        _ => "another character",
    }
}

/// Why a header lacks required columns: which, what it has, and the likely cause.
fn describe_missing(header: &csv::StringRecord, missing: &[&str], delimiter: u8) -> String {
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut found: Vec<&str> = header.iter().take(12).collect();
    if header.len() > 12 {
        found.push("...");
    }
    let cause = if header.len() <= 1 {
        format!(
            "; the header is one field, not separated by {}: is the file separated by something else than commas, semicolons, tabs or '|'?",
            delimiter_name(delimiter)
        )
    } else if missing.len() + 1 >= REQUIRED_COLUMNS {
        "; is the first line a header row, and is this a WeatherAPI hourly export?".to_owned()
    } else {
        String::new()
    };
    format!(
        "missing column{} {}; the header (separated by {}) has {} column{}: {}{cause}",
        if missing.len() == 1 { "" } else { "s" },
        quoted(&mut missing.iter().copied()),
        delimiter_name(delimiter),
        header.len(),
        if header.len() == 1 { "" } else { "s" },
        quoted(&mut found.into_iter()),
    )
}

/// zip_code, state, the time and the four metrics.
const REQUIRED_COLUMNS: usize = 7;

impl ColumnMap {
    fn from_header(
        header: &csv::StringRecord,
        time_column: TimeColumn,
        delimiter: u8,
    ) -> Result<Self, String> {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let time = match (time_column, find("time_epoch"), find("time")) {
            (TimeColumn::Auto | TimeColumn::TimeEpoch, Some(epoch), _) => {
                Some(TimeSource::Epoch(epoch))
            }
            (TimeColumn::Auto | TimeColumn::Time, _, Some(text)) => Some(TimeSource::Text(text)),
            _ => None,
        };
        let time_name = match time_column {
            TimeColumn::TimeEpoch => "time_epoch",
            _ => "time",
        };
        let missing: Vec<&str> = ["zip_code", "state"]
            .into_iter()
            .filter(|name| find(name).is_none())
            .chain(time.is_none().then_some(time_name))
            .chain(
                Metric::ALL
                    .iter()
                    .map(|m| m.name())
                    .filter(|name| find(name).is_none()),
            )
            .collect();
        if !missing.is_empty() {
            return Err(describe_missing(header, &missing, delimiter));
        }
        let required = |name: &str| find(name).expect("checked above");
        let (zip_code, state) = (required("zip_code"), required("state"));
        let time = time.expect("checked above");
        let time_index = match time {
            TimeSource::Text(index) | TimeSource::Epoch(index) => index,
        };
        let last_required = Metric::ALL
            .iter()
            .map(|m| required(m.name()))
            .chain([zip_code, state, time_index])
            .max()
            .expect("there are required columns");
        Ok(Self {
            zip_code,
            state,
            name: find("name"),
            time,
            wind_dir: find("wind_dir"),
            numeric: NUMERIC_COLUMNS.map(find),
            max_abs_value: DEFAULT_MAX_ABS_VALUE,
            header_fields: header.len(),
            last_required,
        })
    }

    fn parse(&self, record: &csv::StringRecord) -> Result<WeatherRow, String> {
        if record.len() <= self.last_required {
            return Err(format!(
                "has {} of the header's {} fields",
                record.len(),
                self.header_fields
            ));
        }
        let cell = |index: usize| record.get(index).unwrap_or("").trim();
        let optional = |index: Option<usize>| index.map(cell).unwrap_or("").to_owned();
        let zip_code = cell(self.zip_code).to_owned();
        validate_zip(&zip_code)?;
        let state_text = cell(self.state);
        let state = state_text.to_ascii_uppercase();
        if validate_state(&state).is_err() {
            return Err(format!("state {state_text:?} is not two letters"));
        }
        let time = match self.time {
            TimeSource::Text(index) => {
                let text = cell(index);
                let time = parse_time(text)
                    .ok_or_else(|| format!("time {text:?} is not YYYY-MM-DD HH:MM or RFC 3339"))?;
                validate_year(time.year_ce(), text)?;
                time
            }
            TimeSource::Epoch(index) => {
                let text = cell(index);
                let time = text
                    .parse::<i64>()
                    .ok()
                    .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                    .ok_or_else(|| {
                        format!("time_epoch {text:?} is not whole seconds since 1970 (UTC)")
                    })?;
                validate_year(time.year_ce(), text)?;
                time
            }
        };
        let (name, wind_dir) = (optional(self.name), optional(self.wind_dir));
        validate_string("name", &name)?;
        validate_string("wind_dir", &wind_dir)?;
        let mut values = [None; NUMERIC_COLUMNS.len()];
        for (slot, (column, index)) in values
            .iter_mut()
            .zip(NUMERIC_COLUMNS.iter().zip(self.numeric))
        {
            let text = index.map(cell).unwrap_or("");
            if text.is_empty() {
                continue;
            }
            let value: f64 = text
                .parse()
                .map_err(|_| format!("{column} {text:?} is not a number"))?;
            validate_value(column, value, text, self.max_abs_value)?;
            *slot = Some(value);
        }
        for metric in Metric::ALL {
            if values[metric.index()].is_none() {
                return Err(format!("{} is empty", metric.name()));
            }
        }
        Ok(WeatherRow {
            zip_code,
            state,
            name,
            time: time.timestamp(),
            wind_dir,
            values,
        })
    }
}

/// One CSV input file, read row by row.
pub struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<RecordCap<File>>,
    columns: ColumnMap,
    record: csv::StringRecord,
}

impl CsvSource {
    pub fn open(path: &Path) -> Result<Self, CsvError> {
        Self::open_with(path, &ReadOptions::default())
    }

    /// Opens `path`, finds its delimiter from the header row and its columns from the
    /// header. The record cap is set here because the first read already takes in many
    /// records.
    pub fn open_with(path: &Path, options: &ReadOptions) -> Result<Self, CsvError> {
        let open_error = |source| CsvError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_error)?;
        let mut start = Vec::new();
        (&mut file)
            .take(HEADER_SNIFF_BYTES)
            .read_to_end(&mut start)
            .map_err(open_error)?;
        let header_error = |reason: String| CsvError::Header {
            path: path.to_owned(),
            reason,
        };
        if start.iter().all(u8::is_ascii_whitespace) {
            return Err(header_error(
                "the file is empty: expected a header row (zip_code,state,time,temp_c,...) first"
                    .into(),
            ));
        }
        let first_line = start.split(|b| *b == b'\n').next().unwrap_or(&start);
        let delimiter = detect_delimiter(first_line);
        file.seek(SeekFrom::Start(0)).map_err(open_error)?;
        // RecordCap parses as this reader does only while both use the same settings: the
        // defaults, and the delimiter given to both.
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(RecordCap::new(file, delimiter, options.max_record_bytes));
        let header = reader.headers().map_err(|e| header_error(e.to_string()))?;
        let mut columns =
            ColumnMap::from_header(header, options.time_column, delimiter).map_err(header_error)?;
        columns.max_abs_value = options.max_abs_value.min(HARD_MAX_ABS_VALUE);
        Ok(Self {
            path: path.to_owned(),
            reader,
            columns,
            record: csv::StringRecord::new(),
        })
    }

    /// The next row with where it starts, or the error that rejected it; `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<(RowLocation, WeatherRow), RowError>> {
        let position = self.reader.position().clone();
        let result = self.reader.read_record(&mut self.record);
        if result.is_err()
            && let Some(error) = self.skip_oversized(&position)
        {
            return Some(Err(error));
        }
        let row_error = |line: u64, reason: String| RowError {
            path: self.path.clone(),
            line,
            reason,
        };
        match result {
            Ok(false) => None,
            Ok(true) => {
                let start = self.record.position().cloned().unwrap_or(position);
                Some(
                    self.columns
                        .parse(&self.record)
                        .map(|row| {
                            (
                                RowLocation {
                                    position: start.clone(),
                                },
                                row,
                            )
                        })
                        .map_err(|reason| row_error(start.line(), reason)),
                )
            }
            Err(error) => {
                let line = error.position().map_or(position.line(), |p| p.line());
                Some(Err(row_error(line, error.to_string())))
            }
        }
    }

    /// After a failed read: if it failed because the record starting at `start` is longer
    /// than the cap, skips the rest of it, moves the csv reader to the next record (with its
    /// true byte offset and line, so later locations stay right), and returns the error for
    /// the skipped record.
    fn skip_oversized(&mut self, start: &csv::Position) -> Option<RowError> {
        let max = self.reader.get_ref().max();
        let row_error = |reason: String| RowError {
            path: self.path.clone(),
            line: start.line(),
            reason,
        };
        let skipped = match self.reader.get_mut().skip_oversized() {
            Ok(skipped) => skipped?,
            // The csv reader stays stopped by the failed read: the file ends here.
            Err(error) => {
                return Some(row_error(format!(
                    "record is longer than {max} bytes, and reading on past it failed: {error}"
                )));
            }
        };
        // The csv reader was handed every byte before the record and none of it beyond the
        // cap, so it stands at the record's start.
        debug_assert_eq!(skipped.start, start.byte());
        let mut next = csv::Position::new();
        next.set_byte(skipped.next)
            .set_line(start.line() + skipped.newlines)
            // Exact as well: the skipped record counts as one, as it would have if read.
            .set_record(start.record() + 1);
        // `seek_raw` always seeks; `seek` would skip seeking if the offsets matched, which
        // would leave the failed state in place.
        if let Err(error) = self.reader.seek_raw(SeekFrom::Start(skipped.next), next) {
            return Some(row_error(format!(
                "record is longer than {max} bytes, and seeking past it failed: {error}"
            )));
        }
        Some(row_error(format!(
            "record is longer than {max} bytes; skipped"
        )))
    }

    /// Reads the row that starts at `location` (from an earlier [`Self::next_row`]).
    pub fn read_at(&mut self, location: &RowLocation) -> Result<WeatherRow, RowError> {
        if self.reader.position().byte() != location.position.byte() {
            self.reader
                .seek(location.position.clone())
                .map_err(|error| RowError {
                    path: self.path.clone(),
                    line: location.position.line(),
                    reason: format!("cannot seek: {error}"),
                })?;
        }
        match self.next_row() {
            Some(Ok((_, row))) => Ok(row),
            Some(Err(error)) => Err(error),
            None => Err(RowError {
                path: self.path.clone(),
                line: location.position.line(),
                reason: "the file ended early (was it changed while WeatherVane ran?)".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn header() -> String {
        CSV_COLUMNS.join(",")
    }
    const GOOD: &str = "02134,MA,Allston,2023-09-19 05:00,42.35,-71.13,14.2,57.6,0,3.1,5.0,200,SSW,1015.0,29.97,0.0,0.0,0,88,25,13.9,57.0,13.9,57.0,14.2,57.6,12.2,54.0,0,0,0,0,10.0,6.0,6.3,10.1,1.0";

    fn file_with(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        file
    }

    fn read_all(path: &Path) -> Vec<Result<WeatherRow, RowError>> {
        let mut source = CsvSource::open(path).unwrap();
        std::iter::from_fn(|| source.next_row())
            .map(|r| r.map(|(_, row)| row))
            .collect()
    }

    #[test]
    fn what_influxdb_would_refuse_is_rejected_at_the_source() {
        let year = |y: &str| GOOD.replace("2023-09-19 05:00", &format!("{y}-09-19 05:00"));
        let huge_temp = GOOD.replace(",14.2,57.6,0,", ",1e308,57.6,0,");
        let long_name = GOOD.replace("Allston", &"x".repeat(MAX_STRING_FIELD_BYTES + 1));
        let edge_name = GOOD.replace("Allston", &"x".repeat(MAX_STRING_FIELD_BYTES - 1));
        let file = file_with(&[
            &header(),
            &year("0023"),
            &year("1600"),
            &year("2300"),
            &GOOD.replace("2023-09-19 05:00", "+10000-09-19T05:00:00Z"),
            &huge_temp,
            &long_name,
            &year("1678"),
            &year("2261"),
            &edge_name,
        ]);
        let rows = read_all(file.path());
        let reasons: Vec<String> = rows[..6]
            .iter()
            .map(|r| r.as_ref().unwrap_err().reason.clone())
            .collect();
        for (reason, year) in reasons.iter().zip(["23", "1600", "2300"]) {
            assert!(
                reason.contains(&format!("in year {year}, outside 1678-2261")),
                "{reason}"
            );
        }
        assert!(
            reasons[3].contains("+10000") || reasons[3].contains("time"),
            "{}",
            reasons[3]
        );
        assert!(
            reasons[4].contains("temp_c \"1e308\" is beyond"),
            "{}",
            reasons[4]
        );
        assert!(reasons[5].contains("name is 65536 bytes"), "{}", reasons[5]);
        assert!(
            rows[6..].iter().all(Result::is_ok),
            "the edges are accepted"
        );
        let mut row = rows[6].as_ref().unwrap().clone();
        row.values[Metric::TempC.index()] = Some(1e101);
        assert!(row.validate().unwrap_err().contains("beyond"));
        row.values[Metric::TempC.index()] = Some(1e99);
        assert!(
            row.validate().is_ok(),
            "the ingester's bound is the hard one"
        );
        row.time = -10_000_000_000; // 1653
        assert!(row.validate().unwrap_err().contains("outside 1678-2261"));
    }

    #[test]
    fn a_looser_limit_can_be_set_up_to_the_hard_one() {
        let file = file_with(&[&header(), &GOOD.replace(",14.2,57.6,0,", ",5e12,57.6,0,")]);
        assert!(read_all(file.path())[0].is_err());
        let options = ReadOptions {
            max_abs_value: 1e13,
            ..ReadOptions::default()
        };
        let mut source = CsvSource::open_with(file.path(), &options).unwrap();
        assert!(source.next_row().unwrap().is_ok());
    }

    #[test]
    fn every_numeric_column_is_an_input_column() {
        assert!(NUMERIC_COLUMNS.iter().all(|c| CSV_COLUMNS.contains(c)));
        assert_eq!(CSV_COLUMNS.len(), NUMERIC_COLUMNS.len() + 5);
    }

    #[test]
    fn parses_a_good_row() {
        let file = file_with(&[&header(), GOOD]);
        let rows = read_all(file.path());
        let row = rows[0].as_ref().unwrap();
        assert_eq!(row.zip_code, "02134");
        assert_eq!(row.state, "MA");
        assert_eq!(row.wind_dir, "SSW");
        assert_eq!(row.hour().to_string(), "2023-09-19T05");
        assert_eq!(row.metric(Metric::TempC), 14.2);
        assert_eq!(row.metric(Metric::Humidity), 88.0);
        assert_eq!(row.values[numeric_index("uv").unwrap()], Some(1.0));
        assert!(row.validate().is_ok());
    }

    #[test]
    fn bad_rows_name_their_line_and_reason_and_the_rest_goes_on() {
        let bad_temp = GOOD.replace(",14.2,57.6,0,", ",hot,57.6,0,");
        let bad_time = GOOD.replace("2023-09-19 05:00", "19/09/2023");
        let bad_state = GOOD.replace(",MA,", ",Mass,");
        let file = file_with(&[
            &header(),
            GOOD,
            &bad_temp,
            &bad_time,
            "02134,MA",
            &bad_state,
            GOOD,
        ]);
        let rows = read_all(file.path());
        assert_eq!(rows.len(), 6);
        let errors: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 4);
        assert_eq!(errors[0].line, 3);
        assert!(errors[0].reason.contains("temp_c \"hot\""), "{}", errors[0]);
        assert_eq!(errors[1].line, 4);
        assert!(errors[1].reason.contains("time"), "{}", errors[1]);
        assert_eq!(errors[2].line, 5);
        assert_eq!(errors[2].reason, "has 2 of the header's 37 fields");
        assert_eq!(errors[3].line, 6);
        assert_eq!(
            errors[3].reason, "state \"Mass\" is not two letters",
            "as in the file"
        );
        assert!(
            errors[0]
                .to_string()
                .starts_with(&format!("{}:3: ", file.path().display()))
        );
        assert!(rows[5].is_ok());
    }

    #[test]
    fn columns_may_be_reordered_and_extra_ones_ignored() {
        let file = file_with(&[
            "time,state,zip_code,temp_c,pressure_mb,humidity,precip_mm,extra",
            "2023-09-19T05:30:00Z,ca,90210,20.5,1010,40,0.5,whatever",
        ]);
        let rows = read_all(file.path());
        let row = rows[0].as_ref().unwrap();
        assert_eq!((row.state.as_str(), row.zip_code.as_str()), ("CA", "90210"));
        assert_eq!(row.hour().to_string(), "2023-09-19T05");
        assert_eq!(row.values[numeric_index("lat").unwrap()], None);
    }

    #[test]
    fn a_missing_metric_column_is_a_header_error() {
        let file = file_with(&["zip_code,state,time,temp_c,pressure_mb,humidity"]);
        let error = CsvSource::open(file.path()).err().unwrap().to_string();
        assert!(error.contains("missing column \"precip_mm\""), "{error}");
    }

    #[test]
    fn read_at_returns_the_row_at_a_location() {
        let second = GOOD.replace("02134", "02135");
        let file = file_with(&[&header(), GOOD, &second]);
        let mut source = CsvSource::open(file.path()).unwrap();
        let (first_at, _) = source.next_row().unwrap().unwrap();
        let (second_at, _) = source.next_row().unwrap().unwrap();
        assert_eq!(source.read_at(&second_at).unwrap().zip_code, "02135");
        assert_eq!(source.read_at(&first_at).unwrap().zip_code, "02134");
        assert_eq!(source.read_at(&second_at).unwrap().zip_code, "02135");
    }

    /// Writes `records` (each ending in `terminator` unless it is the last of an
    /// unterminated file) and returns the file with each record's start: byte offset and
    /// 1-based line, counted here from the text itself.
    fn file_of_records(
        records: &[String],
        terminator: &str,
        last_terminated: bool,
    ) -> (tempfile::NamedTempFile, Vec<(u64, u64)>) {
        let mut text = String::new();
        let mut starts = Vec::new();
        for (index, record) in records.iter().enumerate() {
            starts.push((text.len() as u64, text.matches('\n').count() as u64 + 1));
            text.push_str(record);
            if index + 1 < records.len() || last_terminated {
                text.push_str(terminator);
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        (file, starts)
    }

    /// Where the csv crate alone (no cap) says each record starts.
    fn positions_without_cap(path: &Path) -> Vec<csv::Position> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_path(path)
            .unwrap();
        reader
            .byte_records()
            .map(|record| record.unwrap().position().unwrap().clone())
            .collect()
    }

    /// `GOOD` with another zip code (to tell rows apart) and another name cell.
    fn good_row(zip: u32, name: &str) -> String {
        GOOD.replace("02134", &format!("{zip:05}"))
            .replace("Allston", name)
    }

    /// A quoted name of exactly `len` bytes, quotes included, full of newlines and commas.
    fn quoted_name(len: usize) -> String {
        let inner: String = "ab,\ncd,".chars().cycle().take(len - 2).collect();
        format!("\"{inner}\"")
    }

    /// Reads a file of good rows and records longer than `max`, and checks that each long
    /// one is an error at its start line, each good row comes out at its true line and byte
    /// offset (as counted from the text and as the csv crate alone finds them), and
    /// `read_at` finds every good row again.
    fn check_oversized_records_are_skipped(max: u64, terminator: &str) {
        let max_len = max as usize;
        // The longest row under the cap: the record with its terminator is `max` bytes, the
        // name a quoted field with newlines and commas in it.
        let at_cap = {
            let without_name = good_row(10, "").len() + terminator.len();
            good_row(10, &quoted_name(max_len - without_name))
        };
        assert_eq!(at_cap.len() + terminator.len(), max_len);
        // At the real cap the name is far too long for InfluxDB: the row is read and then
        // rejected by that rule, not by the cap.
        let at_cap_good = max_len - good_row(10, "").len() <= MAX_STRING_FIELD_BYTES;
        let one_field = |zip| good_row(zip, &"h".repeat(3 * max_len));
        let quoted = |zip| good_row(zip, &quoted_name(3 * max_len));
        // (record, whether it is a good row)
        let records: Vec<(String, bool)> = vec![
            (header(), false),
            (good_row(1, "first"), true),
            (one_field(90001), false),
            (good_row(2, "after the one-field record"), true),
            (quoted(90002), false),
            (one_field(90003), false),
            (good_row(3, "after two in a row"), true),
            (at_cap, at_cap_good),
            (good_row(4, "after the row at the cap"), true),
            (quoted(90004), false),
        ];
        let texts: Vec<String> = records.iter().map(|(text, _)| text.clone()).collect();
        for last_terminated in [true, false] {
            let (file, starts) = file_of_records(&texts, terminator, last_terminated);
            let oracle = positions_without_cap(file.path());
            assert_eq!(oracle.len(), records.len());
            let options = ReadOptions {
                max_record_bytes: max,
                ..ReadOptions::default()
            };
            let mut source = CsvSource::open_with(file.path(), &options).unwrap();
            let results: Vec<_> = std::iter::from_fn(|| source.next_row()).collect();
            assert_eq!(results.len(), records.len() - 1, "one result per record");
            let mut found = Vec::new();
            for (index, result) in results.into_iter().enumerate() {
                let (record, good) = &records[index + 1];
                let (mut byte, mut line) = starts[index + 1];
                if terminator == "\r\n" {
                    // The csv parser ends a record at its '\r', so the next one starts at the
                    // '\n', on the line before.
                    (byte, line) = (byte - 1, line - 1);
                }
                let context = format!("record {} ({max}, {terminator:?})", index + 1);
                if *good {
                    let (location, row) = result.unwrap_or_else(|e| panic!("{context}: {e}"));
                    let zip = record.split(',').next().unwrap();
                    assert_eq!(row.zip_code, zip, "{context}");
                    assert_eq!(location.position.byte(), byte, "{context}");
                    assert_eq!(location.position.line(), line, "{context}");
                    assert_eq!(location.position, oracle[index + 1], "{context}");
                    found.push((location, row));
                } else {
                    let error = result
                        .err()
                        .unwrap_or_else(|| panic!("{context}: accepted"));
                    if record.len() + terminator.len() <= max_len {
                        assert!(error.reason.starts_with("name is "), "{context}: {error}");
                    } else {
                        assert_eq!(
                            error.reason,
                            format!("record is longer than {max} bytes; skipped"),
                            "{context}"
                        );
                    }
                    assert_eq!(error.line, line, "{context}");
                    assert_eq!(error.line, oracle[index + 1].line(), "{context}");
                    assert_eq!(error.path, file.path(), "{context}");
                }
            }
            assert_eq!(found.len(), 4 + usize::from(at_cap_good));
            for (location, row) in found.iter().rev() {
                assert_eq!(&source.read_at(location).unwrap(), row);
            }
        }
    }

    #[test]
    fn records_over_the_cap_are_errors_and_later_rows_keep_their_places() {
        // Under, at and over the csv reader's 8 KiB buffer: a record may be found too long
        // inside the same read as the end of the record before it, or reads later.
        for max in [1_000, 4_096, 20_000] {
            check_oversized_records_are_skipped(max, "\n");
            check_oversized_records_are_skipped(max, "\r\n");
        }
    }

    #[test]
    fn the_real_cap_rejects_a_3_mib_record_and_keeps_a_row_just_under_it() {
        check_oversized_records_are_skipped(MAX_RECORD_BYTES, "\n");
        assert_eq!(
            MAX_RECORD_BYTES, 1_048_576,
            "as the reason in the README says"
        );
    }

    #[test]
    fn a_header_over_the_cap_is_a_header_error() {
        let header = format!("{},{}", header(), "x".repeat(MAX_RECORD_BYTES as usize));
        let file = file_with(&[&header, GOOD]);
        let error = CsvSource::open(file.path()).err().unwrap().to_string();
        assert!(
            error.ends_with("bad header: record is longer than 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        let file = file_with(&[&header(), &GOOD.replace(",1015.0,", ",NaN,")]);
        let rows = read_all(file.path());
        assert!(rows[0].as_ref().unwrap_err().reason.contains("pressure_mb"));
    }

    #[test]
    fn a_semicolon_or_tab_separated_file_is_read_like_a_comma_separated_one() {
        let comma = file_with(&[&header(), GOOD]);
        let expected = read_all(comma.path()).remove(0).unwrap();
        for delimiter in [";", "\t", "|"] {
            // GOOD has no quoted field, so swapping every comma is a faithful conversion.
            let file = file_with(&[
                &header().replace(',', delimiter),
                &GOOD.replace(',', delimiter),
            ]);
            let rows = read_all(file.path());
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].as_ref().unwrap(), &expected, "{delimiter:?}");
        }
        assert_eq!(detect_delimiter(b"a,b;c"), b',', "a tie goes to the comma");
        assert_eq!(detect_delimiter(b"zip_code"), b',');
    }

    #[test]
    fn a_bad_header_names_every_missing_column_what_it_has_and_the_likely_cause() {
        let header_error = |lines: &[&str]| match CsvSource::open(file_with(lines).path()) {
            Err(CsvError::Header { reason, .. }) => reason,
            Err(other) => panic!("not a header error: {other}"),
            Ok(_) => panic!("opened"),
        };
        let empty = header_error(&[]);
        assert!(empty.contains("the file is empty"), "{empty}");
        let wrong = header_error(&["date,city,temperature", "2023-09-19,Boston,14"]);
        for name in [
            "zip_code",
            "state",
            "time",
            "temp_c",
            "pressure_mb",
            "humidity",
            "precip_mm",
        ] {
            assert!(wrong.contains(&format!("{name:?}")), "{name}: {wrong}");
        }
        assert!(
            wrong.contains("3 columns: \"date\", \"city\", \"temperature\""),
            "{wrong}"
        );
        assert!(wrong.contains("header row"), "{wrong}");
        let one_field = header_error(&["zip_code:state:time:temp_c"]);
        assert!(one_field.contains("one field"), "{one_field}");
        let no_humidity = header_error(&[&header().replace("humidity", "hum")]);
        assert!(
            no_humidity.starts_with(
                "missing column \"humidity\"; the header (separated by commas) has 37 columns"
            ),
            "{no_humidity}"
        );
    }

    #[test]
    fn time_epoch_is_the_rows_utc_time_when_present_unless_time_is_chosen() {
        // WeatherAPI's `time` is local: 01:00 in New York is 05:00 UTC.
        let header = format!("{},time_epoch", header());
        let row = format!(
            "{},{}",
            GOOD.replace("2023-09-19 05:00", "2023-09-19 01:00"),
            1_695_099_600
        );
        let file = file_with(&[&header, &row]);
        let auto = read_all(file.path()).remove(0).unwrap();
        assert_eq!(auto.time, 1_695_099_600);
        assert_eq!(auto.hour().to_string(), "2023-09-19T05");
        let options = ReadOptions {
            time_column: TimeColumn::Time,
            ..ReadOptions::default()
        };
        let mut source = CsvSource::open_with(file.path(), &options).unwrap();
        let text = source.next_row().unwrap().unwrap().1;
        assert_eq!(text.hour().to_string(), "2023-09-19T01");
        // The DST repeat: two rows with the same local time are two hours apart in UTC.
        let repeat = file_with(&[
            &header,
            &format!(
                "{},{}",
                GOOD.replace("2023-09-19 05:00", "2023-11-05 01:00"),
                1_699_160_400
            ),
            &format!(
                "{},{}",
                GOOD.replace("2023-09-19 05:00", "2023-11-05 01:00")
                    .replace("02134", "02135"),
                1_699_164_000
            ),
        ]);
        let hours: Vec<String> = read_all(repeat.path())
            .into_iter()
            .map(|r| r.unwrap().hour().to_string())
            .collect();
        assert_eq!(hours, ["2023-11-05T05", "2023-11-05T06"]);
        let bad = file_with(&[&header, &format!("{GOOD},soon")]);
        let error = read_all(bad.path()).remove(0).unwrap_err();
        assert!(error.reason.contains("time_epoch \"soon\""), "{error}");
        let options = ReadOptions {
            time_column: TimeColumn::TimeEpoch,
            ..ReadOptions::default()
        };
        let without = file_with(&[&self::header(), GOOD]);
        let error = CsvSource::open_with(without.path(), &options)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("missing column \"time_epoch\""), "{error}");
    }
}
