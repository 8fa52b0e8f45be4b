//! The compose profile `monitoring` cannot rot: every InfluxQL query of the Grafana
//! dashboard (deploy/grafana/dashboards), panels and template variables alike, is run the
//! way Grafana runs it (its macros and variables substituted as Grafana does, as the
//! read-only `reader`) against a real influxd holding a real pipeline run's reports, and
//! its answer is checked against values computed from the CSV; `promtool` checks the
//! Prometheus configuration, and `docker-compose config` the profile.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use weathervane_e2e::{Expected, METRICS, Stack, close, http_client, read_csv};
use weathervane_harness::{InfluxUsers, LocalStack, Login, Role};

/// The data source uid the dashboard's panels name, as provisioned.
const DATASOURCE_UID: &str = "weathervane-influxdb";
/// The panels' minimum interval (`interval` in the JSON), in ms: an hour, the reports'
/// resolution.
const MIN_INTERVAL_MS: i64 = 3_600_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// One InfluxQL query of the dashboard and where it is.
#[derive(Clone, Debug)]
struct DashboardQuery {
    /// The panel's title, or `variable <name>`.
    owner: String,
    query: String,
}

/// Every query of every panel (rows' nested panels too) and every query variable.
/// Panics on a target that is not a raw InfluxQL query on our data source: its query
/// would be built by Grafana from fields this test does not read.
fn dashboard_queries(dashboard: &Value) -> (Vec<DashboardQuery>, Vec<DashboardQuery>) {
    fn walk(panels: &Value, out: &mut Vec<DashboardQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], out);
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let datasource = if target["datasource"].is_object() {
                    &target["datasource"]
                } else {
                    &panel["datasource"]
                };
                assert_eq!(
                    datasource["uid"].as_str(),
                    Some(DATASOURCE_UID),
                    "{title}: a target on another data source"
                );
                assert_eq!(
                    target["rawQuery"].as_bool(),
                    Some(true),
                    "{title}: not a raw InfluxQL query"
                );
                let query = target["query"].as_str().unwrap_or_default();
                assert!(!query.trim().is_empty(), "{title}: an empty query");
                out.push(DashboardQuery {
                    owner: title.clone(),
                    query: query.to_owned(),
                });
            }
        }
    }
    let mut panels = Vec::new();
    walk(&dashboard["panels"], &mut panels);
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            assert_eq!(variable["datasource"]["uid"].as_str(), Some(DATASOURCE_UID));
            variables.push(DashboardQuery {
                owner: format!("variable {}", variable["name"].as_str().unwrap()),
                query: variable["query"].as_str().unwrap().to_owned(),
            });
        }
    }
    (panels, variables)
}

/// A variable's value as Grafana holds it.
#[derive(Clone, Debug)]
enum VariableValue {
    One(String),
    /// Several values, or All (Grafana's All with no custom value is every option).
    Many(Vec<String>),
}

/// What Grafana knows when it runs a panel's query: the time range (ms, `to` inclusive),
/// `$__interval`, and each variable's value.
#[derive(Clone, Debug)]
struct Context {
    from_ms: i64,
    to_ms: i64,
    interval_ms: i64,
    variables: BTreeMap<String, VariableValue>,
    /// Whether the variable may hold several values (`multi` or `includeAll`): Grafana's
    /// InfluxDB data source then regex-escapes even a single value.
    multi: BTreeSet<String>,
}

