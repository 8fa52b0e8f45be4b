//! The `weathervane` binary: parses the command line and hands over to a role's `run`,
//! or, with the `lab` feature (on by default), to a lab tool (`weathervane_gen`,
//! `weathervane_lab`), whose typed outcome it prints.
//!
//! Exit codes scripts can trust: 0 done (a verdict of PASS); 1 a verdict of FAIL, or a
//! role that failed; 2 a lab tool that could not run (no InfluxDB, a bad scenario file);
//! 128 + the signal for a run that was to finish by itself (`--once`) and was
//! interrupted. Errors are printed with their causes.

mod up;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::Instrument;
use weathervane_core::shutdown;
use weathervane_core::telemetry::{self, LogFormat, role_span};

/// mimalloc instead of glibc's malloc: glibc raises its mmap threshold after the first
/// large free, so an outage's buffered batches and the freed rows they were encoded from
/// end up interleaved in one heap that cannot shrink, costing more than twice the
/// batches' own size (BENCHMARKS.md, memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "weathervane",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WEATHERVANE_COMMIT"), ")"),
    about = "A weather-station pipeline over Redis and InfluxDB that loses nothing through outages."
)]
struct Cli {
    /// How log lines are written: `text`, or `json` (one object per line, for a log
    /// collector).
    #[arg(long, global = true, env = "WEATHERVANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish CSV rows, hour by hour, in batches over Redis.
    Streamer(weathervane_streamer::StreamerConfig),
    /// Store published batches in InfluxDB and tell the processor when an hour is complete.
    Ingester(weathervane_ingester::IngesterConfig),
    /// Compute and store the hourly reports.
    Processor(weathervane_processor::ProcessorConfig),
    /// Serve the reports over HTTP.
    Api(weathervane_api::ApiConfig),
    /// Run all four roles in one process (a quick start against REDIS_URL / INFLUXDB_URL).
    // Boxed: its flags (every role's) make it far larger than the other variants.
    Up(Box<up::UpArgs>),
    /// Generate a deterministic weather CSV.
    #[cfg(feature = "lab")]
    Gen(weathervane_gen::GenArgs),
    /// Run an outage scenario (exps/*.csv or a random one) on private servers and check the guarantee.
    #[cfg(feature = "lab")]
    Replay(weathervane_lab::replay::ReplayArgs),
    /// Measure the pipeline beside InfluxDB alone (throughput, recovery, reports, API, memory, scale).
    #[cfg(feature = "lab")]
    Bench(weathervane_lab::bench::BenchArgs),
    /// Check that InfluxDB holds exactly the input's rows and the right reports.
    #[cfg(feature = "lab")]
    Verify(weathervane_lab::verify::VerifyArgs),
    /// GET an admin URL (e.g. http://127.0.0.1:9101/readyz): exit 0 on a 200, 1 otherwise.
    /// A container healthcheck that needs no curl.
    Probe {
        /// An http:// URL.
        url: String,
        /// Seconds to wait for the whole answer.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
    /// Print a shell completion script, e.g. `weathervane completions bash >
    /// /etc/bash_completion.d/weathervane`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How a command ended, when it did not fail to run.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    /// A verdict of FAIL.
    #[cfg_attr(not(feature = "lab"), allow(dead_code))]
    Failed,
}

impl Outcome {
    /// The outcome of a check: PASS is done, anything else a FAIL.
    #[cfg(feature = "lab")]
    fn of_check(passed: bool) -> Self {
        if passed {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // Before any HTTP or TLS client is built (reqwest is built without a provider of its
    // own, so that all TLS uses ring).
    weathervane_core::tls::install_provider();
    let finishes_by_itself = cli.command.finishes_by_itself();
    let could_not_run = cli.command.could_not_run_code();
    let outcome = run(cli.command);
    if finishes_by_itself && let Some(signal) = shutdown::received_signal() {
        return ExitCode::from(128 + signal as u8);
    }
    match outcome {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(error) => {
            // Not eprintln!: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(could_not_run)
        }
    }
}

impl Command {
    /// Whether the command ends by itself once its work is done (so a signal interrupted it).
    fn finishes_by_itself(&self) -> bool {
        match self {
            Command::Streamer(config) => config.stream.once,
            Command::Up(args) => args.once(),
            Command::Ingester(_) | Command::Processor(_) | Command::Api(_) => false,
            Command::Completions { .. } | Command::Probe { .. } => true,
            #[cfg(feature = "lab")]
            _ => true,
        }
    }

    /// The exit code of an error: 2 for a check that could not run (1 is its FAIL), 1 for
    /// the rest.
    fn could_not_run_code(&self) -> u8 {
        match self {
            #[cfg(feature = "lab")]
            Command::Verify(_) | Command::Replay(_) => 2,
            _ => 1,
        }
    }
}

fn run(command: Command) -> anyhow::Result<Outcome> {
    if let Command::Completions { shell } = &command {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        clap_complete::generate(*shell, &mut cli, "weathervane", &mut std::io::stdout());
        return Ok(Outcome::Done);
    }
    if let Command::Probe { url, timeout } = &command {
        let timeout = std::time::Duration::try_from_secs_f64(*timeout)
            .context("--timeout must be a number of seconds")?;
        let body = weathervane_core::admin::probe(url, timeout)?;
        let _ = std::io::stdout().write_all(body.as_bytes());
        return Ok(Outcome::Done);
    }
    #[cfg(feature = "lab")]
    if let Command::Gen(args) = &command {
        weathervane_gen::run(args)?;
        return Ok(Outcome::Done);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown::on_signal();
        let done = |result: anyhow::Result<()>| result.map(|()| Outcome::Done);
        match command {
            Command::Streamer(config) => done(
                weathervane_streamer::run(config, shutdown)
                    .instrument(role_span("streamer"))
                    .await
                    .context("streamer"),
            ),
            Command::Ingester(config) => done(
                weathervane_ingester::run(config, shutdown)
                    .instrument(role_span("ingester"))
                    .await
                    .context("ingester"),
            ),
            Command::Processor(config) => done(
                weathervane_processor::run(config, shutdown)
                    .instrument(role_span("processor"))
                    .await
                    .context("processor"),
            ),
            Command::Api(config) => done(
                weathervane_api::run(config, shutdown)
                    .instrument(role_span("api"))
                    .await
                    .context("api"),
            ),
            Command::Up(args) => done(up::run(*args, shutdown).instrument(role_span("up")).await),
            #[cfg(feature = "lab")]
            Command::Verify(args) => lab::verify(args).await,
            #[cfg(feature = "lab")]
            Command::Bench(args) => done(lab::bench(args).await),
            #[cfg(feature = "lab")]
            Command::Replay(args) => lab::replay(args).await,
            #[cfg(feature = "lab")]
            Command::Gen(_) => unreachable!("handled above"),
            Command::Completions { .. } | Command::Probe { .. } => unreachable!("handled above"),
        }
    })
}

/// The lab tools' outcomes, printed as the commands always have.
#[cfg(feature = "lab")]
mod lab {
    use anyhow::Context;
    use weathervane_lab::{bench, replay, verify};

