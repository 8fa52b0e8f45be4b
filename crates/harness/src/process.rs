//! `ManagedProcess`: one child process we own, with its stdout and stderr appended to a
//! log file, and the signals tests use as faults. It owns spawning, signalling and
//! reaping; it does not know whether the program is ready (see `server` for that).

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::{HarnessError, Result};

/// How long `stop` lets a process shut down cleanly before it falls back to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
}

impl ManagedProcess {
    /// A process called `name` (used in errors and as the log file `<log_dir>/<name>.log`),
    /// not started yet.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, log_dir: &Path) -> Self {
        let name = name.into();
        Self {
            log_path: log_dir.join(format!("{name}.log")),
            name,
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            child: None,
            exit_status: None,
        }
    }

    /// The built `weathervane` binary (see [`crate::weathervane_binary`]) as a process called `name`.
    pub fn weathervane(name: impl Into<String>, log_dir: &Path) -> Result<Self> {
        Ok(Self::new(name, crate::weathervane_binary()?, log_dir))
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args(self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        args.into_iter().fold(self, Self::arg)
    }

    /// Set on top of the inherited environment, so `RUST_LOG` and friends pass through.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Spawns the process. The log is appended to, so restarts keep the earlier output.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            let pid = self.pid().unwrap_or_default();
            return Err(HarnessError::AlreadyRunning {
                name: self.name.clone(),
                pid,
            });
        }
        let open_log = || {
            if let Some(dir) = self.log_path.parent() {
                fs::create_dir_all(dir)?;
            }
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)?;
            Ok((log.try_clone()?, log))
        };
        let (stdout, stderr) = open_log().map_err(|source| HarnessError::OpenLog {
            name: self.name.clone(),
            path: self.log_path.clone(),
            source,
        })?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                name: self.name.clone(),
                program: self.program.clone(),
                log: self.log_path.clone(),
                source,
            })?;
        self.child = Some(child);
        self.exit_status = None;
        Ok(())
    }

    /// The pid while we hold the child. It may already have exited (a zombie) until
    /// `is_running` or a wait notices; until then the pid cannot be reused.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive; reaps it and records its exit status if not.
    pub fn is_running(&mut self) -> bool {
        self.poll().unwrap_or_else(|error| {
            // Only possible if something else reaped our child; it is gone either way.
            tracing::warn!(%error, "treating the process as gone");
            self.child = None;
            false
        })
    }

    /// The exit status of the last run, once it has been observed.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit_status
    }

    /// `Some(status)` once the process has exited (also if it already had), `None` if it
    /// is still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.child.is_none() && self.exit_status.is_none() {
            return Err(HarnessError::NotRunning {
                name: self.name.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        while self.poll()? {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(POLL);
        }
        Ok(self.exit_status)
    }

    /// `true` while alive; once it has exited, reaps it and records the status.
    fn poll(&mut self) -> Result<bool> {
        let Some(child) = self.child.as_mut() else {
            return Ok(false);
        };
        let pid = child.id();
        let exited = child.try_wait().map_err(|source| HarnessError::Wait {
            name: self.name.clone(),
            pid,
            source,
        })?;
        if exited.is_some() {
            self.exit_status = exited;
            self.child = None;
        }
        Ok(exited.is_none())
    }

    /// SIGKILL and reap, like a crash or an OOM kill. No-op if not running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGKILL also ends a SIGSTOPped process, so no SIGCONT first.
        if let Err(error) = signal::kill(to_pid(child.id()), Signal::SIGKILL) {
            tracing::warn!(name = %self.name, %error, "SIGKILL failed");
        }
        match child.wait() {
            Ok(status) => self.exit_status = Some(status),
            Err(error) => tracing::warn!(name = %self.name, %error, "could not reap after SIGKILL"),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s. Returns how it ended, or
    /// `None` if it was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if !self.is_running() {
            return None;
        }
        let pid = to_pid(self.pid()?);
        // SIGCONT after SIGTERM: a paused process would otherwise hold the SIGTERM pending
        // for the whole grace period and then be SIGKILLed without a chance to clean up.
        // Nothing reaps in between, so the pid cannot be reused under us.
        for sig in [Signal::SIGTERM, Signal::SIGCONT] {
            if let Err(error) = signal::kill(pid, sig) {
                tracing::warn!(name = %self.name, %error, "stop could not send {sig:?}");
            }
        }
        match self.wait_timeout(STOP_GRACE) {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {
                tracing::warn!(name = %self.name, "no exit {STOP_GRACE:?} after SIGTERM; sending SIGKILL")
            }
            Err(error) => tracing::warn!(%error, "waiting after SIGTERM failed; sending SIGKILL"),
        }
        self.kill();
        self.exit_status
    }

    /// SIGSTOP: the process keeps its sockets, so connects succeed but nothing is answered.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    pub fn resume(&mut self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        let pid = match self.pid() {
            Some(pid) if self.is_running() => pid,
            _ => {
                return Err(HarnessError::NotRunning {
                    name: self.name.clone(),
                });
            }
        };
        signal::kill(to_pid(pid), signal).map_err(|source| HarnessError::Signal {
            name: self.name.clone(),
            pid,
            signal,
            source,
        })
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn to_pid(id: u32) -> Pid {
    // Linux pids are at most 2^22 (pid_max), so they always fit in pid_t.
    Pid::from_raw(id as i32)
}
