//! `weathervane up`: the four roles as tasks of one process, for a quick start. Each role
//! runs exactly as it does alone; the first to fail stops the others. One admin server
//! (`--admin-addr`, default 127.0.0.1:9100) answers for all four: its /readyz is ready
//! when every role is, and /metrics is the process's one registry.

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weathervane_api::exports::ExportArgs;
use weathervane_api::{ApiConfig, ServeOptions};
use weathervane_core::admin::{self, AdminArgs};
use weathervane_core::config::{BufferArgs, InfluxArgs, RedisArgs};
use weathervane_core::health::Health;
use weathervane_core::supervise::Supervisor;
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
    #[command(flatten)]
    exports: ExportArgs,
    /// One admin server for the four roles (default 127.0.0.1:9100).
    #[command(flatten)]
    admin: AdminArgs,
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
        exports,
        admin,
    } = args;
    let once = stream.once;
    let roles = shutdown.child_token();
    let mut set: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    // One admin server and one metrics registry for the process; /readyz combines the
    // roles' health.
    let listener = admin::bind(&admin.addr_or(admin::UP_ADMIN)).await?;
    let [
        streamer_health,
        ingester_health,
        processor_health,
        api_health,
    ] = [
        Health::new("streamer", weathervane_streamer::CHECKS),
        Health::new("ingester", weathervane_ingester::CHECKS),
        Health::new("processor", weathervane_processor::CHECKS),
        weathervane_api::api_health(),
    ];
    let mut admin_tasks = Supervisor::new();
    admin::supervise_server(
        &mut admin_tasks,
        listener,
        vec![
            streamer_health.clone(),
            ingester_health.clone(),
            processor_health.clone(),
            api_health.clone(),
        ],
    );
    set.spawn({
        let token = roles.clone();
        async move {
            admin_tasks
                .run(&token)
                .await
                .context("admin server")
                .map(|()| "admin")
        }
        .instrument(role_span("up"))
    });
    set.spawn({
        let (config, token) = (
            IngesterConfig {
                redis: redis.clone(),
                influx: influx.clone(),
                buffer,
                write_batches: 10,
                writers: 3,
                dead_letters: weathervane_ingester::DEFAULT_DEAD_LETTERS.into(),
                admin: AdminArgs::default(),
            },
            roles.clone(),
        );
        async move {
            weathervane_ingester::run_shared(config, token, ingester_health)
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
                admin: AdminArgs::default(),
            },
            roles.clone(),
        );
        async move {
            weathervane_processor::run_shared(config, token, processor_health)
                .await
                .context("processor")
                .map(|()| "processor")
        }
        .instrument(role_span("processor"))
    });
    set.spawn({
        let (config, token) = (
            ApiConfig {
                influx,
                redis: redis.clone(),
                serve,
                admin: AdminArgs::default(),
                exports,
            },
            roles.clone(),
        );
        async move {
            weathervane_api::run_shared(config, token, api_health)
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
                admin: AdminArgs::default(),
            },
            roles.clone(),
        );
        async move {
            weathervane_streamer::run_shared(config, token, streamer_health)
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
