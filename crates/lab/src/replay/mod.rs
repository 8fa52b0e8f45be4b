//! `weathervane replay`: runs an outage scenario for real. It starts a private
//! redis-server and influxd on free loopback ports and the four roles as child processes
//! (`weathervane_harness::LocalStack`), fires the scenario's fault actions when their time
//! or pipeline point comes (points are the roles' typed events, read from their logs),
//! waits until every hour is reported, checks the guarantee with `verify` and the API, and
//! returns a [`ReplayVerdict`]. With `--compose` the same runs on the containers of the
//! compose stack (see `compose`).

mod compose;
mod progress;
pub mod schedule;
mod verdict;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weathervane_core::HourKey;
use weathervane_core::config::{InfluxArgs, Secret};
use weathervane_core::influx::InfluxClient;
use weathervane_core::progress::{self as bars, ProgressBar};
use weathervane_core::report::HourReport;
use weathervane_harness::{LocalStack, Role};

use crate::expected::{check_api, expected_reports, get};
use crate::verify;
use progress::Progress;
use schedule::{Action, Point, Scenario, Step, Target, When};
pub use verdict::{FiredStep, OutageAnswer, ReplayVerdict};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("schedule").required(true).args(["scenario", "seed"])))]
pub struct ReplayArgs {
    /// Scenario file (exps/*.csv); or give --seed for a random schedule instead.
    pub scenario: Option<PathBuf>,
    /// Draw a random schedule of faults from this seed instead of a scenario file.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults in a random schedule.
    #[arg(long, default_value_t = 4)]
    pub faults: usize,
    /// Input CSV; by default a generated one (--stations, --hours).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Stations in the generated input (without --data).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub stations: u32,
    /// Hours in the generated input, 1 to 24 (without --data).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub hours: u32,
    /// Rows per published batch: small, so an hour has several batches for faults to
    /// land between.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
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

impl ReplayArgs {
    /// The arguments as the command line after `weathervane replay` gives them, defaults
    /// included (for callers other than the binary, such as the scenario tests).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{Args, FromArgMatches};
        let command = Self::augment_args(clap::Command::new("replay"));
        let args = std::iter::once(std::ffi::OsString::from("replay"))
            .chain(args.into_iter().map(Into::into));
        Self::from_arg_matches(&command.try_get_matches_from(args)?)
    }
}

/// What replay needs of a running stack, local processes or compose containers. Either
/// writes each role's log to `<dir>/<role>.log`.
trait Stack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()>;
    fn api_addr(&self) -> String;
    fn influx_url(&self) -> String;
    /// The user and password to read InfluxDB with, if it asks for a login.
    fn influx_login(&self) -> Option<(String, Secret)> {
        None
    }
    /// Whether the run is over, given what the events say.
    fn finished(&mut self, progress: &Progress) -> bool;
}

impl Target {
    /// The pipeline role of this target; None for the servers.
    fn role(self) -> Option<Role> {
        match self {
            Target::Redis | Target::Influxdb => None,
            Target::Streamer => Some(Role::Streamer),
            Target::Ingester => Some(Role::Ingester),
            Target::Processor => Some(Role::Processor),
            Target::Api => Some(Role::Api),
        }
    }
}

/// The private servers and the four role processes, the streamer last.
fn start_local(args: &ReplayArgs, data: &Path, dir: &Path) -> anyhow::Result<LocalStack> {
    let streamer_args: Vec<std::ffi::OsString> = [
        "--input".into(),
        data.into(),
        "--batch-size".into(),
        args.batch_size.to_string().into(),
        "--hour-interval".into(),
        args.hour_interval.to_string().into(),
        "--batch-interval".into(),
        args.batch_interval.to_string().into(),
        "--once".into(),
        "--announce-interval".into(),
        "1".into(),
        "--state-file".into(),
        dir.join("streamer.state").into(),
        "--rejects".into(),
        dir.join("rejects.csv").into(),
    ]
    .into();
    Ok(LocalStack::builder()
        .log_dir(dir)
        .env("RUST_LOG", "info")
        .role(Role::Ingester)
        .role(Role::Processor)
        .role(Role::Api)
        .role_with(Role::Streamer, |streamer| streamer.args(streamer_args))
        .start()?)
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
            (target, action) => {
                let role = target.role().expect("the servers are matched above");
                let process = self.process(role);
                match action {
                    Action::Kill => process.kill(),
                    Action::Stop => drop(process.stop()),
                    Action::Start if !process.is_running() => process.start()?,
                    Action::Start => {}
                    Action::Pause => process.pause()?,
                    Action::Resume => process.resume()?,
                }
            }
        }
        Ok(())
    }

    fn api_addr(&self) -> String {
        LocalStack::api_addr(self).to_owned()
    }

    fn influx_url(&self) -> String {
        self.influx.url()
    }

    /// The local streamer runs with `--once`: done when it says so and has exited.
    fn finished(&mut self, progress: &Progress) -> bool {
        progress.streamer_done() && !self.process(Role::Streamer).is_running()
    }
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

