//! Runs export jobs: [`work`] takes entries from the queue (a stale one first, taken over
//! from a replica that stopped beating, else a new one) while this replica runs fewer
//! than `--max-export-jobs`, and runs each in a task of its own JoinSet; [`sweep`] removes
//! expired files and index entries. A job reads InfluxDB one hour at a time (raw rows: one
//! state at a time, in pages of [`PAGE_ROWS`]), appends each chunk to a temp file and
//! renames it when done, so memory holds one chunk whatever the export's size. Before
//! each query it checks the cancel flag and that it still owns the job, and beats its
//! heartbeat when due.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weathervane_core::HourKey;
use weathervane_core::influx::{InfluxError, quote_literal};
use weathervane_core::metrics;
use weathervane_core::schema::{TAG_STATE, WEATHER_DATA};
use weathervane_core::shutdown::sleep_or_cancel;

use super::job::{Job, Status, What};
use super::store::{Entry, StoreError};
use super::table::{self, ReportKind};
use super::{Exports, now_ms};
use crate::metrics::ROLE;

/// How often the worker looks for work when it has a free slot.
const POLL: Duration = Duration::from_millis(500);
/// Rows per raw-rows query: the most one chunk holds in memory.
pub const PAGE_ROWS: usize = 5_000;
/// How long a chunk is retried while InfluxDB is unavailable before the job fails.
const CHUNK_PATIENCE: Duration = Duration::from_secs(60);

/// Takes and runs jobs until `shutdown`. Jobs in flight at shutdown stop between chunks
/// without being acknowledged, so another replica (or this one, restarted) runs them.
pub async fn work(exports: Arc<Exports>, shutdown: CancellationToken) {
    let mut jobs = JoinSet::new();
    let mut group_ready = false;
    loop {
        while let Some(ended) = jobs.try_join_next() {
            if let Err(error) = ended {
                tracing::error!(%error, "An export job task panicked.");
            }
        }
        if !group_ready {
            match exports.store.ensure_group().await {
                Ok(()) => group_ready = true,
                Err(error) => tracing::warn!(%error, "Cannot set up the export queue yet."),
            }
        }
        if group_ready && jobs.len() < exports.max_jobs {
            match next_entry(&exports).await {
                Ok(Some(entry)) => {
                    let (exports, token) = (exports.clone(), shutdown.clone());
                    // In the worker's span (the role's, under `up`), as every log line must be.
                    jobs.spawn(async move { run(&exports, entry, &token).await }.in_current_span());
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "Cannot read the export queue."),
            }
        }
        if !sleep_or_cancel(POLL, &shutdown).await {
            break;
        }
    }
    // Jobs see the token and stop before their next query.
    while jobs.join_next().await.is_some() {}
}

async fn next_entry(exports: &Exports) -> Result<Option<Entry>, StoreError> {
    let runner = &exports.runner;
    if let Some(entry) = exports.store.take_over(runner, exports.claim_after).await? {
        tracing::info!(job = %entry.job, "Taking over an export job whose runner stopped.");
        return Ok(Some(entry));
    }
    exports.store.next_new(runner).await
}

