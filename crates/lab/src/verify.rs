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
use serde::Deserialize;
use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::InfluxClient;
use weathervane_core::progress::{self, ProgressBar};
use weathervane_core::report::{self, HourReport, MetricValues};
use weathervane_core::row::{CsvSource, Metric, NUMERIC_COLUMNS};
use weathervane_core::schema::{
    AverageFields, STATE_EXTREMES, StateExtremeFields, WEATHER_AVERAGES, WEATHER_DATA,
    ZIP_CODE_EXTREMES, ZipExtremeFields,
};

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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The same holders of the max and min, with values equal up to rounding.
fn same_extremes(
    holders: [&String; 2],
    values: [f64; 2],
    want_holders: [&String; 2],
    want_values: [f64; 2],
) -> bool {
    holders == want_holders && values.iter().zip(want_values).all(|(v, w)| close(*v, w))
}

/// A `weather_averages` point as InfluxDB answers it.
#[derive(Deserialize)]
struct StoredAverage {
    time: i64,
    state: String,
    #[serde(flatten)]
    fields: AverageFields,
}

/// A `zip_code_extremes` point as InfluxDB answers it.
#[derive(Deserialize)]
struct StoredZipExtreme {
    time: i64,
    state: String,
    #[serde(flatten)]
    fields: ZipExtremeFields,
}

/// A `state_extremes` point as InfluxDB answers it.
#[derive(Deserialize)]
struct StoredStateExtreme {
    time: i64,
    #[serde(flatten)]
    fields: StateExtremeFields,
}

/// What InfluxDB holds for the input's hours: per hour the row count and column sums,
/// and every report point, keyed by time and tags.
#[derive(Default)]
struct Stored {
    /// Hour start → the `rows` count and each numeric column's sum.
    rows: BTreeMap<i64, BTreeMap<String, Value>>,
    averages: BTreeMap<(i64, String), AverageFields>,
    zip_extremes: BTreeMap<(i64, String, String), ZipExtremeFields>,
    state_extremes: BTreeMap<(i64, String), StateExtremeFields>,
}

impl Stored {
    async fn read(
        influx: &InfluxClient,
        hours: &BTreeMap<HourKey, HourInput>,
        progress: &ProgressBar,
    ) -> anyhow::Result<Self> {
        let mut stored = Stored::default();
        let (Some(first), Some(last)) = (hours.keys().next(), hours.keys().next_back()) else {
            return Ok(stored);
        };
        let sums: Vec<String> = NUMERIC_COLUMNS
            .iter()
            .map(|c| format!("SUM({c}) AS {c}"))
            .collect();
        // One hour per query: summing every column of a whole full-scale day at once takes
        // InfluxDB 1.x minutes and gigabytes.
        for hour in hours.keys() {
            let statement = format!(
                "SELECT COUNT(temp_c) AS rows, {} FROM {WEATHER_DATA} WHERE time >= '{}' AND time < '{}'",
                sums.join(", "),
                hour.rfc3339(),
                hour.next().rfc3339()
            );
            let answer: Vec<BTreeMap<String, Value>> = records(influx, &statement).await?;
            if let Some(record) = answer.into_iter().next() {
                stored.rows.insert(hour.start_secs(), record);
            }
            progress.inc(1);
        }
        let range = format!(
            "time >= '{}' AND time < '{}'",
            first.rfc3339(),
            last.next().rfc3339()
        );
        let select = |measurement: &str| format!("SELECT * FROM {measurement} WHERE {range}");
        for a in records::<StoredAverage>(influx, &select(WEATHER_AVERAGES)).await? {
            stored.averages.insert((a.time, a.state), a.fields);
        }
        for z in records::<StoredZipExtreme>(influx, &select(ZIP_CODE_EXTREMES)).await? {
            let key = (z.time, z.state, z.fields.metric.clone());
            stored.zip_extremes.insert(key, z.fields);
        }
        for e in records::<StoredStateExtreme>(influx, &select(STATE_EXTREMES)).await? {
            stored
                .state_extremes
                .insert((e.time, e.fields.metric.clone()), e.fields);
        }
        Ok(stored)
    }
}

