//! `LocalStack`: the whole pipeline on this machine, for tests, replay and bench. A
//! private `redis-server` and `influxd` and the roles as `weathervane` processes, wired to
//! them by environment (`REDIS_URL`, `INFLUXDB_URL`, `INFLUXDB_DB`, `API_ADDR`, and a free
//! `WEATHERVANE_ADMIN_ADDR` per role, see [`LocalStack::admin_url`]) with
//! `WEATHERVANE_EVENTS=stderr`, so each role's log file carries its typed events (see
//! [`crate::events`]), and optionally a herd of api replicas, each on ports of its own
//! ([`LocalStackBuilder::api_replicas`]). It owns which roles run and where their logs go, and under access
//! control the InfluxDB database and users; what the roles are asked to do (input, batch
//! sizes) and the logins they are given come from the caller.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{
    HarnessError, InfluxServer, Login, ManagedProcess, RedisAcl, RedisServer, Result, ServerTls,
    free_port, influx_identifier, influx_string,
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

/// InfluxDB's users when authentication is on. The stack creates `admin` first, then the
/// database, `writer` with ALL on it and `reader` with READ on it.
#[derive(Clone, Debug)]
pub struct InfluxUsers {
    pub admin: Login,
    /// For the ingester and the processor: both read (SELECT), write and delete (`DELETE`
    /// needs WRITE in 1.x), so both need READ and WRITE, which is ALL on one database.
    /// Neither can create the database (that needs admin), so the stack creates it.
    pub writer: Login,
    /// For the api, which only reads.
    pub reader: Login,
}

/// What a role gets on top of its wiring: extra arguments and environment.
type Customize = Box<dyn FnOnce(ManagedProcess) -> ManagedProcess>;

/// Which roles a [`LocalStack`] starts, with what, and where their logs go.
#[derive(Default)]
pub struct LocalStackBuilder {
    log_dir: Option<PathBuf>,
    redis_tls: Option<ServerTls>,
    influx_tls: Option<ServerTls>,
    redis_acl: Option<RedisAcl>,
    influx_users: Option<InfluxUsers>,
    env: Vec<(OsString, OsString)>,
    roles: Vec<(Role, Customize)>,
    /// Api replicas beyond the `api` role, each with what it gets on top of its wiring.
    replicas: Vec<Customize>,
}

impl LocalStackBuilder {
    /// Starts `count` api replicas (after the roles), each on a free API port and a free
    /// admin port, logging to `api-<i>.log` (i from 1), each with what `customize` adds.
    pub fn api_replicas(
        mut self,
        count: usize,
        customize: impl Fn(ManagedProcess) -> ManagedProcess + Clone + 'static,
    ) -> Self {
        for _ in 0..count {
            self.replicas.push(Box::new(customize.clone()));
        }
        self
    }

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

    /// Redis takes its users from `acl` (its `default` user may be off); the caller gives
    /// each role its login through [`Self::role_with`] (`REDIS_USER`, `REDIS_PASSWORD`).
    pub fn redis_acl(mut self, acl: RedisAcl) -> Self {
        self.redis_acl = Some(acl);
        self
    }

    /// InfluxDB asks for credentials, and has `users` (see [`InfluxUsers`]); the caller
    /// gives each role its login (`INFLUXDB_USER`, `INFLUXDB_PASSWORD`). Not with
    /// [`Self::influx_tls`].
    pub fn influx_auth(mut self, users: InfluxUsers) -> Self {
        self.influx_users = Some(users);
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
        let redis = RedisServer::start_with_acl(self.redis_tls.as_ref(), self.redis_acl.as_ref())?;
        let admin = self.influx_users.as_ref().map(|users| &users.admin);
        let influx = InfluxServer::start_with_auth(self.influx_tls.as_ref(), admin)?;
        if let Some(users) = &self.influx_users {
            create_users(&influx, users)?;
        }
        let mut stack = LocalStack {
            roles: Vec::new(),
            replicas: Vec::new(),
            redis,
            influx,
            influx_users: self.influx_users,
            api_addr: format!("127.0.0.1:{}", free_port()?),
            admin_addrs: Role::ALL
                .iter()
                .map(|&role| Ok((role, format!("127.0.0.1:{}", free_port()?))))
                .collect::<Result<_>>()?,
            env: self.env,
            dir,
            _owned_dir: owned_dir,
        };
        for (role, customize) in self.roles {
            let mut process = customize(stack.role(role)?);
            process.start()?;
            stack.roles.push((role, process));
        }
        for (index, customize) in self.replicas.into_iter().enumerate() {
            let mut replica = stack.api_replica(index + 1)?;
            replica.process = customize(replica.process);
            replica.process.start()?;
            stack.replicas.push(replica);
        }
        Ok(stack)
    }
}