/// The scenario file, or a random schedule drawn from `--seed`.
fn load_scenario(args: &ReplayArgs) -> anyhow::Result<Scenario> {
    Ok(match (&args.scenario, args.seed) {
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
    })
}

/// Runs the scenario and judges the outcome. An error means the run could not be carried
/// out (a server did not start, a point was never reached); a run that was carried out
/// and broke the guarantee is a verdict that has not `passed()`.
pub async fn run(args: ReplayArgs) -> anyhow::Result<ReplayVerdict> {
    let scenario = load_scenario(&args)?;
    let data_dir = tempfile::tempdir()?;
    let data = prepare_data(&args, data_dir.path())?;
    let reports = expected_reports(&data)?;
    // Declared before the stack, so dropped after it: the roles write their logs there.
    let dir = tempfile::tempdir().context("work directory")?;
    let mut stack = tokio::task::block_in_place(|| -> anyhow::Result<Box<dyn Stack>> {
        Ok(if args.compose {
            Box::new(compose::ComposeStack::start(&args, &data, dir.path())?)
        } else {
            Box::new(start_local(&args, &data, dir.path())?)
        })
    })?;
    let hours: Vec<HourKey> = reports.iter().map(|r| r.hour).collect();
    let logs = Role::ALL.map(|role| dir.path().join(format!("{role}.log")));
    let mut run = Run {
        args: &args,
        steps_bar: bars::steps("replay", scenario.steps.len() as u64),
        hours_bar: bars::bar("reported", hours.len() as u64, "hours"),
        progress: Progress::new(logs, hours),
        started: Instant::now(),
        batches: reports
            .iter()
            .map(|r| (r.rows() as u32).div_ceil(args.batch_size))
            .collect(),
        fired: Vec::new(),
        influx_restored: Vec::new(),
        logs: dir.path().to_owned(),
        point_missed: false,
    };
    let api_during_outage = match run.fire(&scenario, &mut *stack).await {
        Ok(asked) => asked,
        Err(error) => {
            if run.point_missed {
                keep(dir);
            }
            return Err(error);
        }
    };
    let last_action = run.started.elapsed();
    run.steps_bar
        .finish_with_message("every step fired; waiting for every hour");
    let recovered = run.wait_finished(&mut *stack).await?;
    run.hours_bar.finish();
    run.steps_bar.set_message("checking InfluxDB and the API");
    let outage_answers = api_during_outage.join_all().await;
    let mut verdict = judge(&run, &scenario, &*stack, &data, &reports, outage_answers).await?;
    verdict.recovery = recovered.map(|at| at - last_action);
    verdict.peaks = run.progress.peaks().clone();
    // The verdict says the rest.
    run.steps_bar.finish_and_clear();
    run.hours_bar.finish_and_clear();
    if args.keep || !verdict.passed() {
        verdict.logs = Some(keep(dir));
    }
    Ok(verdict)
}

/// One replay under way: where the pipeline is and what has been fired.
struct Run<'a> {
    args: &'a ReplayArgs,
    /// On a terminal: the scenario's steps fired, the next one as its message.
    steps_bar: ProgressBar,
    /// On a terminal: the input's hours reported.
    hours_bar: ProgressBar,
    progress: Progress,
    started: Instant,
    /// Batches per hour of the input, for `batch:H:last`.
    batches: Vec<u32>,
    fired: Vec<FiredStep>,
    /// When each InfluxDB outage ended.
    influx_restored: Vec<Instant>,
    /// The work directory, named when a point is never reached.
    logs: PathBuf,
    /// A point was never reached: the work directory is kept for a look at the logs.
    point_missed: bool,
}

