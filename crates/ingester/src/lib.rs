//! The ingester: subscribes to `weather_channel:data:*`, checks each batch, writes its rows
//! to InfluxDB's `weather_data` through a push-back buffer, asks the streamer for batches
//! that went missing, and publishes `weather_channel:processor:<hour>` once every batch of
//! an hour is stored.
//!
//! It computes no reports and keeps nothing on disk: after a restart it relearns hours
//! from the streamer's announcements, asks for their batches again and rewrites them,
//! which is harmless because writes are idempotent.

mod ledger;
mod rewrite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weathervane_core::buffer::{self, BoundedQueue, Delivery, Target};
use weathervane_core::bus::{
    BusError, BusEvent, Outbound, PublishTarget, Publisher, Subscription, Unheard,
};
use weathervane_core::channel::{Channel, pattern};
use weathervane_core::config::{BufferArgs, InfluxArgs, RedisArgs};
use weathervane_core::event::{self, Event};
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::payload::{self, BatchEnvelope, HourAnnouncement, HourStored};
use weathervane_core::supervise::{Supervisor, TaskFailed};
use weathervane_core::{Generation, HourKey, schema};

use crate::ledger::{AnnounceVerdict, Ledger};
use crate::rewrite::Rewrites;

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
}

#[derive(Debug, thiserror::Error)]
pub enum IngesterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// One received batch, as line protocol, waiting to be written.
struct WriteChunk {
    hour: HourKey,
    batch: u32,
    generation: Generation,
    rows: u64,
    lines: Vec<u8>,
}

struct IngesterState {
    ledger: Mutex<Ledger>,
    /// Old rows of hours whose content changed are deleted before new ones are written.
    rewrites: Rewrites,
    influx: InfluxClient,
    writes: Arc<BoundedQueue<WriteChunk>>,
    requests: Arc<BoundedQueue<Outbound>>,
    notices: Arc<BoundedQueue<Outbound>>,
    rejected_payloads: AtomicU64,
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
        for batch in batches {
            let message = Outbound::new(Channel::Request { batch, hour }, &b""[..]);
            let bytes = message.bytes();
            self.requests.push(message, bytes).await;
        }
    }

    async fn notify_stored(&self, hour: HourKey, rows: u64, generation: Generation) {
        let message = Outbound::new(
            Channel::Stored { hour },
            payload::encode(&HourStored {
                rows,
                refused: 0,
                generation,
            }),
        );
        let bytes = message.bytes();
        self.notices.push(message, bytes).await;
    }
}

