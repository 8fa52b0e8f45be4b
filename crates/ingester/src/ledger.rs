//! Which batches of which hours the ingester has received and stored: the bookkeeping
//! behind gap detection, resend requests and "hour stored" notifications. Pure state, no
//! I/O, so every rule is unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weathervane_core::{Generation, HourKey};

/// Don't ask for the same batch again sooner than this: the answer may be on its way.
pub const REQUEST_AGAIN_AFTER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchState {
    Missing {
        requested_at: Option<Instant>,
    },
    /// Received and waiting in the write buffer.
    Received,
    /// Written: `rows` points stored, `refused` refused by InfluxDB for good (they are
    /// dead letters). No batch is ever set aside whole, so every hour can complete.
    Stored {
        rows: u64,
        refused: u64,
    },
}

/// An hour's rows once every batch is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HourRows {
    /// Stored in InfluxDB: the count the processor must find.
    pub stored: u64,
    /// Refused by InfluxDB and written to the dead-letter file.
    pub refused: u64,
}

#[derive(Debug)]
struct HourBatches {
    /// The content these batches belong to; batches of another generation are not
    /// credited to it.
    generation: Generation,
    batches: Vec<BatchState>,
}

impl HourBatches {
    fn new(batches: u32, generation: Generation) -> Self {
        Self {
            generation,
            batches: vec![BatchState::Missing { requested_at: None }; batches as usize],
        }
    }

    /// The hour's rows if every batch is written.
    fn stored_rows(&self) -> Option<HourRows> {
        let mut total = HourRows::default();
        for batch in &self.batches {
            let BatchState::Stored { rows, refused } = batch else {
                return None;
            };
            total.stored += rows;
            total.refused += refused;
        }
        Some(total)
    }

    /// Missing batches not asked for recently, now marked as asked for.
    fn take_requests(&mut self, below: usize, now: Instant) -> Vec<u32> {
        let mut requests = Vec::new();
        for (index, state) in self.batches.iter_mut().enumerate().take(below) {
            if let BatchState::Missing { requested_at } = state
                && requested_at.is_none_or(|at| now.duration_since(at) >= REQUEST_AGAIN_AFTER)
            {
                *requested_at = Some(now);
                requests.push(index as u32);
            }
        }
        requests
    }
}

/// What the subscriber should do about a batch that arrived.
#[derive(Debug, PartialEq, Eq)]
pub struct BatchVerdict {
    /// Store it (false: a duplicate of one received or stored already).
    pub store: bool,
    /// Batches before it that are missing: ask the streamer for them.
    pub request: Vec<u32>,
}

/// What to do about an announcement that every batch of an hour has been published.
#[derive(Debug, PartialEq, Eq)]
pub enum AnnounceVerdict {
    /// Ask for these batches.
    Request(Vec<u32>),
    /// Everything is written: tell the processor (again) with the stored row count.
    Notify(HourRows),
    /// Everything is received and on its way to InfluxDB, or asked for recently.
    Wait,
}

#[derive(Debug, Default)]
pub struct Ledger {
    hours: BTreeMap<HourKey, HourBatches>,
}

impl Ledger {
    fn hour(&mut self, hour: HourKey, batches: u32, generation: Generation) -> &mut HourBatches {
        let batches_of_hour = self
            .hours
            .entry(hour)
            .or_insert_with(|| HourBatches::new(batches, generation));
        // The hour's content or batch size changed (the input was edited, the streamer
        // restarted with another --batch-size): start the hour afresh.
        if batches_of_hour.generation != generation
            || batches_of_hour.batches.len() != batches as usize
        {
            *batches_of_hour = HourBatches::new(batches, generation);
        }
        batches_of_hour
    }

    /// The generation of `hour` the ledger follows now (the latest the streamer sent).
    pub fn generation(&self, hour: HourKey) -> Option<Generation> {
        self.hours.get(&hour).map(|h| h.generation)
    }

    pub fn on_batch(
        &mut self,
        hour: HourKey,
        batch: u32,
        batches: u32,
        generation: Generation,
        now: Instant,
    ) -> BatchVerdict {
        let batches_of_hour = self.hour(hour, batches, generation);
        let state = &mut batches_of_hour.batches[batch as usize];
        let store = matches!(state, BatchState::Missing { .. });
        if store {
            *state = BatchState::Received;
        }
        BatchVerdict {
            store,
            request: batches_of_hour.take_requests(batch as usize, now),
        }
    }

    /// Marks a batch written, `rows` of its points stored and `refused` refused for good;
    /// returns the hour's rows if that completed the hour. A batch of another generation
    /// than the hour's current one is not credited.
    pub fn on_stored(
        &mut self,
        hour: HourKey,
        batch: u32,
        rows: u64,
        refused: u64,
        generation: Generation,
    ) -> Option<HourRows> {
        let batches_of_hour = self
            .hours
            .get_mut(&hour)
            .filter(|h| h.generation == generation)?;
        let state = batches_of_hour.batches.get_mut(batch as usize)?;
        if *state != BatchState::Received {
            return None;
        }
        *state = BatchState::Stored { rows, refused };
        batches_of_hour.stored_rows()
    }