impl Run<'_> {
    /// Fires every step of the schedule at its time or point; returns the questions put to
    /// the API during InfluxDB outages, still under way.
    async fn fire(
        &mut self,
        scenario: &Scenario,
        stack: &mut dyn Stack,
    ) -> anyhow::Result<tokio::task::JoinSet<OutageAnswer>> {
        let mut api_during_outage = tokio::task::JoinSet::new();
        let (mut influx_down, mut api_down) = (false, false);
        for step in &scenario.steps {
            self.steps_bar.set_message(format!(
                "next: {} {} {}",
                step.action.name(),
                step.target.name(),
                step.when
            ));
            self.wait_for(scenario, step).await?;
            let phase = self.progress.describe();
            // InfluxDB may answer from the moment its resume begins: an answer that comes
            // while the action is still being applied came after the outage.
            let applying = Instant::now();
            tokio::task::block_in_place(|| stack.apply(step.action, step.target))
                .with_context(|| format!("{} {}", step.action.name(), step.target.name()))?;
            self.fired.push(FiredStep {
                step: step.clone(),
                at: self.started.elapsed(),
                phase,
            });
            self.steps_bar.inc(1);
            match step.target {
                Target::Influxdb => {
                    influx_down = step.action.is_fault();
                    if !influx_down {
                        self.influx_restored.push(applying);
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
        Ok(api_during_outage)
    }

    /// Reads the roles' new events, and shows the hours reported.
    fn refresh(&mut self) -> anyhow::Result<()> {
        self.progress.refresh()?;
        self.hours_bar
            .set_position(self.progress.reported_hours() as u64);
        Ok(())
    }

    /// Waits until the step's time or point has come (and its delay passed).
    async fn wait_for(&mut self, scenario: &Scenario, step: &Step) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        let previous = self
            .fired
            .last()
            .map_or(self.started, |f| self.started + f.at);
        let mut reached: Option<Instant> = None;
        loop {
            self.refresh()?;
            let now = Instant::now();
            if reached.is_none() {
                reached = self.reached(step.when, previous, now);
            }
            if reached.is_some_and(|at| now >= at) {
                return Ok(());
            }
            if now > deadline {
                self.point_missed = true;
                bail!(
                    "{}: point {} never reached within {} s; logs in {}",
                    scenario.name,
                    step.when,
                    self.args.timeout,
                    self.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// When a step fires, if its time or point is known by `now`.
    fn reached(&self, when: When, previous: Instant, now: Instant) -> Option<Instant> {
        let progress = &self.progress;
        match when {
            When::AfterPrevious(delay) => Some(previous + delay),
            When::After { point, delay } => match point {
                Point::Start => Some(self.started + delay),
                Point::Batch { hour, batch } => {
                    let batch = batch.unwrap_or_else(|| {
                        self.batches
                            .get(hour - 1)
                            .map_or(0, |b| b.saturating_sub(1))
                    });
                    progress.has_batch(hour, batch).then_some(now + delay)
                }
                Point::Stored { hour } => progress.is_stored(hour).then_some(now + delay),
                Point::Reported { hour } => progress.is_reported(hour).then_some(now + delay),
                Point::Requesting => progress.requesting().then_some(now + delay),
            },
        }
    }

    /// Waits until the stack says every hour is reported; when (since the start), or None
    /// after `--timeout`.
    async fn wait_finished(&mut self, stack: &mut dyn Stack) -> anyhow::Result<Option<Duration>> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        loop {
            self.refresh()?;
            if stack.finished(&self.progress) {
                return Ok(Some(self.started.elapsed()));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What InfluxDB holds and what the API answers, against the input.
async fn judge(
    run: &Run<'_>,
    scenario: &Scenario,
    stack: &dyn Stack,
    data: &Path,
    reports: &[HourReport],
    outage_answers: Vec<OutageAnswer>,
) -> anyhow::Result<ReplayVerdict> {
    let mut influx = InfluxClient::new(
        &InfluxArgs::plain(stack.influx_url(), "weather"),
        Duration::from_secs(30),
    )?;
    if let Some((user, password)) = stack.influx_login() {
        influx = influx.with_login(user, password);
    }
    let stored = verify::verify(std::slice::from_ref(&data.to_owned()), &influx).await?;
    let api = check_api(&stack.api_addr(), reports)
        .await
        .map_err(|error| error.to_string());
    // During an outage the API must say 503; an answer that came only after InfluxDB was
    // back (an outage shorter than the API's timeout) is a normal answer.
    let outage_answers_ok = outage_answers.iter().all(|answer| {
        answer.status == Some(503)
            || run
                .influx_restored
                .iter()
                .any(|restored| (answer.asked..=answer.answered).contains(restored))
    });
    Ok(ReplayVerdict {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        fired: run.fired.clone(),
        stored,
        outage_answers,
        outage_answers_ok,
        api,
        recovery: None,
        timeout: Duration::from_secs(run.args.timeout),
        peaks: Default::default(),
        logs: None,
    })
}

fn keep(dir: tempfile::TempDir) -> PathBuf {
    dir.keep()
}

/// Asks the API while InfluxDB is down for an hour never reported: it must answer 503
/// within its timeout, not hang (an hour it holds it answers from memory, 200, which
/// `tests/herd.rs` checks). `asked` is when the outage began; a busy machine may start
/// this task later, and an answer that comes only after InfluxDB is back is then a
/// normal one.
async fn api_while_influx_down(addr: String, asked: Instant) -> OutageAnswer {
    let result = get(&addr, "/state_extremes?hour=0&date=2000-01-01").await;
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
