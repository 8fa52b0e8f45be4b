//! `weathervane replay`: runs an outage scenario for real. It starts a private
//! redis-server and influxd on free loopback ports and the four roles as child processes,
//! fires the scenario's fault actions when their time or pipeline point comes (points are
//! read from the roles' logs), waits until every hour is reported, checks the guarantee
//! with `verify` and the API, and prints a verdict (exit code to match). With `--compose`
//! the same runs on the containers of the compose stack (see `compose`).

mod compose;
mod progress;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::InfluxClient;
use weathervane_core::report::{self, HourReport};
use weathervane_core::row::{CsvSource, Metric};
use weathervane_harness::{InfluxServer, ManagedProcess, RedisServer};

use crate::verify;
use progress::Progress;
use schedule::{Action, Point, Scenario, Step, Target, When};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Scenario file (exps/*.csv); omit it and give --seed for a random schedule.
    #[arg(required_unless_present = "seed")]
    pub scenario: Option<PathBuf>,
    /// Draw a random schedule from this seed instead.
    #[arg(long, conflicts_with = "scenario")]
    pub seed: Option<u64>,
    /// Faults in a random schedule.
    #[arg(long, default_value_t = 4)]
    pub faults: usize,
    /// Input CSV; by default a generated one (--stations, --hours).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 60)]
    pub stations: u32,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub hours: u32,
    #[arg(long, default_value_t = 10)]
    pub batch_size: u32,
    /// Pause between hours, seconds: long enough that faults land mid-stream.
    #[arg(long, default_value_t = 1.0)]
    pub hour_interval: f64,
    /// Pause between the batches of an hour, seconds, so a fault can land mid-hour.
    #[arg(long, default_value_t = 0.1)]
    pub batch_interval: f64,
    /// Give up this many seconds after the last action.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
    /// Keep the work directory (logs, data) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Run the scenario on the docker compose stack instead of local processes.
    #[arg(long)]
    pub compose: bool,
    /// Compose file for --compose; repeat it to add override files.
    #[arg(
        long = "compose-file",
        default_value = "docker-compose.yml",
        requires = "compose"
    )]
    pub compose_files: Vec<PathBuf>,
    /// Compose project name for --compose (default weathervane-replay-<pid>).
    #[arg(long, requires = "compose")]
    pub project: Option<String>,
}

/// What replay needs of a running stack, local processes or compose containers. Either
/// writes each role's log to `<dir>/<role>.log`.
trait Stack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()>;
    fn api_addr(&self) -> String;
    fn influx_url(&self) -> String;
    /// Whether the run is over, given what the logs say.
    fn finished(&mut self, progress: &Progress) -> bool;
}

/// The private servers and the four role processes.
struct LocalStack {
    redis: RedisServer,
    influx: InfluxServer,
    roles: Vec<(Target, ManagedProcess)>,
    api_addr: String,
}

impl LocalStack {
    fn start(args: &ReplayArgs, data: &Path, dir: &Path) -> anyhow::Result<Self> {
        let redis = RedisServer::start()?;
        let influx = InfluxServer::start()?;
        let api_addr = format!("127.0.0.1:{}", weathervane_harness::free_port()?);
        let role = |target: Target| -> anyhow::Result<ManagedProcess> {
            Ok(ManagedProcess::weathervane(target.name(), dir)?
                .arg(target.name())
                .env("REDIS_URL", redis.url())
                .env("INFLUXDB_URL", influx.url())
                .env("INFLUXDB_DB", "weather")
                .env("API_ADDR", &api_addr)
                .env("RUST_LOG", "info,weathervane_core::event=debug"))
        };
        let streamer = role(Target::Streamer)?
            .arg("--input")
            .arg(data)
            .args([
                "--batch-size",
                &args.batch_size.to_string(),
                "--hour-interval",
                &args.hour_interval.to_string(),
            ])
            .args(["--batch-interval", &args.batch_interval.to_string()])
            .args(["--once", "--announce-interval", "1", "--state-file"])
            .arg(dir.join("streamer.state"))
            .arg("--rejects")
            .arg(dir.join("rejects.csv"));
        let mut roles = vec![
            (Target::Ingester, role(Target::Ingester)?),
            (Target::Processor, role(Target::Processor)?),
            (Target::Api, role(Target::Api)?),
            (Target::Streamer, streamer),
        ];
        for (_, process) in &mut roles {
            process.start()?;
        }
        Ok(Self {
            redis,
            influx,
            roles,
            api_addr,
        })
    }

    fn process(&mut self, target: Target) -> &mut ManagedProcess {
        &mut self
            .roles
            .iter_mut()
            .find(|(t, _)| *t == target)
            .expect("every role is in the stack")
            .1
    }
}

impl Stack for LocalStack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()> {
        match (target, action) {
            (Target::Redis, Action::Kill) => self.redis.kill(),
            (Target::Redis, Action::Stop) => drop(self.redis.stop()),
            (Target::Redis, Action::Start) => self.redis.start_again()?,
            (Target::Redis, Action::Pause) => self.redis.pause()?,
            (Target::Redis, Action::Resume) => self.redis.resume()?,
            (Target::Influxdb, Action::Kill) => self.influx.kill(),
            (Target::Influxdb, Action::Stop) => drop(self.influx.stop()),
            (Target::Influxdb, Action::Start) => self.influx.start_again()?,
            (Target::Influxdb, Action::Pause) => self.influx.pause()?,
            (Target::Influxdb, Action::Resume) => self.influx.resume()?,
            (role, Action::Kill) => self.process(role).kill(),
            (role, Action::Stop) => drop(self.process(role).stop()),
            (role, Action::Start) => {
                let process = self.process(role);
                if !process.is_running() {
                    process.start()?;
                }
            }
            (role, Action::Pause) => self.process(role).pause()?,
            (role, Action::Resume) => self.process(role).resume()?,
        }
        Ok(())
    }

    fn api_addr(&self) -> String {
        self.api_addr.clone()
    }

    fn influx_url(&self) -> String {
        self.influx.url()
    }

    /// The local streamer runs with `--once`: done when it says so and has exited.
    fn finished(&mut self, progress: &Progress) -> bool {
        progress.streamer_done() && !self.process(Target::Streamer).is_running()
    }
}

fn log(dir: &Path, target: Target) -> PathBuf {
    dir.join(format!("{}.log", target.name()))
}

/// The input: the given file, or a generated one of `--hours` hours.
fn prepare_data(args: &ReplayArgs, dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(data) = &args.data {
        return Ok(data.clone());
    }
    let gen_args = weathervane_gen::GenArgs {
        stations: args.stations,
        days: 1,
        hours: Some(args.hours),
        seed: 1,
        start: chrono::NaiveDate::from_ymd_opt(2023, 9, 19).expect("a valid date"),
        out: dir.join("data.csv"),
    };
    weathervane_gen::run(&gen_args)?;
    Ok(gen_args.out)
}

/// Hours of the input in order, with their reports as the input gives them.
pub(crate) fn expected_reports(data: &Path) -> anyhow::Result<Vec<HourReport>> {
    let mut rows: std::collections::BTreeMap<HourKey, Vec<(String, String, [f64; 4])>> =
        Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut source = CsvSource::open(data)?;
    while let Some(result) = source.next_row() {
        let Ok((_, row)) = result else { continue };
        if seen.insert((row.zip_code.clone(), row.time)) {
            let metrics = Metric::ALL.map(|m| row.metric(m));
            rows.entry(row.hour())
                .or_default()
                .push((row.state, row.zip_code, metrics));
        }
    }
    Ok(rows
        .iter()
        .map(|(hour, rows)| {
            report::compute(
                *hour,
                rows.iter().map(|(s, z, m)| (s.as_str(), z.as_str(), *m)),
            )
        })
        .collect())
}

/// One fired step, for the verdict.
struct Fired {
    step: Step,
    at: Duration,
    phase: String,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let scenario = match (&args.scenario, args.seed) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Scenario::parse(&path.display().to_string(), &text)?
        }
        (None, Some(seed)) => Scenario::random(
            seed,
            args.faults,
            Duration::from_secs_f64(args.hour_interval * f64::from(args.hours)),
        ),
        (None, None) => bail!("give a scenario file or --seed"),
    };
    let data_dir = tempfile::tempdir()?;
    let data = prepare_data(&args, data_dir.path())?;
    let reports = expected_reports(&data)?;
    let hours: Vec<HourKey> = reports.iter().map(|r| r.hour).collect();
    let batches: Vec<u32> = reports
        .iter()
        .map(|r| (r.rows() as u32).div_ceil(args.batch_size))
        .collect();
    // Declared before the stack, so dropped after it: the roles write their logs there.
    let dir = tempfile::tempdir().context("work directory")?;
    let mut stack = tokio::task::block_in_place(|| -> anyhow::Result<Box<dyn Stack>> {
        Ok(if args.compose {
            Box::new(compose::ComposeStack::start(&args, &data, dir.path())?)
        } else {
            Box::new(LocalStack::start(&args, &data, dir.path())?)
        })
    })?;
    let mut progress = Progress::new(
        log(dir.path(), Target::Ingester),
        log(dir.path(), Target::Processor),
        log(dir.path(), Target::Streamer),
        hours.clone(),
    );
    let started = Instant::now();
    let influx = InfluxClient::new(
        &InfluxArgs {
            url: stack.influx_url(),
            db: "weather".into(),
            user: None,
            password: None,
            token: None,
        },
        Duration::from_secs(30),
    )?;

    let mut fired: Vec<Fired> = Vec::new();
    let mut api_during_outage = tokio::task::JoinSet::new();
    let (mut influx_down, mut api_down) = (false, false);
    let mut influx_restored: Vec<Instant> = Vec::new();
    for step in &scenario.steps {
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        let previous = fired.last().map(|f| started + f.at).unwrap_or(started);
        let mut reached: Option<Instant> = None;
        loop {
            progress.refresh();
            let now = Instant::now();
            if reached.is_none() {
                reached = match step.when {
                    When::AfterPrevious(delay) => Some(previous + delay),
                    When::After { point, delay } => match point {
                        Point::Start => Some(started + delay),
                        Point::Batch { hour, batch } => {
                            let batch = batch.unwrap_or_else(|| {
                                batches.get(hour - 1).map_or(0, |b| b.saturating_sub(1))
                            });
                            progress.has_batch(hour, batch).then_some(now + delay)
                        }
                        Point::Stored { hour } => progress.is_stored(hour).then_some(now + delay),
                        Point::Reported { hour } => {
                            progress.is_reported(hour).then_some(now + delay)
                        }
                        Point::Requesting => progress.requesting().then_some(now + delay),
                    },
                };
            }
            if reached.is_some_and(|at| now >= at) {
                break;
            }
            if now > deadline {
                bail!(
                    "{}: point {} never reached within {} s; logs in {}",
                    scenario.name,
                    step.when,
                    args.timeout,
                    keep(dir)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let phase = progress.describe();
        tokio::task::block_in_place(|| stack.apply(step.action, step.target))
            .with_context(|| format!("{} {}", step.action.name(), step.target.name()))?;
        fired.push(Fired {
            step: step.clone(),
            at: started.elapsed(),
            phase,
        });
        match step.target {
            Target::Influxdb => {
                influx_down = step.action.is_fault();
                if !influx_down {
                    influx_restored.push(Instant::now());
                }
            }
            Target::Api => api_down = step.action.is_fault(),
            _ => {}
        }
        // Ask the API during each InfluxDB outage (if the API itself is up), beside the
        // schedule so its wait does not delay the next action.
        if influx_down && !api_down && step.target == Target::Influxdb {
            api_during_outage.spawn(api_while_influx_down(stack.api_addr(), Instant::now()));
            // Let the question leave now, not whenever this loop next waits.
            tokio::task::yield_now().await;
        }
    }
    if influx_down {
        bail!(
            "{}: the schedule leaves InfluxDB down; the guarantee needs every service back",
            scenario.name
        );
    }
    let last_action = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let recovered = loop {
        progress.refresh();
        if stack.finished(&progress) {
            break Some(started.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let api_during_outage = api_during_outage.join_all().await;
    let verdict = verify::verify(std::slice::from_ref(&data), &influx).await?;
    let api = check_api(&stack.api_addr(), &reports).await;
    let peaks = progress.peaks();

    println!("scenario      {}", scenario.name);
    println!("reproduces    {}", scenario.description);
    println!(
        "{:<4} {:<16} {:<7} {:<10} {:>8}  phase when fired",
        "step", "when", "action", "target", "fired"
    );
    for (index, f) in fired.iter().enumerate() {
        println!(
            "{:<4} {:<16} {:<7} {:<10} {:>7.2}s  {}",
            index + 1,
            f.step.when.to_string(),
            f.step.action.name(),
            f.step.target.name(),
            f.at.as_secs_f64(),
            f.phase
        );
    }
    for problem in verdict.problems.iter().take(10) {
        println!("problem       {problem}");
    }
    println!(
        "rows          {} expected, {} stored",
        verdict.rows_expected, verdict.rows_stored
    );
    println!(
        "hours         {}/{} with correct rows and reports",
        verdict.hours_correct, verdict.hours
    );
    // During an outage the API must say 503; an answer that came only after InfluxDB was
    // back (an outage shorter than the API's timeout) is a normal answer.
    let outage_ok = api_during_outage.iter().all(|answer| {
        answer.status == Some(503)
            || influx_restored
                .iter()
                .any(|restored| (answer.asked..=answer.answered).contains(restored))
    });
    for answer in &api_during_outage {
        println!("api (outage)  {}", answer.summary);
    }
    println!(
        "api           {}",
        api.as_ref().map_or_else(
            |e| format!("FAILED: {e}"),
            |n| format!("{n} answers checked, all correct")
        )
    );
    match recovered {
        Some(at) => println!(
            "recovery      {:.2} s from the last action until every hour was reported",
            (at - last_action).as_secs_f64()
        ),
        None => println!(
            "recovery      NOT within {} s of the last action",
            args.timeout
        ),
    }
    println!(
        "peak buffered {}",
        if peaks.is_empty() {
            "nothing (no outage seen by a buffer)".to_owned()
        } else {
            peaks
        }
    );
    let passed = recovered.is_some() && verdict.passed() && api.is_ok() && outage_ok;
    println!("verdict       {}", if passed { "PASS" } else { "FAIL" });
    if args.keep || !passed {
        println!("logs          {}", keep(dir));
    }
    anyhow::ensure!(passed, "{}: the guarantee does not hold", scenario.name);
    Ok(())
}

fn keep(dir: tempfile::TempDir) -> String {
    dir.keep().display().to_string()
}

async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let client = reqwest_client()?;
    let response = client.get(format!("http://{addr}{path}")).send().await?;
    Ok((
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

pub(crate) fn reqwest_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// What the API said while InfluxDB was down.
struct OutageAnswer {
    asked: Instant,
    answered: Instant,
    status: Option<u16>,
    summary: String,
}

/// Asks the API while InfluxDB is down: it must answer 503 within its timeout, not hang.
/// `asked` is when the outage began; a busy machine may start this task later, and an
/// answer that comes only after InfluxDB is back is then a normal one.
async fn api_while_influx_down(addr: String, asked: Instant) -> OutageAnswer {
    let result = get(&addr, "/state_extremes?hour=0").await;
    let answered = Instant::now();
    let ms = (answered - asked).as_millis();
    let (status, summary) = match result {
        Ok((status, body)) => (
            Some(status),
            format!(
                "{status} in {ms} ms: {}",
                body["error"].as_str().unwrap_or("a normal answer")
            ),
        ),
        Err(error) => (None, format!("no answer after {ms} ms: {error}")),
    };
    OutageAnswer {
        asked,
        answered,
        status,
        summary,
    }
}

/// `/avg`, `/extremes` and `/state_extremes` for a few hours and states, against the
/// reports computed from the input.
pub(crate) async fn check_api(addr: &str, reports: &[HourReport]) -> anyhow::Result<usize> {
    let mut checked = 0;
    let picks = [0, reports.len() / 2, reports.len().saturating_sub(1)];
    for report in picks.iter().filter_map(|i| reports.get(*i)) {
        let (date, hour) = (report.hour.date(), report.hour.hour());
        for average in report.averages.iter().take(2) {
            let (status, body) = get(
                addr,
                &format!("/avg?state={}&hour={hour}&date={date}", average.state),
            )
            .await?;
            anyhow::ensure!(
                status == 200,
                "/avg {} {}: {status} {body}",
                average.state,
                report.hour
            );
            anyhow::ensure!(
                body["count"].as_u64() == Some(average.count),
                "/avg {} {}: count {body}",
                average.state,
                report.hour
            );
            anyhow::ensure!(
                body["avg_temp_c"]
                    .as_f64()
                    .is_some_and(|t| (t - average.means[0]).abs() < 1e-9),
                "/avg {} {}: {body}",
                average.state,
                report.hour
            );
            let (status, body) = get(
                addr,
                &format!("/extremes?state={}&hour={hour}&date={date}", average.state),
            )
            .await?;
            let max = &report.zip_extremes[&average.state][0].max;
            anyhow::ensure!(
                status == 200
                    && body["max"]["temp_c"]["zip_code"].as_str() == Some(max.holder.as_str()),
                "/extremes {}: {status} {body}",
                report.hour
            );
            checked += 2;
        }
        let (status, body) = get(addr, &format!("/state_extremes?hour={hour}&date={date}")).await?;
        let min = &report.state_extremes[0].min;
        anyhow::ensure!(
            status == 200 && body["min"]["temp_c"]["state"].as_str() == Some(min.holder.as_str()),
            "/state_extremes {}: {status} {body}",
            report.hour
        );
        checked += 1;
    }
    Ok(checked)
}