/// How a run ended, for the log and the queue.
enum Ended {
    /// Finished (done, failed or cancelled): the entry leaves the queue.
    Final(Status),
    /// Not this runner's any more, or the replica is stopping: the entry stays.
    Left(&'static str),
}

async fn run(exports: &Exports, entry: Entry, shutdown: &CancellationToken) {
    let id = entry.job.clone();
    let running = metrics::gauge(ROLE, "export_jobs_running", &[]);
    running.increment(1.0);
    let ended = run_job(exports, &entry, shutdown).await;
    running.decrement(1.0);
    match ended {
        Ok(Ended::Final(status)) => {
            metrics::counter(ROLE, "export_jobs_total", &[("status", status.as_str())])
                .increment(1);
            if let Err(error) = exports.store.finish(&entry.entry).await {
                // Left in the queue: a replica takes it over later and sees it is final.
                tracing::warn!(job = %id, %error, "Could not take an ended export job off the queue.");
            }
            tracing::info!(job = %id, status = status.as_str(), "Export job ended.");
        }
        Ok(Ended::Left(why)) => tracing::info!(job = %id, why, "Export job left to another run."),
        Err(error) => {
            tracing::warn!(job = %id, %error, "Export job lost its queue; another run takes it over.")
        }
    }
}

async fn run_job(
    exports: &Exports,
    entry: &Entry,
    shutdown: &CancellationToken,
) -> Result<Ended, StoreError> {
    let store = &exports.store;
    let Some(job) = store.get(&entry.job).await? else {
        return Ok(Ended::Final(Status::Cancelled)); // expired: nothing to run
    };
    if !job.should_run() {
        if !job.status.is_final() {
            let now = now_ms().to_string();
            store
                .update(
                    &job.id,
                    &[
                        ("status", "cancelled".into()),
                        ("finished_ms", now.clone()),
                        ("updated_ms", now),
                    ],
                )
                .await?;
            return Ok(Ended::Final(Status::Cancelled));
        }
        return Ok(Ended::Final(job.status));
    }
    let run = exports.next_run();
    let started = now_ms().to_string();
    store
        .update(
            &job.id,
            &[
                ("status", "running".into()),
                ("runner", run.clone()),
                ("attempts", (job.attempts + 1).to_string()),
                ("started_ms", started.clone()),
                ("updated_ms", started),
                ("hours_done", "0".into()),
                ("rows", "0".into()),
                ("bytes", "0".into()),
            ],
        )
        .await?;
    tracing::info!(job = %job.id, what = job.what.as_str(), from = %job.from, to = %job.to, attempt = job.attempts + 1, "Export job started.");
    let part = exports.part_file(&job.id, &run);
    let outcome = write_file(exports, entry, &job, &run, &part, shutdown).await;
    let now = now_ms().to_string();
    match outcome {
        Ok(Written::Complete { rows, bytes }) => {
            let target = exports.file(&job.id);
            if let Err(error) = tokio::fs::rename(&part, &target).await {
                let reason = format!(
                    "cannot rename {} to {}: {error}",
                    part.display(),
                    target.display()
                );
                return fail(exports, &job, reason).await;
            }
            store
                .update(
                    &job.id,
                    &[
                        ("status", "done".into()),
                        ("hours_done", job.hours_total.to_string()),
                        ("rows", rows.to_string()),
                        ("bytes", bytes.to_string()),
                        ("finished_ms", now.clone()),
                        ("updated_ms", now),
                    ],
                )
                .await?;
            Ok(Ended::Final(Status::Done))
        }
        Ok(Written::Cancelled) => {
            remove(&part).await;
            store
                .update(
                    &job.id,
                    &[
                        ("status", "cancelled".into()),
                        ("finished_ms", now.clone()),
                        ("updated_ms", now),
                    ],
                )
                .await?;
            Ok(Ended::Final(Status::Cancelled))
        }
        Ok(Written::Left(why)) => {
            remove(&part).await;
            Ok(Ended::Left(why))
        }
        Err(JobError::Store(error)) => {
            remove(&part).await;
            Err(error)
        }
        Err(JobError::Failed(reason)) => {
            remove(&part).await;
            fail(exports, &job, reason).await
        }
    }
}

async fn fail(exports: &Exports, job: &Job, reason: String) -> Result<Ended, StoreError> {
    tracing::warn!(job = %job.id, error = %reason, "Export job failed.");
    let now = now_ms().to_string();
    exports
        .store
        .update(
            &job.id,
            &[
                ("status", "failed".into()),
                ("error", reason),
                ("finished_ms", now.clone()),
                ("updated_ms", now),
            ],
        )
        .await?;
    Ok(Ended::Final(Status::Failed))
}

async fn remove(path: &std::path::Path) {
    if let Err(error) = tokio::fs::remove_file(path).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "Could not remove an export's temp file.");
    }
}

enum Written {
    Complete { rows: u64, bytes: u64 },
    Cancelled,
    Left(&'static str),
}

enum JobError {
    Store(StoreError),
    /// The job cannot finish; the reason names the file or the query.
    Failed(String),
}

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> Self {
        JobError::Store(error)
    }
}

