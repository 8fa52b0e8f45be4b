//! `weathervane verify`: checks the outage guarantee against the input. It reads the CSV
//! files with the same row rules as the streamer (bad rows and repeated zip codes left
//! out), then asks InfluxDB, per hour: are exactly these rows there (count, and the sum of
//! every numeric column), and are the reports the ones the input gives?
//!
//! Sums rather than row-by-row comparison keep it usable on a full-scale day; the
//! end-to-end tests compare every value.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::{InfluxClient, InfluxError, Series};
use weathervane_core::report::{self, ExtremePair, HourReport, MetricValues};
use weathervane_core::row::{CsvSource, Metric, NUMERIC_COLUMNS};
use weathervane_core::schema::{STATE_EXTREMES, WEATHER_AVERAGES, WEATHER_DATA, ZIP_CODE_EXTREMES};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub influx: InfluxArgs,
    /// The CSV files that were streamed.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
}

/// What the input says one hour must look like.
#[derive(Default)]
struct HourInput {
    rows: Vec<(String, String, MetricValues)>,
    sums: [f64; NUMERIC_COLUMNS.len()],
}

/// The outcome: rows and hours expected and found, and what differs.
#[derive(Debug, Default)]
pub struct Verdict {
    pub rows_expected: u64,
    pub rows_stored: u64,
    pub hours: usize,
    pub hours_correct: usize,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self.rows_expected == self.rows_stored
            && self.hours == self.hours_correct
    }
}

fn read_input(paths: &[PathBuf]) -> anyhow::Result<BTreeMap<HourKey, HourInput>> {
    let mut hours: BTreeMap<HourKey, HourInput> = BTreeMap::new();
    let mut seen = HashSet::new();
    for path in paths {
        let mut source = CsvSource::open(path)?;
        while let Some(result) = source.next_row() {
            let Ok((_, row)) = result else { continue };
            if !seen.insert((row.zip_code.clone(), row.time)) {
                continue;
            }
            let hour = hours.entry(row.hour()).or_default();
            for (sum, value) in hour.sums.iter_mut().zip(&row.values) {
                *sum += value.unwrap_or(0.0);
            }
            let metrics = Metric::ALL.map(|m| row.metric(m));
            hour.rows.push((row.state, row.zip_code, metrics));
        }
    }
    Ok(hours)
}

