//! `weathervane replay --compose`: the scenario applied to the containers of the compose
//! stack (docker-compose.yml, with the images the environment names in
//! `WEATHERVANE_IMAGE`, `REDIS_IMAGE`, `INFLUXDB_IMAGE`) instead of local processes,
//! through `weathervane_harness::compose`.
//!
//! The project runs under a name of its own, with free host ports for the API and
//! InfluxDB, the replay's input mounted at `/data` and `WEATHERVANE_EVENTS=stderr`, and
//! goes down again (`down -v`) when the stack is dropped. Fault actions are `docker kill`,
//! `stop`, `start`, `pause` and `unpause` of the container of the service named like the
//! target. Each container's log is copied into `<dir>/<service>.log`, where the progress
//! reader finds its events as it finds a local process's. InfluxDB is judged with the
//! api's own login (read-only in docker-compose.yml, which turns auth on), read from its
//! container and kept only in memory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use weathervane_core::config::Secret;
use weathervane_harness::compose::{ComposeProject, Container, LogFollower};

use super::ReplayArgs;
use super::progress::Progress;
use super::schedule::{Action, Target};

/// How long a restarted Redis or InfluxDB container may take to pass its healthcheck.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` lets a container shut down cleanly before Docker kills it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The compose stack of one replay.
pub struct ComposeStack {
    // Declared first so the log copies stop before the project goes down.
    _followers: Vec<LogFollower>,
    _project: ComposeProject,
    /// The container of each service; compose keeps it across kill, stop and start.
    containers: Vec<(Target, Container)>,
    api_port: u16,
    influx_port: u16,
    /// The api's InfluxDB user and password, if it has them.
    influx_login: Option<(String, Secret)>,
}

impl ComposeStack {
    /// Brings the stack up (compose waits for Redis and InfluxDB to be healthy before it
    /// starts the roles) with `data` as the streamer's input, and starts copying logs into
    /// `dir`.
    pub fn start(args: &ReplayArgs, data: &Path, dir: &Path) -> anyhow::Result<Self> {
        // The containers run as a non-root user: give them a readable copy of the input.
        let input = dir.join("input");
        fs::create_dir_all(&input)?;
        fs::set_permissions(&input, fs::Permissions::from_mode(0o755))?;
        let name = data
            .file_name()
            .context("the input is not a file")?
            .to_string_lossy()
            .into_owned();
        fs::copy(data, input.join(&name)).with_context(|| format!("copying {}", data.display()))?;
        fs::set_permissions(input.join(&name), fs::Permissions::from_mode(0o644))?;

        // Ports of its own for everything published, so a replay never collides with a
        // stack already running (the streamer's upload server included).
        let (api_port, influx_port, upload_port) = (
            weathervane_harness::free_port()?,
            weathervane_harness::free_port()?,
            weathervane_harness::free_port()?,
        );
        let project_name = args
            .project
            .clone()
            .unwrap_or_else(|| format!("weathervane-replay-{}", std::process::id()));
        let project = ComposeProject::new(project_name, args.compose_files.clone())?
            .env("WEATHERVANE_DATA", &input)
            .env("WEATHERVANE_INPUT", format!("/data/{name}"))
            .env("WEATHERVANE_BATCH_SIZE", args.batch_size.to_string())
            .env("WEATHERVANE_HOUR_INTERVAL", args.hour_interval.to_string())
            .env(
                "WEATHERVANE_BATCH_INTERVAL",
                args.batch_interval.to_string(),
            )
            .env("API_PORT", api_port.to_string())
            .env("INFLUXDB_PORT", influx_port.to_string())
            .env("UPLOAD_PORT", upload_port.to_string())
            .env("RUST_LOG", "info")
            // Progress reads the roles' events from their logs.
            .env("WEATHERVANE_EVENTS", "stderr");
        // The streamer starts last, as in the local stack, and only once every log is
        // being copied: a point like `batch:1:2` must be seen as it happens, not found
        // in the history of a stream that began while compose was still busy.
        let streamer = Target::Streamer.name();
        let mut up = vec!["up", "-d"];
        up.extend(
            Target::ALL
                .iter()
                .map(|t| t.name())
                .filter(|s| *s != streamer),
        );
        // The api's other replicas and the load balancer, which publishes the API port
        // (the target `api` is the first replica).
        up.extend(["api2", "api3", "lb"]);
        project.run(&up)?;
        project.run(&["up", "--no-start", streamer])?;
        let mut followers = Vec::new();
        let mut containers = Vec::new();
        for target in Target::ALL {
            let container = project.container(target.name())?;
            let log = dir.join(format!("{}.log", target.name()));
            followers.push(container.follow_log(&log)?);
            containers.push((target, container));
        }
        let mut stack = Self {
            _followers: followers,
            _project: project,
            containers,
            api_port,
            influx_port,
            influx_login: None,
        };
        stack.influx_login = api_login(stack.container(Target::Api))?;
        stack.container(Target::Streamer).start()?;
        Ok(stack)
    }

    fn container(&self, target: Target) -> &Container {
        self.containers
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, container)| container)
            .expect("every service has a container")
    }
}

/// The InfluxDB login the api container runs with (INFLUXDB_USER and its password, from
/// INFLUXDB_PASSWORD_FILE or INFLUXDB_PASSWORD), or None if it has no user. Read now, while
/// the api runs: a scenario may stop it.
fn api_login(api: &Container) -> anyhow::Result<Option<(String, Secret)>> {
    const SCRIPT: &str = r#"[ -n "${INFLUXDB_USER:-}" ] || exit 0
printf '%s\n' "$INFLUXDB_USER"
if [ -n "${INFLUXDB_PASSWORD_FILE:-}" ]; then cat "$INFLUXDB_PASSWORD_FILE"; else printf '%s' "${INFLUXDB_PASSWORD:-}"; fi"#;
    let output = api
        .exec(&["sh", "-c", SCRIPT])
        .context("reading the api container's InfluxDB login")?;
    let Some((user, password)) = output.split_once('\n') else {
        return Ok(None);
    };
    // As the roles read a password file: trailing line ends dropped.
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    Ok(Some((user.to_owned(), Secret::from(password))))
}

impl super::Stack for ComposeStack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()> {
        let container = self.container(target);
        match action {
            Action::Kill => container.kill()?,
            Action::Stop => container.stop(STOP_GRACE)?,
            Action::Start => {
                container.start()?;
                // As the local stack waits for a restarted server to answer.
                if matches!(target, Target::Redis | Target::Influxdb) {
                    container.wait_healthy(READY_TIMEOUT)?;
                }
            }
            Action::Pause => container.pause()?,
            Action::Resume => container.unpause()?,
        }
        Ok(())
    }

    fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    fn influx_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.influx_port)
    }

    fn influx_login(&self) -> Option<(String, Secret)> {
        self.influx_login.clone()
    }

    /// The streamer stays up in compose (no `--once`): done once it has confirmed every
    /// hour.
    fn finished(&mut self, progress: &Progress) -> bool {
        progress.streamer_confirmed_all()
    }
}
