//! `weathervane replay --compose`: the scenario applied to the containers of the compose
//! stack (docker-compose.yml, with the images the environment names in
//! `WEATHERVANE_IMAGE`, `REDIS_IMAGE`, `INFLUXDB_IMAGE`) instead of local processes.
//!
//! The compose CLI (`docker compose` v2 when the docker CLI has it, else `docker-compose`
//! v1) brings the stack up under a project name of its own, with free host ports for the
//! API and InfluxDB and the replay's input mounted at `/data`, and takes it down again
//! (`down -v`: containers, network and volumes) when the stack is dropped. Fault actions
//! are `docker kill`, `stop`, `start`, `pause` and `unpause` of the container of the
//! service named like the target. Each container's log is copied into
//! `<dir>/<service>.log`, where the progress reader finds it as it finds a local
//! process's.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::ReplayArgs;
use super::progress::Progress;
use super::schedule::{Action, Target};

/// How long a restarted Redis or InfluxDB container may take to pass its healthcheck.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Seconds `stop` lets a container shut down cleanly before Docker kills it.
const STOP_GRACE_SECS: &str = "10";

/// One compose project: the CLI, the files, the name and the variables it runs with.
struct Project {
    program: Vec<String>,
    files: Vec<PathBuf>,
    name: String,
    env: Vec<(&'static str, String)>,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a compose command to its end; its stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("{} {}", self.program.join(" "), args.join(" "));
        output(self.command(args)).with_context(|| what)
    }

    /// The container of a service.
    fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.run(&["ps", "-q", service])?.trim().to_owned();
        anyhow::ensure!(!id.is_empty(), "service {service} has no container");
        Ok(id)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(error) = self.run(&["down", "-v", "--remove-orphans", "-t", "2"]) {
            eprintln!(
                "warning: compose project {} not fully removed: {error:#}",
                self.name
            );
        }
    }
}

