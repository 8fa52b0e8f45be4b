//! Export jobs: `POST /exports` queues a CSV export of raw rows or reports over a date
//! range; any replica runs it (`runner`), answers its status, cancels it or serves its
//! file (`routes`) from a directory the replicas share. The queue and the job records
//! live in Redis (`store`); the rules are pure (`job`, `table`). This is the api's only
//! Redis use besides what other modules subscribe to; it still never writes InfluxDB.

pub mod job;
pub mod routes;
pub mod runner;
pub mod store;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weathervane_core::config::{ConfigError, RedisArgs, Secret};
use weathervane_core::influx::{InfluxClient, InfluxError};

use self::store::{Store, StoreError};

/// How long one chunk's query (an hour of one state) may take: far longer than a report
/// query, since a state's hour of raw rows is thousands of rows.
pub const CHUNK_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often expired export files and index entries are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// Directory the export files are written to, shared by every api replica (a compose
    /// volume). Default: weathervane-exports in the system's temp directory.
    #[arg(long, env = "API_EXPORT_DIR", value_name = "DIR")]
    pub export_dir: Option<PathBuf>,
    /// Export jobs this replica runs at once; more wait in the queue.
    #[arg(long, env = "API_MAX_EXPORT_JOBS", default_value_t = 2)]
    pub max_export_jobs: usize,
    /// Seconds a finished export's file and a job's record are kept (after the job's last
    /// change) before the sweep removes them.
    #[arg(long, env = "API_EXPORT_TTL", default_value_t = 86_400)]
    pub export_ttl: u64,
    /// Seconds a running job may go without its runner's heartbeat before another replica
    /// takes it over (and runs it again from the start).
    #[arg(long, env = "API_EXPORT_CLAIM_AFTER", default_value_t = 30)]
    pub export_claim_after: u64,
    /// File holding the bearer token that /exports requests must carry (`Authorization:
    /// Bearer ...`); else the API_EXPORT_TOKEN variable. Unset: no token asked.
    #[arg(long, env = "API_EXPORT_TOKEN_FILE", value_name = "FILE")]
    pub export_token_file: Option<PathBuf>,
}

impl ExportArgs {
    /// The export directory, defaulted.
    pub fn dir(&self) -> PathBuf {
        self.export_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("weathervane-exports"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportSetupError {
    #[error("--export-dir {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--max-export-jobs must be at least 1")]
    NoJobs,
    #[error("export token: {0}")]
    Token(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Influx(#[from] InfluxError),
}

/// What the export routes and the runner share.
pub struct Exports {
    pub store: Store,
    pub dir: PathBuf,
    /// Asked of every /exports request when set; never logged.
    pub token: Option<Secret>,
    /// Reads the chunks, with [`CHUNK_QUERY_TIMEOUT`].
    pub influx: InfluxClient,
    pub max_jobs: usize,
    pub ttl: Duration,
    pub claim_after: Duration,
    /// This replica's name (`host:pid`) in the consumer group; a running job's record
    /// names its run, `<runner>/<n>` ([`Exports::next_run`]).
    pub runner: String,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("dir", &self.dir)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

impl Exports {
    pub fn new(
        args: &ExportArgs,
        redis: &RedisArgs,
        influx: InfluxClient,
    ) -> Result<Arc<Self>, ExportSetupError> {
        if args.max_export_jobs == 0 {
            return Err(ExportSetupError::NoJobs);
        }
        let dir = args.dir();
        std::fs::create_dir_all(&dir).map_err(|source| ExportSetupError::Dir {
            path: dir.clone(),
            source,
        })?;
        let token = token(args.export_token_file.as_deref())?;
        let ttl = Duration::from_secs(args.export_ttl.max(1));
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "api".into());
        Ok(Arc::new(Self {
            store: Store::new(redis, ttl)?,
            dir,
            token,
            influx,
            max_jobs: args.max_export_jobs,
            ttl,
            claim_after: Duration::from_secs(args.export_claim_after.max(1)),
            runner: format!("{host}:{}", std::process::id()),
        }))
    }

    /// Where a finished job's file is.
    pub fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.csv"))
    }

    /// Where one run writes a job's file before renaming it: a name of its own per run,
    /// so a run taking a job over never writes into another's file.
    pub fn part_file(&self, id: &str, run: &str) -> PathBuf {
        let run: String = run
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.dir.join(format!("{id}.{run}.part"))
    }

    /// A name for one run of a job: this replica's and a number of its own, so two runs
    /// of one job, even in one replica (its entry taken over while a slow chunk held its
    /// heartbeat), tell each other apart.
    pub fn next_run(&self) -> String {
        static RUNS: AtomicU64 = AtomicU64::new(1);
        format!("{}/{}", self.runner, RUNS.fetch_add(1, Ordering::Relaxed))
    }
}

/// The token from API_EXPORT_TOKEN or the file.
fn token(file: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
    weathervane_core::config::secret("API_EXPORT_TOKEN", "API_EXPORT_TOKEN_FILE", file)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
