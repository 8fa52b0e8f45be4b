//! The `weathervane` binary: parses the command line and hands over to a role's `run`,
//! or, with the `lab` feature (on by default), to a lab tool (`weathervane_gen`,
//! `weathervane_lab`), whose typed outcome it prints. Errors are printed with their causes
//! and set the exit code; a verdict of FAIL exits with 1 too.

mod up;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weathervane_core::{shutdown, telemetry};

/// mimalloc instead of glibc's malloc: glibc raises its mmap threshold after the first
/// large free, so an outage's buffered batches and the freed rows they were encoded from
/// end up interleaved in one heap that cannot shrink, costing more than twice the
/// batches' own size (BENCHMARKS.md, memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "weathervane",
    version,
    about = "A weather-station pipeline over Redis and InfluxDB that loses nothing through outages."
)]
struct Cli {
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
    Up(up::UpArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    #[cfg(feature = "lab")]
    if let Command::Gen(args) = &command {
        weathervane_gen::run(args)?;
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown::on_signal();
        match command {
            Command::Streamer(config) => weathervane_streamer::run(config, shutdown)
                .await
                .context("streamer"),
            Command::Ingester(config) => weathervane_ingester::run(config, shutdown)
                .await
                .context("ingester"),
            Command::Processor(config) => weathervane_processor::run(config, shutdown)
                .await
                .context("processor"),
            Command::Api(config) => weathervane_api::run(config, shutdown).await.context("api"),
            Command::Up(args) => up::run(args, shutdown).await,
            #[cfg(feature = "lab")]
            Command::Verify(args) => lab::verify(args).await,
            #[cfg(feature = "lab")]
            Command::Bench(args) => lab::bench(args).await,
            #[cfg(feature = "lab")]
            Command::Replay(args) => lab::replay(args).await,
            #[cfg(feature = "lab")]
            Command::Gen(_) => unreachable!("handled above"),
        }
    })
}

/// The lab tools' outcomes, printed as the commands always have.
#[cfg(feature = "lab")]
mod lab {
    use anyhow::Context;
    use weathervane_lab::{bench, replay, verify};

    pub async fn verify(args: verify::VerifyArgs) -> anyhow::Result<()> {
        let verdict = verify::run(args).await?;
        print!("{verdict}");
        anyhow::ensure!(verdict.passed(), "the database does not match the input");
        Ok(())
    }

    pub async fn replay(args: replay::ReplayArgs) -> anyhow::Result<()> {
        let verdict = replay::run(args).await?;
        print!("{verdict}");
        anyhow::ensure!(
            verdict.passed(),
            "{}: the guarantee does not hold",
            verdict.scenario
        );
        Ok(())
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
            "INFLUXDB_TOKEN",
            "API_ADDR",
        ] {
            assert!(help.contains(name), "{name} missing from `up --help`");
        }
    }
}
