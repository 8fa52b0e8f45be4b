//! Test support for the end-to-end tests: what the database should hold, computed
//! straight from the CSV with the `csv` crate and plain arithmetic (none of WeatherVane's
//! own parsing or report code), and small helpers to ask InfluxDB and the API.

use std::collections::BTreeMap;
use std::path::Path;

use weathervane_harness::events::{Event, events_of};
use weathervane_harness::{LocalStack, Login, ManagedProcess, Role};

pub mod admin;
mod certificates;
pub use certificates::TestCertificates;

/// The four report metrics.
pub const METRICS: [&str; 4] = ["temp_c", "pressure_mb", "humidity", "precip_mm"];

/// One input row as text cells by column name.
pub type CsvRow = BTreeMap<String, String>;

pub fn read_csv(path: &Path) -> Vec<CsvRow> {
    parse_csv(std::fs::File::open(path).expect("readable CSV"))
}

/// CSV text (a header row, then rows) as rows of cells by column name.
pub fn parse_csv(source: impl std::io::Read) -> Vec<CsvRow> {
    let mut reader = csv::Reader::from_reader(source);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM` → `YYYY-MM-DDTHH` (the hour key) and the RFC 3339 time InfluxDB shows.
pub fn hour_of(time: &str) -> String {
    format!("{}T{}", &time[..10], &time[11..13])
}

#[derive(Clone, Debug, PartialEq)]
pub struct Extreme {
    pub holder: String,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct StateHour {
    pub count: u64,
    pub means: [f64; 4],
    /// Per metric: (max, min), ties to the smallest zip code.
    pub extremes: Vec<(Extreme, Extreme)>,
}

#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// hour → state → figures
    pub hours: BTreeMap<String, BTreeMap<String, StateHour>>,
}

/// Picks the max and min of `(holder, value)` pairs, ties to the smallest holder.
pub fn extremes_of(mut pairs: Vec<(String, f64)>) -> (Extreme, Extreme) {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut max = pairs[0].clone();
    let mut min = pairs[0].clone();
    for (holder, value) in pairs {
        if value > max.1 {
            max = (holder.clone(), value);
        }
        if value < min.1 {
            min = (holder, value);
        }
    }
    (
        Extreme {
            holder: max.0,
            value: max.1,
        },
        Extreme {
            holder: min.0,
            value: min.1,
        },
    )
}

impl Expected {
    pub fn from_rows(rows: &[CsvRow]) -> Self {
        let mut grouped: BTreeMap<String, BTreeMap<String, Vec<&CsvRow>>> = BTreeMap::new();
        for row in rows {
            grouped
                .entry(hour_of(&row["time"]))
                .or_default()
                .entry(row["state"].clone())
                .or_default()
                .push(row);
        }
        let hours = grouped
            .into_iter()
            .map(|(hour, states)| {
                let figures = states
                    .into_iter()
                    .map(|(state, rows)| {
                        let value =
                            |row: &CsvRow, metric: &str| row[metric].parse::<f64>().unwrap();
                        let count = rows.len() as u64;
                        let means = METRICS
                            .map(|m| rows.iter().map(|r| value(r, m)).sum::<f64>() / count as f64);
                        let extremes = METRICS
                            .iter()
                            .map(|m| {
                                extremes_of(
                                    rows.iter()
                                        .map(|r| (r["zip_code"].clone(), value(r, m)))
                                        .collect(),
                                )
                            })
                            .collect();
                        (
                            state,
                            StateHour {
                                count,
                                means,
                                extremes,
                            },
                        )
                    })
                    .collect();
                (hour, figures)
            })
            .collect();
        Self { hours }
    }

    /// Per metric: the states with the highest and lowest average in `hour`.
    pub fn state_extremes(&self, hour: &str) -> Vec<(Extreme, Extreme)> {
        let states = &self.hours[hour];
        (0..4)
            .map(|i| {
                extremes_of(
                    states
                        .iter()
                        .map(|(s, f)| (s.clone(), f.means[i]))
                        .collect(),
                )
            })
            .collect()
    }
}

/// `a` and `b` equal up to float rounding in a sum of a few hundred values.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Runs one InfluxQL statement; returns the rows of every series as column → value maps.
pub async fn influx_query(
    url: &str,
    db: &str,
    statement: &str,
) -> Vec<BTreeMap<String, serde_json::Value>> {
    influx_query_with(&http_client(), url, db, statement, None).await
}

/// Panics on an error for the whole request (credentials refused, a statement that does
/// not parse), which would otherwise read as "no rows"; a statement's own error (such as
/// a database not created yet) is no rows.
async fn influx_query_with(
    http: &reqwest::Client,
    url: &str,
    db: &str,
    statement: &str,
    login: Option<&Login>,
) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut request = http
        .get(format!("{url}/query"))
        .query(&[("db", db), ("q", statement)]);
    if let Some(login) = login {
        request = request.basic_auth(&login.user, Some(&login.password));
    }
    let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body.get("error").is_none(), "{statement}: {body}");
    let mut rows = Vec::new();
    for series in body["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let columns: Vec<String> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        for values in series["values"].as_array().unwrap() {
            rows.push(
                columns
                    .iter()
                    .cloned()
                    .zip(values.as_array().unwrap().iter().cloned())
                    .collect(),
            );
        }
    }
    rows
}

/// An HTTP client (reqwest is built without a TLS provider of its own: ring is installed
/// first, as the binary does).
pub fn http_client() -> reqwest::Client {
    weathervane_harness::install_tls_provider();
    reqwest::Client::new()
}

/// Asks the API at `addr` for `/avg` of the first `states` states of `hour`
/// (`YYYY-MM-DDTHH`) and asserts each count and mean against `expected`.
pub async fn assert_averages_served(addr: &str, expected: &Expected, hour: &str, states: usize) {
    let (date, hh) = (&hour[..10], &hour[11..13]);
    for (state, want) in expected.hours[hour].iter().take(states) {
        let (status, body) =
            api_get(addr, &format!("/avg?state={state}&hour={hh}&date={date}")).await;
        assert_eq!(status, 200, "{state} {hour}: {body}");
        assert_eq!(body["count"].as_u64(), Some(want.count), "{body}");
        for (i, metric) in METRICS.iter().enumerate() {
            let served = body[format!("avg_{metric}")].as_f64().unwrap();
            assert!(
                close(served, want.means[i]),
                "{state} {hour} {metric}: {body}"
            );
        }
    }
}

/// GET on the API: status and JSON body.
pub async fn api_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let response = http_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A private stack: redis-server, influxd, and the ingester, processor and api as
/// separate `weathervane` processes, all on free loopback ports, all killed on drop
/// (`weathervane_harness::LocalStack`, which it derefs to).
pub struct Stack {
    local: LocalStack,
    /// Asks InfluxDB (trusting the test CA when InfluxDB serves https).
    http: reqwest::Client,
}

pub const DB: &str = weathervane_harness::stack::DB;

impl Stack {
    pub fn start() -> Self {
        let local = LocalStack::builder()
            .env("RUST_LOG", "info")
            .role(Role::Ingester)
            .role(Role::Processor)
            .role(Role::Api)
            .start()
            .unwrap();
        Self::with(local)
    }

    /// A stack around a [`LocalStack`] the caller built (for roles wired differently, for
    /// example through a proxy).
    pub fn with(local: LocalStack) -> Self {
        Self {
            local,
            http: http_client(),
        }
    }

    /// Like [`Self::with`], for a stack whose InfluxDB serves https with a certificate
    /// signed by the CA in `ca` (PEM).
    pub fn with_ca(local: LocalStack, ca: &Path) -> Self {
        weathervane_harness::install_tls_provider();
        let pem = std::fs::read(ca).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        Self { local, http }
    }

    /// A streamer for `input` with extra arguments, not yet started.
    pub fn streamer(&self, input: &Path, args: &[&str]) -> ManagedProcess {
        self.local
            .role(Role::Streamer)
            .unwrap()
            .arg("--input")
            .arg(input)
            .arg("--rejects")
            .arg(self.dir().join("rejects.csv"))
            .args(args)
    }

    /// Runs a streamer for `input` with `args` (which include `--once`) to its end, and
    /// asserts it exited 0 after saying every hour is confirmed.
    pub fn stream_once(&self, input: &Path, args: &[&str]) {
        let mut streamer = self.streamer(input, args);
        streamer.start().unwrap();
        let status = streamer
            .wait_timeout(std::time::Duration::from_secs(180))
            .unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "streamer did not finish: {status:?}\n{}",
            self.log(&streamer)
        );
        assert!(
            self.events(&streamer)
                .iter()
                .any(|event| matches!(event, Event::AllHoursConfirmed { .. })),
            "the streamer never said every hour is confirmed"
        );
    }

    /// Generates a CSV with the project's generator (the input; what is expected is then
    /// computed from that file independently).
    pub fn generate(&self, stations: u32, days: u32, seed: u64) -> std::path::PathBuf {
        let out = self
            .dir()
            .join(format!("input-{stations}-{days}-{seed}.csv"));
        let status = std::process::Command::new(weathervane_harness::weathervane_binary().unwrap())
            .args([
                "gen",
                "--stations",
                &stations.to_string(),
                "--days",
                &days.to_string(),
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        out
    }

    /// Runs `statement` on the stack's database, as the read-only user when InfluxDB asks
    /// for credentials (what the tests read, the api may read too).
    pub async fn query(&self, statement: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
        let login = self.influx_users().map(|users| &users.reader);
        influx_query_with(&self.http, &self.influx.url(), DB, statement, login).await
    }

    pub fn log(&self, process: &ManagedProcess) -> String {
        std::fs::read_to_string(process.log_path()).unwrap_or_default()
    }

    /// The log of one of the stack's roles so far.
    pub fn role_log(&self, role: Role) -> String {
        std::fs::read_to_string(self.log_path(role)).unwrap_or_default()
    }

    /// The typed events a process has logged so far.
    pub fn events(&self, process: &ManagedProcess) -> Vec<Event> {
        events_of(process.log_path())
            .unwrap()
            .into_iter()
            .map(|record| record.event)
            .collect()
    }
}

impl std::ops::Deref for Stack {
    type Target = LocalStack;

    fn deref(&self) -> &LocalStack {
        &self.local
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut LocalStack {
        &mut self.local
    }
}

/// `YYYY-MM-DD HH:MM` as InfluxDB prints times.
pub fn rfc3339(time: &str) -> String {
    format!("{}T{}:00Z", &time[..10], &time[11..16])
}

/// Checks, against values computed from `rows`, that InfluxDB holds exactly those rows
/// with every value, and the right averages, counts, zip-code and state extremes for
/// every hour. Panics with what differs.
pub async fn assert_stored_exactly(stack: &Stack, rows: &[CsvRow]) {
    let expected = Expected::from_rows(rows);
    let stored = stack.query("SELECT * FROM weather_data").await;
    assert_eq!(stored.len(), rows.len(), "rows stored vs rows in the input");
    let by_key: BTreeMap<(String, String), &BTreeMap<String, serde_json::Value>> = stored
        .iter()
        .map(|r| {
            (
                (
                    r["zip_code"].as_str().unwrap().to_owned(),
                    r["time"].as_str().unwrap().to_owned(),
                ),
                r,
            )
        })
        .collect();
    for row in rows {
        let point = by_key
            .get(&(row["zip_code"].clone(), rfc3339(&row["time"])))
            .unwrap_or_else(|| panic!("row missing: {row:?}"));
        for (column, text) in row {
            match column.as_str() {
                "time" => {}
                "zip_code" | "state" | "name" | "wind_dir" => assert_eq!(
                    point[column].as_str(),
                    Some(text.as_str()),
                    "{column} of {row:?}"
                ),
                _ => assert_eq!(
                    point[column].as_f64(),
                    Some(text.parse::<f64>().unwrap()),
                    "{column} of {row:?}"
                ),
            }
        }
    }

    let averages = stack.query("SELECT * FROM weather_averages").await;
    let expected_states: usize = expected.hours.values().map(BTreeMap::len).sum();
    assert_eq!(
        averages.len(),
        expected_states,
        "one average per hour and state"
    );
    for average in &averages {
        let hour = hour_of(&average["time"].as_str().unwrap().replace('T', " "));
        let state = average["state"].as_str().unwrap();
        let want = &expected.hours[&hour][state];
        assert_eq!(
            average["count"].as_u64(),
            Some(want.count),
            "count of {state} at {hour}"
        );
        for (i, metric) in METRICS.iter().enumerate() {
            let got = average[&format!("avg_{metric}")].as_f64().unwrap();
            assert!(
                close(got, want.means[i]),
                "avg {metric} of {state} at {hour}: {got} vs {}",
                want.means[i]
            );
        }
    }

    let zip_extremes = stack.query("SELECT * FROM zip_code_extremes").await;
    assert_eq!(
        zip_extremes.len(),
        expected_states * 4,
        "one zip-code extreme per hour, state and metric"
    );
    for extreme in &zip_extremes {
        let hour = hour_of(&extreme["time"].as_str().unwrap().replace('T', " "));
        let (state, metric) = (
            extreme["state"].as_str().unwrap(),
            extreme["metric"].as_str().unwrap(),
        );
        let i = METRICS.iter().position(|m| m == &metric).unwrap();
        let (max, min) = &expected.hours[&hour][state].extremes[i];
        assert_eq!(
            extreme["max_zip_code"].as_str(),
            Some(max.holder.as_str()),
            "max {metric} zip of {state} at {hour}"
        );
        assert_eq!(extreme["max_value"].as_f64(), Some(max.value));
        assert_eq!(
            extreme["min_zip_code"].as_str(),
            Some(min.holder.as_str()),
            "min {metric} zip of {state} at {hour}"
        );
        assert_eq!(extreme["min_value"].as_f64(), Some(min.value));
    }

    let state_extremes = stack.query("SELECT * FROM state_extremes").await;
    assert_eq!(
        state_extremes.len(),
        expected.hours.len() * 4,
        "one state extreme per hour and metric"
    );
    for extreme in &state_extremes {
        let hour = hour_of(&extreme["time"].as_str().unwrap().replace('T', " "));
        let i = METRICS
            .iter()
            .position(|m| Some(*m) == extreme["metric"].as_str())
            .unwrap();
        let (max, min) = &expected.state_extremes(&hour)[i];
        assert_eq!(
            extreme["max_state"].as_str(),
            Some(max.holder.as_str()),
            "max state at {hour}"
        );
        assert!(close(extreme["max_value"].as_f64().unwrap(), max.value));
        assert_eq!(
            extreme["min_state"].as_str(),
            Some(min.holder.as_str()),
            "min state at {hour}"
        );
        assert!(close(extreme["min_value"].as_f64().unwrap(), min.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_break_ties_by_the_smallest_holder() {
        let (max, min) = extremes_of(vec![
            ("b".into(), 2.0),
            ("a".into(), 2.0),
            ("c".into(), 1.0),
            ("d".into(), 1.0),
        ]);
        assert_eq!((max.holder.as_str(), min.holder.as_str()), ("a", "c"));
    }
}