/// The database and `users`' writer and reader; privileges need the database to exist.
fn create_users(influx: &InfluxServer, users: &InfluxUsers) -> Result<()> {
    let db = influx_identifier(DB);
    let create = |login: &Login| {
        format!(
            "CREATE USER {} WITH PASSWORD {}",
            influx_identifier(&login.user),
            influx_string(&login.password)
        )
    };
    let (writer, reader) = (
        influx_identifier(&users.writer.user),
        influx_identifier(&users.reader.user),
    );
    for statement in [
        format!("CREATE DATABASE {db}"),
        create(&users.writer),
        format!("GRANT ALL ON {db} TO {writer}"),
        create(&users.reader),
        format!("GRANT READ ON {db} TO {reader}"),
    ] {
        influx.admin_query(&statement)?;
    }
    Ok(())
}

/// A running local stack. Dropping it kills the roles, then the servers.
pub struct LocalStack {
    // Declared first so the roles go before the servers they talk to.
    roles: Vec<(Role, ManagedProcess)>,
    /// The api replicas started with the stack ([`LocalStackBuilder::api_replicas`]).
    pub replicas: Vec<ApiReplica>,
    pub redis: RedisServer,
    pub influx: InfluxServer,
    influx_users: Option<InfluxUsers>,
    api_addr: String,
    /// Each role's admin server (`WEATHERVANE_ADMIN_ADDR`): a free port each, since tests
    /// run side by side and the defaults are fixed.
    admin_addrs: HashMap<Role, String>,
    env: Vec<(OsString, OsString)>,
    dir: PathBuf,
    /// The temp dir behind `dir` when the caller gave none; removed last.
    _owned_dir: Option<tempfile::TempDir>,
}

/// One api replica of a herd: its process and where it listens.
#[derive(Debug)]
pub struct ApiReplica {
    pub process: ManagedProcess,
    /// `host:port` of its API.
    pub addr: String,
    /// `host:port` of its admin server.
    pub admin_addr: String,
}

impl ApiReplica {
    /// `http://host:port` of its admin server.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
}

impl LocalStack {
    pub fn builder() -> LocalStackBuilder {
        LocalStackBuilder::default()
    }

    /// Api replica `index` wired to this stack's servers, on free ports of its own, not
    /// started and not owned by the stack; its log is `api-<index>.log`.
    pub fn api_replica(&self, index: usize) -> Result<ApiReplica> {
        let (addr, admin_addr) = (
            format!("127.0.0.1:{}", free_port()?),
            format!("127.0.0.1:{}", free_port()?),
        );
        let process = ManagedProcess::weathervane(format!("api-{index}"), &self.dir)?
            .arg(Role::Api.name())
            .env("REDIS_URL", self.redis.url())
            .env("INFLUXDB_URL", self.influx.url())
            .env("INFLUXDB_DB", DB)
            .env("API_ADDR", &addr)
            .env("WEATHERVANE_ADMIN_ADDR", &admin_addr)
            .env("WEATHERVANE_EVENTS", "stderr");
        let process = self
            .env
            .iter()
            .fold(process, |process, (key, value)| process.env(key, value));
        Ok(ApiReplica {
            process,
            addr,
            admin_addr,
        })
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
            .env("WEATHERVANE_ADMIN_ADDR", &self.admin_addrs[&role])
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

    /// InfluxDB's users, when it asks for credentials.
    pub fn influx_users(&self) -> Option<&InfluxUsers> {
        self.influx_users.as_ref()
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

    /// The `host:port` of `role`'s admin server (`/livez`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self, role: Role) -> &str {
        &self.admin_addrs[&role]
    }

    /// `http://host:port` of `role`'s admin server.
    pub fn admin_url(&self, role: Role) -> String {
        format!("http://{}", self.admin_addrs[&role])
    }
}
