//! Bounded in-memory FIFO buffers and the flusher that drains one into its target.
//!
//! Policy when full: push back (the producer waits), never drop. The flusher takes items
//! into its own in-flight slot and retries that slot, with [`Backoff`], until the target
//! takes it, so order is kept even though the queue has no push-front.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::event::{self, Event};
use crate::metrics::{self, Gauge};
use crate::shutdown::sleep_or_cancel;
use crate::supervise::Supervisor;

/// A bounded FIFO queue with a cap on items and on bytes.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    name: &'static str,
    queue: ArrayQueue<(T, usize)>,
    max_bytes: usize,
    bytes: AtomicUsize,
    /// The most items ever waiting at once, for the recovery report.
    peak_len: AtomicUsize,
    item_ready: Notify,
    space_freed: Notify,
    /// `weathervane_<role>_buffer_items` and `_buffer_bytes`, from a name `<role>-<buffer>`.
    items_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl<T> BoundedQueue<T> {
    /// `name` appears in logs; `max_items` and `max_bytes` are both caps. An item larger
    /// than `max_bytes` is still taken when the queue is empty, so nothing can wedge.
    /// A name `<role>-<buffer>` (`ingester-writes`) is also its metrics' role and label.
    pub fn new(name: &'static str, max_items: usize, max_bytes: usize) -> Self {
        let (role, buffer) = name.split_once('-').unwrap_or(("buffer", name));
        let items_gauge = metrics::gauge(role, "buffer_items", &[("buffer", buffer)]);
        let bytes_gauge = metrics::gauge(role, "buffer_bytes", &[("buffer", buffer)]);
        items_gauge.set(0.0);
        bytes_gauge.set(0.0);
        Self {
            items_gauge,
            bytes_gauge,
            name,
            queue: ArrayQueue::new(max_items.max(1)),
            max_bytes,
            bytes: AtomicUsize::new(0),
            peak_len: AtomicUsize::new(0),
            item_ready: Notify::new(),
            space_freed: Notify::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds `item` (weighing `bytes`), or hands it back when the queue is at a cap.
    pub fn try_push(&self, item: T, bytes: usize) -> Result<(), T> {
        let held = self.bytes.load(Ordering::Acquire);
        if held > 0 && held + bytes > self.max_bytes {
            return Err(item);
        }
        self.queue.push((item, bytes)).map_err(|(item, _)| item)?;
        let held = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak_len.fetch_max(self.queue.len(), Ordering::Relaxed);
        self.count(held);
        self.item_ready.notify_one();
        Ok(())
    }

    /// Adds `item`, waiting while the queue is at a cap: this is the push-back.
    pub async fn push(&self, mut item: T, bytes: usize) {
        loop {
            let space = self.space_freed.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_push(item, bytes) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            space.await;
        }
    }

    pub fn pop(&self) -> Option<T> {
        let (item, bytes) = self.queue.pop()?;
        let held = self.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.count(held);
        self.space_freed.notify_waiters();
        Some(item)
    }

    /// Waits for an item; `None` on shutdown.
    pub async fn pop_wait(&self, shutdown: &CancellationToken) -> Option<T> {
        loop {
            let ready = self.item_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(item) = self.pop() {
                return Some(item);
            }
            tokio::select! {
                _ = ready => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sets the gauges: as racy as `len` under concurrent pushes and pops, and exact once
    /// the queue is quiet (the last writer sets the current values).
    fn count(&self, bytes: usize) {
        self.items_gauge.set(self.queue.len() as f64);
        self.bytes_gauge.set(bytes as f64);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn peak_len(&self) -> usize {
        self.peak_len.load(Ordering::Relaxed)
    }
}

/// What a target did with the items it was offered.
#[derive(Debug)]
pub enum Delivery {
    /// Taken: drop them from the in-flight slot.
    Done,
    /// The target is down, hung or not listening: keep them and try again after a pause.
    Retry(String),
    /// Like `Retry`, but the target asked not to be tried again sooner than this (an
    /// HTTP `Retry-After`): the pause is the longer of this and the backoff's.
    RetryAfter(String, Duration),
    /// The target refused them for good (for example a field-type conflict): retrying
    /// would fail forever, so they are set aside (the deliverer has logged them).
    Rejected,
}

/// Where a flusher delivers: InfluxDB, a Redis channel.
pub trait Target<T> {
    fn deliver(&mut self, items: &[T]) -> impl Future<Output = Delivery> + Send;
}

/// Runs [`flush`] as a task of `supervisor`'s, named after the queue, which owns `target`.
pub fn supervise_flush<T, D>(
    supervisor: &mut Supervisor,
    queue: Arc<BoundedQueue<T>>,
    max_items: usize,
    mut target: D,
) where
    T: Send + Sync + 'static,
    D: Target<T> + Send + 'static,
{
    let shutdown = supervisor.token();
    supervisor.spawn_until_stopped(queue.name(), async move {
        flush(&queue, max_items, &shutdown, &mut target).await
    });
}

/// Drains `queue` into `target` until shutdown: takes up to `max_items` items at a time
/// into an in-flight slot and offers that slot until it is not `Retry`, pausing with
/// [`Backoff`] in between. Logs once when the target goes away and once when it is back,
/// with how long it was gone and how much was waiting.
pub async fn flush<T>(
    queue: &BoundedQueue<T>,
    max_items: usize,
    shutdown: &CancellationToken,
    target: &mut impl Target<T>,
) {
    let mut backoff = Backoff::new();
    let mut in_flight: Vec<T> = Vec::with_capacity(max_items);
    let mut outage_since: Option<Instant> = None;
    while let Some(first) = queue.pop_wait(shutdown).await {
        in_flight.push(first);
        while in_flight.len() < max_items {
            match queue.pop() {
                Some(item) => in_flight.push(item),
                None => break,
            }
        }
        loop {
            // A delivery races shutdown, so a hung server cannot hold the role past SIGTERM;
            // what was in flight is resent by its source after the restart.
            let delivery = tokio::select! {
                delivery = target.deliver(&in_flight) => delivery,
                _ = shutdown.cancelled() => return,
            };
            let (reason, at_least) = match delivery {
                Delivery::Done | Delivery::Rejected => break,
                Delivery::Retry(reason) => (reason, Duration::ZERO),
                Delivery::RetryAfter(reason, at_least) => (reason, at_least),
            };
            if outage_since.is_none() {
                event::emit(Event::OutageBegan {
                    buffer: queue.name().to_owned(),
                    buffered: queue.len() + in_flight.len(),
                    reason,
                });
                outage_since = Some(Instant::now());
            }
            let pause = backoff.next_delay().max(at_least);
            if !sleep_or_cancel(pause, shutdown).await {
                tracing::info!(
                    buffer = %queue.name(),
                    buffered = queue.len() + in_flight.len(),
                    "Shutting down with items still buffered; the streamer's re-announcements recover them after a restart."
                );
                return;
            }
        }
        if let Some(since) = outage_since.take() {
            event::emit(Event::OutageEnded {
                buffer: queue.name().to_owned(),
                buffered: queue.len(),
                peak: queue.peak_len(),
                after_ms: since.elapsed().as_millis() as u64,
            });
            backoff.reset();
        }
        in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_order_and_hands_back_at_either_cap() {
        let queue = BoundedQueue::new("t", 3, 100);
        assert!(queue.try_push(1, 10).is_ok());
        assert!(queue.try_push(2, 10).is_ok());
        assert_eq!(queue.try_push(3, 90), Err(3), "over the byte cap");
        assert!(queue.try_push(4, 10).is_ok());
        assert_eq!(queue.try_push(5, 1), Err(5), "over the item cap");
        assert_eq!(
            (queue.pop(), queue.pop(), queue.pop(), queue.pop()),
            (Some(1), Some(2), Some(4), None)
        );
        assert_eq!(queue.peak_len(), 3);
        assert!(queue.is_empty());
        assert!(
            queue.try_push(6, 1000).is_ok(),
            "an empty queue takes an oversized item"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn push_waits_for_space_instead_of_dropping() {
        let queue = Arc::new(BoundedQueue::new("t", 1, 100));
        queue.push(1, 1).await;
        let producer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(2, 1).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!producer.is_finished(), "the producer must be pushed back");
        assert_eq!(queue.pop(), Some(1));
        producer.await.unwrap();
        assert_eq!(queue.pop(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn flush_retries_the_same_items_in_order_with_backoff() {
        let queue = Arc::new(BoundedQueue::new("t", 10, 1000));
        for item in 0..5 {
            queue.push(item, 1).await;
        }
        /// Down for its first four attempts, then takes everything.
        struct FlakyTarget {
            attempts: usize,
            seen: Arc<Mutex<Vec<i32>>>,
        }
        impl Target<i32> for FlakyTarget {
            async fn deliver(&mut self, items: &[i32]) -> Delivery {
                self.attempts += 1;
                if self.attempts <= 4 {
                    return Delivery::Retry("down".into());
                }
                self.seen.lock().unwrap().extend(items);
                Delivery::Done
            }
        }
        let shutdown = CancellationToken::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut target = FlakyTarget {
            attempts: 0,
            seen: seen.clone(),
        };
        let flusher = tokio::spawn({
            let (queue, shutdown) = (queue.clone(), shutdown.clone());
            async move { flush(&queue, 2, &shutdown, &mut target).await }
        });
        let started = tokio::time::Instant::now();
        while seen.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = started.elapsed();
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        // Four pauses of 20, 40, 80, 160 ms, each with up to as much jitter again.
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );
        shutdown.cancel();
        flusher.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn flush_waits_at_least_as_long_as_the_target_asked() {
        let queue = Arc::new(BoundedQueue::new("t", 10, 1000));
        queue.push(7, 1).await;
        /// Asks for 3 s the first time, then takes everything.
        struct SlowDown {
            attempts: Arc<Mutex<Vec<tokio::time::Instant>>>,
        }
        impl Target<i32> for SlowDown {
            async fn deliver(&mut self, _items: &[i32]) -> Delivery {
                let mut attempts = self.attempts.lock().unwrap();
                attempts.push(tokio::time::Instant::now());
                if attempts.len() == 1 {
                    return Delivery::RetryAfter("429".into(), Duration::from_secs(3));
                }
                Delivery::Done
            }
        }
        let shutdown = CancellationToken::new();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut target = SlowDown {
            attempts: attempts.clone(),
        };
        let flusher = tokio::spawn({
            let (queue, shutdown) = (queue.clone(), shutdown.clone());
            async move { flush(&queue, 2, &shutdown, &mut target).await }
        });
        while attempts.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let attempts = attempts.lock().unwrap().clone();
        let waited = attempts[1] - attempts[0];
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3100),
            "{waited:?}"
        );
        shutdown.cancel();
        flusher.await.unwrap();
    }
}
