//! `weathervane bench`: measures the pipeline beside InfluxDB alone, in one run, on
//! private redis-server and influxd processes (a fresh pair per phase, so no phase pays
//! for another's compactions). Phases: the ceiling (rows written straight to InfluxDB),
//! the pipeline (the same rows through streamer, Redis, ingester, processor), recovery
//! after Redis and InfluxDB outages, report time and query count, API load, memory per
//! buffered row, and scale. Prints a Markdown report (ratios first).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::InfluxClient;
use weathervane_core::row::CsvSource;
use weathervane_core::schema;
use weathervane_harness::{InfluxServer, ManagedProcess, RedisServer};

use weathervane_gen::{self, GenArgs};
use crate::verify;

#[derive(Debug, clap::Args)]
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
struct Usage {
    cpu: f64,
    peak_rss_kb: u64,
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

/// A fresh private redis-server and influxd, and the roles as processes.
struct Stack {
    dir: tempfile::TempDir,
    redis: RedisServer,
    influx: InfluxServer,
}

impl Stack {
    fn start() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            redis: RedisServer::start()?,
            influx: InfluxServer::start()?,
        })
    }

    fn client(&self, db: &str) -> anyhow::Result<InfluxClient> {
        let args = InfluxArgs {
            url: self.influx.url(),
            db: db.to_owned(),
            user: None,
            password: None,
            token: None,
        };
        Ok(InfluxClient::new(&args, Duration::from_secs(120))?)
    }

    fn role(&self, role: &str) -> anyhow::Result<ManagedProcess> {
        Ok(ManagedProcess::weathervane(role, self.dir.path())?
            .arg(role)
            .env("REDIS_URL", self.redis.url())
            .env("INFLUXDB_URL", self.influx.url())
            .env("INFLUXDB_DB", "weather")
            .env("RUST_LOG", "info,weathervane_core::event=debug"))
    }

    fn streamer(&self, data: &Path) -> anyhow::Result<ManagedProcess> {
        Ok(self
            .role("streamer")?
            .arg("--input")
            .arg(data)
            .args(["--hour-interval", "0", "--once", "--rejects"])
            .arg(self.dir.path().join("rejects.csv")))
    }

    fn influxd_pid(&self) -> Option<u32> {
        self.influx.pid()
    }
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

struct Ceiling {
    concurrency: usize,
    rows_per_s: f64,
    influxd_cpu: f64,
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
        let stack = tokio::task::block_in_place(Stack::start)?;
        let client = stack.client("ceiling")?;
        client.create_database().await?;
        let before = usage(stack.influxd_pid().unwrap_or_default()).unwrap_or_default();
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
        let after = usage(stack.influxd_pid().unwrap_or_default()).unwrap_or_default();
        results.push(Ceiling {
            concurrency,
            rows_per_s: rows as f64 / elapsed,
            influxd_cpu: after.cpu - before.cpu,
        });
        eprintln!("ceiling: {concurrency} writers, {rows} rows in {elapsed:.1} s");
    }
    Ok(results)
}

