//! How far the pipeline has got, from the roles' typed events as their logs grow: batches
//! the ingester received, hours it stored, hours the processor reported, hours the
//! streamer confirmed, requests for missing batches, and buffer peaks. Reading events
//! from the logs keeps replay from subscribing to Redis itself, which would change the
//! subscriber counts that `PUBLISH` reports.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use weathervane_core::HourKey;
use weathervane_harness::events::{Event, EventParseError, LogTail};

pub struct Progress {
    logs: Vec<LogTail>,
    hours: Vec<HourKey>,
    batches: HashSet<(HourKey, u32)>,
    stored: HashSet<HourKey>,
    reported: HashSet<HourKey>,
    /// Hours the streamer has confirmed as reported.
    confirmed: HashSet<HourKey>,
    requests: usize,
    streamer_done: bool,
    peaks: BTreeMap<String, usize>,
}

impl Progress {
    /// Follows the logs of the roles (any order: events say who they come from).
    pub fn new(logs: impl IntoIterator<Item = PathBuf>, hours: Vec<HourKey>) -> Self {
        Self {
            logs: logs.into_iter().map(LogTail::new).collect(),
            hours,
            batches: HashSet::new(),
            stored: HashSet::new(),
            reported: HashSet::new(),
            confirmed: HashSet::new(),
            requests: 0,
            streamer_done: false,
            peaks: BTreeMap::new(),
        }
    }

    /// Reads the events logged since the last call.
    pub fn refresh(&mut self) -> Result<(), EventParseError> {
        for index in 0..self.logs.len() {
            for record in self.logs[index].new_events()? {
                self.note(record.event);
            }
        }
        Ok(())
    }

    fn note(&mut self, event: Event) {
        match event {
            Event::BatchReceived { hour, batch, .. } => {
                self.batches.insert((hour, batch));
            }
            Event::HourStored { hour, .. } => {
                self.stored.insert(hour);
            }
            Event::HourReported { hour, .. } => {
                self.reported.insert(hour);
            }
            Event::BatchesRequested { .. } => self.requests += 1,
            Event::HourConfirmed { hour, .. } => {
                self.confirmed.insert(hour);
            }
            Event::AllHoursConfirmed { .. } => self.streamer_done = true,
            Event::OutageEnded { buffer, peak, .. } => {
                let entry = self.peaks.entry(buffer).or_default();
                *entry = (*entry).max(peak);
            }
            // A role whose task failed exits and is restarted by the scenario, or the run
            // fails its recovery deadline: the verdict shows it either way.
            Event::InputIndexed { .. }
            | Event::HourQueued { .. }
            | Event::OutageBegan { .. }
            | Event::PointsRefused { .. }
            | Event::TaskFailed { .. }
            | Event::MessageRejected { .. } => {}
        }
    }

    fn hour(&self, index: usize) -> Option<HourKey> {
        self.hours.get(index.checked_sub(1)?).copied()
    }

    /// How many of the input's hours the processor has reported.
    pub fn reported_hours(&self) -> usize {
        self.reported.len()
    }

    pub fn has_batch(&self, hour: usize, batch: u32) -> bool {
        self.hour(hour)
            .is_some_and(|h| self.batches.contains(&(h, batch)))
    }

    pub fn is_stored(&self, hour: usize) -> bool {
        self.hour(hour).is_some_and(|h| self.stored.contains(&h))
    }

    pub fn is_reported(&self, hour: usize) -> bool {
        self.hour(hour).is_some_and(|h| self.reported.contains(&h))
    }

    pub fn requesting(&self) -> bool {
        self.requests > 0
    }

    /// The streamer said every hour is reported (with `--once`, before it exits).
    pub fn streamer_done(&self) -> bool {
        self.streamer_done
    }

    /// The streamer has confirmed every hour as reported (a streamer without `--once`
    /// never says it is done).
    pub fn streamer_confirmed_all(&self) -> bool {
        self.hours.iter().all(|hour| self.confirmed.contains(hour))
    }

    /// Where the pipeline is, in a few words.
    pub fn describe(&self) -> String {
        let current = self
            .hours
            .iter()
            .position(|h| !self.stored.contains(h))
            .unwrap_or(self.hours.len());
        let received = self
            .hours
            .get(current)
            .map_or(0, |h| self.batches.iter().filter(|(bh, _)| bh == h).count());
        format!(
            "ingester: {} of {} hours stored, {received} batches of hour {} in; processor: {} reported; {} resend requests",
            self.stored.len(),
            self.hours.len(),
            current + 1,
            self.reported.len(),
            self.requests
        )
    }

    /// The largest backlog each buffer had when its target came back, in items.
    pub fn peaks(&self) -> &BTreeMap<String, usize> {
        &self.peaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: Event) -> String {
        let record = weathervane_harness::events::EventRecord { at_ms: 1, event };
        format!(
            "x INFO weathervane: a log line\n{}\n",
            serde_json::to_string(&record).unwrap()
        )
    }

    #[test]
    fn follows_the_events_of_growing_logs() {
        let dir = tempfile::tempdir().unwrap();
        let (ingester, streamer) = (dir.path().join("i.log"), dir.path().join("s.log"));
        let hours: Vec<HourKey> = ["2023-09-19T00", "2023-09-19T01"]
            .map(|h| h.parse().unwrap())
            .to_vec();
        let mut progress = Progress::new([ingester.clone(), streamer.clone()], hours.clone());
        let received = line(Event::BatchReceived {
            hour: hours[0],
            batch: 0,
            rows: 10,
        });
        std::fs::write(&ingester, &received).unwrap();
        progress.refresh().unwrap();
        assert!(progress.has_batch(1, 0) && !progress.has_batch(1, 1));
        assert!(!progress.is_stored(1));
        let stored = line(Event::HourStored {
            hour: hours[0],
            rows: 10,
        });
        std::fs::write(&ingester, received + &stored).unwrap();
        progress.refresh().unwrap();
        assert!(progress.is_stored(1));

        let confirmed = |hour| line(Event::HourConfirmed { hour, rows: 10 });
        std::fs::write(&streamer, confirmed(hours[0])).unwrap();
        progress.refresh().unwrap();
        assert!(!progress.streamer_confirmed_all());
        std::fs::write(&streamer, confirmed(hours[0]) + &confirmed(hours[1])).unwrap();
        progress.refresh().unwrap();
        assert!(progress.streamer_confirmed_all());
        assert!(!progress.streamer_done(), "no --once event was logged");
    }
}