    use crate::Outcome;

    pub async fn verify(args: verify::VerifyArgs) -> anyhow::Result<Outcome> {
        let verdict = verify::run(args).await?;
        print!("{verdict}");
        Ok(Outcome::of_check(verdict.passed()))
    }

    pub async fn replay(args: replay::ReplayArgs) -> anyhow::Result<Outcome> {
        let verdict = replay::run(args).await?;
        print!("{verdict}");
        Ok(Outcome::of_check(verdict.passed()))
    }

    pub async fn bench(args: bench::BenchArgs) -> anyhow::Result<()> {
        let out = args.out.clone();
        let report = bench::run(args).await?.markdown();
        print!("{report}");
        if let Some(out) = &out {
            std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_version_names_the_commit_and_completions_cover_every_command() {
        let version = Cli::command().render_version();
        assert!(version.contains("(commit "), "{version}");
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "weathervane",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for command in [
            "streamer",
            "ingester",
            "processor",
            "api",
            "up",
            "probe",
            "completions",
        ] {
            assert!(
                script.contains(command),
                "{command} missing from the bash completions"
            );
        }
    }

    #[test]
    fn environment_fallbacks_use_the_documented_names() {
        let help = Cli::command()
            .find_subcommand_mut("up")
            .unwrap()
            .render_long_help()
            .to_string();
        for name in [
            "REDIS_URL",
            "INFLUXDB_URL",
            "INFLUXDB_DB",
            "INFLUXDB_USER",
            "INFLUXDB_PASSWORD",
            "INFLUXDB_PASSWORD_FILE",
            "INFLUXDB_TOKEN",
            "INFLUXDB_TOKEN_FILE",
            "INFLUXDB_CA_FILE",
            "REDIS_USER",
            "REDIS_PASSWORD",
            "REDIS_PASSWORD_FILE",
            "REDIS_CA_FILE",
            "REDIS_CLIENT_CERT",
            "REDIS_CLIENT_KEY",
            "API_ADDR",
        ] {
            assert!(help.contains(name), "{name} missing from `up --help`");
        }
    }
}