/// Grafana's `escapeRegex`: a backslash before each regex metacharacter.
fn escape_regex(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "[]\\^$.|?*+(){}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Grafana's InfluxDB data source `interpolateQueryExpr`.
fn format_variable(value: &VariableValue, multi: bool) -> String {
    match value {
        VariableValue::One(value) if !multi => value.replace('\\', "\\\\").replace('\'', "\\'"),
        VariableValue::One(value) => escape_regex(value),
        VariableValue::Many(values) if values.len() == 1 => escape_regex(&values[0]),
        VariableValue::Many(values) => format!(
            "({})",
            values
                .iter()
                .map(|v| escape_regex(v))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// Grafana's `$__interval` for a time range of `range_ms` drawn with `max_data_points`
/// points (about the panel's width in pixels): the raw interval rounded as Grafana's
/// `roundInterval` does, and never below the panel's minimum. In ms.
fn grafana_interval_ms(range_ms: i64, max_data_points: i64) -> i64 {
    let raw = range_ms / max_data_points;
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    let rounded = match raw {
        r if r < 15_000 => 10_000,
        r if r < 35_000 => 20_000,
        r if r < 75_000 => MINUTE,
        r if r < 450_000 => 5 * MINUTE,
        r if r < 1_050_000 => 15 * MINUTE,
        r if r < 2_700_000 => 30 * MINUTE,
        r if r < 5_400_000 => HOUR,
        r if r < 9_000_000 => 2 * HOUR,
        r if r < 16_200_000 => 3 * HOUR,
        r if r < 32_400_000 => 6 * HOUR,
        r if r < 86_400_000 => 12 * HOUR,
        _ => 24 * HOUR,
    };
    rounded.max(MIN_INTERVAL_MS)
}

/// An interval as Grafana writes it into a query: `1h`, `2h`, `1d`.
fn interval_text(ms: i64) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms => format!("{}s", ms / 1000),
    }
}

/// `query` as Grafana sends it: `$timeFilter`, `$__interval` (and its older and `_ms`
/// spellings), `$__range`, and every variable as `$name`, `${name}` and `[[name]]`.
/// Panics if anything that looks like a macro or variable is left.
fn interpolate(query: &str, context: &Context) -> String {
    let (interval_ms, interval) = (context.interval_ms, interval_text(context.interval_ms));
    let range_ms = context.to_ms - context.from_ms;
    let mut out = query
        .replace(
            "$timeFilter",
            &format!(
                "time >= {}ms and time <= {}ms",
                context.from_ms, context.to_ms
            ),
        )
        .replace("$__interval_ms", &interval_ms.to_string())
        .replace("$__interval", &interval)
        .replace("$interval", &interval)
        .replace("$__range_ms", &range_ms.to_string())
        .replace("$__range_s", &(range_ms / 1000).to_string())
        .replace("$__range", &format!("{}s", range_ms / 1000));
    // Longest names first, so that `$state` does not eat the start of `$states`.
    let mut names: Vec<&String> = context.variables.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    for name in names {
        let text = format_variable(&context.variables[name], context.multi.contains(name));
        for form in [
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            out = out.replace(&form, &text);
        }
    }
    let left = out
        .char_indices()
        .filter(|(i, c)| {
            *c == '$'
                && out[i + 1..].starts_with(|n: char| n.is_alphanumeric() || n == '_' || n == '{')
        })
        .count();
    assert!(
        left == 0 && !out.contains("[["),
        "a macro or variable this test does not know is left in {out:?} (from {query:?})"
    );
    out
}

/// One series of an InfluxDB answer.
#[derive(Debug)]
struct Series {
    tags: BTreeMap<String, String>,
    /// Each row as column → value (`time` in ms, as Grafana asks with `epoch=ms`).
    rows: Vec<BTreeMap<String, Value>>,
}

/// Runs `statement` as Grafana does (GET /query, `epoch=ms`) with the reader's login.
/// Panics on an error of the request or of the statement.
async fn grafana_query(url: &str, db: &str, reader: &Login, statement: &str) -> Vec<Series> {
    let response = http_client()
        .get(format!("{url}/query"))
        .query(&[("db", db), ("q", statement), ("epoch", "ms")])
        .basic_auth(&reader.user, Some(&reader.password))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{statement}: {status} {body}");
    let result = &body["results"][0];
    assert!(
        body.get("error").is_none() && result.get("error").is_none(),
        "{statement}: {body}"
    );
    result["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            Series {
                tags: series["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect(),
                rows: series["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|values| {
                        columns
                            .iter()
                            .cloned()
                            .zip(values.as_array().unwrap().iter().cloned())
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH` → the hour's start in ms since the epoch.
fn hour_ms(hour: &str) -> i64 {
    let part = |range: std::ops::Range<usize>| hour[range].parse::<i64>().unwrap();
    (days_from_civil(part(0..4), part(5..7), part(8..10)) * 24 + part(11..13)) * 3_600_000
}

/// What the CSV says about the part of it a [`Context`] shows.
struct Truth<'a> {
    expected: &'a Expected,
    /// The hours in the time range, in order.
    hours: Vec<&'a String>,
    /// The states the `state` variable selects.
    states: BTreeSet<String>,
    metric: usize,
    /// `$__interval` in ms: `GROUP BY time(...)` buckets, aligned on the epoch as
    /// InfluxDB aligns them.
    bucket_ms: i64,
}

impl Truth<'_> {
    fn last_hour(&self) -> &str {
        self.hours.last().expect("hours in range")
    }

    /// The hours in range by the start of their `GROUP BY time` bucket, in order.
    fn buckets(&self) -> BTreeMap<i64, Vec<&String>> {
        let mut buckets: BTreeMap<i64, Vec<&String>> = BTreeMap::new();
        for hour in &self.hours {
            let start = hour_ms(hour).div_euclid(self.bucket_ms) * self.bucket_ms;
            buckets.entry(start).or_default().push(hour);
        }
        buckets
    }
}

fn f64_of(row: &BTreeMap<String, Value>, column: &str, owner: &str) -> f64 {
    row.get(column)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{owner}: no number in {column}: {row:?}"))
}

fn str_of<'a>(row: &'a BTreeMap<String, Value>, column: &str, owner: &str) -> &'a str {
    row.get(column)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{owner}: no string in {column}: {row:?}"))
}

fn only_row<'a>(series: &'a [Series], owner: &str) -> &'a BTreeMap<String, Value> {
    assert_eq!(series.len(), 1, "{owner}: {series:?}");
    assert_eq!(series[0].rows.len(), 1, "{owner}: {series:?}");
    &series[0].rows[0]
}

/// Checks one panel's answer against the CSV; panics on a panel it has no check for, so
/// a new panel comes with its check.
fn check_panel(owner: &str, series: &[Series], truth: &Truth) {
    let expected = truth.expected;
    let rows_in = |hour: &str| -> u64 { expected.hours[hour].values().map(|s| s.count).sum() };
    match owner {
        "Hours reported" => {
            let row = only_row(series, owner);
            assert_eq!(
                f64_of(row, "count", owner),
                truth.hours.len() as f64,
                "{owner}"
            );
        }
        "Last hour reported" => {
            let row = only_row(series, owner);
            assert_eq!(
                row["time"].as_i64(),
                Some(hour_ms(truth.last_hour())),
                "{owner}"
            );
        }
        "Rows reported" => {
            let row = only_row(series, owner);
            let want: u64 = truth.hours.iter().map(|h| rows_in(h)).sum();
            assert_eq!(f64_of(row, "sum", owner), want as f64, "{owner}");
        }
        "States reported" => {
            let row = only_row(series, owner);
            let states: BTreeSet<&String> = truth
                .hours
                .iter()
                .flat_map(|h| expected.hours[h.as_str()].keys())
                .collect();
            assert_eq!(f64_of(row, "count", owner), states.len() as f64, "{owner}");
        }
        "Rows reported over time" => {
            assert_eq!(series.len(), 1, "{owner}: {series:?}");
            let got: Vec<(i64, f64)> = series[0]
                .rows
                .iter()
                .map(|r| (r["time"].as_i64().unwrap(), f64_of(r, "sum", owner)))
                .collect();
            let want: Vec<(i64, f64)> = truth
                .buckets()
                .into_iter()
                .map(|(start, hours)| (start, hours.iter().map(|h| rows_in(h)).sum::<u64>() as f64))
                .collect();
            assert_eq!(got, want, "{owner}");
        }
        _ if owner.contains(": average by state") => {
            let metric = METRICS
                .iter()
                .position(|m| owner.starts_with(metric_title(m)))
                .unwrap_or_else(|| panic!("{owner}: which metric?"));
            let mut seen = BTreeSet::new();
            for one in series {
                let state = &one.tags["state"];
                assert!(
                    truth.states.contains(state),
                    "{owner}: {state} not selected"
                );
                seen.insert(state.clone());
                // Per bucket with data for the state: the mean of its hourly means.
                let want: Vec<(i64, f64)> = truth
                    .buckets()
                    .into_iter()
                    .filter_map(|(start, hours)| {
                        let means: Vec<f64> = hours
                            .iter()
                            .filter_map(|h| expected.hours[h.as_str()].get(state))
                            .map(|s| s.means[metric])
                            .collect();
                        (!means.is_empty())
                            .then(|| (start, means.iter().sum::<f64>() / means.len() as f64))
                    })
                    .collect();
                assert_eq!(one.rows.len(), want.len(), "{owner}: buckets of {state}");
                for (row, (start, mean)) in one.rows.iter().zip(want) {
                    assert_eq!(row["time"].as_i64(), Some(start), "{owner} {state}");
                    let got = f64_of(row, "mean", owner);
                    assert!(close(got, mean), "{owner} {state} {start}: {got} vs {mean}");
                }
            }
            let with_data: BTreeSet<String> = truth
                .states
                .iter()
                .filter(|s| {
                    truth
                        .hours
                        .iter()
                        .any(|h| expected.hours[h.as_str()].contains_key(*s))
                })
                .cloned()
                .collect();
            assert_eq!(seen, with_data, "{owner}: the states drawn");
        }
        "State extremes of the last hour in range" => {
            let last = truth.last_hour();
            let want = expected.state_extremes(last);
            let metrics: BTreeSet<&str> =
                series.iter().map(|s| s.tags["metric"].as_str()).collect();
            assert_eq!(metrics, METRICS.into_iter().collect(), "{owner}");
            for one in series {
                let i = METRICS
                    .iter()
                    .position(|m| *m == one.tags["metric"])
                    .unwrap();
                let row = &one.rows[0];
                assert_eq!(one.rows.len(), 1, "{owner}");
                assert_eq!(row["time"].as_i64(), Some(hour_ms(last)), "{owner}");
                let (max, min) = &want[i];
                assert_eq!(str_of(row, "max_state", owner), max.holder, "{owner}");
                assert_eq!(str_of(row, "min_state", owner), min.holder, "{owner}");
                assert!(close(f64_of(row, "max_value", owner), max.value), "{owner}");
                assert!(close(f64_of(row, "min_value", owner), min.value), "{owner}");
            }
        }
        _ if owner.starts_with("Zip-code extremes of ") => {
            let mut seen = BTreeSet::new();
            for one in series {
                let state = &one.tags["state"];
                assert!(
                    truth.states.contains(state),
                    "{owner}: {state} not selected"
                );
                seen.insert(state.clone());
                let last = truth
                    .hours
                    .iter()
                    .rev()
                    .find(|h| expected.hours[h.as_str()].contains_key(state))
                    .unwrap();
                assert_eq!(one.rows.len(), 1, "{owner}");
                let row = &one.rows[0];
                assert_eq!(row["time"].as_i64(), Some(hour_ms(last)), "{owner} {state}");
                let (max, min) = &expected.hours[last.as_str()][state].extremes[truth.metric];
                assert_eq!(
                    str_of(row, "max_zip_code", owner),
                    max.holder,
                    "{owner} {state}"
                );
                assert_eq!(
                    str_of(row, "min_zip_code", owner),
                    min.holder,
                    "{owner} {state}"
                );
                assert_eq!(
                    f64_of(row, "max_value", owner),
                    max.value,
                    "{owner} {state}"
                );
                assert_eq!(
                    f64_of(row, "min_value", owner),
                    min.value,
                    "{owner} {state}"
                );
            }
            let with_data: BTreeSet<String> = truth
                .states
                .iter()
                .filter(|s| {
                    truth
                        .hours
                        .iter()
                        .any(|h| expected.hours[h.as_str()].contains_key(*s))
                })
                .cloned()
                .collect();
            assert_eq!(seen, with_data, "{owner}: the states shown");
        }
        _ => panic!("no check for the panel {owner:?}: add one here"),
    }
}

/// The start of the averages panels' titles for a metric.
fn metric_title(metric: &str) -> &'static str {
    match metric {
        "temp_c" => "Temperature",
        "pressure_mb" => "Pressure",
        "humidity" => "Humidity",
        "precip_mm" => "Precipitation",
        other => panic!("metric {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_what_the_csv_says() {
    let users = InfluxUsers {
        admin: Login::new("admin", "admin pw"),
        writer: Login::new("writer", "writer pw"),
        reader: Login::new("reader", "reader pw"),
    };
    let writer = users.writer.clone();
    let reader = users.reader.clone();
    let with_writer = move |process: weathervane_harness::ManagedProcess| {
        process
            .env("INFLUXDB_USER", &writer.user)
            .env("INFLUXDB_PASSWORD", &writer.password)
    };
    let local = LocalStack::builder()
        .influx_auth(users)
        .env("RUST_LOG", "info")
        .role_with(Role::Ingester, with_writer.clone())
        .role_with(Role::Processor, with_writer)
        .start()
        .unwrap();
    let stack = Stack::with(local);
    let input = stack.generate(40, 1, 13);
    stack.stream_once(
        &input,
        &["--batch-size", "50", "--hour-interval", "0", "--once"],
    );
    let expected = Expected::from_rows(&read_csv(&input));
    let all_hours: Vec<&String> = expected.hours.keys().collect();
    let all_states: BTreeSet<String> = expected
        .hours
        .values()
        .flat_map(|states| states.keys().cloned())
        .collect();
    assert!(all_states.len() >= 3, "a CSV with several states");

    let dashboard = read_json(&repo().join("deploy/grafana/dashboards/weathervane.json"));
    let (panels, variables) = dashboard_queries(&dashboard);
    assert!(panels.len() >= 9, "the dashboard's queries: {panels:?}");
    let url = stack.influx.url();
    let db = weathervane_e2e::DB;

    // The variable queries, as Grafana runs them to list the options.
    let mut options: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for variable in &variables {
        let series = grafana_query(&url, db, &reader, &variable.query).await;
        let values: Vec<String> = series
            .iter()
            .flat_map(|s| &s.rows)
            .map(|row| str_of(row, "value", &variable.owner).to_owned())
            .collect();
        assert!(!values.is_empty(), "{}: no options", variable.owner);
        options.insert(variable.owner["variable ".len()..].to_owned(), values);
    }
    assert_eq!(
        options["state"].iter().cloned().collect::<BTreeSet<_>>(),
        all_states,
        "the state variable's options are the CSV's states"
    );
    let multi: BTreeSet<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["multi"] == true || v["includeAll"] == true)
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    let metric_options: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "metric")
        .expect("a metric variable")["query"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(metric_options, METRICS, "the metric variable's options");

    // The whole day, and a few hours in the middle of it; every state (All), one, two;
    // a wide panel (1000 points: hourly buckets) and a narrow one (10 points: the whole
    // day in 2-hour buckets).
    let states: Vec<String> = all_states.iter().cloned().collect();
    let selections = [
        VariableValue::Many(states.clone()),
        VariableValue::Many(vec![states[1].clone()]),
        VariableValue::Many(vec![states[0].clone(), states[2].clone()]),
    ];
    let ranges = [(0, all_hours.len()), (5, 11)];
    let mut runs = 0;
    let mut intervals = BTreeSet::new();
    for (first, end) in ranges {
        let hours: Vec<&String> = all_hours[first..end].to_vec();
        let from_ms = hour_ms(hours[0]);
        let to_ms = hour_ms(hours[hours.len() - 1]) + 3_600_000 - 1000;
        for (selection, max_data_points) in selections.iter().flat_map(|s| [(s, 1000), (s, 10)]) {
            let interval_ms = grafana_interval_ms(to_ms - from_ms, max_data_points);
            intervals.insert(interval_ms);
            for (metric, name) in METRICS.iter().enumerate() {
                let context = Context {
                    from_ms,
                    to_ms,
                    interval_ms,
                    variables: BTreeMap::from([
                        ("state".to_owned(), selection.clone()),
                        ("metric".to_owned(), VariableValue::One(name.to_string())),
                    ]),
                    multi: multi.clone(),
                };
                let truth = Truth {
                    expected: &expected,
                    hours: hours.clone(),
                    states: match selection {
                        VariableValue::One(state) => BTreeSet::from([state.clone()]),
                        VariableValue::Many(states) => states.iter().cloned().collect(),
                    },
                    metric,
                    bucket_ms: interval_ms,
                };
                for panel in &panels {
                    let statement = interpolate(&panel.query, &context);
                    let series = grafana_query(&url, db, &reader, &statement).await;
                    assert!(
                        series.iter().any(|s| !s.rows.is_empty()),
                        "{}: no answer to {statement}",
                        panel.owner
                    );
                    check_panel(&panel.owner, &series, &truth);
                    runs += 1;
                }
            }
        }
    }
    assert_eq!(
        intervals,
        BTreeSet::from([3_600_000, 7_200_000]),
        "hourly and wider buckets"
    );
    assert_eq!(
        runs,
        ranges.len() * selections.len() * 2 * METRICS.len() * panels.len()
    );
}

#[test]
fn interpolation_follows_grafana() {
    let context = Context {
        from_ms: 1_000,
        to_ms: 2_000,
        interval_ms: 3_600_000,
        variables: BTreeMap::from([
            (
                "state".to_owned(),
                VariableValue::Many(vec!["CA".into(), "N.Y".into()]),
            ),
            ("metric".to_owned(), VariableValue::One("temp_c".into())),
        ]),
        multi: BTreeSet::from(["state".to_owned()]),
    };
    assert_eq!(
        interpolate(
            "SELECT mean(x) FROM m WHERE s =~ /^$state$/ AND m = '[[metric]]' AND $timeFilter GROUP BY time($__interval)",
            &context
        ),
        "SELECT mean(x) FROM m WHERE s =~ /^(CA|N\\.Y)$/ AND m = 'temp_c' AND time >= 1000ms and time <= 2000ms GROUP BY time(1h)"
    );
    assert_eq!(hour_ms("1970-01-02T01"), 25 * 3_600_000);
    // A day over 1000 points is under the panels' minimum of an hour; over 10, two hours.
    assert_eq!(interval_text(grafana_interval_ms(86_399_000, 1000)), "1h");
    assert_eq!(interval_text(grafana_interval_ms(86_399_000, 10)), "2h");
    assert_eq!(
        interval_text(grafana_interval_ms(30 * 86_400_000, 10)),
        "1d"
    );
    assert_eq!(hour_ms("2023-09-19T05"), 1_695_099_600_000);
}

/// The dashboard names the data source the provisioning file defines, by uid.
#[test]
fn the_dashboard_uses_the_provisioned_data_source() {
    let provisioning = std::fs::read_to_string(
        repo().join("deploy/grafana/provisioning/datasources/weathervane.yml"),
    )
    .unwrap();
    assert!(
        provisioning.contains(&format!("uid: {DATASOURCE_UID}")),
        "{provisioning}"
    );
    // The reader's password comes from its file, never from the repository.
    assert!(provisioning.contains("password: $__file{/run/secrets/influxdb-reader}"));
    let dashboard = read_json(&repo().join("deploy/grafana/dashboards/weathervane.json"));
    let (panels, variables) = dashboard_queries(&dashboard);
    assert!(!panels.is_empty() && !variables.is_empty());
}

/// `eprintln!` past the test harness's capture, so that CI logs show skips.
macro_rules! note {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr(), $($arg)*);
    };
}

/// Whether `program` runs here; without it a test says so and passes, unless `CI` is set.
fn installed(program: &str, args: &[&str]) -> bool {
    let runs = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `{program}` does not run"
        );
        note!("SKIPPED: `{program}` does not run here (with CI set this fails)");
    }
    runs
}

/// Runs a command to its end; its stdout, or a panic with its stderr.
fn stdout_of(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn promtool_accepts_the_prometheus_configuration() {
    if !installed("promtool", &["--version"]) {
        return;
    }
    let config = repo().join("deploy/prometheus/prometheus.yml");
    let out = stdout_of(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Each role's admin port, as the roles listen on it in compose.
    let text = std::fs::read_to_string(&config).unwrap();
    for target in [
        "streamer:9101",
        "ingester:9102",
        "processor:9103",
        "api:9104",
    ] {
        assert!(
            text.contains(&format!("\"{target}\"")),
            "{target} not scraped"
        );
    }
}

/// The compose file as the compose CLI reads it with the profile on, as JSON: v2 prints
/// it (`config --format json`); v1 prints YAML, which goes through Python's yaml (v1 is
/// Python with PyYAML, so both are there wherever v1 is).
fn compose_config_json(program: &[String]) -> Value {
    let mut command = Command::new(&program[0]);
    command
        .args(&program[1..])
        .arg("-f")
        .arg(repo().join("docker-compose.yml"))
        .args(["--profile", "monitoring", "config"])
        .current_dir(repo());
    for variable in [
        "COMPOSE_FILE",
        "COMPOSE_PROFILES",
        "GRAFANA_IMAGE",
        "GRAFANA_PORT",
        "PROMETHEUS_IMAGE",
        "PROMETHEUS_PORT",
    ] {
        command.env_remove(variable);
    }
    let v2 = program.len() == 2;
    if v2 {
        command.args(["--format", "json"]);
    }
    let text = stdout_of(&mut command);
    if v2 {
        return serde_json::from_str(&text).unwrap();
    }
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3, which docker-compose v1 runs on");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "python3 could not read the YAML");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_monitoring_profile_is_optional_local_and_pinned() {
    let Ok(program) = weathervane_harness::compose::compose_program() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no compose CLI runs"
        );
        note!("SKIPPED: no compose CLI (docker compose or docker-compose) runs here");
        return;
    };
    let config = compose_config_json(&program);
    let services = config["services"].as_object().expect("services");
    for (name, service) in services {
        let profiles = &service["profiles"];
        if ["prometheus", "grafana"].contains(&name.as_str()) {
            assert_eq!(profiles, &serde_json::json!(["monitoring"]), "{name}");
            let image = service["image"].as_str().unwrap();
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                tag.trim_start_matches('v').split('.').count() == 3
                    && tag
                        .chars()
                        .next()
                        .is_some_and(|c| c == 'v' || c.is_ascii_digit()),
                "{name}: {image} is not pinned to an exact release"
            );
            for port in service["ports"].as_array().expect("published ports") {
                let local = match port {
                    Value::String(text) => text.starts_with("127.0.0.1:"),
                    port => port["host_ip"] == "127.0.0.1",
                };
                assert!(local, "{name} published beyond 127.0.0.1: {port}");
            }
        } else {
            // A plain `up` is unchanged: every other service is in no profile.
            assert!(profiles.is_null(), "{name} is in a profile: {profiles}");
        }
    }
    let grafana = &services["grafana"];
    let environment = grafana["environment"].as_object().unwrap();
    assert!(
        environment
            .keys()
            .all(|key| !key.contains("PASSWORD") || key.ends_with("__FILE")),
        "a password in Grafana's environment: {environment:?}"
    );
    let mounts = grafana["volumes"].to_string();
    assert!(mounts.contains("secrets-grafana"), "{mounts}");
    assert!(
        services["credentials"]["volumes"]
            .to_string()
            .contains("secrets-grafana"),
        "the credentials service fills Grafana's volume"
    );
}

/// Grafana's login to InfluxDB and its own admin password reach it the way every role's
/// do: the credentials service (deploy/compose/make-credentials, in a container as on a
/// real `up`) copies the reader's password and the generated `grafana-admin` into
/// Grafana's own volume, readable only by the uid Grafana's image runs as, and nothing
/// else. Needs a Docker engine and the Debian base image (scripts/docker-base builds it
/// when missing); without an engine it says so and passes, unless `CI` is set.
#[test]
fn grafana_gets_only_its_passwords_in_its_own_volume() {
    if !installed("docker", &["info", "--format", "{{.ServerVersion}}"]) {
        return;
    }
    const BASE_IMAGE: &str = "weathervane/debian-base:bookworm";
    stdout_of(&mut Command::new(repo().join("scripts/docker-base")));
    let project = weathervane_harness::compose::ComposeProject::new(
        format!("wvtest-{}-grafana-secrets", std::process::id()),
        vec![repo().join("docker-compose.yml")],
    )
    .unwrap()
    .env("REDIS_IMAGE", BASE_IMAGE)
    .env_remove("COMPOSE_FILE")
    .env_remove("COMPOSE_PROJECT_NAME")
    .current_dir(repo());
    project.run(&["run", "--rm", "-T", "credentials"]).unwrap();
    let volume = |name: &str| format!("{}_{name}", project.name());
    let listing = stdout_of(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{}:/grafana:ro", volume("secrets-grafana")),
        "-v",
        &format!("{}:/secrets:ro", volume("secrets")),
        BASE_IMAGE,
        "sh",
        "-c",
        // Owner, group, mode and name of each file, then whether each is the generated one.
        "cd /grafana && stat -c '%u %g %a %n' * && \
         cmp -s influxdb-reader /secrets/influxdb-reader && \
         cmp -s grafana-admin /secrets/grafana-admin && \
         [ \"$(wc -c < grafana-admin)\" -eq 64 ] && echo generated",
    ]));
    assert_eq!(
        listing, "472 0 400 grafana-admin\n472 0 400 influxdb-reader\ngenerated\n",
        "Grafana's volume"
    );
    project.down().unwrap();
}
