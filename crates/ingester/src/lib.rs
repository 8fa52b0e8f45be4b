//! The ingester: subscribes to `weather_channel:data:*`, checks each batch, writes its rows
//! to InfluxDB's `weather_data` through a push-back buffer, asks the streamer for batches
//! that went missing, and publishes `weather_channel:processor:<hour>` once every batch of
//! an hour is stored.
//!
//! It computes no reports and keeps nothing on disk but the dead-letter file: after a
//! restart it relearns hours from the streamer's announcements, asks for their batches
//! again and rewrites them, which is harmless because writes are idempotent.
//!
//! No batch is ever set aside whole: an outage, a 408, 429 or 5xx, or refused credentials
//! (401, 403) are retried, a 413 splits the request, and a refusal (400, partial write,
//! any other 4xx) is bisected down to the points InfluxDB refuses, which go to the
//! dead-letter file while the rest is stored ([`split`]). The hour then completes with the
//! count of the rows stored.

mod dead_letters;
mod ledger;
mod rewrite;
mod split;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weathervane_core::admin::{self, AdminArgs, AdminError, RoleAdmin};
use weathervane_core::buffer::{self, BoundedQueue, Delivery, Target};
use weathervane_core::bus::{
    self, BusError, BusEvent, Outbound, PublishTarget, Publisher, Subscription, Unheard,
};
use weathervane_core::channel::{Channel, Deployment, Pattern};
use weathervane_core::config::{BufferArgs, InfluxArgs, RedisArgs};
use weathervane_core::event::{self, Event};
use weathervane_core::health::Health;
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::metrics::{self, Counter};
use weathervane_core::payload::{self, BatchEnvelope, HourAnnouncement, HourStored};
use weathervane_core::supervise::{Supervisor, TaskFailed};
use weathervane_core::{Generation, HourKey, schema};

use crate::dead_letters::{DeadLetter, DeadLetters};
use crate::ledger::{AnnounceVerdict, HourRows, Ledger};
use crate::rewrite::Rewrites;
use crate::split::LineId;

/// The dead-letter file when neither `--dead-letters` nor `WEATHERVANE_DEAD_LETTERS` says.
pub const DEFAULT_DEAD_LETTERS: &str = "dead-letters.csv";

/// A write of a few thousand rows takes well under a second; allow for a busy server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Line protocol bytes a row weighs, for turning `--buffer-rows` into a byte cap.
const BYTES_PER_ROW: usize = 500;