/// Rows of every series, keyed by `(time, tag values...)` for the given tags.
fn keyed(
    series: &[Series],
    tags: &[&str],
) -> BTreeMap<(i64, Vec<String>), BTreeMap<String, Value>> {
    let mut rows = BTreeMap::new();
    for s in series {
        for values in &s.values {
            let record: BTreeMap<String, Value> = s
                .columns
                .iter()
                .cloned()
                .zip(values.iter().cloned())
                .collect();
            let time = record
                .get("time")
                .and_then(Value::as_i64)
                .unwrap_or_default();
            let key = tags
                .iter()
                .map(|t| {
                    record
                        .get(*t)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            rows.insert((time, key), record);
        }
    }
    rows
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn number(record: &BTreeMap<String, Value>, field: &str) -> f64 {
    record
        .get(field)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn text<'a>(record: &'a BTreeMap<String, Value>, field: &str) -> &'a str {
    record
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn pair_matches(record: &BTreeMap<String, Value>, holder: &str, pair: &ExtremePair) -> bool {
    text(record, &format!("max_{holder}")) == pair.max.holder
        && text(record, &format!("min_{holder}")) == pair.min.holder
        && close(number(record, "max_value"), pair.max.value)
        && close(number(record, "min_value"), pair.min.value)
}

/// Checks InfluxDB against the input files.
pub async fn verify(inputs: &[PathBuf], influx: &InfluxClient) -> anyhow::Result<Verdict> {
    let hours = tokio::task::block_in_place(|| read_input(inputs))?;
    let mut verdict = Verdict {
        hours: hours.len(),
        ..Verdict::default()
    };
    let (Some(first), Some(last)) = (hours.keys().next(), hours.keys().next_back()) else {
        return Ok(verdict);
    };
    let range = format!(
        "time >= '{}' AND time < '{}'",
        first.rfc3339(),
        last.next().rfc3339()
    );
    let sums: Vec<String> = NUMERIC_COLUMNS
        .iter()
        .map(|c| format!("SUM({c}) AS {c}"))
        .collect();
    // A database that does not exist holds nothing: the check runs, and fails.
    let query = |statement: String| async move {
        match influx.query(&statement).await {
            Err(InfluxError::DatabaseNotFound { .. }) => Ok(Vec::new()),
            answer => answer.with_context(|| statement.clone()),
        }
    };
    // One hour per query: summing every column of a whole full-scale day at once takes
    // InfluxDB 1.x minutes and gigabytes.
    let mut stored = BTreeMap::new();
    for hour in hours.keys() {
        let statement = format!(
            "SELECT COUNT(temp_c) AS rows, {} FROM {WEATHER_DATA} WHERE time >= '{}' AND time < '{}'",
            sums.join(", "),
            hour.rfc3339(),
            hour.next().rfc3339()
        );
        if let Some(record) = keyed(&query(statement).await?, &[]).into_values().next() {
            stored.insert(hour.start_secs(), record);
        }
    }
    let averages = keyed(
        &query(format!("SELECT * FROM {WEATHER_AVERAGES} WHERE {range}")).await?,
        &["state"],
    );
    let zip_extremes = keyed(
        &query(format!("SELECT * FROM {ZIP_CODE_EXTREMES} WHERE {range}")).await?,
        &["state", "metric"],
    );
    let state_extremes = keyed(
        &query(format!("SELECT * FROM {STATE_EXTREMES} WHERE {range}")).await?,
        &["metric"],
    );

    for (hour, input) in &hours {
        let time = hour.start_secs();
        verdict.rows_expected += input.rows.len() as u64;
        let before = verdict.problems.len();
        let counts = stored.get(&time);
        let rows_stored = counts.map_or(0.0, |c| number(c, "rows")) as u64;
        verdict.rows_stored += rows_stored;
        if rows_stored != input.rows.len() as u64 {
            verdict.problems.push(format!(
                "{hour}: {rows_stored} rows stored, {} in the input",
                input.rows.len()
            ));
        } else if let Some(counts) = counts {
            for (column, sum) in NUMERIC_COLUMNS.iter().zip(&input.sums) {
                let got = counts.get(*column).and_then(Value::as_f64).unwrap_or(0.0);
                if (got - sum).abs() > 1e-6 * sum.abs().max(1.0) {
                    verdict.problems.push(format!(
                        "{hour}: stored {column} values sum to {got}, the input's to {sum}"
                    ));
                }
            }
        }
        let expected: HourReport = report::compute(
            *hour,
            input
                .rows
                .iter()
                .map(|(s, z, m)| (s.as_str(), z.as_str(), *m)),
        );
        for average in &expected.averages {
            let ok = averages
                .get(&(time, vec![average.state.clone()]))
                .is_some_and(|r| {
                    number(r, "count") as u64 == average.count
                        && Metric::ALL
                            .iter()
                            .zip(average.means)
                            .all(|(m, mean)| close(number(r, &format!("avg_{}", m.name())), mean))
                });
            if !ok {
                verdict.problems.push(format!(
                    "{hour}: average of {} missing or wrong",
                    average.state
                ));
            }
        }
        for (state, pairs) in &expected.zip_extremes {
            for (metric, pair) in Metric::ALL.iter().zip(pairs) {
                let key = (time, vec![state.clone(), metric.name().to_owned()]);
                if !zip_extremes
                    .get(&key)
                    .is_some_and(|r| pair_matches(r, "zip_code", pair))
                {
                    verdict.problems.push(format!(
                        "{hour}: {} zip-code extremes of {state} missing or wrong",
                        metric.name()
                    ));
                }
            }
        }
        for (metric, pair) in Metric::ALL.iter().zip(&expected.state_extremes) {
            if !state_extremes
                .get(&(time, vec![metric.name().to_owned()]))
                .is_some_and(|r| pair_matches(r, "state", pair))
            {
                verdict.problems.push(format!(
                    "{hour}: {} state extremes missing or wrong",
                    metric.name()
                ));
            }
        }
        if verdict.problems.len() == before {
            verdict.hours_correct += 1;
        }
    }
    Ok(verdict)
}

/// Checks the database named by `args` against its input files.
pub async fn run(args: VerifyArgs) -> anyhow::Result<Verdict> {
    let influx = InfluxClient::new(&args.influx, Duration::from_secs(120))?;
    verify(&args.input, &influx).await
}

/// The text `weathervane verify` prints: the first problems, then one summary line.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in self.problems.iter().take(20) {
            writeln!(f, "  {problem}")?;
        }
        writeln!(
            f,
            "rows: {} expected, {} stored; hours with correct rows and reports: {}/{}; {}",
            self.rows_expected,
            self.rows_stored,
            self.hours_correct,
            self.hours,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}
