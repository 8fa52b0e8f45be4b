//! The streamer: reads weather CSV files, groups their rows by hour and publishes each hour
//! in batches on `weather_channel:data:<batch>:<hour>`, answers resend requests, and keeps
//! every hour until it confirms the processor's report of it (the processor *reports* an
//! hour; the streamer *confirms* it when the reported row count is the one it sent).
//!
//! It does not talk to InfluxDB. It is the one place that holds the input, so it drives
//! recovery end to end: an hour not yet confirmed is announced again until it is, which
//! re-drives whatever was lost downstream (a message published into a gap, a killed
//! ingester or processor).

mod batches;
mod confirmed;
mod inbox;
mod input;
mod pending;
mod progress;
mod uploads;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weathervane_core::admin::{self, AdminArgs, AdminError, RoleAdmin};
use weathervane_core::buffer::{self, BoundedQueue};
use weathervane_core::bus::{
    self, BusError, BusEvent, Outbound, PublishTarget, Publisher, Subscription, Unheard,
};
use weathervane_core::channel::{Channel, Deployment, DeploymentId, Pattern};
use weathervane_core::config::{BufferArgs, RedisArgs};
use weathervane_core::event::{self, Event};
use weathervane_core::generation::GenerationDigest;
use weathervane_core::health::Health;
use weathervane_core::metrics::{self, Counter, Gauge};
use weathervane_core::payload::{self, BatchEnvelope, HourAnnouncement, HourReported};
use weathervane_core::row::{self, CsvError, ReadOptions, TimeColumn};
use weathervane_core::shutdown::sleep_or_cancel;
use weathervane_core::supervise::{Supervisor, TaskError, TaskExit, TaskFailed};
use weathervane_core::{HourKey, WeatherRow};

use crate::confirmed::ConfirmedHours;
use crate::input::{Changed, HourPlan, InputFiles, InputIndex, Rejects};
use crate::pending::{Announcement, Confirmation, PendingHours, Resend};

/// Bytes a buffered row weighs, for turning `--buffer-rows` into a byte cap.
const BYTES_PER_ROW: usize = 400;

#[derive(Clone, Debug, clap::Args)]
pub struct StreamerConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub buffer: BufferArgs,
    #[command(flatten)]
    pub stream: StreamOptions,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What to stream and how fast; separate from the connection settings so `weathervane up`
/// can reuse it.
#[derive(Clone, Debug, clap::Args)]
pub struct StreamOptions {
    /// CSV files to stream (header row first; rows in any order; any number of days).
    /// May be empty when `--inbox` or `--upload-addr` is given.
    #[arg(long, env = "WEATHERVANE_INPUT", value_delimiter = ',', num_args = 0..)]
    pub input: Vec<PathBuf>,
    /// Rows per published batch.
    #[arg(long, env = "WEATHERVANE_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Pause between hours, in seconds: 0 streams a file as fast as the pipeline takes it;
    /// 60 paces it like a live feed, one hour a minute.
    #[arg(long, env = "WEATHERVANE_HOUR_INTERVAL", default_value_t = 0.0)]
    pub hour_interval: f64,
    /// Pause between the batches of an hour, in seconds (0 = publish an hour at once), for
    /// a feed that trickles in like live data.
    #[arg(long, env = "WEATHERVANE_BATCH_INTERVAL", default_value_t = 0.0)]
    pub batch_interval: f64,
    /// Exit 0 once every hour of the input is confirmed, instead of staying to answer
    /// resend requests.
    #[arg(long)]
    pub once: bool,
    /// Most hours streamed but not yet confirmed at once; the streamer stops reading
    /// while this many are in flight.
    #[arg(long, env = "WEATHERVANE_MAX_PENDING_HOURS", default_value_t = 3)]
    pub max_pending_hours: usize,
    /// Largest magnitude a value may have; a row with a larger one is rejected (it is
    /// most likely a unit or decimal-point mistake, and it would swamp the averages).
    /// At most 1e100, so no sum can overflow.
    #[arg(long, env = "WEATHERVANE_MAX_ABS_VALUE", default_value_t = row::DEFAULT_MAX_ABS_VALUE)]
    pub max_abs_value: f64,
    /// Which column gives each row's UTC time: `auto` takes `time_epoch` (WeatherAPI's
    /// UTC seconds) when the file has it, else `time` (read as UTC).
    #[arg(long, env = "WEATHERVANE_TIME_COLUMN", value_enum, default_value_t = TimeColumn::Auto)]
    pub time_column: TimeColumn,
    /// Seconds between announcements of an hour that is not yet confirmed.
    #[arg(long, env = "WEATHERVANE_ANNOUNCE_INTERVAL", default_value_t = 2.0)]
    pub announce_interval: f64,
    /// Where rejected rows are written (file,line,reason); created on the first reject.
    #[arg(long, env = "WEATHERVANE_REJECTS", default_value = "rejects.csv")]
    pub rejects: PathBuf,
    /// Record of confirmed hours, so a restarted streamer skips them. Without it a restart
    /// streams everything again (harmless, only slower).
    #[arg(long, env = "WEATHERVANE_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    #[command(flatten)]
    pub inbox: inbox::InboxArgs,
    #[command(flatten)]
    pub uploads: uploads::UploadArgs,
}