pub async fn run(config: IngesterConfig, shutdown: CancellationToken) -> Result<(), IngesterError> {
    let influx = InfluxClient::new(&config.influx, WRITE_TIMEOUT)?;
    let subscription = Subscription::new(&config.redis.url, &[pattern::DATA, pattern::ANNOUNCE])?;
    let request_target = PublishTarget {
        publisher: Publisher::new(&config.redis.url)?,
        unheard: Unheard::Retry,
    };
    let notice_target = PublishTarget {
        publisher: Publisher::new(&config.redis.url)?,
        unheard: Unheard::Retry,
    };
    let rows = config.buffer.buffer_rows.max(1000);
    let state = Arc::new(IngesterState {
        ledger: Mutex::new(Ledger::default()),
        rewrites: Rewrites::default(),
        influx: influx.clone(),
        writes: Arc::new(BoundedQueue::new(
            "ingester-writes",
            rows / 50,
            rows * BYTES_PER_ROW,
        )),
        requests: Arc::new(BoundedQueue::new("ingester-requests", 100_000, 4 << 20)),
        notices: Arc::new(BoundedQueue::new("ingester-notices", 10_000, 1 << 20)),
        rejected_payloads: AtomicU64::new(0),
    });
    let mut supervisor = Supervisor::new();
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
                    if let Err(error) = handle(&state, &channel, &payload, &shutdown).await {
                        let rejected = state.rejected_payloads.fetch_add(1, Ordering::Relaxed) + 1;
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
    shutdown: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    match Channel::parse(channel)? {
        Channel::Data { batch, hour } => {
            let envelope = BatchEnvelope::decode_for(channel, batch, hour, body)?;
            let verdict = state.ledger.lock().unwrap().on_batch(
                hour,
                batch,
                envelope.batches,
                envelope.generation,
                Instant::now(),
            );
            let rows = envelope.rows.len() as u64;
            if verdict.store {
                event::emit(Event::BatchReceived { hour, batch, rows });
            }
            // Waits while InfluxDB does not answer: the hour's old rows must go first.
            let ready = !verdict.store
                || state
                    .rewrites
                    .prepare(&state.influx, hour, envelope.generation, shutdown)
                    .await;
            if verdict.store && ready {
                let lines = envelope.rows.iter().fold(
                    Vec::with_capacity(envelope.rows.len() * BYTES_PER_ROW),
                    schema::encode_row,
                );
                let bytes = lines.len();
                state
                    .writes
                    .push(
                        WriteChunk {
                            hour,
                            batch,
                            generation: envelope.generation,
                            rows,
                            lines,
                        },
                        bytes,
                    )
                    .await;
            }
            state.request(hour, verdict.request).await;
        }
        Channel::Announce { hour } => {
            let announcement = HourAnnouncement::decode_for(channel, body)?;
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

/// Writes chunks to InfluxDB and records what got stored.
struct InfluxTarget {
    influx: InfluxClient,
    state: Arc<IngesterState>,
}

impl InfluxTarget {
    async fn stored(&self, chunk: &WriteChunk) {
        let completed = self.state.ledger.lock().unwrap().on_stored(
            chunk.hour,
            chunk.batch,
            chunk.rows,
            chunk.generation,
        );
        if let Some(rows) = completed {
            event::emit(Event::HourStored {
                hour: chunk.hour,
                rows,
            });
            self.state
                .notify_stored(chunk.hour, rows, chunk.generation)
                .await;
        }
    }
}

impl Target<WriteChunk> for InfluxTarget {
    async fn deliver(&mut self, queued: &[WriteChunk]) -> Delivery {
        // A chunk of an hour's older content (the input changed while it waited) must not
        // be written over the new one.
        let chunks: Vec<&WriteChunk> = queued
            .iter()
            .filter(|c| self.state.rewrites.is_current(c.hour, c.generation))
            .collect();
        if chunks.is_empty() {
            return Delivery::Done;
        }
        let body: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.lines.iter().copied())
            .collect();
        match self.influx.write(&body).await {
            Ok(()) => {
                for chunk in chunks {
                    self.stored(chunk).await;
                }
                Delivery::Done
            }
            Err(InfluxError::Rejected { .. }) if chunks.len() > 1 => {
                // Find the poison batch: write each chunk on its own.
                for chunk in chunks {
                    match self.influx.write(&chunk.lines).await {
                        Ok(()) => self.stored(chunk).await,
                        Err(error) if error.is_retriable() => {
                            return Delivery::Retry(error.to_string());
                        }
                        Err(error) => self.poisoned(chunk, &error),
                    }
                }
                Delivery::Done
            }
            Err(error) if error.is_retriable() => Delivery::Retry(error.to_string()),
            Err(InfluxError::DatabaseNotFound { .. }) => {
                Delivery::Retry("database not created yet".into())
            }
            Err(error) => {
                self.poisoned(chunks[0], &error);
                Delivery::Rejected
            }
        }
    }
}

impl InfluxTarget {
    fn poisoned(&self, chunk: &WriteChunk, error: &InfluxError) {
        tracing::error!(hour = %chunk.hour, batch = chunk.batch, %error, "InfluxDB refused a batch for good; set aside, the hour will not be reported.");
        self.state
            .ledger
            .lock()
            .unwrap()
            .on_poisoned(chunk.hour, chunk.batch);
    }
}
