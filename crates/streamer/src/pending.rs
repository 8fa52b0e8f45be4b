//! The hours the streamer has streamed but not yet confirmed: whether there is room to
//! stream another (`--max-pending-hours`), when each is due for (re-)announcement, what a
//! processor's confirmation does to it and what a resend request gets. Pure state, no I/O
//! and no clock reads (callers pass `now`), so every rule is unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weathervane_core::{Generation, HourKey};

/// A batch is resent at most once per this interval, however often it is asked for: the
/// ingester asks again only after 2 s, so more is a flood (a stranger on the bus).
pub const RESEND_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// An hour streamed but not yet confirmed. Its batches are not held: a resend reads the
/// batch from the input again, so memory does not grow with the hours in flight.
struct PendingHour {
    batches: u32,
    rows: u64,
    /// The content streamed: only a report of this generation confirms the hour.
    generation: Generation,
    /// When it was last announced; `None` asks for an announcement now.
    announced_at: Option<Instant>,
    /// When each batch was last resent.
    resent_at: Vec<Option<Instant>>,
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
    pub generation: Generation,
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

/// What to do with a request for one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// Read the batch from the input and send it, if the input still holds this
    /// generation of the hour.
    Send { generation: Generation },
    /// The hour has only `batches` batches: ignore the request.
    NoSuchBatch { batches: u32 },
    /// The batch was resent less than [`RESEND_AGAIN_AFTER`] ago: ignore the request.
    TooSoon,
    /// The hour is not pending: confirmed already (nothing is missing), or not streamed
    /// by this run yet (it will be, whole). Ignore the request; reading the input again
    /// for it would let anyone on the bus make the streamer re-read hours at will.
    NotPending,
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

    /// Hours streamed (or being streamed) and not yet confirmed.
    pub fn len(&self) -> usize {
        self.hours.len()
    }

    /// `hour` is being streamed from `now`: its batches are about to be queued, and the
    /// announcement queued after them counts as its first.
    pub fn start(
        &mut self,
        hour: HourKey,
        batches: u32,
        rows: u64,
        generation: Generation,
        now: Instant,
    ) {
        self.hours.insert(
            hour,
            PendingHour {
                batches,
                rows,
                generation,
                announced_at: Some(now),
                resent_at: Vec::new(),
                queued: false,
            },
        );
    }

    /// Whether `hour` is pending with `generation` (streamed, not yet confirmed).
    pub fn holds(&self, hour: HourKey, generation: Generation) -> bool {
        self.hours
            .get(&hour)
            .is_some_and(|pending| pending.generation == generation)
    }

    /// The input was indexed again: drops every hour whose generation is not `current`'s
    /// for it any more (edited, or gone from the input), whose reports can no longer
    /// confirm it, and returns them. They are streamed again with their new content.
    pub fn retain_current(
        &mut self,
        current: impl Fn(HourKey) -> Option<Generation>,
    ) -> Vec<HourKey> {
        let stale: Vec<HourKey> = self
            .hours
            .iter()
            .filter(|(hour, pending)| current(**hour) != Some(pending.generation))
            .map(|(hour, _)| *hour)
            .collect();
        stale.iter().for_each(|hour| {
            self.hours.remove(hour);
        });
        stale
    }