/// The rows `statement` selects, typed (none if the database does not exist: the check
/// runs, and fails).
async fn records<T: serde::de::DeserializeOwned>(
    influx: &InfluxClient,
    statement: &str,
) -> anyhow::Result<Vec<T>> {
    influx
        .query_records(statement)
        .await
        .with_context(|| statement.to_owned())
}

pub async fn verify(inputs: &[PathBuf], influx: &InfluxClient) -> anyhow::Result<Verdict> {
    let hours = tokio::task::block_in_place(|| read_input(inputs))?;
    // On a terminal, the hours checked (hidden otherwise; cleared at the end, as the
    // verdict says the rest).
    let progress = progress::bar("verify", hours.len() as u64, "hours");
    let stored = Stored::read(influx, &hours, &progress).await;
    progress.finish_and_clear();
    let stored = stored?;
    let mut verdict = Verdict {
        hours: hours.len(),
        ..Verdict::default()
    };
    for (hour, input) in &hours {
        let before = verdict.problems.len();
        check_rows(&mut verdict, *hour, input, &stored);
        check_reports(&mut verdict, *hour, input, &stored);
        if verdict.problems.len() == before {
            verdict.hours_correct += 1;
        }
    }
    Ok(verdict)
}

/// Are exactly the input's rows of `hour` stored (count, and every column's sum)?
fn check_rows(verdict: &mut Verdict, hour: HourKey, input: &HourInput, stored: &Stored) {
    verdict.rows_expected += input.rows.len() as u64;
    let counts = stored.rows.get(&hour.start_secs());
    let rows_stored = counts
        .and_then(|c| c.get("rows"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    verdict.rows_stored += rows_stored;
    if rows_stored != input.rows.len() as u64 {
        verdict.problems.push(format!(
            "{hour}: {rows_stored} rows stored, {} in the input",
            input.rows.len()
        ));
        return;
    }
    let Some(counts) = counts else { return };
    for (column, sum) in NUMERIC_COLUMNS.iter().zip(&input.sums) {
        let got = counts.get(*column).and_then(Value::as_f64).unwrap_or(0.0);
        if (got - sum).abs() > 1e-6 * sum.abs().max(1.0) {
            verdict.problems.push(format!(
                "{hour}: stored {column} values sum to {got}, the input's to {sum}"
            ));
        }
    }
}

/// Are `hour`'s reports the ones its input rows give?
fn check_reports(verdict: &mut Verdict, hour: HourKey, input: &HourInput, stored: &Stored) {
    let time = hour.start_secs();
    let expected: HourReport = report::compute(
        hour,
        input
            .rows
            .iter()
            .map(|(s, z, m)| (s.as_str(), z.as_str(), *m)),
    );
    for average in &expected.averages {
        let want = AverageFields::from(average);
        let ok = stored
            .averages
            .get(&(time, average.state.clone()))
            .is_some_and(|got| {
                got.count == want.count
                    && got
                        .means()
                        .iter()
                        .zip(want.means())
                        .all(|(g, w)| close(*g, w))
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
            let want = ZipExtremeFields::new(*metric, pair);
            let key = (time, state.clone(), metric.name().to_owned());
            let ok = stored.zip_extremes.get(&key).is_some_and(|got| {
                same_extremes(
                    [&got.max_zip_code, &got.min_zip_code],
                    [got.max_value, got.min_value],
                    [&want.max_zip_code, &want.min_zip_code],
                    [want.max_value, want.min_value],
                )
            });
            if !ok {
                verdict.problems.push(format!(
                    "{hour}: {} zip-code extremes of {state} missing or wrong",
                    metric.name()
                ));
            }
        }
    }
    for (metric, pair) in Metric::ALL.iter().zip(&expected.state_extremes) {
        let want = StateExtremeFields::new(*metric, pair);
        let ok = stored
            .state_extremes
            .get(&(time, metric.name().to_owned()))
            .is_some_and(|got| {
                same_extremes(
                    [&got.max_state, &got.min_state],
                    [got.max_value, got.min_value],
                    [&want.max_state, &want.min_state],
                    [want.max_value, want.min_value],
                )
            });
        if !ok {
            verdict.problems.push(format!(
                "{hour}: {} state extremes missing or wrong",
                metric.name()
            ));
        }
    }
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