#[derive(Clone, Debug, clap::Args)]
pub struct IngesterConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub influx: InfluxArgs,
    #[command(flatten)]
    pub buffer: BufferArgs,
    /// Batches combined into one InfluxDB write (InfluxDB prefers a few thousand points
    /// per request).
    #[arg(long, env = "WEATHERVANE_WRITE_BATCHES", default_value_t = 10)]
    pub write_batches: usize,
    /// Writes in flight at once. InfluxDB 1.x on two cores takes about half again as many
    /// rows per second from three writers as from one (see BENCHMARKS.md); batches are
    /// independent points, so their writes may overlap.
    #[arg(long, env = "WEATHERVANE_WRITERS", default_value_t = 3)]
    pub writers: usize,
    /// Where points InfluxDB refuses for good are recorded (CSV
    /// `hour,zip_code,time,reason`); created on first use, appended to, never truncated.
    #[arg(long, env = "WEATHERVANE_DEAD_LETTERS", default_value = DEFAULT_DEAD_LETTERS)]
    pub dead_letters: PathBuf,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum IngesterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot read the dead-letter file {path}: {source}")]
    DeadLetters {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One received batch, as line protocol, waiting to be written.
#[derive(Clone)]
struct WriteChunk {
    hour: HourKey,
    batch: u32,
    generation: Generation,
    lines: Vec<u8>,
    /// Where each row's line ends in `lines`, so a request can be split down to a line.
    ends: Vec<usize>,
    /// Each row's zip code and time (RFC 3339), for its dead letter if it is refused.
    keys: Vec<(String, String)>,
}

impl WriteChunk {
    fn line(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.lines[start..self.ends[index]]
    }
}

struct IngesterState {
    /// Where and as whom messages go, and whose messages are taken.
    deployment: Deployment,
    ledger: Mutex<Ledger>,
    /// Old rows of hours whose content changed are deleted before new ones are written.
    rewrites: Rewrites,
    writes: Arc<BoundedQueue<WriteChunk>>,
    requests: Arc<BoundedQueue<Outbound>>,
    notices: Arc<BoundedQueue<Outbound>>,
    rejected_payloads: AtomicU64,
    dead_letters: Mutex<DeadLetters>,
    /// InfluxDB is refusing our credentials (logged once per such outage).
    credentials_refused: AtomicBool,
    metrics: IngesterMetrics,
}

/// The role's name: its metrics' prefix and its health's.
const ROLE: &str = "ingester";
/// What its readiness checks: its subscription, and InfluxDB answering.
pub const CHECKS: &[&str] = &["redis", "influxdb"];

/// The ingester's own counters (see `weathervane_core::metrics::CATALOG`).
struct IngesterMetrics {
    rows_received: Counter,
    /// Rows InfluxDB acknowledged: counted only after a write's 204.
    rows_stored: Counter,
    rows_dead_lettered: Counter,
    batches_requested: Counter,
    hours_stored: Counter,
    messages_rejected: Counter,
}

impl IngesterMetrics {
    fn new() -> Self {
        let counter = |name| metrics::counter(ROLE, name, &[]);
        Self {
            rows_received: counter("rows_received_total"),
            rows_stored: counter("rows_stored_total"),
            rows_dead_lettered: counter("rows_dead_lettered_total"),
            batches_requested: counter("batches_requested_total"),
            hours_stored: counter("hour_completions_total"),
            messages_rejected: counter("messages_rejected_total"),
        }
    }
}

impl IngesterState {
    async fn request(&self, hour: HourKey, batches: Vec<u32>) {
        if batches.is_empty() {
            return;
        }
        event::emit(Event::BatchesRequested {
            hour,
            batches: batches.clone(),
        });
        self.metrics
            .batches_requested
            .increment(batches.len() as u64);
        for batch in batches {
            let channel = Channel::Request { batch, hour }.name(&self.deployment.namespace);
            let message = Outbound::new(channel, payload::encode(&self.deployment.id, &()));
            let bytes = message.bytes();
            self.requests.push(message, bytes).await;
        }
    }

    async fn notify_stored(&self, hour: HourKey, rows: HourRows, generation: Generation) {
        let message = Outbound::new(
            Channel::Stored { hour }.name(&self.deployment.namespace),
            payload::encode(
                &self.deployment.id,
                &HourStored {
                    rows: rows.stored,
                    refused: rows.refused,
                    generation,
                },
            ),
        );
        let bytes = message.bytes();
        self.notices.push(message, bytes).await;
    }
}

pub async fn run(config: IngesterConfig, shutdown: CancellationToken) -> Result<(), IngesterError> {
    let admin = RoleAdmin::serve(ROLE, CHECKS, &config.admin, admin::INGESTER_ADMIN).await?;
    run_with(config, shutdown, admin).await
}

/// [`run`] under `weathervane up`: the shared admin server shows `health`.
pub async fn run_shared(
    config: IngesterConfig,
    shutdown: CancellationToken,
    health: Health,
) -> Result<(), IngesterError> {
    run_with(config, shutdown, RoleAdmin::shared(health)).await
}

async fn run_with(
    config: IngesterConfig,
    shutdown: CancellationToken,
    admin: RoleAdmin,
) -> Result<(), IngesterError> {
    let influx = InfluxClient::new(&config.influx, WRITE_TIMEOUT)?.with_metrics(ROLE);
    let dead_letters =
        DeadLetters::open(&config.dead_letters).map_err(|source| IngesterError::DeadLetters {
            path: config.dead_letters.clone(),
            source,
        })?;
    tracing::info!(dead_letters = %dead_letters.path().display(), "Points InfluxDB refuses go to the dead-letter file.");
    let subscription = Subscription::new(&config.redis, &[Pattern::Data, Pattern::Announce])?
        .with_health(admin.health.check("redis"));
    bus::check_certificates(&config.redis).await?;
    influx.check_certificates().await?;
    let request_target = PublishTarget {
        publisher: Publisher::new(&config.redis)?.with_metrics(ROLE),
        unheard: Unheard::Retry,
    };
    let notice_target = PublishTarget {
        publisher: Publisher::new(&config.redis)?.with_metrics(ROLE),
        unheard: Unheard::Retry,
    };
    let rows = config
        .buffer
        .rows_at_least(1000, "the ingester's least useful write queue");
    let state = Arc::new(IngesterState {
        deployment: config.redis.deployment(),
        ledger: Mutex::new(Ledger::default()),
        rewrites: Rewrites::default(),
        writes: Arc::new(BoundedQueue::new(
            "ingester-writes",
            rows / 50,
            rows * BYTES_PER_ROW,
        )),
        requests: Arc::new(BoundedQueue::new("ingester-requests", 100_000, 4 << 20)),
        notices: Arc::new(BoundedQueue::new("ingester-notices", 10_000, 1 << 20)),
        rejected_payloads: AtomicU64::new(0),
        dead_letters: Mutex::new(dead_letters),
        credentials_refused: AtomicBool::new(false),
        metrics: IngesterMetrics::new(),
    });
    let mut supervisor = Supervisor::new();
    let health = admin.supervise(&mut supervisor);
    admin::supervise_influx_probe(&mut supervisor, influx.clone(), &health);
    let write_batches = config.write_batches.max(1);
    buffer::supervise_flush(&mut supervisor, state.requests.clone(), 1, request_target);
    buffer::supervise_flush(&mut supervisor, state.notices.clone(), 1, notice_target);
    for _ in 0..config.writers.max(1) {
        let target = InfluxTarget {
            influx: influx.clone(),
            state: state.clone(),
        };
        buffer::supervise_flush(&mut supervisor, state.writes.clone(), write_batches, target);
    }
    let token = supervisor.token();
    supervisor.spawn_until_stopped("ingester-subscription", listen(state, subscription, token));
    supervisor.run(&shutdown).await?;
    Ok(())
}

/// Takes batches and announcements off the bus until shutdown. Handling a message may wait
/// on a full buffer (push-back), so it races shutdown too.
async fn listen(
    state: Arc<IngesterState>,
    mut subscription: Subscription,
    shutdown: CancellationToken,
) {
    while let Some(event) = subscription.next(&shutdown).await {
        let handled = async {
            match event {
                BusEvent::Subscribed => {
                    // Batches published while we were away are gone: ask for them now.
                    let missing = state.ledger.lock().unwrap().on_resubscribed(Instant::now());
                    for (hour, batches) in missing {
                        state.request(hour, batches).await;
                    }
                }
                BusEvent::Message { channel, payload } => {
                    if let Err(error) = handle(&state, &channel, &payload).await {
                        let rejected = state.rejected_payloads.fetch_add(1, Ordering::Relaxed) + 1;
                        state.metrics.messages_rejected.increment(1);
                        event::emit(Event::MessageRejected {
                            channel,
                            reason: error.to_string(),
                            rejected,
                        });
                    }
                }
            }
        };
        tokio::select! {
            _ = handled => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn handle(
    state: &IngesterState,
    channel: &str,
    body: &[u8],
) -> Result<(), Box<dyn std::error::Error>> {
    let Deployment { namespace, id } = &state.deployment;
    match Channel::parse(channel, namespace)? {
        Channel::Data { batch, hour } => {
            let envelope = BatchEnvelope::decode_for(channel, batch, hour, body, id)?;
            let verdict = state.ledger.lock().unwrap().on_batch(
                hour,
                batch,
                envelope.batches,
                envelope.generation,
                Instant::now(),
            );
            if verdict.store {
                let rows = envelope.rows.len() as u64;
                let mut lines = Vec::with_capacity(envelope.rows.len() * BYTES_PER_ROW);
                let mut ends = Vec::with_capacity(envelope.rows.len());
                let mut keys = Vec::with_capacity(envelope.rows.len());
                for row in &envelope.rows {
                    lines = schema::encode_row(lines, row);
                    ends.push(lines.len());
                    keys.push((
                        row.zip_code.clone(),
                        row.time_utc()
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ));
                }
                event::emit(Event::BatchReceived { hour, batch, rows });
                state.metrics.rows_received.increment(rows);
                let bytes = lines.len();
                let chunk = WriteChunk {
                    hour,
                    batch,
                    generation: envelope.generation,
                    lines,
                    ends,
                    keys,
                };
                state.writes.push(chunk, bytes).await;
            }
            state.request(hour, verdict.request).await;
        }
        Channel::Announce { hour } => {
            let announcement = HourAnnouncement::decode_for(channel, body, id)?;
            let verdict = state.ledger.lock().unwrap().on_announce(
                hour,
                announcement.batches,
                announcement.generation,
                Instant::now(),
            );
            match verdict {
                AnnounceVerdict::Request(batches) => state.request(hour, batches).await,
                AnnounceVerdict::Notify(rows) => {
                    state
                        .notify_stored(hour, rows, announcement.generation)
                        .await
                }
                AnnounceVerdict::Wait => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Writes chunks to InfluxDB and records what got stored and what InfluxDB refused.
struct InfluxTarget {
    influx: InfluxClient,
    state: Arc<IngesterState>,
}

impl InfluxTarget {
    /// Records a chunk as written with `refused` of its points refused; notifies the
    /// processor if that completed the hour.
    async fn stored(&self, chunk: &WriteChunk, refused: u64) {
        let rows = chunk.ends.len() as u64 - refused;
        self.state.metrics.rows_stored.increment(rows);
        self.state.metrics.rows_dead_lettered.increment(refused);
        let completed = self.state.ledger.lock().unwrap().on_stored(
            chunk.hour,
            chunk.batch,
            rows,
            refused,
            chunk.generation,
        );
        if let Some(rows) = completed {
            event::emit(Event::HourStored {
                hour: chunk.hour,
                rows: rows.stored,
            });
            self.state.metrics.hours_stored.increment(1);
            self.state
                .notify_stored(chunk.hour, rows, chunk.generation)
                .await;
        }
    }

    /// The whole request is to be tried again later; says so loudly, once, when it is
    /// our credentials that InfluxDB refuses (an operator must act; nothing is dropped).
    fn retry(&self, error: InfluxError) -> Delivery {
        if let InfluxError::Unauthorized { url, status, body } = &error
            && !self.state.credentials_refused.swap(true, Ordering::Relaxed)
        {
            tracing::error!(%url, status, message = %body, "InfluxDB refuses our credentials; check INFLUXDB_USER, INFLUXDB_PASSWORD or INFLUXDB_TOKEN. Retrying until it accepts them; nothing is dropped.");
        }
        match error.retry_after() {
            Some(at_least) => Delivery::RetryAfter(error.to_string(), at_least),
            None => Delivery::Retry(error.to_string()),
        }
    }
}

/// The request body of the lines `piece` of `chunks`.
fn body_of(chunks: &[WriteChunk], piece: &[LineId]) -> Vec<u8> {
    let mut body = Vec::new();
    for &(chunk, line) in piece {
        body.extend_from_slice(chunks[chunk].line(line));
    }
    body
}

impl Target<WriteChunk> for InfluxTarget {
    async fn deliver(&mut self, queued: &[WriteChunk]) -> Delivery {
        // A chunk of an hour's older content (the input changed while it waited) is
        // dropped: it must neither be written over the new content nor make the hour ready
        // for its generation again (that would delete the new rows).
        let followed = |c: &WriteChunk| {
            self.state.ledger.lock().unwrap().generation(c.hour) == Some(c.generation)
        };
        // The first write of an hour's generation deletes the hour's old rows if InfluxDB
        // holds another generation of it (see `rewrite`).
        for chunk in queued.iter().filter(|c| followed(c)) {
            let prepared = self
                .state
                .rewrites
                .prepare(&self.influx, chunk.hour, chunk.generation, || {
                    followed(chunk)
                })
                .await;
            if let Err(error) = prepared {
                return self.retry(error);
            }
        }
        let rewrites = &self.state.rewrites;
        let _writing = rewrites.writing().await;
        let current = |c: &WriteChunk| rewrites.is_current(c.hour, c.generation) && followed(c);
        if queued.iter().all(current) {
            return self.write(queued).await;
        }
        let current: Vec<WriteChunk> = queued.iter().filter(|c| current(c)).cloned().collect();
        if current.is_empty() {
            return Delivery::Done;
        }
        self.write(&current).await
    }
}

impl InfluxTarget {
    /// Writes `chunks`, splitting the request down to the points InfluxDB refuses.
    async fn write(&self, chunks: &[WriteChunk]) -> Delivery {
        let sizes: Vec<usize> = chunks.iter().map(|c| c.ends.len()).collect();
        let influx = &self.influx;
        let written = split::write_finding_refusals(&sizes, |piece| {
            let body = body_of(chunks, &piece);
            async move { influx.write(&body).await }
        })
        .await;
        let refusals = match written {
            Ok(refusals) => refusals,
            Err(error) => return self.retry(error),
        };
        if self
            .state
            .credentials_refused
            .swap(false, Ordering::Relaxed)
        {
            tracing::info!("InfluxDB accepts our credentials again.");
        }
        // Refused points are recorded before their batch counts as written, so none is
        // lost if the file cannot be written: the whole request is then tried again.
        let letters: Vec<DeadLetter> = refusals
            .iter()
            .map(|refusal| {
                let chunk = &chunks[refusal.line.0];
                let (zip_code, time) = &chunk.keys[refusal.line.1];
                DeadLetter {
                    hour: chunk.hour.to_string(),
                    zip_code: zip_code.clone(),
                    time: time.clone(),
                    reason: refusal.reason.clone(),
                }
            })
            .collect();
        if !letters.is_empty() {
            let recorded = self.state.dead_letters.lock().unwrap().record(&letters);
            if let Err(error) = recorded {
                tracing::error!(%error, "Cannot write the dead-letter file; the request will be written again.");
                return Delivery::Retry(format!("cannot write the dead-letter file: {error}"));
            }
        }
        for (index, chunk) in chunks.iter().enumerate() {
            let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
            for refusal in refusals.iter().filter(|r| r.line.0 == index) {
                *reasons.entry(refusal.reason.as_str()).or_default() += 1;
            }
            for (reason, points) in &reasons {
                event::emit(Event::PointsRefused {
                    hour: chunk.hour,
                    batch: chunk.batch,
                    points: *points,
                    reason: (*reason).to_owned(),
                });
            }
            self.stored(chunk, reasons.values().sum()).await;
        }
        Delivery::Done
    }
}