async fn write_file(
    exports: &Exports,
    entry: &Entry,
    job: &Job,
    run: &str,
    part: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<Written, JobError> {
    let io = |what: &str, error: std::io::Error| {
        JobError::Failed(format!("cannot {what} {}: {error}", part.display()))
    };
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|e| io("create", e))?;
    let header = match job.what {
        What::Rows => table::rows_header(),
        What::Reports => table::reports_header(),
    };
    file.write_all(&header).await.map_err(|e| io("write", e))?;
    let (mut rows, mut bytes) = (0u64, header.len() as u64);
    let states = match (job.what, job.states.is_empty()) {
        (What::Rows, true) => all_states(exports).await?,
        _ => job.states.clone(),
    };
    let beat_every = exports.claim_after / 3;
    let mut last_beat = Instant::now();
    let spec = job.spec();
    for (done, hour) in spec.hours().enumerate() {
        let mut chunk_rows = 0;
        for statement in statements(job.what, hour, &states) {
            let mut offset = 0;
            loop {
                // Before every query (one state's hour, or one page of it), so a cancel
                // stops the job within one query's time, and the heartbeat keeps up.
                if shutdown.is_cancelled() {
                    return Ok(Written::Left("the replica is stopping"));
                }
                let (cancel, runner) = exports.store.control(&job.id).await?;
                if runner != run {
                    return Ok(Written::Left("another run took it over"));
                }
                if cancel {
                    return Ok(Written::Cancelled);
                }
                if last_beat.elapsed() >= beat_every {
                    if !exports
                        .store
                        .heartbeat(&exports.runner, &entry.entry)
                        .await?
                    {
                        return Ok(Written::Left("its queue entry is gone"));
                    }
                    last_beat = Instant::now();
                }
                let paged = match job.what {
                    What::Rows => format!("{statement} LIMIT {PAGE_ROWS} OFFSET {offset}"),
                    What::Reports => statement.0.clone(),
                };
                let series = query(exports, &paged, shutdown).await?;
                let (chunk, count) = match statement.1 {
                    None => table::row_records(&series),
                    Some(kind) => table::report_records(kind, &series),
                };
                file.write_all(&chunk).await.map_err(|e| io("write", e))?;
                bytes += chunk.len() as u64;
                chunk_rows += count;
                metrics::counter(ROLE, "export_rows_total", &[]).increment(count);
                metrics::counter(ROLE, "export_bytes_total", &[]).increment(chunk.len() as u64);
                if job.what == What::Reports || (count as usize) < PAGE_ROWS {
                    break;
                }
                offset += PAGE_ROWS;
            }
        }
        rows += chunk_rows;
        exports
            .store
            .update(
                &job.id,
                &[
                    ("hours_done", (done + 1).to_string()),
                    ("rows", rows.to_string()),
                    ("bytes", bytes.to_string()),
                    ("updated_ms", now_ms().to_string()),
                ],
            )
            .await?;
    }
    file.flush().await.map_err(|e| io("write", e))?;
    file.sync_all().await.map_err(|e| io("sync", e))?;
    Ok(Written::Complete { rows, bytes })
}

/// A statement and, for reports, which kind its answer is (`None`: raw rows).
struct Statement(String, Option<ReportKind>);

impl std::fmt::Display for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The statements of one hour's chunk. Raw rows: one per state (bounded by the largest
/// state's stations, and paged); reports: one per measurement (an hour's reports are at
/// most a few hundred points).
fn statements(what: What, hour: HourKey, states: &[String]) -> Vec<Statement> {
    let within = format!(
        "time >= '{}' AND time < '{}'",
        hour.rfc3339(),
        hour.next().rfc3339()
    );
    match what {
        What::Rows => states
            .iter()
            .map(|state| {
                Statement(
                    format!(
                        "SELECT * FROM {WEATHER_DATA} WHERE {TAG_STATE} = {} AND {within}",
                        quote_literal(state)
                    ),
                    None,
                )
            })
            .collect(),
        What::Reports => {
            let only = if states.is_empty() {
                String::new()
            } else {
                let any: Vec<String> = states
                    .iter()
                    .map(|s| format!("{TAG_STATE} = {}", quote_literal(s)))
                    .collect();
                format!(" AND ({})", any.join(" OR "))
            };
            ReportKind::ALL
                .into_iter()
                .map(|kind| {
                    let filter = if kind == ReportKind::StateExtreme {
                        ""
                    } else {
                        only.as_str()
                    };
                    Statement(
                        format!(
                            "SELECT * FROM {} WHERE {within}{filter}",
                            kind.measurement()
                        ),
                        Some(kind),
                    )
                })
                .collect()
        }
    }
}

