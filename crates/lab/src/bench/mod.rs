//! `weathervane bench`: measures the pipeline beside InfluxDB alone, in one run, on
//! private redis-server and influxd processes (a fresh pair per phase, so no phase pays
//! for another's compactions). Phases: the ceiling (rows written straight to InfluxDB),
//! the pipeline (the same rows through streamer, Redis, ingester, processor), recovery
//! after Redis and InfluxDB outages, report time and query count, API load, the api herd
//! (one replica against three behind HAProxy, and one with InfluxDB down), memory per
//! buffered row, and scale. Returns a [`BenchReport`]; its `markdown()` is the report
//! `weathervane bench` prints (ratios first, see `report`).

pub mod readback;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::InfluxClient;
use weathervane_core::progress;
use weathervane_core::row::CsvSource;
use weathervane_core::schema;
use weathervane_gen::GenArgs;
use weathervane_harness::events::{Event, events_of};
use weathervane_harness::{LocalStack, ManagedProcess, Role};

use crate::verify::{self, Verdict};
pub use report::{BenchReport, Machine, Memory, Recovery};

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Stations per hour at 1x (full scale is 43,800).
    #[arg(long, default_value_t = 43_800)]
    pub stations: u32,
    /// Hours of the generated day used by the ceiling and pipeline phases.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Length of the Redis and InfluxDB outages in the recovery phase, seconds.
    #[arg(long, default_value_t = 60)]
    pub outage: u64,
    /// Station multipliers of the scale phase.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub scale: Vec<u32>,
    /// Hours per run in the scale phase.
    #[arg(long, default_value_t = 2)]
    pub scale_hours: u32,
    /// Seconds of load per endpoint and side in the API phase (Debian's `wrk` makes it).
    #[arg(long, default_value_t = 10)]
    pub api_seconds: u64,
    /// Concurrent connections in the API phase.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Writer counts tried for the ceiling; the best is the ceiling.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub ceiling_writers: Vec<usize>,
    /// Rows per InfluxDB write in the ceiling (the ingester's batch size x write batches).
    #[arg(long, default_value_t = 5000)]
    pub write_rows: usize,
    /// Also write the report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Linux clock ticks per second for /proc CPU times.
const TICKS: f64 = 100.0;

/// CPU seconds and peak RSS of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: f64,
    pub peak_rss_kb: u64,
}

fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Usage {
        cpu: ticks / TICKS,
        peak_rss_kb: peak,
    })
}

/// Samples processes every 100 ms and keeps the last reading of each, so a process that
/// exits still has its totals up to its last sample.
#[derive(Default)]
struct Sampler {
    last: BTreeMap<String, Usage>,
}

impl Sampler {
    fn sample(&mut self, name: &str, pid: Option<u32>) {
        if let Some(reading) = pid.and_then(usage) {
            self.last.insert(name.to_owned(), reading);
        }
    }
}

/// A fresh private redis-server and influxd; the roles are started by each phase.
fn start_servers() -> anyhow::Result<LocalStack> {
    Ok(LocalStack::builder().env("RUST_LOG", "info").start()?)
}

fn influx_client(stack: &LocalStack, db: &str) -> anyhow::Result<InfluxClient> {
    let args = InfluxArgs::plain(stack.influx.url(), db.to_owned());
    Ok(InfluxClient::new(&args, Duration::from_secs(120))?)
}

/// A streamer of `data` as fast as it goes, exiting once every hour is reported.
fn streamer(stack: &LocalStack, data: &Path) -> anyhow::Result<ManagedProcess> {
    Ok(stack
        .role(Role::Streamer)?
        .arg("--input")
        .arg(data)
        .args(["--hour-interval", "0", "--once", "--rejects"])
        .arg(stack.dir().join("rejects.csv")))
}

fn generate(dir: &Path, stations: u32, hours: u32) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!("day-{stations}-{hours}h.csv"));
    if !out.exists() {
        let args = GenArgs {
            stations,
            days: 1,
            hours: Some(hours),
            seed: 1,
            start: chrono::NaiveDate::from_ymd_opt(2023, 9, 19).expect("valid"),
            out: out.clone(),
        };
        weathervane_gen::run(&args)?;
    }
    Ok(out)
}