impl StreamOptions {
    /// How the input files are read.
    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            max_abs_value: self.max_abs_value,
            time_column: self.time_column,
            ..ReadOptions::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamerError {
    #[error(transparent)]
    Input(#[from] CsvError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error("{flag} {seconds} must be a finite number of seconds, not negative")]
    Interval { flag: &'static str, seconds: f64 },
    #[error("--max-abs-value {0} must be a positive number (at most 1e100)")]
    MaxAbsValue(f64),
    #[error(
        "hour {hour} of the input reads differently than it was indexed, though no file changed"
    )]
    ReadsDifferently { hour: HourKey },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("nothing to stream: give --input files, --inbox DIR or --upload-addr")]
    NoInput,
    #[error(transparent)]
    Inbox(#[from] inbox::InboxError),
    #[error(transparent)]
    Uploads(#[from] uploads::UploadError),
}

/// What the streaming loop, the listener and the announcer share.
struct StreamerState {
    options: StreamOptions,
    /// Where and as whom messages go, and whose messages are taken.
    deployment: Deployment,
    /// The index of the input as it is now: replaced when a file changes. Each hour is
    /// read through one snapshot, which nothing holds past that hour.
    index: Mutex<Arc<InputIndex>>,
    /// The input files: `--input`'s, then the inbox's as they arrive.
    files: Arc<InputFiles>,
    rejects: Mutex<Rejects>,
    outbound: Arc<BoundedQueue<Outbound>>,
    pending: Mutex<PendingHours>,
    confirmed: Mutex<ConfirmedHours>,
    /// Signalled whenever an hour is confirmed (a pending slot is free).
    hour_confirmed: Notify,
    /// Hours and rows streamed, as bars on a terminal.
    progress: progress::StreamProgress,
    metrics: StreamerMetrics,
}

/// The role's name: its metrics' prefix and its health's.
const ROLE: &str = "streamer";
/// What its readiness checks: its subscription.
pub const CHECKS: &[&str] = &["redis"];

/// The streamer's own counters (see `weathervane_core::metrics::CATALOG`).
struct StreamerMetrics {
    rows_read: Counter,
    rows_rejected: Counter,
    batches_resent: Counter,
    hours_pending: Gauge,
    hours_confirmed: Counter,
    messages_rejected: Counter,
}

impl StreamerMetrics {
    fn new() -> Self {
        let counter = |name| metrics::counter(ROLE, name, &[]);
        Self {
            rows_read: counter("rows_read_total"),
            rows_rejected: counter("rows_rejected_total"),
            batches_resent: counter("batches_resent_total"),
            hours_pending: metrics::gauge(ROLE, "hour_backlog", &[]),
            hours_confirmed: counter("hour_confirmations_total"),
            messages_rejected: counter("messages_rejected_total"),
        }
    }
}

/// Streams the input until shutdown (or, with `--once`, until every hour is confirmed).
///
/// Four supervised tasks: the streaming loop, the listener (resend requests and reports),
/// the announcer and the outbound flusher. Each races the shutdown token as a whole, so
/// no publish, push into a full queue or reconnect to a hung Redis holds the role past
/// shutdown. If one ends early, fails or panics, the role stops with [`TaskFailed`].
pub async fn run(config: StreamerConfig, shutdown: CancellationToken) -> Result<(), StreamerError> {
    let admin = RoleAdmin::serve(ROLE, CHECKS, &config.admin, admin::STREAMER_ADMIN).await?;
    run_with(config, shutdown, admin).await
}

/// [`run`] under `weathervane up`: the shared admin server shows `health`.
pub async fn run_shared(
    config: StreamerConfig,
    shutdown: CancellationToken,
    health: Health,
) -> Result<(), StreamerError> {
    run_with(config, shutdown, RoleAdmin::shared(health)).await
}

async fn run_with(
    config: StreamerConfig,
    shutdown: CancellationToken,
    admin: RoleAdmin,
) -> Result<(), StreamerError> {
    let StreamerConfig {
        redis,
        buffer,
        stream: options,
        admin: _,
    } = config;
    let interval_ok = |s: f64| s.is_finite() && s >= 0.0;
    for (flag, seconds) in [
        ("--hour-interval", options.hour_interval),
        ("--announce-interval", options.announce_interval),
        ("--batch-interval", options.batch_interval),
    ] {
        if !interval_ok(seconds) {
            return Err(StreamerError::Interval { flag, seconds });
        }
    }
    if !(options.max_abs_value > 0.0 && options.max_abs_value <= row::HARD_MAX_ABS_VALUE) {
        return Err(StreamerError::MaxAbsValue(options.max_abs_value));
    }
    if options.input.is_empty()
        && options.inbox.inbox.is_none()
        && options.uploads.upload_addr.is_none()
    {
        return Err(StreamerError::NoInput);
    }
    let inbox = match &options.inbox.inbox {
        Some(dir) => Some(Arc::new(inbox::Inbox::open(
            dir,
            &options.inbox,
            options.read_options(),
            options.rejects.clone(),
        )?)),
        None if options.uploads.upload_addr.is_some() => {
            return Err(uploads::UploadError::NoInbox.into());
        }
        None => None,
    };
    let upload_server = match (&inbox, &options.uploads.upload_addr) {
        (Some(inbox), Some(_)) => Some(
            uploads::UploadServer::bind(&options.uploads, inbox, options.read_options()).await?,
        ),
        _ => None,
    };
    let publisher = Publisher::new(&redis)?.with_metrics(ROLE);
    let subscription = Subscription::new(&redis, &[Pattern::Request, Pattern::Reported])?
        .with_health(admin.health.check("redis"));
    bus::check_certificates(&redis).await?;
    let files = InputFiles::new(options.input.clone());
    if let Some(inbox) = &inbox {
        for path in inbox.files_to_stream() {
            files.push_named(path.clone(), inbox.final_path(&path));
        }
    }
    let state = Arc::new(StreamerState::open(
        options,
        files,
        &buffer,
        redis.deployment(),
    )?);

    let mut supervisor = Supervisor::new();
    let health = admin.supervise(&mut supervisor);
    let token = supervisor.token();
    let target = PublishTarget {
        publisher,
        unheard: Unheard::Retry,
    };
    buffer::supervise_flush(&mut supervisor, state.outbound.clone(), 1, target);
    supervisor.spawn_until_stopped(
        "streamer-listener",
        until_cancelled(
            listen(state.clone(), subscription, token.clone()),
            token.clone(),
        ),
    );
    supervisor.spawn_until_stopped(
        "streamer-announcer",
        until_cancelled(announce(state.clone(), token.clone()), token.clone()),
    );
    if let Some(inbox) = inbox {
        let (state, token) = (state.clone(), token.clone());
        supervisor.spawn_until_stopped(
            "streamer-inbox",
            until_cancelled(
                inbox::watch(inbox, state, health.check("inbox"), token.clone()),
                token,
            ),
        );
    }
    if let Some(server) = upload_server {
        server.supervise(&mut supervisor);
    }
    supervisor.spawn("streamer-stream", stream(state, token));
    supervisor.run(&shutdown).await?;
    Ok(())
}

/// Runs `task` until it ends or `shutdown` is cancelled, whichever comes first.
async fn until_cancelled(task: impl Future<Output = ()>, shutdown: CancellationToken) {
    shutdown.run_until_cancelled(task).await;
}

impl StreamerState {
    /// Loads the record of confirmed hours, indexes the input and sizes the outbound queue.
    fn open(
        options: StreamOptions,
        files: InputFiles,
        buffer: &BufferArgs,
        deployment: Deployment,
    ) -> Result<Self, StreamerError> {
        let confirmed = ConfirmedHours::load(options.state_file.clone()).map_err(|source| {
            StreamerError::State {
                path: options.state_file.clone().unwrap_or_default(),
                source,
            }
        })?;
        let mut rejects = Rejects::new(options.rejects.clone());
        let files = Arc::new(files);
        let index = InputIndex::build_files(
            files.clone(),
            &options.read_options(),
            options.batch_size,
            &mut rejects,
        )?;
        tracing::info!(rejects_file = %rejects.path().display(), "Rejected rows go to the rejects file.");
        let metrics = StreamerMetrics::new();
        metrics.rows_rejected.absolute(rejects.count());
        event::emit(Event::InputIndexed {
            files: index.file_count(),
            rows: index.row_count() as u64,
            hours: index.hours().count(),
            rejected: rejects.count(),
            already_confirmed: index
                .hours()
                .filter(|hour| {
                    index
                        .generation(*hour)
                        .is_some_and(|generation| confirmed.is_confirmed(*hour, generation))
                })
                .count(),
        });
        let buffer_rows =
            buffer.rows_at_least(options.batch_size as usize, "one batch (--batch-size)");
        let announce_every = Duration::from_secs_f64(options.announce_interval.max(0.05));
        Ok(Self {
            outbound: Arc::new(BoundedQueue::new(
                "streamer-outbound",
                buffer_rows.div_ceil(options.batch_size as usize) + 64,
                buffer_rows * BYTES_PER_ROW,
            )),
            rejects: Mutex::new(rejects),
            pending: Mutex::new(PendingHours::new(options.max_pending_hours, announce_every)),
            confirmed: Mutex::new(confirmed),
            hour_confirmed: Notify::new(),
            metrics,
            index: Mutex::new(Arc::new(index)),
            files,
            options,
            deployment,
            progress: progress::StreamProgress::new(),
        })
    }
}

impl StreamerState {
    fn index(&self) -> Arc<InputIndex> {
        self.index.lock().unwrap().clone()
    }

    /// Sets the pending-hours gauge after `pending` changed.
    fn count_pending(&self) {
        let pending = self.pending.lock().unwrap().len();
        self.metrics.hours_pending.set(pending as f64);
    }
}

/// `spawn_blocking` in the caller's span (the role's), so what the closure logs says whose
/// it is.
fn in_span_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
}

/// How often a streamer that has streamed every hour looks at its input files again.
const INPUT_POLL: Duration = Duration::from_secs(2);

/// The streaming task: streams every hour; then, with `--once`, finishes the role's work
/// once every hour is confirmed, and otherwise stays until shutdown (the listener and the
/// announcer keep serving) and streams again whatever hours an edit of the input changes.
/// An unreadable or vanished input is the task's error.
async fn stream(
    state: Arc<StreamerState>,
    shutdown: CancellationToken,
) -> Result<TaskExit, TaskError> {
    let work = async {
        loop {
            stream_all(&state).await?;
            if state.options.once {
                all_confirmed(&state).await;
                if !reindex_if_changed(&state).await? {
                    break;
                }
            } else {
                while !reindex_if_changed(&state).await? {
                    tokio::time::sleep(INPUT_POLL).await;
                }
            }
        }
        event::emit(Event::AllHoursConfirmed {
            rows: state.index().row_count() as u64,
        });
        Ok::<_, StreamerError>(())
    };
    match shutdown.run_until_cancelled(work).await {
        None => Ok(TaskExit::Stopped),
        Some(Ok(())) => Ok(TaskExit::Finished),
        Some(Err(error)) => Err(error.into()),
    }
}

/// Whether `hour` needs streaming: neither confirmed nor pending with the generation
/// it has in `index`.
fn to_stream(state: &StreamerState, index: &InputIndex, hour: HourKey) -> bool {
    let Some(generation) = index.generation(hour) else {
        return false;
    };
    !state
        .confirmed
        .lock()
        .unwrap()
        .is_confirmed(hour, generation)
        && !state.pending.lock().unwrap().holds(hour, generation)
}

/// Reads and queues every hour not yet confirmed, in time order, keeping at most
/// `--max-pending-hours` unconfirmed hours in flight. Before reading an hour it checks
/// the input files; if one changed, it indexes the input again and goes on from the
/// first hour not confirmed with its current generation.
async fn stream_all(state: &Arc<StreamerState>) -> Result<(), StreamerError> {
    use std::ops::Bound;

    let interval = Duration::from_secs_f64(state.options.hour_interval);
    show_progress(state);
    // Every hour up to this one is streamed or confirmed, by the current index.
    let mut done: Option<HourKey> = None;
    loop {
        let next = {
            let index = state.index();
            let after = done.map_or(Bound::Unbounded, Bound::Excluded);
            index
                .hours_in((after, Bound::Unbounded))
                .find(|hour| to_stream(state, &index, *hour))
        };
        let Some(hour) = next else {
            return Ok(());
        };
        loop {
            let confirmed = state.hour_confirmed.notified();
            if state.pending.lock().unwrap().has_room() {
                break;
            }
            confirmed.await;
        }
        if reindex_if_changed(state).await? {
            done = None;
            show_progress(state);
            continue;
        }
        match stream_hour(state, hour).await? {
            Streamed::Queued => {}
            Streamed::Empty => {
                done = Some(hour);
                continue;
            }
            Streamed::Stale(change) => {
                reindex(state, change).await?;
                done = None;
                show_progress(state);
                continue;
            }
        }
        done = Some(hour);
        let later = state
            .index()
            .hours_in((Bound::Excluded(hour), Bound::Unbounded))
            .next()
            .is_some();
        if later && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
}

/// Counts the hours and rows of the current index on the progress bars, those not to be
/// streamed (confirmed, or pending with their current content) as done.
fn show_progress(state: &StreamerState) {
    let index = state.index();
    state.progress.indexed(index.hours().map(|hour| {
        let rows = index.plan(hour).map_or(0, |plan| plan.rows);
        (rows, to_stream(state, &index, hour))
    }));
}

/// If an input file changed since it was indexed, indexes the input again (see
/// [`reindex`]) and returns true.
async fn reindex_if_changed(state: &Arc<StreamerState>) -> Result<bool, StreamerError> {
    let index = state.index();
    let changed = in_span_blocking(move || index.changed())
        .await
        .expect("looking at the input does not panic")?;
    match changed {
        Some(change) => {
            reindex(state, change).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Indexes the input again after `change`, and drops the pending hours whose generation
/// changed (their reports can no longer confirm them; they are streamed again). Rejects
/// found again are not written twice.
async fn reindex(state: &Arc<StreamerState>, change: Changed) -> Result<(), StreamerError> {
    let state = state.clone();
    in_span_blocking(move || {
        let old = state.index();
        let options = &state.options;
        let index = InputIndex::build_files(
            state.files.clone(),
            &options.read_options(),
            options.batch_size,
            &mut state.rejects.lock().unwrap(),
        )?;
        let changed_hours = old
            .hours()
            .chain(index.hours())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|hour| old.generation(*hour) != index.generation(*hour))
            .count();
        let dropped = state
            .pending
            .lock()
            .unwrap()
            .retain_current(|hour| index.generation(hour));
        tracing::info!(
            file = %change.path.display(),
            change = %change.what,
            hours = index.hours().count(),
            changed_hours,
            dropped_pending = dropped.len(),
            "An input file changed; indexed the input again, streaming what changed."
        );
        *state.index.lock().unwrap() = Arc::new(index);
        let rejected = state.rejects.lock().unwrap().count();
        state.metrics.rows_rejected.absolute(rejected);
        state.count_pending();
        state.hour_confirmed.notify_waiters();
        Ok(())
    })
    .await
    .expect("indexing the input does not panic")
}

/// What [`stream_hour`] did.
enum Streamed {
    /// The hour's batches and announcement are queued.
    Queued,
    /// The hour has no rows left to stream (every row rejected).
    Empty,
    /// The input changed after it was last checked: nothing was queued.
    Stale(Changed),
}

/// Marks `hour` pending, then reads, encodes and queues its batches one at a time (so
/// the streamer holds at most one batch of it, beyond what the outbound queue holds),
/// then its announcement, once the rows read digest to the generation indexed.
async fn stream_hour(state: &Arc<StreamerState>, hour: HourKey) -> Result<Streamed, StreamerError> {
    let batch_interval = Duration::from_secs_f64(state.options.batch_interval);
    // One snapshot for the whole hour: its batch ranges and row locations belong together.
    let index = state.index();
    let Some(plan) = index.plan(hour) else {
        return Ok(Streamed::Empty);
    };
    state.pending.lock().unwrap().start(
        hour,
        plan.batches,
        plan.rows,
        plan.generation,
        Instant::now(),
    );
    state.count_pending();
    let mut digest = GenerationDigest::new(state.options.batch_size);
    for batch in 0..plan.batches {
        let id = state.deployment.id.clone();
        let payload = match read_batch(index.clone(), hour, batch, plan, id, false).await? {
            Ok(BatchRead { rows, payload }) => {
                rows.iter().for_each(|row| digest.add(row));
                (rows.len() as u64, payload)
            }
            Err(change) => {
                state.pending.lock().unwrap().forget(hour);
                state.count_pending();
                return Ok(Streamed::Stale(change));
            }
        };
        let (rows, payload) = payload;
        state.metrics.rows_read.increment(rows);
        let channel = Channel::Data { batch, hour }.name(&state.deployment.namespace);
        let message = Outbound::new(channel, payload).batch_of(rows);
        let bytes = message.bytes();
        state.outbound.push(message, bytes).await;
        if !batch_interval.is_zero() && batch + 1 < plan.batches {
            tokio::time::sleep(batch_interval).await;
        }
    }
    if digest.finish() != plan.generation {
        state.pending.lock().unwrap().forget(hour);
        state.count_pending();
        return match index.changed()? {
            // The batches already queued carry a generation that is never announced; the
            // hour's new content replaces them downstream.
            Some(change) => Ok(Streamed::Stale(change)),
            // Changed and put back within the modification time's resolution, or a bug:
            // fail rather than index again and again; a restart indexes anew.
            None => Err(StreamerError::ReadsDifferently { hour }),
        };
    }
    let announcement = announcement(
        &state.deployment,
        Announcement {
            hour,
            batches: plan.batches,
            rows: plan.rows,
            generation: plan.generation,
        },
    );
    let bytes = announcement.bytes();
    state.outbound.push(announcement, bytes).await;
    state.pending.lock().unwrap().queued(hour);
    event::emit(Event::HourQueued {
        hour,
        batches: plan.batches,
        rows: plan.rows,
    });
    state.progress.queued(plan.rows);
    Ok(Streamed::Queued)
}

fn announcement(
    deployment: &Deployment,
    Announcement {
        hour,
        batches,
        rows,
        generation,
    }: Announcement,
) -> Outbound {
    Outbound::new(
        Channel::Announce { hour }.name(&deployment.namespace),
        payload::encode(
            &deployment.id,
            &HourAnnouncement {
                batches,
                rows,
                generation,
            },
        ),
    )
}

/// One batch read from the input: its rows, and the payload that carries them.
struct BatchRead {
    rows: Vec<WeatherRow>,
    payload: Arc<[u8]>,
}

/// Reads `batch` of `hour` (as `plan`ned by `index`) from the input and encodes it, off
/// the async threads (it is file reading and parsing). With `check_files`, also looks at
/// the input files afterwards (a resend has no digest of the hour to check against).
/// `Err` with what changed if the input is not what was indexed any more: nothing read
/// is used.
async fn read_batch(
    index: Arc<InputIndex>,
    hour: HourKey,
    batch: u32,
    plan: HourPlan,
    deployment: DeploymentId,
    check_files: bool,
) -> Result<Result<BatchRead, Changed>, StreamerError> {
    in_span_blocking(move || {
        let rows = match index.read_batch(hour, batch) {
            Ok(rows) if !check_files => rows,
            Ok(rows) => match index.changed()? {
                Some(change) => return Ok(Err(change)),
                None => rows,
            },
            Err(error) => {
                return match index.changed()? {
                    Some(change) => Ok(Err(change)),
                    None => Err(error.into()),
                };
            }
        };
        let payload = BatchEnvelope::encode_rows(
            &deployment,
            hour,
            batch,
            plan.batches,
            plan.generation,
            &rows,
        );
        Ok(Ok(BatchRead { rows, payload }))
    })
    .await
    .expect("reading a batch does not panic")
}

async fn all_confirmed(state: &StreamerState) {
    loop {
        let confirmed = state.hour_confirmed.notified();
        if state.pending.lock().unwrap().is_empty() {
            return;
        }
        confirmed.await;
    }
}

/// Handles resend requests and the processor's reports (which confirm hours).
async fn listen(
    state: Arc<StreamerState>,
    mut subscription: Subscription,
    shutdown: CancellationToken,
) {
    let mut rejected = 0;
    while let Some(event) = subscription.next(&shutdown).await {
        let (channel, body) = match event {
            BusEvent::Subscribed => {
                // Confirmations may have been published while we were away: ask again.
                state.pending.lock().unwrap().on_resubscribed();
                continue;
            }
            BusEvent::Message { channel, payload } => (channel, payload),
        };
        let Deployment { namespace, id } = &state.deployment;
        let reason = match Channel::parse(&channel, namespace) {
            Ok(Channel::Request { batch, hour }) => {
                match payload::decode::<()>(&channel, &body, id) {
                    Ok(()) => {
                        resend(&state, hour, batch).await;
                        continue;
                    }
                    Err(error) => error.to_string(),
                }
            }
            Ok(Channel::Reported { hour }) => {
                match payload::decode::<HourReported>(&channel, &body, id) {
                    Ok(reported) => {
                        confirm(&state, hour, reported);
                        continue;
                    }
                    Err(error) => error.to_string(),
                }
            }
            Ok(_) => continue,
            Err(error) => error.to_string(),
        };
        rejected += 1;
        state.metrics.messages_rejected.increment(1);
        event::emit(Event::MessageRejected {
            channel,
            reason,
            rejected,
        });
    }
}

/// Answers a request for `batch` of `hour`: reads the batch from the input again, if the
/// hour is pending, the batch exists, it was not resent within the last second, and the
/// input still holds the generation streamed.
async fn resend(state: &StreamerState, hour: HourKey, batch: u32) {
    let resend = state
        .pending
        .lock()
        .unwrap()
        .resend(hour, batch, Instant::now());
    let generation = match resend {
        Resend::Send { generation } => generation,
        Resend::NoSuchBatch { batches } => {
            tracing::warn!(hour = %hour, batch, batches, "Resend requested for a batch that does not exist; ignored.");
            return;
        }
        Resend::TooSoon | Resend::NotPending => return,
    };
    let index = state.index();
    let Some(plan) = index
        .plan(hour)
        .filter(|plan| plan.generation == generation)
    else {
        // The input changed: the hour is streamed again with its new content.
        return;
    };
    let id = state.deployment.id.clone();
    let (rows, payload) = match read_batch(index, hour, batch, plan, id, true).await {
        Ok(Ok(read)) => (read.rows.len() as u64, read.payload),
        Ok(Err(change)) => {
            tracing::info!(hour = %hour, batch, file = %change.path.display(), "Resend skipped: the input changed; the hour will be streamed again.");
            return;
        }
        Err(error) => {
            tracing::warn!(hour = %hour, batch, %error, "Cannot read the batch to resend; ignored.");
            return;
        }
    };
    tracing::info!(hour = %hour, batch, "Resending batch on request.");
    state.metrics.rows_read.increment(rows);
    state.metrics.batches_resent.increment(1);
    let channel = Channel::Data { batch, hour }.name(&state.deployment.namespace);
    let message = Outbound::new(channel, payload).batch_of(rows);
    let bytes = message.bytes();
    state.outbound.push(message, bytes).await;
}

fn confirm(state: &StreamerState, hour: HourKey, reported: HourReported) {
    let confirmation = state.pending.lock().unwrap().on_reported(
        hour,
        reported.rows + reported.refused,
        reported.generation,
    );
    let rows = match confirmation {
        Confirmation::Confirmed { rows } => rows,
        Confirmation::Mismatch { expected } => {
            tracing::warn!(hour = %hour, reported = reported.rows, expected, "Reported row count differs from the input; announcing the hour again.");
            return;
        }
        Confirmation::NotPending => return,
    };
    let recorded = state
        .confirmed
        .lock()
        .unwrap()
        .record(hour, reported.generation);
    if let Err(error) = recorded {
        tracing::error!(hour = %hour, %error, "Cannot record the confirmed hour; a restart will stream it again.");
    }
    event::emit(Event::HourConfirmed { hour, rows });
    state.metrics.hours_confirmed.increment(1);
    state.count_pending();
    state.hour_confirmed.notify_waiters();
}

/// Announces every unconfirmed hour whose batches have all been queued, again each
/// `--announce-interval`, until it is confirmed.
async fn announce(state: Arc<StreamerState>, shutdown: CancellationToken) {
    while sleep_or_cancel(Duration::from_millis(100), &shutdown).await {
        let due = state
            .pending
            .lock()
            .unwrap()
            .take_due(Instant::now(), state.outbound.is_empty());
        for message in due
            .into_iter()
            .map(|due| announcement(&state.deployment, due))
        {
            tracing::debug!(channel = %message.channel, "Announcing unconfirmed hour.");
            let bytes = message.bytes();
            state.outbound.push(message, bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_knows_each_hours_generation_as_reading_its_batches_computes_it() {
        use std::io::Write;

        const HEADER: &str = "zip_code,state,time,temp_c,pressure_mb,humidity,precip_mm";
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: &[&str]| {
            let path = dir.path().join(name);
            let mut file = std::fs::File::create(&path).unwrap();
            for line in lines {
                writeln!(file, "{line}").unwrap();
            }
            path
        };
        let a = write(
            "a.csv",
            &[
                HEADER,
                "1,CA,2023-09-19 06:00,1,1000,50,0",
                "2,CA,2023-09-19 05:00,2,1000,50,0",
                "3,CA,bad,2,1000,50,0",
                // A duplicate within a file, and one of a row in the other file.
                "2,CA,2023-09-19 05:00,7,1000,50,0",
                "4,NY,2023-09-19 05:30,5,1000,50,0",
            ],
        );
        let b = write(
            "b.csv",
            &[
                "state,zip_code,time,temp_c,pressure_mb,humidity,precip_mm",
                "NY,4,2023-09-19 05:00,3,1000,50,0",
                "CA,1,2023-09-19 06:00,9,1000,50,0",
                "CA,5,2023-09-19 06:10,9,1000,50,0",
            ],
        );
        let paths = [a, b];
        let mut rejects = Rejects::new(dir.path().join("rejects.csv"));
        let max = &ReadOptions::default();
        let index = InputIndex::build(&paths, max, 7, &mut rejects).unwrap();
        let hours: Vec<HourKey> = index.hours().collect();
        assert_eq!(hours.len(), 2);
        for hour in hours {
            let plan = index.plan(hour).unwrap();
            let mut digest = GenerationDigest::new(7);
            let mut zips = Vec::new();
            for batch in 0..plan.batches {
                for row in index.read_batch(hour, batch).unwrap() {
                    digest.add(&row);
                    zips.push((row.zip_code, row.time));
                }
            }
            assert_eq!(plan.generation, digest.finish(), "{hour}");
            assert_eq!(index.generation(hour), Some(plan.generation));
            assert_eq!(plan.rows, zips.len() as u64);
            let unique: std::collections::HashSet<_> = zips.iter().collect();
            assert_eq!(
                unique.len(),
                zips.len(),
                "{hour}: a station and time once: {zips:?}"
            );
        }
        assert_eq!(rejects.count(), 3, "the bad row and both duplicates");
        let other = InputIndex::build(&paths, max, 8, &mut rejects).unwrap();
        let five = "2023-09-19T05".parse().unwrap();
        assert_ne!(
            other.generation(five),
            index.generation(five),
            "the batch size is part of the generation"
        );
        assert_eq!(index.generation("2023-09-19T07".parse().unwrap()), None);
    }
}