struct PipelineRun {
    rows: u64,
    seconds: f64,
    usage: BTreeMap<String, Usage>,
    report_ms: Vec<u64>,
    queries: f64,
    hours: usize,
    verified: String,
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
async fn pipeline(stack: &Stack, data: &Path) -> anyhow::Result<PipelineRun> {
    let mut ingester = stack.role("ingester")?;
    let mut processor = stack.role("processor")?;
    ingester.start()?;
    processor.start()?;
    let client = stack.client("weather")?;
    let queries_before = query_requests(&client).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut streamer = stack.streamer(data)?;
    let mut sampler = Sampler::default();
    let started = Instant::now();
    streamer.start()?;
    let influxd_before = usage(stack.influxd_pid().unwrap_or_default()).unwrap_or_default();
    loop {
        sampler.sample("streamer", streamer.pid());
        sampler.sample("ingester", ingester.pid());
        sampler.sample("processor", processor.pid());
        sampler.sample("influxd", stack.influxd_pid());
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
    let verified = format!(
        "{}/{} hours correct, {} of {} rows",
        verdict.hours_correct, verdict.hours, verdict.rows_stored, verdict.rows_expected
    );
    if !verdict.passed() {
        bail!(
            "the pipeline run did not verify: {verified}: {:?}",
            verdict.problems.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(PipelineRun {
        rows: verdict.rows_expected,
        seconds,
        usage: sampler.last,
        report_ms,
        queries,
        hours: verdict.hours,
        verified,
    })
}

/// The processor's time from taking an hour to having its reports stored, per hour.
fn report_ms(processor: &ManagedProcess) -> anyhow::Result<Vec<u64>> {
    let log = std::fs::read_to_string(processor.log_path())?;
    Ok(log
        .lines()
        .filter(|l| l.contains("Reports stored."))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("elapsed_ms=")?.parse().ok())
        })
        .collect())
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Which server an outage takes down.
#[derive(Clone, Copy, PartialEq)]
enum Outage {
    Redis,
    Influx,
}

struct RecoveryRun {
    /// From the server's return until the hour is reported.
    seconds: f64,
    /// The processor's time for the hour's reports, on an InfluxDB that writes nothing
    /// else meanwhile.
    report_ms: u64,
}

/// One hour streamed, the server down for `outage` once the first batch is in.
async fn recovery(data: &Path, which: Outage, outage: Duration) -> anyhow::Result<RecoveryRun> {
    let mut stack = tokio::task::block_in_place(Stack::start)?;
    let mut ingester = stack.role("ingester")?;
    let mut processor = stack.role("processor")?;
    ingester.start()?;
    processor.start()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut streamer = stack.streamer(data)?;
    streamer.start()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(ingester.log_path())?.contains("Batch received.") {
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
    let mut stack = tokio::task::block_in_place(Stack::start)?;
    stack.redis.kill();
    let mut streamer = stack.streamer(data)?.args([
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

struct ApiLoad {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
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
    let client = crate::replay::reqwest_client()?;
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
async fn quiet_influxd(stack: &Stack) {
    let started = Instant::now();
    let cpu = || usage(stack.influxd_pid().unwrap_or_default()).map_or(0.0, |u| u.cpu);
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

struct ApiRun {
    /// Per endpoint: the API under load, and InfluxDB asked the same directly.
    loads: Vec<(String, ApiLoad, ApiLoad)>,
    /// API answers checked against reports computed from the input, after the load.
    checked: usize,
}

/// The API under load, and InfluxDB asked the same reports directly.
async fn api(
    dir: &Path,
    stack: &Stack,
    data: &Path,
    hours: u32,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<ApiRun> {
    let addr = format!("127.0.0.1:{}", weathervane_harness::free_port()?);
    let mut api = stack.role("api")?.env("API_ADDR", &addr);
    api.start()?;
    let states: Vec<String> = {
        let mut source = CsvSource::open(data)?;
        let mut states: Vec<String> = std::iter::from_fn(|| source.next_row())
            .filter_map(|r| r.ok())
            .map(|(_, row)| row.state)
            .take(5000)
            .collect();
        states.sort();
        states.dedup();
        states
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("http://{addr}/")).await.is_err() {
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
    let reports = tokio::task::block_in_place(|| crate::replay::expected_reports(data))?;
    let checked = crate::replay::check_api(&addr, &reports)
        .await
        .context("the API answered wrongly after the load")?;
    Ok(ApiRun {
        loads: results,
        checked,
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let mut report = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    writeln!(
        report,
        "## {} — {cores} cores, {memory_gib:.0} GiB",
        chrono::Utc::now().format("%Y-%m-%d")
    )?;
    writeln!(
        report,
        "\n`weathervane bench {}`\n",
        std::env::args().skip(2).collect::<Vec<_>>().join(" ")
    )?;

    let data = tokio::task::block_in_place(|| generate(work.path(), args.stations, args.hours))?;
    let ceilings = ceiling(&data, args.write_rows, &args.ceiling_writers).await?;
    let best = ceilings
        .iter()
        .max_by(|a, b| a.rows_per_s.total_cmp(&b.rows_per_s))
        .context("no ceiling")?;
    let stack = tokio::task::block_in_place(Stack::start)?;
    let run = pipeline(&stack, &data).await?;
    let pipeline_rps = run.rows as f64 / run.seconds;
    let per_million = |cpu: f64| cpu / (run.rows as f64 / 1e6);
    let ours: f64 = ["streamer", "ingester", "processor"]
        .iter()
        .filter_map(|n| run.usage.get(*n))
        .map(|u| u.cpu)
        .sum();
    let influxd_cpu = run.usage.get("influxd").map_or(0.0, |u| u.cpu);

    writeln!(
        report,
        "### Throughput ({} rows: {} stations x {} hours)\n",
        run.rows, args.stations, args.hours
    )?;
    writeln!(report, "| measure | figure | target |\n|---|---|---|")?;
    writeln!(
        report,
        "| pipeline / ceiling rows/s | **{:.2}** ({pipeline_rps:.0} / {:.0}) | >= 0.9 |",
        pipeline_rps / best.rows_per_s,
        best.rows_per_s
    )?;
    writeln!(
        report,
        "| WeatherVane CPU / influxd CPU | **{:.3}** ({ours:.1} s / {influxd_cpu:.1} s) | <= 0.1 |",
        ours / influxd_cpu.max(1e-9)
    )?;
    for ceiling in &ceilings {
        writeln!(
            report,
            "| ceiling, {} writers | {:.0} rows/s (influxd {:.1} CPU s) | |",
            ceiling.concurrency, ceiling.rows_per_s, ceiling.influxd_cpu
        )?;
    }
    writeln!(
        report,
        "| pipeline | {pipeline_rps:.0} rows/s, {:.1} s; {} | |",
        run.seconds, run.verified
    )?;
    for (name, usage) in &run.usage {
        writeln!(
            report,
            "| {name} | {:.2} CPU s per million rows, peak RSS {:.0} MiB | |",
            per_million(usage.cpu),
            usage.peak_rss_kb as f64 / 1024.0
        )?;
    }
    quiet_influxd(&stack).await;
    let api_run = api(
        work.path(),
        &stack,
        &data,
        args.hours,
        args.api_seconds,
        args.connections,
    )
    .await?;
    writeln!(
        report,
        "\n### API (`wrk`, {} connections, {} s per endpoint and side; then {} answers checked against the input, all correct)\n",
        args.connections, args.api_seconds, api_run.checked
    )?;
    writeln!(
        report,
        "| endpoint | API / InfluxDB rps | API rps, p50, p99 | InfluxDB /query rps, p50, p99 | target |\n|---|---|---|---|---|"
    )?;
    for (name, api_load, direct) in &api_run.loads {
        writeln!(
            report,
            "| {name} | **{:.1}x** | {:.0}, {:.2} ms, **{:.2} ms** | {:.0}, {:.2} ms, {:.2} ms | p99 < 5 ms, >= 10x |",
            api_load.rps / direct.rps,
            api_load.rps,
            api_load.p50_ms,
            api_load.p99_ms,
            direct.rps,
            direct.p50_ms,
            direct.p99_ms
        )?;
    }
    drop(stack);

    let hour_data = tokio::task::block_in_place(|| generate(work.path(), args.stations, 1))?;
    let hour_rows = args.stations as f64;
    // The hour written straight to a fresh InfluxDB, as the backlog is: every series in it
    // is new there, which makes it slower per row than the day-long ceiling.
    let alone = ceiling(&hour_data, args.write_rows, &[best.concurrency]).await?;
    let influx_alone = alone.first().map_or(0.0, |c| hour_rows / c.rows_per_s);
    let outage = Duration::from_secs(args.outage);
    let redis = recovery(&hour_data, Outage::Redis, outage).await?;
    let influx = recovery(&hour_data, Outage::Influx, outage).await?;
    let mut report_ms = run.report_ms.clone();
    writeln!(
        report,
        "\n### Reports\n\n| measure | figure | target |\n|---|---|---|"
    )?;
    writeln!(
        report,
        "| hour stored → reports stored, InfluxDB writing nothing else (Redis recovery run) | **{} ms** | < 1000 ms |",
        redis.report_ms
    )?;
    writeln!(
        report,
        "| the same in the pipeline run, InfluxDB writing the next hours meanwhile: median / max | {} ms / {} ms ({} hours) | |",
        median(&mut report_ms),
        report_ms.iter().max().copied().unwrap_or_default(),
        run.hours
    )?;
    writeln!(
        report,
        "| InfluxDB queries per hour | **{:.1}** (plus one write) | <= 10 |",
        run.queries / run.hours.max(1) as f64
    )?;

    writeln!(
        report,
        "\n### Recovery ({} s outage during a {}-row hour; InfluxDB alone needs {influx_alone:.2} s to store it on a fresh server with {} writers)\n",
        args.outage, args.stations, best.concurrency
    )?;
    writeln!(
        report,
        "| outage | back → hour reported | beyond InfluxDB alone | target |\n|---|---|---|---|"
    )?;
    writeln!(
        report,
        "| Redis | {:.2} s | **{:.2} s** | <= 1.5 s |",
        redis.seconds,
        redis.seconds - influx_alone
    )?;
    writeln!(
        report,
        "| InfluxDB | {:.2} s | **{:.2} s** | <= 1.5 s |",
        influx.seconds,
        influx.seconds - influx_alone
    )?;

    let three = tokio::task::block_in_place(|| generate(work.path(), args.stations, 3))?;
    // The same input both times, so only the buffered hours differ, not the input index.
    let rss_one = streamer_rss_with_redis_down(&three, 1).await?;
    let rss_three = streamer_rss_with_redis_down(&three, 3).await?;
    let csv_bytes_per_row = (std::fs::metadata(&three)?.len() as f64) / (3.0 * hour_rows);
    let per_row = (rss_three.saturating_sub(rss_one) as f64 * 1024.0) / (2.0 * hour_rows);
    writeln!(
        report,
        "\n### Memory (streamer, Redis down from the start)\n\n| measure | figure | target |\n|---|---|---|"
    )?;
    writeln!(
        report,
        "| bytes per buffered row / CSV bytes per row | **{:.2}** ({per_row:.0} / {csv_bytes_per_row:.0}) | <= 2 |",
        per_row / csv_bytes_per_row
    )?;
    writeln!(
        report,
        "| peak RSS buffering 1 hour / 3 hours of a 3-hour input | {:.0} MiB / {:.0} MiB | |",
        rss_one as f64 / 1024.0,
        rss_three as f64 / 1024.0
    )?;

    writeln!(
        report,
        "\n### Scale ({} hours per run)\n\n| stations | rows/s | vs 1x | influxd CPU s per million rows | peak RSS streamer / ingester / processor |\n|---|---|---|---|---|",
        args.scale_hours
    )?;
    let mut first = None;
    for factor in &args.scale {
        let stations = args.stations * factor;
        let data =
            tokio::task::block_in_place(|| generate(work.path(), stations, args.scale_hours))?;
        let stack = tokio::task::block_in_place(Stack::start)?;
        let run = pipeline(&stack, &data).await?;
        let rps = run.rows as f64 / run.seconds;
        let base = *first.get_or_insert(rps);
        let rss = |name: &str| {
            run.usage
                .get(name)
                .map_or(0.0, |u| u.peak_rss_kb as f64 / 1024.0)
        };
        writeln!(
            report,
            "| {factor}x ({stations}) | {rps:.0} | **{:.2}** | {:.0} | {:.0} / {:.0} / {:.0} MiB |",
            rps / base,
            run.usage
                .get("influxd")
                .map_or(0.0, |u| u.cpu / (run.rows as f64 / 1e6)),
            rss("streamer"),
            rss("ingester"),
            rss("processor")
        )?;
    }
    print!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
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
