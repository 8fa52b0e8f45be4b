//! The hourly read-back, measured: on one influxd holding a full-scale hour, the
//! processor's query beside alternative ways of asking for the same facts (response
//! formats, chunking, columns, InfluxQL aggregates), run interleaved round by round,
//! first on an otherwise idle influxd and then while writers load it. Each request's cost
//! is influxd's own CPU time (from /proc) and its wall time until the whole answer is read.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weathervane_core::HourKey;
use weathervane_core::row::Metric;
use weathervane_core::schema;

use super::{bodies, influx_client, start_servers, usage};

/// One way of reading the hour back.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: &'static str,
    /// The `Accept` header, if not InfluxDB's default (JSON).
    pub accept: Option<&'static str>,
    pub chunked: bool,
    /// One or more statements, sent as one request (`;`-separated).
    pub statement: String,
}

/// What one variant cost, per read-back, over the rounds.
#[derive(Clone, Debug, Default)]
pub struct VariantCost {
    pub name: String,
    /// influxd CPU seconds per read-back, idle influxd.
    pub idle_cpu: Vec<f64>,
    /// Wall seconds per read-back, idle influxd.
    pub idle_wall: Vec<f64>,
    /// Wall seconds per read-back, influxd loaded by writers.
    pub loaded_wall: Vec<f64>,
    /// influxd CPU seconds over the read-back while loaded (includes the writers' share).
    pub loaded_cpu: Vec<f64>,
    /// Bytes of the answer, and its HTTP status.
    pub bytes: usize,
    pub status: u16,
}

