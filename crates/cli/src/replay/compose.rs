//! `weathervane replay --compose`: the scenario applied to the containers of the compose
//! stack (docker-compose.yml, with the images the environment names in
//! `WEATHERVANE_IMAGE`, `REDIS_IMAGE`, `INFLUXDB_IMAGE`) instead of local processes.
//!
//! The stack runs under a project name of its own, with free host ports for the API and
//! InfluxDB and the replay's input mounted at `/data`. Fault actions become the compose
//! CLI's `kill`, `stop`, `start`, `pause` and `unpause` of the service of the same name
//! (`docker compose` v2 when the docker CLI has it, else `docker-compose` v1). Each
//! container's log is copied into `<dir>/<service>.log`, where the progress reader finds
//! it as it finds a local process's. Dropping the stack removes its containers, network
//! and volumes (`down -v`).

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
                    let idle = if copied == before { 500 } else { 100 };
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
    project: Project,
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
                ("RUST_LOG", "info,weathervane_ingester=debug".to_owned()),
            ],
        };
        project.run(&["up", "-d"])?;
        let followers = Target::ALL
            .iter()
            .map(|target| {
                let container = project.container(target.name())?;
                LogFollower::start(container, &dir.join(format!("{}.log", target.name())))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            _followers: followers,
            project,
            api_port,
            influx_port,
        })
    }

    /// Waits until a restarted container passes its healthcheck (Redis and InfluxDB have
    /// one), as the local stack waits for a restarted server to answer.
    fn wait_healthy(&self, service: &str) -> anyhow::Result<()> {
        let container = self.project.container(service)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut inspect = Command::new("docker");
            inspect.args(["inspect", "-f", "{{.State.Health.Status}}", &container]);
            if output(inspect)?.trim() == "healthy" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{service} not healthy {} s after its start",
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl super::Stack for ComposeStack {
    fn apply(&mut self, action: Action, target: Target) -> anyhow::Result<()> {
        let service = target.name();
        match action {
            Action::Kill => self.project.run(&["kill", service])?,
            Action::Stop => self
                .project
                .run(&["stop", "-t", STOP_GRACE_SECS, service])?,
            Action::Start => {
                let started = self.project.run(&["start", service])?;
                if matches!(target, Target::Redis | Target::Influxdb) {
                    self.wait_healthy(service)?;
                }
                started
            }
            Action::Pause => self.project.run(&["pause", service])?,
            Action::Resume => self.project.run(&["unpause", service])?,
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