/// Runs a command to its end; its stdout, or an error with its exit status and stderr.
fn output(mut command: Command) -> anyhow::Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = command.stdin(Stdio::null()).output()?;
    if !status.success() {
        bail!("{status}: {}", String::from_utf8_lossy(&stderr).trim());
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// The compose CLI: `docker compose` (v2) when the docker CLI has it, else
/// `docker-compose` (v1).
fn compose_program() -> anyhow::Result<Vec<String>> {
    let works = |program: &[&str]| {
        Command::new(program[0])
            .args(&program[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    [&["docker", "compose"][..], &["docker-compose"][..]]
        .into_iter()
        .find(|program| works(program))
        .map(|program| program.iter().map(|s| s.to_string()).collect())
        .context("neither `docker compose` nor `docker-compose` answers `version`")
}

/// Copies a container's log into a file as it grows, across restarts of the container:
/// `docker logs -f` ends when the container stops and, run again, replays the whole log,
/// so the lines already copied (counted per stream) are skipped.
struct LogFollower {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl LogFollower {
    fn start(container: String, path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let file = Arc::new(Mutex::new(file));
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::default();
        let thread = thread::spawn({
            let (stop, current) = (stop.clone(), current.clone());
            move || {
                let mut copied = [0usize; 2];
                while !stop.load(Ordering::SeqCst) {
                    let spawned = Command::new("docker")
                        .args(["logs", "-f", &container])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn();
                    let Ok(mut child) = spawned else { break };
                    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
                    *current.lock().unwrap() = Some(child);
                    // Drop may have looked for a child just before this one was stored.
                    if stop.load(Ordering::SeqCst) {
                        kill(&current);
                    }
                    let before = copied;
                    let file = &*file;
                    thread::scope(|scope| {
                        let [out, err] = &mut copied;
                        scope.spawn(move || copy_new_lines(stdout, out, file));
                        copy_new_lines(stderr, err, file);
                    });
                    if let Some(mut child) = current.lock().unwrap().take() {
                        let _ = child.wait();
                    }
                    // A stopped container's log ends at once: poll it gently until it
                    // runs again.
                    let idle = if copied == before { 200 } else { 50 };
                    thread::sleep(Duration::from_millis(idle));
                }
            }
        });
        Ok(Self {
            stop,
            current,
            thread: Some(thread),
        })
    }
}

/// Appends the lines of `stream` past the first `copied` to `file`, counting them.
fn copy_new_lines(stream: Option<impl Read>, copied: &mut usize, file: &Mutex<File>) {
    let Some(stream) = stream else { return };
    for (index, line) in BufReader::new(stream).lines().enumerate() {
        let Ok(line) = line else { return };
        if index >= *copied {
            let _ = writeln!(file.lock().unwrap(), "{line}");
            *copied = index + 1;
        }
    }
}

fn kill(current: &Mutex<Option<Child>>) {
    if let Some(child) = current.lock().unwrap().as_mut() {
        let _ = child.kill();
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        kill(&self.current);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The compose stack of one replay.
pub struct ComposeStack {
    // Declared first so the log copies stop before the project goes down.
    _followers: Vec<LogFollower>,
    _project: Project,
    /// The container of each service; compose keeps it across kill, stop and start.
    containers: Vec<(Target, String)>,
    api_port: u16,
    influx_port: u16,
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

        let (api_port, influx_port) = (
            weathervane_harness::free_port()?,
            weathervane_harness::free_port()?,
        );
        let project = Project {
            program: compose_program()?,
            files: args.compose_files.clone(),
            name: args
                .project
                .clone()
                .unwrap_or_else(|| format!("weathervane-replay-{}", std::process::id())),
            env: vec![
                ("WEATHERVANE_DATA", input.display().to_string()),
                ("WEATHERVANE_INPUT", format!("/data/{name}")),
                ("WEATHERVANE_BATCH_SIZE", args.batch_size.to_string()),
                ("WEATHERVANE_HOUR_INTERVAL", args.hour_interval.to_string()),
                (
                    "WEATHERVANE_BATCH_INTERVAL",
                    args.batch_interval.to_string(),
                ),
                ("API_PORT", api_port.to_string()),
                ("INFLUXDB_PORT", influx_port.to_string()),
                // Batch receipts are debug lines; progress reads them.
                ("RUST_LOG", "info,weathervane_core::event=debug".to_owned()),
            ],
        };
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
        project.run(&up)?;
        project.run(&["up", "--no-start", streamer])?;
        let mut followers = Vec::new();
        let mut containers = Vec::new();
        for target in Target::ALL {
            let container = project.container(target.name())?;
            let log = dir.join(format!("{}.log", target.name()));
            followers.push(LogFollower::start(container.clone(), &log)?);
            containers.push((target, container));
        }
        let stack = Self {
            _followers: followers,
            _project: project,
            containers,
            api_port,
            influx_port,
        };
        stack.docker(&["start"], Target::Streamer)?;
        Ok(stack)
    }

    fn container(&self, target: Target) -> &str {
        self.containers
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, container)| container.as_str())
            .expect("every service has a container")
    }

    /// Runs `docker <verb> <container of target>`. The docker CLI rather than the compose
    /// CLI's verb of the same name: docker-compose v1 takes most of a second to start,
    /// which would move a fault well past the point it was meant for.
    fn docker(&self, verb: &[&str], target: Target) -> anyhow::Result<String> {
        let mut command = Command::new("docker");
        command.args(verb).arg(self.container(target));
        output(command).with_context(|| format!("docker {} {}", verb.join(" "), target.name()))
    }

    /// Waits until a restarted container passes its healthcheck (Redis and InfluxDB have
    /// one), as the local stack waits for a restarted server to answer.
    fn wait_healthy(&self, target: Target) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self
            .docker(&["inspect", "-f", "{{.State.Health.Status}}"], target)?
            .trim()
            != "healthy"
        {
            if Instant::now() > deadline {
                bail!(
                    "{} not healthy {} s after its start",
                    target.name(),
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl super::Stack for ComposeStack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()> {
        match action {
            Action::Kill => self.docker(&["kill"], target)?,
            Action::Stop => self.docker(&["stop", "-t", STOP_GRACE_SECS], target)?,
            Action::Start => {
                let started = self.docker(&["start"], target)?;
                if matches!(target, Target::Redis | Target::Influxdb) {
                    self.wait_healthy(target)?;
                }
                started
            }
            Action::Pause => self.docker(&["pause"], target)?,
            Action::Resume => self.docker(&["unpause"], target)?,
        };
        Ok(())
    }
    fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    fn influx_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.influx_port)
    }

    /// The streamer stays up in compose (no `--once`): done once it has confirmed every
    /// hour.
    fn finished(&mut self, progress: &Progress) -> bool {
        progress.streamer_confirmed_all()
    }
}
