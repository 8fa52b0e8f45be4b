//! A docker-compose project driven from outside, for replay `--compose` and the container
//! test: the compose CLI (`docker compose` v2 when the docker CLI has it, else
//! `docker-compose` v1), a project under its own name brought up and taken down with
//! `down -v` (containers, network, volumes) when dropped, its containers by service, the
//! fault actions on a container (`docker kill`, `stop`, `start`, `pause`, `unpause`), and
//! a container's log copied into a file as it grows, across restarts.
//!
//! Fault actions use the docker CLI rather than the compose CLI's verb of the same name:
//! docker-compose v1 takes most of a second to start, which would move a fault well past
//! the point it was meant for.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// The compose CLI: `docker compose` (v2) when the docker CLI has it, else
/// `docker-compose` (v1).
pub fn compose_program() -> Result<Vec<String>> {
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
        .ok_or(HarnessError::NoCompose)
}

/// Runs a command to its end; its stdout, or an error with its exit status and stderr.
fn output(mut command: Command) -> Result<String> {
    let what = format!("{command:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Command {
            what: what.clone(),
            detail: source.to_string(),
        })?;
    if !status.success() {
        return Err(HarnessError::Command {
            what,
            detail: format!("{status}: {}", String::from_utf8_lossy(&stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// `docker <args>` to its end: its stdout.
pub fn docker(args: &[&str]) -> Result<String> {
    let mut command = Command::new("docker");
    command.args(args);
    output(command)
}

/// One compose project: the CLI, the files, the name and the variables it runs with.
/// Dropping it runs `down -v`.
#[derive(Debug)]
pub struct ComposeProject {
    program: Vec<String>,
    files: Vec<PathBuf>,
    name: String,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
}

impl ComposeProject {
    /// A project `name` of these compose files; nothing runs until [`Self::run`].
    pub fn new(name: impl Into<String>, files: Vec<PathBuf>) -> Result<Self> {
        Ok(Self {
            program: compose_program()?,
            files,
            name: name.into(),
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
        })
    }

    /// A variable for every compose command (the compose file's `${...}`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A variable of our environment the compose commands must not see.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compose command with this project's name, files and variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]).arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        for key in &self.env_remove {
            command.env_remove(key);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a compose command to its end; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        output(self.command(args))
    }

    /// The container of a service (compose keeps it across kill, stop and start).
    pub fn container(&self, service: &str) -> Result<Container> {
        let id = self.run(&["ps", "-q", service])?.trim().to_owned();
        if id.is_empty() {
            return Err(HarnessError::NoContainer {
                service: service.to_owned(),
            });
        }
        Ok(Container { id })
    }

    /// `down -v`: containers, network and volumes.
    pub fn down(&self) -> Result<()> {
        self.run(&["down", "-v", "--remove-orphans", "-t", "2"])
            .map(drop)
    }

    /// Containers, networks and volumes still labelled with this project.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut left = Vec::new();
        for kind in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
            let mut args = kind.to_vec();
            args.extend(["-q", "--filter", &label]);
            left.extend(docker(&args)?.lines().map(|id| format!("{kind:?} {id}")));
        }
        Ok(left)
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if let Err(error) = self.down() {
            eprintln!(
                "warning: compose project {} not fully removed: {error}",
                self.name
            );
        }
    }
}

/// One container, by id.
#[derive(Clone, Debug)]
pub struct Container {
    id: String,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn docker(&self, verb: &[&str]) -> Result<()> {
        let mut args = verb.to_vec();
        args.push(&self.id);
        docker(&args).map(drop)
    }

    pub fn kill(&self) -> Result<()> {
        self.docker(&["kill"])
    }

    /// `docker stop`, letting it shut down cleanly for `grace` before Docker kills it.
    pub fn stop(&self, grace: Duration) -> Result<()> {
        self.docker(&["stop", "-t", &grace.as_secs().to_string()])
    }

    pub fn start(&self) -> Result<()> {
        self.docker(&["start"])
    }

    pub fn pause(&self) -> Result<()> {
        self.docker(&["pause"])
    }

    pub fn unpause(&self) -> Result<()> {
        self.docker(&["unpause"])
    }

    /// Runs `command` in the container (`docker exec`, as its user) to its end: its stdout.
    pub fn exec(&self, command: &[&str]) -> Result<String> {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend(command);
        docker(&args)
    }

    /// Waits until the container passes its healthcheck.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while docker(&["inspect", "-f", "{{.State.Health.Status}}", &self.id])?.trim() != "healthy"
        {
            if Instant::now() > deadline {
                return Err(HarnessError::NotHealthy {
                    container: self.id.clone(),
                    timeout,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The container's log so far, stdout then stderr (weathervane logs to stderr).
    pub fn logs(&self) -> Result<String> {
        let output = Command::new("docker")
            .args(["logs", &self.id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Command {
                what: format!("docker logs {}", self.id),
                detail: source.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr))
    }

    /// Copies this container's log into `path` as it grows, until the follower is dropped.
    pub fn follow_log(&self, path: &Path) -> Result<LogFollower> {
        LogFollower::start(self.id.clone(), path)
    }
}

/// Copies a container's log into a file as it grows, across restarts of the container:
/// `docker logs -f` ends when the container stops and, run again, replays the whole log,
/// so the lines already copied (counted per stream) are skipped.
pub struct LogFollower {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl LogFollower {
    fn start(container: String, path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| HarnessError::OpenLog {
                name: container.clone(),
                path: path.to_owned(),
                source,
            })?;
        let file = Arc::new(Mutex::new(file));
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Child>>> = Arc::default();
        let thread = thread::spawn({
            let (stop, current) = (stop.clone(), current.clone());
            move || follow(&container, &file, &stop, &current)
        });
        Ok(Self {
            stop,
            current,
            thread: Some(thread),
        })
    }
}

/// The follower's thread: `docker logs -f` again and again until `stop`.
fn follow(container: &str, file: &Mutex<File>, stop: &AtomicBool, current: &Mutex<Option<Child>>) {
    let mut copied = [0usize; 2];
    while !stop.load(Ordering::SeqCst) {
        let spawned = Command::new("docker")
            .args(["logs", "-f", container])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = spawned else { break };
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        *current.lock().unwrap() = Some(child);
        // Drop may have looked for a child just before this one was stored.
        if stop.load(Ordering::SeqCst) {
            kill(current);
        }
        let before = copied;
        thread::scope(|scope| {
            let [out, err] = &mut copied;
            scope.spawn(move || copy_new_lines(stdout, out, file));
            copy_new_lines(stderr, err, file);
        });
        if let Some(mut child) = current.lock().unwrap().take() {
            let _ = child.wait();
        }
        // A stopped container's log ends at once: poll it gently until it runs again.
        let idle = if copied == before { 200 } else { 50 };
        thread::sleep(Duration::from_millis(idle));
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
