//! The hours the streamer has streamed but not yet confirmed: whether there is room to
//! stream another (`--max-pending-hours`), when each is due for (re-)announcement, what a
//! processor's confirmation does to it and what a resend request gets. Pure state, no I/O
//! and no clock reads (callers pass `now`), so every rule is unit-tested.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weathervane_core::HourKey;

/// The encoded batches of one hour, in batch order.
pub type Batches = Arc<Vec<Arc<[u8]>>>;

/// An hour streamed but not yet confirmed.
struct PendingHour {
    /// Kept for resends until the hour is confirmed.
    batches: Batches,
    rows: u64,
    /// When it was last announced; `None` asks for an announcement now.
    announced_at: Option<Instant>,
    /// Every batch and the first announcement are queued: only then may the hour be
    /// announced again, or the ingester would ask for batches that are still on their way.
    queued: bool,
}

/// An announcement to publish: "all `batches` batches of `hour` (`rows` rows) are out".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub hour: HourKey,
    pub batches: u32,
    pub rows: u64,
}

/// What a processor's confirmation of an hour did.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The row count is the one sent: the hour is done and no longer pending.
    Confirmed { rows: u64 },
    /// The row count differs from the one sent: the hour stays pending and keeps being
    /// announced.
    Mismatch { expected: u64 },
    /// Not a pending hour (confirmed already, or streamed by an earlier run): nothing to do.
    NotPending,
}

/// What to resend for a request of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// This payload.
    Send(Arc<[u8]>),
    /// The hour has only `batches` batches: ignore the request.
    NoSuchBatch { batches: usize },
    /// The hour is not pending (confirmed already, or streamed by an earlier run): read it
    /// from the input again and pick the batch with [`pick`].
    ReadInput,
}

/// Picks `batch` out of an hour's batches.
pub fn pick(batches: &[Arc<[u8]>], batch: u32) -> Resend {
    match batches.get(batch as usize) {
        Some(payload) => Resend::Send(payload.clone()),
        None => Resend::NoSuchBatch {
            batches: batches.len(),
        },
    }
}

pub struct PendingHours {
    hours: BTreeMap<HourKey, PendingHour>,
    /// `--max-pending-hours`, at least 1.
    max_pending: usize,
    /// `--announce-interval`: how long an announced hour waits before it is announced again.
    announce_every: Duration,
}

impl PendingHours {
    pub fn new(max_pending: usize, announce_every: Duration) -> Self {
        Self {
            hours: BTreeMap::new(),
            max_pending: max_pending.max(1),
            announce_every,
        }
    }

    /// Whether another hour may be streamed now.
    pub fn has_room(&self) -> bool {
        self.hours.len() < self.max_pending
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    /// `hour` is being streamed from `now`: its batches are about to be queued, and the
    /// announcement queued after them counts as its first.
    pub fn start(&mut self, hour: HourKey, batches: Batches, rows: u64, now: Instant) {
        self.hours.insert(
            hour,
            PendingHour {
                batches,
                rows,
                announced_at: Some(now),
                queued: false,
            },
        );
    }

    /// Every batch of `hour` and its first announcement are queued.
    pub fn queued(&mut self, hour: HourKey) {
        if let Some(pending) = self.hours.get_mut(&hour) {
            pending.queued = true;
        }
    }

    /// Resubscribed to Redis: confirmations may have been published while we were away, so
    /// every queued hour is due for announcement now.
    pub fn on_resubscribed(&mut self) {
        self.hours
            .values_mut()
            .for_each(|pending| pending.announced_at = None);
    }

    /// The announcements due at `now`, marked as announced. Nothing is due while
    /// `outbound_idle` is false: messages are still waiting to be published, and each
    /// hour's last announcement is among them.
    pub fn take_due(&mut self, now: Instant, outbound_idle: bool) -> Vec<Announcement> {
        if !outbound_idle {
            return Vec::new();
        }
        let every = self.announce_every;
        self.hours
            .iter_mut()
            .filter(|(_, p)| {
                p.queued
                    && p.announced_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= every)
            })
            .map(|(hour, p)| {
                p.announced_at = Some(now);
                Announcement {
                    hour: *hour,
                    batches: p.batches.len() as u32,
                    rows: p.rows,
                }
            })
            .collect()
    }

    /// The processor reported `hour` with `rows` rows.
    pub fn on_reported(&mut self, hour: HourKey, rows: u64) -> Confirmation {
        let Some(expected) = self.hours.get(&hour).map(|p| p.rows) else {
            return Confirmation::NotPending;
        };
        if rows != expected {
            return Confirmation::Mismatch { expected };
        }
        self.hours.remove(&hour);
        Confirmation::Confirmed { rows }
    }