/// Every state with raw rows (the tag's values; a small list).
async fn all_states(exports: &Exports) -> Result<Vec<String>, JobError> {
    let never = CancellationToken::new();
    let series = query(
        exports,
        &format!("SHOW TAG VALUES FROM {WEATHER_DATA} WITH KEY = \"{TAG_STATE}\""),
        &never,
    )
    .await?;
    let mut states: Vec<String> = series
        .iter()
        .flat_map(|one| {
            let at = one.column("value");
            one.values
                .iter()
                .filter_map(move |row| at.and_then(|i| row.get(i)?.as_str().map(str::to_owned)))
        })
        .collect();
    states.sort();
    states.dedup();
    Ok(states)
}

/// One query, retried while InfluxDB is unavailable (up to [`CHUNK_PATIENCE`]).
async fn query(
    exports: &Exports,
    statement: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<weathervane_core::influx::Series>, JobError> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match exports.influx.query(statement).await {
            Ok(series) => return Ok(series),
            Err(InfluxError::DatabaseNotFound { .. }) => return Ok(Vec::new()),
            Err(error) if error.is_retriable() && started.elapsed() < CHUNK_PATIENCE => {
                tracing::debug!(%error, "Export query failed; retrying.");
                if !sleep_or_cancel(wait, shutdown).await {
                    return Err(JobError::Failed("the replica stopped".into()));
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(JobError::Failed(format!("InfluxDB query failed: {error}"))),
        }
    }
}

/// Every `period`, removes export files (finished or temp) older than the TTL and job
/// index entries created before it; job hashes expire by themselves.
pub async fn sweep(exports: Arc<Exports>, period: Duration, shutdown: CancellationToken) {
    while sleep_or_cancel(period, &shutdown).await {
        let removed = sweep_files(&exports.dir, exports.ttl, SystemTime::now());
        if removed > 0 {
            tracing::info!(removed, "Removed expired export files.");
        }
        let before = now_ms() - exports.ttl.as_millis() as i64;
        if let Err(error) = exports.store.sweep_index(before).await {
            tracing::warn!(%error, "Could not sweep the export job index.");
        }
    }
}

/// Removes the files of `dir` last modified more than `ttl` before `now`; how many.
pub fn sweep_files(dir: &std::path::Path, ttl: Duration, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_export = path
            .extension()
            .is_some_and(|ext| ext == "csv" || ext == "part");
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > ttl);
        if is_export && old && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_per_state_and_reports_per_measurement() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let rows = statements(What::Rows, hour, &["CA".into(), "NY".into()]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].0,
            "SELECT * FROM weather_data WHERE state = 'CA' AND time >= '2023-09-19T05:00:00Z' AND time < '2023-09-19T06:00:00Z'"
        );
        let reports = statements(What::Reports, hour, &["CA".into()]);
        assert_eq!(reports.len(), 3);
        assert!(
            reports[0].0.ends_with("AND (state = 'CA')"),
            "{}",
            reports[0].0
        );
        assert!(
            !reports[2].0.contains("state ="),
            "state extremes are national"
        );
    }

    #[test]
    fn the_sweep_removes_only_old_export_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.csv", "b.part", "keep.txt"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let ttl = Duration::from_secs(60);
        assert_eq!(sweep_files(dir.path(), ttl, SystemTime::now()), 0);
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(sweep_files(dir.path(), ttl, later), 2);
        assert!(dir.path().join("keep.txt").exists());
    }
}
