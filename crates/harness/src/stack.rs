//! `LocalStack`: the whole pipeline on this machine, for tests, replay and bench. A
//! private `redis-server` and `influxd` and the roles as `weathervane` processes, wired to
//! them by environment (`REDIS_URL`, `INFLUXDB_URL`, `INFLUXDB_DB`, `API_ADDR`) with
//! `WEATHERVANE_EVENTS=stderr`, so each role's log file carries its typed events (see
//! [`crate::events`]). It owns which roles run and where their logs go; what the roles
//! are asked to do (input, batch sizes) comes from the caller.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{
    HarnessError, InfluxServer, ManagedProcess, RedisServer, Result, ServerTls, free_port,
};

/// The database every role of a local stack uses.
pub const DB: &str = "weather";

/// One of the four pipeline roles, named as its `weathervane` subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Streamer,
    Ingester,
    Processor,
    Api,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Streamer, Role::Ingester, Role::Processor, Role::Api];

    /// The subcommand, the process name and the log file's stem.
    pub fn name(self) -> &'static str {
        match self {
            Role::Streamer => "streamer",
            Role::Ingester => "ingester",
            Role::Processor => "processor",
            Role::Api => "api",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a role gets on top of its wiring: extra arguments and environment.
type Customize = Box<dyn FnOnce(ManagedProcess) -> ManagedProcess>;

/// Which roles a [`LocalStack`] starts, with what, and where their logs go.
#[derive(Default)]
pub struct LocalStackBuilder {
    log_dir: Option<PathBuf>,
    redis_tls: Option<ServerTls>,
    influx_tls: Option<ServerTls>,
    env: Vec<(OsString, OsString)>,
    roles: Vec<(Role, Customize)>,
}

impl LocalStackBuilder {
    /// Logs (`<dir>/<role>.log`) and role files go here; by default a temp dir the stack
    /// owns and deletes.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Redis also listens for TLS, and the roles are wired to that listener (`rediss://`);
    /// the caller gives them the CA (and client certificate) through [`Self::env`].
    pub fn redis_tls(mut self, tls: ServerTls) -> Self {
        self.redis_tls = Some(tls);
        self
    }

    /// InfluxDB serves `https://` only, and the roles are wired to it.
    pub fn influx_tls(mut self, tls: ServerTls) -> Self {
        self.influx_tls = Some(tls);
        self
    }

    /// An environment variable for every role (after the wiring, so it may override it).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts `role` with the stack, as it is wired.
    pub fn role(self, role: Role) -> Self {
        self.role_with(role, |process| process)
    }

    /// Starts `role` with the stack, with what `customize` adds (arguments, environment).
    /// Roles start in the order they are added.
    pub fn role_with(
        mut self,
        role: Role,
        customize: impl FnOnce(ManagedProcess) -> ManagedProcess + 'static,
    ) -> Self {
        self.roles.push((role, Box::new(customize)));
        self
    }

    /// Starts the servers, then the roles.
    pub fn start(self) -> Result<LocalStack> {
        let owned_dir = match &self.log_dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().map_err(|source| HarnessError::TempDir {
                program: "weathervane",
                source,
            })?),
        };
        let dir = match (&self.log_dir, &owned_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(owned)) => owned.path().to_owned(),
            (None, None) => unreachable!("one of the two is set"),
        };
        let mut stack = LocalStack {
            roles: Vec::new(),
            redis: RedisServer::start_with(self.redis_tls.as_ref())?,
            influx: InfluxServer::start_with(self.influx_tls.as_ref())?,
            api_addr: format!("127.0.0.1:{}", free_port()?),
            env: self.env,
            dir,
            _owned_dir: owned_dir,
        };
        for (role, customize) in self.roles {
            let mut process = customize(stack.role(role)?);
            process.start()?;
            stack.roles.push((role, process));
        }
        Ok(stack)
    }
}

/// A running local stack. Dropping it kills the roles, then the servers.
pub struct LocalStack {
    // Declared first so the roles go before the servers they talk to.
    roles: Vec<(Role, ManagedProcess)>,
    pub redis: RedisServer,
    pub influx: InfluxServer,
    api_addr: String,
    env: Vec<(OsString, OsString)>,
    dir: PathBuf,
    /// The temp dir behind `dir` when the caller gave none; removed last.
    _owned_dir: Option<tempfile::TempDir>,
}

impl LocalStack {
    pub fn builder() -> LocalStackBuilder {
        LocalStackBuilder::default()
    }

    /// A `weathervane <role>` process wired to this stack's servers, not started and not
    /// owned by the stack (the caller starts, stops and drops it).
    pub fn role(&self, role: Role) -> Result<ManagedProcess> {
        let process = ManagedProcess::weathervane(role.name(), &self.dir)?
            .arg(role.name())
            .env("REDIS_URL", self.redis.url())
            .env("INFLUXDB_URL", self.influx.url())
            .env("INFLUXDB_DB", DB)
            .env("API_ADDR", &self.api_addr)
            .env("WEATHERVANE_EVENTS", "stderr");
        Ok(self
            .env
            .iter()
            .fold(process, |process, (key, value)| process.env(key, value)))
    }

    /// The started role's process.
    ///
    /// # Panics
    /// If the stack was built without `role`.
    pub fn process(&mut self, role: Role) -> &mut ManagedProcess {
        self.roles
            .iter_mut()
            .find(|(r, _)| *r == role)
            .map(|(_, process)| process)
            .unwrap_or_else(|| panic!("the stack was built without the {role}"))
    }

    /// Where the roles' logs and files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file of a role (whether or not it runs).
    pub fn log_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.log", role.name()))
    }

    /// The address the api role listens on.
    pub fn api_addr(&self) -> &str {
        &self.api_addr
    }
}