/// The comparison's outcome.
#[derive(Clone, Debug, Default)]
pub struct ReadBack {
    pub rows: usize,
    pub rounds: usize,
    pub variants: Vec<VariantCost>,
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The variants compared, for `hour`.
pub fn variants(hour: HourKey) -> Vec<Variant> {
    let rows = schema::hour_rows_query(hour);
    let within = format!(
        "time >= '{}' AND time < '{}'",
        hour.rfc3339(),
        hour.next().rfc3339()
    );
    let data = schema::WEATHER_DATA;
    let (state, zip) = (schema::TAG_STATE, schema::TAG_ZIP_CODE);
    let means: Vec<String> = Metric::ALL
        .iter()
        .map(|m| format!("mean({0}) AS {0}", m.name()))
        .collect();
    let mut aggregates = vec![format!(
        "SELECT count({}) AS n, {} FROM {data} WHERE {within} GROUP BY {state}",
        Metric::ALL[0].name(),
        means.join(", ")
    )];
    for metric in Metric::ALL {
        for selector in ["max", "min"] {
            aggregates.push(format!(
                "SELECT {selector}({}), {zip} FROM {data} WHERE {within} GROUP BY {state}",
                metric.name()
            ));
        }
    }
    let plain = |name, accept, chunked, statement: &str| Variant {
        name,
        accept,
        chunked,
        statement: statement.to_owned(),
    };
    vec![
        plain("json (current)", None, false, &rows),
        plain("csv", Some("application/csv"), false, &rows),
        plain("msgpack", Some("application/x-msgpack"), false, &rows),
        plain("json chunked", None, true, &rows),
        plain(
            "json, all columns",
            None,
            false,
            &format!("SELECT * FROM {data} WHERE {within}"),
        ),
        plain(
            "json, metrics only (no tags)",
            None,
            false,
            &rows.replace(&format!(", {state}, {zip}"), ""),
        ),
        plain(
            "json, GROUP BY state (tags as series)",
            None,
            false,
            &format!(
                "{} GROUP BY {state}",
                rows.replace(&format!(", {state}, "), ", ")
            ),
        ),
        plain(
            "aggregates (9 statements)",
            None,
            false,
            &aggregates.join("; "),
        ),
        plain(
            "count(*) only",
            None,
            false,
            &format!(
                "SELECT count({}) FROM {data} WHERE {within}",
                Metric::ALL[0].name()
            ),
        ),
    ]
}

async fn one(
    http: &reqwest::Client,
    url: &str,
    db: &str,
    variant: &Variant,
    pid: u32,
) -> anyhow::Result<(f64, f64, usize, u16)> {
    let mut query = vec![
        ("db", db),
        ("q", variant.statement.as_str()),
        ("epoch", "s"),
    ];
    if variant.chunked {
        query.push(("chunked", "true"));
    }
    let mut request = http.get(format!("{url}/query")).query(&query);
    if let Some(accept) = variant.accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    let before = usage(pid).unwrap_or_default().cpu;
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let wall = started.elapsed().as_secs_f64();
    // /proc's CPU times lag by up to a tick; let the last one land.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cpu = usage(pid).unwrap_or_default().cpu - before;
    Ok((cpu, wall, body.len(), status))
}

/// On a fresh influxd: `hour_data` (one hour) written to `weather`, then `rounds` rounds
/// of every variant idle, then `rounds` rounds while `writers` writers write `load_data`
/// to another database of the same influxd, over and over.
pub async fn compare(
    hour_data: &Path,
    load_data: &Path,
    hour: HourKey,
    write_rows: usize,
    writers: usize,
    rounds: usize,
    only: Option<&[String]>,
) -> anyhow::Result<ReadBack> {
    let stack = tokio::task::block_in_place(start_servers)?;
    let pid = stack.influx.pid().unwrap_or_default();
    let url = stack.influx.url();
    let client = influx_client(&stack, "weather")?;
    client.create_database().await?;
    let (hour_bodies, rows) = tokio::task::block_in_place(|| bodies(hour_data, write_rows))?;
    for body in &hour_bodies {
        client.write(body).await?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut variants = variants(hour);
    if let Some(only) = only {
        // The current query stays first: the ratios are to it.
        let mut index = 0;
        variants.retain(|v| {
            index += 1;
            index == 1 || only.iter().any(|name| name == v.name)
        });
    }
    let mut costs: Vec<VariantCost> = variants
        .iter()
        .map(|v| VariantCost {
            name: v.name.to_owned(),
            ..Default::default()
        })
        .collect();
    // One untimed pass, so every variant finds the same warm caches.
    for variant in &variants {
        one(&http, &url, "weather", variant, pid).await?;
    }
    for round in 0..rounds {
        for (variant, cost) in variants.iter().zip(&mut costs) {
            let (cpu, wall, bytes, status) = one(&http, &url, "weather", variant, pid).await?;
            cost.idle_cpu.push(cpu);
            cost.idle_wall.push(wall);
            (cost.bytes, cost.status) = (bytes, status);
        }
        eprintln!("read-back: idle round {} of {rounds}", round + 1);
    }
    // The load: writers rewriting the load data into database `load`, until told to stop.
    let load = influx_client(&stack, "load")?;
    load.create_database().await?;
    let (load_bodies, _) = tokio::task::block_in_place(|| bodies(load_data, write_rows))?;
    let load_bodies = Arc::new(load_bodies);
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (load, bodies, stop) = (load.clone(), load_bodies.clone(), stop.clone());
        loaders.spawn(async move {
            let mut next = writer;
            while !stop.load(Ordering::Relaxed) {
                // Errors (an overloaded influxd's 500 "timeout") only slow the load.
                let _ = load.write(&bodies[next % bodies.len()]).await;
                next += writers;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..rounds {
        for (variant, cost) in variants.iter().zip(&mut costs) {
            let (cpu, wall, _, _) = one(&http, &url, "weather", variant, pid).await?;
            cost.loaded_cpu.push(cpu);
            cost.loaded_wall.push(wall);
        }
        eprintln!("read-back: loaded round {} of {rounds}", round + 1);
    }
    stop.store(true, Ordering::Relaxed);
    while loaders.join_next().await.is_some() {}
    Ok(ReadBack {
        rows,
        rounds,
        variants: costs,
    })
}

impl ReadBack {
    /// The comparison as a markdown table, medians, with ratios to the current query.
    pub fn markdown(&self) -> String {
        let base = &self.variants[0];
        let (base_cpu, base_loaded) = (median(&base.idle_cpu), median(&base.loaded_wall));
        let mut out = format!(
            "#### Read-back of one hour ({} rows), medians of {} interleaved rounds\n\n\
             | variant | status, answer bytes | influxd CPU s, idle (min-max) | vs current | wall s, idle | wall s, loaded | vs current | influxd CPU s while loaded |\n\
             |---|---|---|---|---|---|---|---|\n",
            self.rows, self.rounds
        );
        for v in &self.variants {
            let (cpu, loaded) = (median(&v.idle_cpu), median(&v.loaded_wall));
            out += &format!(
                "| {} | {}, {} | {:.2} ({:.2}-{:.2}) | {:.2} | {:.3} | {:.3} | {:.2} | {:.2} |\n",
                v.name,
                v.status,
                v.bytes,
                cpu,
                v.idle_cpu.iter().copied().fold(f64::INFINITY, f64::min),
                v.idle_cpu.iter().copied().fold(0.0, f64::max),
                cpu / base_cpu,
                median(&v.idle_wall),
                loaded,
                loaded / base_loaded,
                median(&v.loaded_cpu),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_current_query_comes_first_and_every_variant_reads_the_hour() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let variants = variants(hour);
        assert_eq!(variants[0].statement, schema::hour_rows_query(hour));
        assert!(
            variants
                .iter()
                .all(|v| v.statement.contains("2023-09-19T05:00:00Z"))
        );
    }
}