    pub fn on_announce(
        &mut self,
        hour: HourKey,
        batches: u32,
        generation: Generation,
        now: Instant,
    ) -> AnnounceVerdict {
        let batches_of_hour = self.hour(hour, batches, generation);
        if let Some(rows) = batches_of_hour.stored_rows() {
            return AnnounceVerdict::Notify(rows);
        }
        let requests = batches_of_hour.take_requests(batches as usize, now);
        if requests.is_empty() {
            AnnounceVerdict::Wait
        } else {
            AnnounceVerdict::Request(requests)
        }
    }

    /// After a reconnect: every missing batch of every known hour.
    pub fn on_resubscribed(&mut self, now: Instant) -> Vec<(HourKey, Vec<u32>)> {
        self.hours
            .iter_mut()
            .map(|(hour, batches_of_hour)| {
                for state in &mut batches_of_hour.batches {
                    if let BatchState::Missing { requested_at } = state {
                        *requested_at = None;
                    }
                }
                let len = batches_of_hour.batches.len();
                (*hour, batches_of_hour.take_requests(len, now))
            })
            .filter(|(_, requests)| !requests.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generation of the hour in most tests.
    const G: Generation = Generation::from_bits(1);

    fn hour() -> HourKey {
        "2023-09-19T05".parse().unwrap()
    }

    #[test]
    fn a_gap_is_requested_once_then_again_after_a_while() {
        let mut ledger = Ledger::default();
        let t0 = Instant::now();
        assert_eq!(
            ledger.on_batch(hour(), 0, 4, G, t0),
            BatchVerdict {
                store: true,
                request: vec![]
            }
        );
        assert_eq!(
            ledger.on_batch(hour(), 3, 4, G, t0),
            BatchVerdict {
                store: true,
                request: vec![1, 2]
            }
        );
        assert_eq!(
            ledger.on_batch(hour(), 0, 4, G, t0),
            BatchVerdict {
                store: false,
                request: vec![]
            }
        );
        assert_eq!(ledger.on_announce(hour(), 4, G, t0), AnnounceVerdict::Wait);
        assert_eq!(
            ledger.on_announce(hour(), 4, G, t0 + REQUEST_AGAIN_AFTER),
            AnnounceVerdict::Request(vec![1, 2])
        );
    }

    #[test]
    fn an_hour_completes_when_every_batch_is_stored_and_counts_its_rows() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        for batch in 0..3 {
            ledger.on_batch(hour(), batch, 3, G, now);
        }
        assert_eq!(ledger.on_stored(hour(), 0, 500, 0, G), None);
        assert_eq!(ledger.on_stored(hour(), 2, 7, 0, G), None);
        assert_eq!(
            ledger.on_announce(hour(), 3, G, now),
            AnnounceVerdict::Wait,
            "batch 1 is received, not missing"
        );
        let all = HourRows {
            stored: 1007,
            refused: 0,
        };
        assert_eq!(ledger.on_stored(hour(), 1, 500, 0, G), Some(all));
        assert_eq!(
            ledger.on_stored(hour(), 1, 500, 0, G),
            None,
            "a second store does not complete it again"
        );
        assert_eq!(
            ledger.on_announce(hour(), 3, G, now),
            AnnounceVerdict::Notify(all)
        );
    }

    #[test]
    fn an_unknown_announced_hour_is_requested_whole_and_a_received_batch_is_not() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        assert_eq!(
            ledger.on_announce(hour(), 3, G, now),
            AnnounceVerdict::Request(vec![0, 1, 2])
        );
        ledger.on_batch(hour(), 1, 3, G, now);
        let later = now + REQUEST_AGAIN_AFTER;
        assert_eq!(
            ledger.on_announce(hour(), 3, G, later),
            AnnounceVerdict::Request(vec![0, 2])
        );
        assert_eq!(ledger.on_resubscribed(later), vec![(hour(), vec![0, 2])]);
    }

    #[test]
    fn refused_points_complete_the_hour_with_the_stored_count_only() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        for batch in 0..3 {
            ledger.on_batch(hour(), batch, 3, G, now);
        }
        assert_eq!(ledger.on_stored(hour(), 0, 10, 0, G), None);
        assert_eq!(ledger.on_stored(hour(), 1, 7, 3, G), None);
        let rows = HourRows {
            stored: 17,
            refused: 13,
        };
        assert_eq!(
            ledger.on_stored(hour(), 2, 0, 10, G),
            Some(rows),
            "a batch refused whole still completes the hour"
        );
        assert_eq!(
            ledger.on_announce(hour(), 3, G, now + REQUEST_AGAIN_AFTER),
            AnnounceVerdict::Notify(rows)
        );
        assert_eq!(ledger.on_resubscribed(now), vec![]);
    }
}