    /// What to resend for a request of `batch` of `hour`.
    pub fn resend(&self, hour: HourKey, batch: u32) -> Resend {
        match self.hours.get(&hour) {
            Some(pending) => pick(&pending.batches, batch),
            None => Resend::ReadInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(2);

    fn hour(text: &str) -> HourKey {
        text.parse().unwrap()
    }

    fn batches(count: u8) -> Batches {
        Arc::new((0..count).map(|i| Arc::from(&[i][..])).collect())
    }

    /// One hour streamed (3 batches, 1000 rows) and fully queued at `t0`.
    fn one_queued(t0: Instant) -> (PendingHours, HourKey) {
        let mut pending = PendingHours::new(3, EVERY);
        let h = hour("2023-09-19T05");
        pending.start(h, batches(3), 1000, t0);
        pending.queued(h);
        (pending, h)
    }

    #[test]
    fn room_for_at_most_max_pending_hours_and_at_least_one() {
        let t0 = Instant::now();
        let mut pending = PendingHours::new(2, EVERY);
        assert!(pending.has_room() && pending.is_empty());
        pending.start(hour("2023-09-19T05"), batches(1), 10, t0);
        assert!(pending.has_room());
        pending.start(hour("2023-09-19T06"), batches(1), 10, t0);
        assert!(!pending.has_room());
        pending.on_reported(hour("2023-09-19T05"), 10);
        assert!(pending.has_room());

        let mut zero = PendingHours::new(0, EVERY);
        assert!(zero.has_room(), "0 still lets one hour through");
        zero.start(hour("2023-09-19T05"), batches(1), 10, t0);
        assert!(!zero.has_room());
    }

    #[test]
    fn an_hour_is_not_announced_again_until_queued() {
        let t0 = Instant::now();
        let mut pending = PendingHours::new(3, EVERY);
        let h = hour("2023-09-19T05");
        pending.start(h, batches(3), 1000, t0);
        assert_eq!(pending.take_due(t0 + EVERY * 5, true), []);
        pending.on_resubscribed();
        assert_eq!(
            pending.take_due(t0 + EVERY * 5, true),
            [],
            "not even after a resubscribe"
        );
        pending.queued(h);
        assert_eq!(pending.take_due(t0 + EVERY * 5, true).len(), 1);
    }

    #[test]
    fn a_queued_hour_is_announced_again_each_interval() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        assert_eq!(
            pending.take_due(t0 + EVERY / 2, true),
            [],
            "its first announcement went with its batches"
        );
        let expected = Announcement {
            hour: h,
            batches: 3,
            rows: 1000,
        };
        assert_eq!(pending.take_due(t0 + EVERY, true), [expected]);
        assert_eq!(pending.take_due(t0 + EVERY + EVERY / 2, true), []);
        assert_eq!(pending.take_due(t0 + EVERY * 2, true), [expected]);
    }

    #[test]
    fn nothing_is_due_while_messages_wait_to_be_published() {
        let t0 = Instant::now();
        let (mut pending, _) = one_queued(t0);
        assert_eq!(pending.take_due(t0 + EVERY * 3, false), []);
        assert_eq!(pending.take_due(t0 + EVERY * 3, true).len(), 1);
    }

    #[test]
    fn a_resubscribe_makes_every_queued_hour_due_at_once() {
        let t0 = Instant::now();
        let (mut pending, _) = one_queued(t0);
        pending.start(hour("2023-09-19T06"), batches(1), 5, t0);
        pending.queued(hour("2023-09-19T06"));
        assert_eq!(pending.take_due(t0, true), []);
        pending.on_resubscribed();
        let due: Vec<HourKey> = pending.take_due(t0, true).iter().map(|a| a.hour).collect();
        assert_eq!(due, [hour("2023-09-19T05"), hour("2023-09-19T06")]);
        assert_eq!(pending.take_due(t0, true), [], "and then waits again");
    }

    #[test]
    fn a_confirmation_counts_only_with_the_row_count_sent() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        assert_eq!(
            pending.on_reported(h, 999),
            Confirmation::Mismatch { expected: 1000 }
        );
        assert_eq!(
            pending.take_due(t0 + EVERY, true).len(),
            1,
            "still announced"
        );
        assert_eq!(
            pending.on_reported(h, 1000),
            Confirmation::Confirmed { rows: 1000 }
        );
        assert!(pending.is_empty());
        assert_eq!(pending.take_due(t0 + EVERY * 9, true), []);
        assert_eq!(pending.on_reported(h, 1000), Confirmation::NotPending);
    }

    #[test]
    fn a_resend_comes_from_memory_while_pending_and_from_the_input_after() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        assert_eq!(pending.resend(h, 1), Resend::Send(Arc::from(&[1][..])));
        assert_eq!(pending.resend(h, 3), Resend::NoSuchBatch { batches: 3 });
        assert_eq!(
            pending.resend(hour("2023-09-19T04"), 0),
            Resend::ReadInput,
            "an hour of an earlier run"
        );
        pending.on_reported(h, 1000);
        assert_eq!(pending.resend(h, 1), Resend::ReadInput);
        assert_eq!(pick(&batches(2), 1), Resend::Send(Arc::from(&[1][..])));
        assert_eq!(pick(&batches(2), 2), Resend::NoSuchBatch { batches: 2 });
    }
}