    /// Streaming `hour` stopped before it was queued whole (the input changed under it):
    /// it is no longer pending, so it is streamed again, whatever its generation now.
    pub fn forget(&mut self, hour: HourKey) {
        self.hours.remove(&hour);
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
                    batches: p.batches,
                    rows: p.rows,
                    generation: p.generation,
                }
            })
            .collect()
    }

    /// The processor reported `hour` of `generation` with `rows` rows. Reports of an older
    /// content of the hour (the input was edited since) do not confirm it.
    pub fn on_reported(
        &mut self,
        hour: HourKey,
        rows: u64,
        generation: Generation,
    ) -> Confirmation {
        let Some(pending) = self.hours.get(&hour) else {
            return Confirmation::NotPending;
        };
        let expected = pending.rows;
        if rows != expected || generation != pending.generation {
            return Confirmation::Mismatch { expected };
        }
        self.hours.remove(&hour);
        Confirmation::Confirmed { rows }
    }

    /// What to resend for a request of `batch` of `hour` at `now`.
    pub fn resend(&mut self, hour: HourKey, batch: u32, now: Instant) -> Resend {
        let Some(pending) = self.hours.get_mut(&hour) else {
            return Resend::NotPending;
        };
        if batch >= pending.batches {
            return Resend::NoSuchBatch {
                batches: pending.batches,
            };
        }
        let index = batch as usize;
        if pending.resent_at.len() <= index {
            pending.resent_at.resize(pending.batches as usize, None);
        }
        let last = &mut pending.resent_at[index];
        if last.is_some_and(|at| now.duration_since(at) < RESEND_AGAIN_AFTER) {
            return Resend::TooSoon;
        }
        *last = Some(now);
        Resend::Send {
            generation: pending.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(2);
    const G: Generation = Generation::from_bits(42);

    fn hour(text: &str) -> HourKey {
        text.parse().unwrap()
    }

    /// One hour streamed (3 batches, 1000 rows) and fully queued at `t0`.
    fn one_queued(t0: Instant) -> (PendingHours, HourKey) {
        let mut pending = PendingHours::new(3, EVERY);
        let h = hour("2023-09-19T05");
        pending.start(h, 3, 1000, G, t0);
        pending.queued(h);
        (pending, h)
    }

    #[test]
    fn room_for_at_most_max_pending_hours_and_at_least_one() {
        let t0 = Instant::now();
        let mut pending = PendingHours::new(2, EVERY);
        assert!(pending.has_room() && pending.is_empty());
        pending.start(hour("2023-09-19T05"), 1, 10, G, t0);
        assert!(pending.has_room());
        pending.start(hour("2023-09-19T06"), 1, 10, G, t0);
        assert!(!pending.has_room());
        pending.on_reported(hour("2023-09-19T05"), 10, G);
        assert!(pending.has_room());

        let mut zero = PendingHours::new(0, EVERY);
        assert!(zero.has_room(), "0 still lets one hour through");
        zero.start(hour("2023-09-19T05"), 1, 10, G, t0);
        assert!(!zero.has_room());
    }

    #[test]
    fn an_hour_forgotten_mid_stream_is_no_longer_pending_and_frees_its_slot() {
        let t0 = Instant::now();
        let mut pending = PendingHours::new(1, EVERY);
        let h = hour("2023-09-19T05");
        pending.start(h, 3, 1000, G, t0);
        assert!(!pending.has_room() && pending.holds(h, G));
        pending.forget(h);
        assert!(pending.has_room() && !pending.holds(h, G) && pending.is_empty());
        assert_eq!(pending.resend(h, 0, t0), Resend::NotPending);
        assert_eq!(pending.on_reported(h, 1000, G), Confirmation::NotPending);
    }

    #[test]
    fn an_hour_is_not_announced_again_until_queued() {
        let t0 = Instant::now();
        let mut pending = PendingHours::new(3, EVERY);
        let h = hour("2023-09-19T05");
        pending.start(h, 3, 1000, G, t0);
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
            generation: G,
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
        pending.start(hour("2023-09-19T06"), 1, 5, G, t0);
        pending.queued(hour("2023-09-19T06"));
        assert_eq!(pending.take_due(t0, true), []);
        pending.on_resubscribed();
        let due: Vec<HourKey> = pending.take_due(t0, true).iter().map(|a| a.hour).collect();
        assert_eq!(due, [hour("2023-09-19T05"), hour("2023-09-19T06")]);
        assert_eq!(pending.take_due(t0, true), [], "and then waits again");
    }

    #[test]
    fn a_confirmation_counts_only_with_the_row_count_and_generation_sent() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        assert_eq!(
            pending.on_reported(h, 999, G),
            Confirmation::Mismatch { expected: 1000 }
        );
        assert_eq!(
            pending.on_reported(h, 1000, Generation::from_bits(41)),
            Confirmation::Mismatch { expected: 1000 },
            "a report of the hour's old content"
        );
        assert_eq!(
            pending.take_due(t0 + EVERY, true).len(),
            1,
            "still announced"
        );
        assert_eq!(
            pending.on_reported(h, 1000, G),
            Confirmation::Confirmed { rows: 1000 }
        );
        assert!(pending.is_empty());
        assert_eq!(pending.take_due(t0 + EVERY * 9, true), []);
        assert_eq!(pending.on_reported(h, 1000, G), Confirmation::NotPending);
    }

    #[test]
    fn reindexing_drops_exactly_the_hours_whose_generation_changed() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        let (six, seven) = (hour("2023-09-19T06"), hour("2023-09-19T07"));
        pending.start(six, 1, 5, G, t0);
        pending.start(seven, 1, 5, G, t0);
        assert!(pending.holds(h, G) && !pending.holds(h, Generation::from_bits(1)));
        assert!(!pending.has_room());
        let new = Generation::from_bits(43);
        let dropped = pending.retain_current(|hour| match hour {
            hour if hour == six => Some(new),
            hour if hour == seven => None,
            _ => Some(G),
        });
        assert_eq!(dropped, [six, seven], "one edited, one gone from the input");
        assert!(pending.holds(h, G) && !pending.holds(six, new) && pending.has_room());
        assert_eq!(pending.on_reported(six, 5, G), Confirmation::NotPending);
        assert_eq!(pending.resend(six, 0, t0), Resend::NotPending);
        assert_eq!(
            pending.on_reported(h, 1000, G),
            Confirmation::Confirmed { rows: 1000 }
        );
    }

    #[test]
    fn a_resend_is_allowed_at_most_once_a_second_per_batch_and_only_while_pending() {
        let t0 = Instant::now();
        let (mut pending, h) = one_queued(t0);
        assert_eq!(pending.resend(h, 1, t0), Resend::Send { generation: G });
        assert_eq!(pending.resend(h, 3, t0), Resend::NoSuchBatch { batches: 3 });
        let flood = (0..1000)
            .filter(|i| pending.resend(h, 1, t0 + Duration::from_millis(*i)) != Resend::TooSoon)
            .count();
        assert_eq!(flood, 0, "a thousand requests within a second get nothing");
        assert_eq!(
            pending.resend(h, 0, t0),
            Resend::Send { generation: G },
            "another batch is not held back"
        );
        assert_eq!(
            pending.resend(h, 1, t0 + RESEND_AGAIN_AFTER),
            Resend::Send { generation: G }
        );
        assert_eq!(
            pending.resend(hour("2023-09-19T04"), 0, t0),
            Resend::NotPending,
            "an hour this run has not streamed yet"
        );
        pending.on_reported(h, 1000, G);
        assert_eq!(pending.resend(h, 1, t0 + EVERY * 5), Resend::NotPending);
    }
}
