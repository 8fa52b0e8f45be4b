//! `weathervane up`: the four roles as tasks of one process, for a quick start. Each role
//! runs exactly as it does alone; the first to fail stops the others.

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weathervane_api::{ApiConfig, ServeOptions};
use weathervane_core::config::{BufferArgs, InfluxArgs, RedisArgs};
use weathervane_core::telemetry::role_span;
use weathervane_ingester::IngesterConfig;
use weathervane_processor::ProcessorConfig;
use weathervane_streamer::{StreamOptions, StreamerConfig};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    influx: InfluxArgs,
    #[command(flatten)]
    buffer: BufferArgs,
    #[command(flatten)]
    stream: StreamOptions,
    #[command(flatten)]
    serve: ServeOptions,
}

impl UpArgs {
    /// `--once`: the run ends once every hour is confirmed.
    pub fn once(&self) -> bool {
        self.stream.once
    }
}

pub async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let UpArgs {
        redis,
        influx,
        buffer,
        stream,
        serve,
    } = args;
    let once = stream.once;
    let roles = shutdown.child_token();
    let mut set: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    set.spawn({
        let (config, token) = (
            IngesterConfig {
                redis: redis.clone(),
                influx: influx.clone(),
                buffer,
                write_batches: 10,
                writers: 3,
                dead_letters: weathervane_ingester::DEFAULT_DEAD_LETTERS.into(),
            },
            roles.clone(),
        );
        async move {
            weathervane_ingester::run(config, token)
                .await
                .context("ingester")
                .map(|()| "ingester")
        }
        .instrument(role_span("ingester"))
    });
    set.spawn({
        let (config, token) = (
            ProcessorConfig {
                redis: redis.clone(),
                influx: influx.clone(),
            },
            roles.clone(),
        );
        async move {
            weathervane_processor::run(config, token)
                .await
                .context("processor")
                .map(|()| "processor")
        }
        .instrument(role_span("processor"))
    });
    set.spawn({
        let (config, token) = (ApiConfig { influx, serve }, roles.clone());
        async move {
            weathervane_api::run(config, token)
                .await
                .context("api")
                .map(|()| "api")
        }
        .instrument(role_span("api"))
    });
    set.spawn({
        let (config, token) = (
            StreamerConfig {
                redis,
                buffer,
                stream,
            },
            roles.clone(),
        );
        async move {
            weathervane_streamer::run(config, token)
                .await
                .context("streamer")
                .map(|()| "streamer")
        }
        .instrument(role_span("streamer"))
    });
    while let Some(joined) = set.join_next().await {
        match joined.context("a role panicked")? {
            // With --once the streamer finishing means every hour is reported: stop.
            Ok("streamer") if once => roles.cancel(),
            Ok(_) => {}
            Err(error) => {
                roles.cancel();
                return Err(error);
            }
        }
    }
    Ok(())
}