/// The input as line-protocol request bodies of `rows_per_body` rows.
fn bodies(data: &Path, rows_per_body: usize) -> anyhow::Result<(Vec<Vec<u8>>, usize)> {
    let mut source = CsvSource::open(data)?;
    let mut bodies = Vec::new();
    let (mut body, mut in_body, mut rows) = (Vec::new(), 0, 0);
    while let Some(result) = source.next_row() {
        let (_, row) = result?;
        body = schema::encode_row(body, &row);
        in_body += 1;
        rows += 1;
        if in_body == rows_per_body {
            bodies.push(std::mem::take(&mut body));
            in_body = 0;
        }
    }
    if in_body > 0 {
        bodies.push(body);
    }
    Ok((bodies, rows))
}

/// InfluxDB alone, written to by `concurrency` writers.
#[derive(Clone, Debug)]
pub struct Ceiling {
    pub concurrency: usize,
    pub rows_per_s: f64,
    pub influxd_cpu: f64,
}

/// Rows written straight to InfluxDB at several concurrencies; the best is the ceiling.
async fn ceiling(
    data: &Path,
    write_rows: usize,
    writers: &[usize],
) -> anyhow::Result<Vec<Ceiling>> {
    let (bodies, rows) = tokio::task::block_in_place(|| bodies(data, write_rows))?;
    let bodies = Arc::new(bodies);
    let mut results = Vec::new();
    for &concurrency in writers {
        let stack = tokio::task::block_in_place(start_servers)?;
        let client = influx_client(&stack, "ceiling")?;
        client.create_database().await?;
        let before = usage(stack.influx.pid().unwrap_or_default()).unwrap_or_default();
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
            writers.spawn(async move {
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // An overloaded InfluxDB answers 500 "timeout": retry as the ingester does.
                    let mut backoff = weathervane_core::backoff::Backoff::new();
                    while let Err(error) = client.write(body).await {
                        anyhow::ensure!(error.is_retriable(), error);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = writers.join_next().await {
            result??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = usage(stack.influx.pid().unwrap_or_default()).unwrap_or_default();
        results.push(Ceiling {
            concurrency,
            rows_per_s: rows as f64 / elapsed,
            influxd_cpu: after.cpu - before.cpu,
        });
        eprintln!("ceiling: {concurrency} writers, {rows} rows in {elapsed:.1} s");
    }
    Ok(results)
}

/// The input through the pipeline, timed.
#[derive(Debug)]
pub struct PipelineRun {
    pub rows: u64,
    pub seconds: f64,
    /// Per process (streamer, ingester, processor, influxd): CPU and peak RSS.
    pub usage: BTreeMap<String, Usage>,
    /// The processor's time for each hour's reports.
    pub report_ms: Vec<u64>,
    /// InfluxDB `/query` requests during the run.
    pub queries: f64,
    /// What InfluxDB holds afterwards (it passed, or the run is an error).
    pub verdict: Verdict,
}

impl PipelineRun {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
}

/// Count of `/query` requests InfluxDB has served (its own httpd statistics).
async fn query_requests(client: &InfluxClient) -> f64 {
    let Ok(series) = client.query("SHOW STATS FOR 'httpd'").await else {
        return 0.0;
    };
    series
        .first()
        .and_then(|s| s.values.first()?.get(s.column("queryReq")?)?.as_f64())
        .unwrap_or(0.0)
}

/// The input through the four roles with `--hour-interval 0`, timed from the streamer's
/// start to its exit (every hour reported).
async fn pipeline(stack: &LocalStack, data: &Path) -> anyhow::Result<PipelineRun> {
    let mut ingester = stack.role(Role::Ingester)?;
    let mut processor = stack.role(Role::Processor)?;
    ingester.start()?;
    processor.start()?;
    let client = influx_client(stack, "weather")?;
    let queries_before = query_requests(&client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut streamer = streamer(stack, data)?;
    let mut sampler = Sampler::default();
    let started = Instant::now();
    streamer.start()?;
    let influxd_before = usage(stack.influx.pid().unwrap_or_default()).unwrap_or_default();
    loop {
        sampler.sample("streamer", streamer.pid());
        sampler.sample("ingester", ingester.pid());
        sampler.sample("processor", processor.pid());
        sampler.sample("influxd", stack.influx.pid());
        if !streamer.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    if !streamer.exit_status().is_some_and(|s| s.success()) {
        bail!("the streamer failed; see {}", streamer.log_path().display());
    }
    if let Some(influxd) = sampler.last.get_mut("influxd") {
        influxd.cpu -= influxd_before.cpu;
    }
    let queries = query_requests(&client).await - queries_before - 1.0;
    let report_ms = report_ms(&processor)?;
    let verdict = verify::verify(&[data.to_owned()], &client).await?;
    if !verdict.passed() {
        bail!(
            "the pipeline run did not verify: {}: {:?}",
            report::verified(&verdict),
            verdict.problems.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(PipelineRun {
        rows: verdict.rows_expected,
        seconds,
        usage: sampler.last,
        report_ms,
        queries,
        verdict,
    })
}

/// The processor's time from taking an hour to having its reports stored, per hour.
fn report_ms(processor: &ManagedProcess) -> anyhow::Result<Vec<u64>> {
    Ok(events_of(processor.log_path())?
        .into_iter()
        .filter_map(|record| match record.event {
            Event::HourReported { elapsed_ms, .. } => Some(elapsed_ms),
            _ => None,
        })
        .collect())
}

/// Which server an outage takes down.
#[derive(Clone, Copy, PartialEq)]
enum Outage {
    Redis,
    Influx,
}

/// One outage during an hour.
#[derive(Clone, Debug)]
pub struct RecoveryRun {
    /// From the server's return until the hour is reported.
    pub seconds: f64,
    /// The processor's time for the hour's reports, on an InfluxDB that writes nothing
    /// else meanwhile.
    pub report_ms: u64,
}

/// One hour streamed, the server down for `outage` once the first batch is in.
async fn recovery(data: &Path, which: Outage, outage: Duration) -> anyhow::Result<RecoveryRun> {
    let mut stack = tokio::task::block_in_place(start_servers)?;
    let mut ingester = stack.role(Role::Ingester)?;
    let mut processor = stack.role(Role::Processor)?;
    ingester.start()?;
    processor.start()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut streamer = streamer(&stack, data)?;
    streamer.start()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch_received = |ingester: &ManagedProcess| -> anyhow::Result<bool> {
        Ok(events_of(ingester.log_path())?
            .iter()
            .any(|record| matches!(record.event, Event::BatchReceived { .. })))
    };
    while !batch_received(&ingester)? {
        anyhow::ensure!(Instant::now() < deadline, "no batch received");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match which {
        Outage::Redis => stack.redis.kill(),
        Outage::Influx => stack.influx.kill(),
    }
    tokio::time::sleep(outage).await;
    tokio::task::block_in_place(|| match which {
        Outage::Redis => stack.redis.start_again(),
        Outage::Influx => stack.influx.start_again(),
    })?;
    let back = Instant::now();
    let status = tokio::task::block_in_place(|| streamer.wait_timeout(Duration::from_secs(600)))?;
    anyhow::ensure!(
        status.is_some_and(|s| s.success()),
        "the hour was not reported after the outage"
    );
    let seconds = back.elapsed().as_secs_f64();
    let report_ms = report_ms(&processor)?.into_iter().max().unwrap_or_default();
    Ok(RecoveryRun { seconds, report_ms })
}

/// Peak RSS (kB) of a streamer reading `data` while Redis is down from the start, once it
/// has buffered as much as it will: `hours` hours (its `--max-pending-hours`).
async fn streamer_rss_with_redis_down(data: &Path, hours: u32) -> anyhow::Result<u64> {
    let mut stack = tokio::task::block_in_place(start_servers)?;
    stack.redis.kill();
    let mut streamer = streamer(&stack, data)?.args([
        "--max-pending-hours",
        &hours.to_string(),
        "--buffer-rows",
        "10000000",
    ]);
    streamer.start()?;
    let mut peak = 0;
    let mut steady = 0;
    // Done when the peak has not grown for a second.
    while steady < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = streamer.pid().and_then(usage).map_or(0, |u| u.peak_rss_kb);
        if now > peak {
            (peak, steady) = (now, 0);
        } else {
            steady += 1;
        }
    }
    streamer.kill();
    Ok(peak)
}

/// What `wrk` measured for one endpoint and side.
#[derive(Clone, Debug)]
pub struct ApiLoad {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `wrk` (one thread, so the server under test keeps a core) sending GETs for `paths` in
/// turn to `base` over `connections` connections for `seconds`. A non-2xx answer or a
/// socket error fails the run: speed only counts with right answers.
async fn load(
    dir: &Path,
    base: &str,
    paths: &[String],
    seconds: u64,
    connections: usize,
) -> anyhow::Result<ApiLoad> {
    let script = dir.join("paths.lua");
    let quoted: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(
        &script,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
            quoted.join(",")
        ),
    )?;
    let output = tokio::process::Command::new("wrk")
        .args(["-t1", "--latency", "--timeout", "10s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .await
        .context("running wrk (Debian: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("reading wrk's report for {base}:\n{text}"))
}

/// Requests/s and the 50th and 99th latency percentiles from `wrk --latency` output.
fn parse_wrk(text: &str) -> anyhow::Result<ApiLoad> {
    for failure in ["Non-2xx or 3xx responses", "Socket errors"] {
        anyhow::ensure!(!text.contains(failure), "{failure}");
    }
    let value = |label: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(label))
            .map(str::trim)
            .with_context(|| format!("no \"{label}\" line"))
    };
    let millis = |text: &str| -> anyhow::Result<f64> {
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .context("a latency without a unit")?;
        let (number, unit) = text.split_at(split);
        let scale = match unit {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            other => bail!("unknown unit {other}"),
        };
        Ok(number.parse::<f64>()? * scale)
    };
    Ok(ApiLoad {
        rps: value("Requests/sec:")?.parse()?,
        p50_ms: millis(value("50%")?)?,
        p99_ms: millis(value("99%")?)?,
    })
}

/// Asks every path once, so both sides are timed with warm caches.
async fn warm(base: &str, paths: &[String]) -> anyhow::Result<()> {
    let client = crate::expected::http_client()?;
    for path in paths {
        let response = client.get(format!("{base}{path}")).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path} answered {}",
            response.status()
        );
    }
    Ok(())
}

/// Waits (two minutes at most) until influxd has finished compacting what the pipeline
/// wrote, so the API phase measures queries, not compactions beside them.
async fn quiet_influxd(stack: &LocalStack) {
    let started = Instant::now();
    let cpu = || usage(stack.influx.pid().unwrap_or_default()).map_or(0.0, |u| u.cpu);
    let mut before = cpu();
    while started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = cpu();
        // Under 5% of a core over the last two seconds.
        if now - before < 0.1 {
            break;
        }
        before = now;
    }
    eprintln!(
        "influxd quiet after {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

#[derive(Clone, Debug)]
pub struct ApiRun {
    /// Per endpoint: the API under load, and InfluxDB asked the same directly.
    pub loads: Vec<(String, ApiLoad, ApiLoad)>,
    /// API answers checked against reports computed from the input, after the load.
    pub checked: usize,
}

/// The API under load, and InfluxDB asked the same reports directly.
async fn api(
    dir: &Path,
    stack: &LocalStack,
    data: &Path,
    hours: u32,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<ApiRun> {
    let addr = format!("127.0.0.1:{}", weathervane_harness::free_port()?);
    let mut api = stack.role(Role::Api)?.env("API_ADDR", &addr);
    api.start()?;
    let states = states_in(data)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let http = crate::expected::http_client()?;
    while http.get(format!("http://{addr}/")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the API did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (api_base, influx_base) = (format!("http://{addr}"), stack.influx.url());
    let query = |q: String| {
        format!(
            "/query?db=weather&epoch=s&q={}",
            q.replace(' ', "%20")
                .replace('\'', "%27")
                .replace('"', "%22")
        )
    };
    let mut results = Vec::new();
    for endpoint in ["avg", "extremes", "state_extremes"] {
        let mut api_paths = Vec::new();
        let mut direct_paths = Vec::new();
        for (i, state) in states.iter().enumerate() {
            let hour = i % hours as usize;
            let time = format!("2023-09-19T{hour:02}:00:00Z");
            match endpoint {
                "avg" => {
                    api_paths.push(format!("/avg?state={state}&hour={hour}&date=2023-09-19"));
                    direct_paths.push(query(format!("SELECT avg_temp_c, avg_pressure_mb, avg_humidity, avg_precip_mm, \"count\" FROM weather_averages WHERE state = '{state}' AND time = '{time}'")));
                }
                "extremes" => {
                    api_paths.push(format!(
                        "/extremes?state={state}&hour={hour}&date=2023-09-19"
                    ));
                    direct_paths.push(query(format!("SELECT metric, max_zip_code, max_value, min_zip_code, min_value FROM zip_code_extremes WHERE state = '{state}' AND time = '{time}'")));
                }
                _ => {
                    api_paths.push(format!("/state_extremes?hour={hour}&date=2023-09-19"));
                    direct_paths.push(query(format!("SELECT metric, max_state, max_value, min_state, min_value FROM state_extremes WHERE time = '{time}'")));
                }
            }
        }
        warm(&api_base, &api_paths).await?;
        let api_load = load(dir, &api_base, &api_paths, seconds, connections).await?;
        warm(&influx_base, &direct_paths).await?;
        let direct_load = load(dir, &influx_base, &direct_paths, seconds, connections).await?;
        results.push((format!("/{endpoint}"), api_load, direct_load));
    }
    let reports = tokio::task::block_in_place(|| crate::expected::expected_reports(data))?;
    let checked = crate::expected::check_api(&addr, &reports)
        .await
        .context("the API answered wrongly after the load")?;
    Ok(ApiRun {
        loads: results,
        checked,
    })
}

/// The states of the input's first 5,000 rows, sorted: what the API phases ask about.
fn states_in(data: &Path) -> anyhow::Result<Vec<String>> {
    let mut source = CsvSource::open(data)?;
    let mut states: Vec<String> = std::iter::from_fn(|| source.next_row())
        .filter_map(|r| r.ok())
        .map(|(_, row)| row.state)
        .take(5000)
        .collect();
    states.sort();
    states.dedup();
    Ok(states)
}

/// The herd phase: `wrk` on one api replica, on three behind HAProxy, and on one with
/// InfluxDB killed.
#[derive(Clone, Debug)]
pub struct HerdRun {
    pub one: ApiLoad,
    pub three: ApiLoad,
    pub one_influx_down: ApiLoad,
}

/// Debian's `haproxy` on loopback in front of `replicas` (API address, admin address),
/// checking each one's `/readyz` every second as the compose file's does.
fn haproxy(dir: &Path, replicas: &[(String, String)]) -> anyhow::Result<(ManagedProcess, String)> {
    let addr = format!("127.0.0.1:{}", weathervane_harness::free_port()?);
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, (api, admin))| {
            let port = admin.rsplit(':').next().unwrap_or_default();
            format!("    server api{i} {api} check port {port} inter 1s fall 2 rise 2\n")
        })
        .collect();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "defaults\n    mode http\n    timeout connect 500ms\n    timeout client 30s\n    timeout server 10s\n    retries 3\n    option redispatch 1\n\nfrontend api\n    bind {addr}\n    default_backend replicas\n\nbackend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n{servers}"
        ),
    )?;
    let mut process = ManagedProcess::new("haproxy", "haproxy", dir)
        .args(["-db", "-f"])
        .arg(&config);
    process
        .start()
        .context("starting haproxy (Debian: apt-get install haproxy)")?;
    Ok((process, addr))
}

/// Three api replicas on `stack` (warmed up from its InfluxDB), `wrk` on one of them and
/// on the three behind HAProxy, then on one with InfluxDB killed (it answers from memory).
async fn herd(
    dir: &Path,
    stack: &mut LocalStack,
    data: &Path,
    hours: u32,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<HerdRun> {
    let mut replicas = Vec::new();
    for index in 1..=3 {
        let mut replica = stack.api_replica(index)?;
        replica.process.start()?;
        replicas.push(replica);
    }
    let http = crate::expected::http_client()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for replica in &replicas {
        loop {
            let ready = http
                .get(format!("{}/readyz", replica.admin_url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "api replica {} never warmed up",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let states = states_in(data)?;
    let paths: Vec<String> = states
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let hour = i % hours as usize;
            format!("/avg?state={state}&hour={hour}&date=2023-09-19")
        })
        .collect();
    let addrs: Vec<(String, String)> = replicas
        .iter()
        .map(|r| (r.addr.clone(), r.admin_addr.clone()))
        .collect();
    let (mut balancer, lb) = haproxy(dir, &addrs)?;
    let one_base = format!("http://{}", replicas[0].addr);
    let lb_base = format!("http://{lb}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // HAProxy's checks find the three ready.
    while warm(&lb_base, &paths).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "HAProxy never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    warm(&one_base, &paths).await?;
    let one = load(dir, &one_base, &paths, seconds, connections).await?;
    let three = load(dir, &lb_base, &paths, seconds, connections).await?;
    balancer.stop();
    stack.influx.kill();
    let one_influx_down = load(dir, &one_base, &paths, seconds, connections).await;
    stack.influx.start_again()?;
    for mut replica in replicas {
        replica.process.stop();
    }
    Ok(HerdRun {
        one,
        three,
        one_influx_down: one_influx_down?,
    })
}

/// The read-back comparison ([`readback::compare`]) on `stations` stations: the first hour
/// of the generated day is read back, the next two hours are the writers' load.
pub async fn readback_phase(
    work: &Path,
    stations: u32,
    write_rows: usize,
    writers: usize,
    rounds: usize,
    only: Option<&[String]>,
) -> anyhow::Result<readback::ReadBack> {
    let hour = tokio::task::block_in_place(|| generate(work, stations, 1))?;
    let load = tokio::task::block_in_place(|| generate(work, stations, 3))?;
    let first: weathervane_core::HourKey = "2023-09-19T00".parse()?;
    readback::compare(&hour, &load, first, write_rows, writers, rounds, only).await
}

/// Runs every phase on fresh servers and returns what they measured.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let machine = report::Machine::now();
    let work = tempfile::tempdir()?;
    // On a terminal, the phases done and the one under way (hidden otherwise).
    let phases = progress::steps("bench", 7 + args.scale.len() as u64);
    let phase = |name: String| progress::next_step(&phases, name);
    phase("generating the input".into());
    let data = tokio::task::block_in_place(|| generate(work.path(), args.stations, args.hours))?;
    phase("InfluxDB's own write ceiling".into());
    let ceilings = ceiling(&data, args.write_rows, &args.ceiling_writers).await?;
    let best = ceilings
        .iter()
        .max_by(|a, b| a.rows_per_s.total_cmp(&b.rows_per_s))
        .context("no ceiling")?
        .clone();
    phase("the pipeline through the input".into());
    let mut stack = tokio::task::block_in_place(start_servers)?;
    let day = pipeline(&stack, &data).await?;
    quiet_influxd(&stack).await;
    phase("the API under load".into());
    let api = api(
        work.path(),
        &stack,
        &data,
        args.hours,
        args.api_seconds,
        args.connections,
    )
    .await?;
    phase("the api herd: one replica, three behind HAProxy, InfluxDB down".into());
    let herd = herd(
        work.path(),
        &mut stack,
        &data,
        args.hours,
        args.api_seconds,
        args.connections,
    )
    .await?;
    drop(stack);
    phase("recovery from Redis and InfluxDB outages".into());
    let recovery = recovery_phase(work.path(), &args, &best).await?;
    phase("the streamer's memory per buffered row".into());
    let memory = memory_phase(work.path(), args.stations).await?;
    let mut scale = Vec::new();
    for factor in &args.scale {
        phase(format!("scale: {factor} x the stations"));
        let stations = args.stations * factor;
        let data =
            tokio::task::block_in_place(|| generate(work.path(), stations, args.scale_hours))?;
        let stack = tokio::task::block_in_place(start_servers)?;
        scale.push((*factor, pipeline(&stack, &data).await?));
    }
    // The report says the rest.
    phases.finish_and_clear();
    Ok(BenchReport {
        machine,
        args,
        ceilings,
        best,
        pipeline: day,
        api,
        herd,
        recovery,
        memory,
        scale,
    })
}

/// One hour through Redis and InfluxDB outages, beside the time InfluxDB alone needs to
/// store it.
async fn recovery_phase(work: &Path, args: &BenchArgs, best: &Ceiling) -> anyhow::Result<Recovery> {
    let hour_data = tokio::task::block_in_place(|| generate(work, args.stations, 1))?;
    // The hour written straight to a fresh InfluxDB, as the backlog is: every series in it
    // is new there, which makes it slower per row than the day-long ceiling.
    let alone = ceiling(&hour_data, args.write_rows, &[best.concurrency]).await?;
    let influx_alone_s = alone
        .first()
        .map_or(0.0, |c| f64::from(args.stations) / c.rows_per_s);
    let outage = Duration::from_secs(args.outage);
    let redis = recovery(&hour_data, Outage::Redis, outage).await?;
    let influx = recovery(&hour_data, Outage::Influx, outage).await?;
    Ok(Recovery {
        influx_alone_s,
        redis,
        influx,
    })
}

/// The streamer's memory per buffered row: buffering 1 and 3 hours of the same input.
async fn memory_phase(work: &Path, stations: u32) -> anyhow::Result<Memory> {
    let three = tokio::task::block_in_place(|| generate(work, stations, 3))?;
    // The same input both times, so only the buffered hours differ, not the input index.
    let rss_one_kb = streamer_rss_with_redis_down(&three, 1).await?;
    let rss_three_kb = streamer_rss_with_redis_down(&three, 3).await?;
    let hour_rows = f64::from(stations);
    Ok(Memory {
        rss_one_kb,
        rss_three_kb,
        csv_bytes_per_row: (std::fs::metadata(&three)?.len() as f64) / (3.0 * hour_rows),
        bytes_per_row: (rss_three_kb.saturating_sub(rss_one_kb) as f64 * 1024.0)
            / (2.0 * hour_rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:19000
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.79us    1.02ms  25.76ms   96.07%
  Latency Distribution
     50%  390.00us
     75%  541.00us
     90%  842.00us
     99%    2.64ms
  68662 requests in 1.00s, 20.01MB read
Requests/sec:  68662.18
Transfer/sec:     20.01MB
";

    #[test]
    fn reads_rate_and_percentiles_in_their_units() {
        let load = parse_wrk(WRK).unwrap();
        assert_eq!(load.rps, 68662.18);
        assert!((load.p50_ms - 0.39).abs() < 1e-9);
        assert!((load.p99_ms - 2.64).abs() < 1e-9);
    }

    #[test]
    fn wrong_answers_fail_the_run() {
        let text = WRK.replace(
            "Transfer/sec",
            "  Non-2xx or 3xx responses: 12\nTransfer/sec",
        );
        let error = parse_wrk(&text).err().unwrap();
        assert!(error.to_string().contains("Non-2xx"), "{error}");
    }
}
