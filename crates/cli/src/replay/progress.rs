//! How far the pipeline has got, read from the roles' logs as they grow: batches the
//! ingester received, hours it stored, hours the processor reported, requests for missing
//! batches, and buffer peaks. Reading logs keeps replay from subscribing to Redis itself,
//! which would change the subscriber counts that `PUBLISH` reports.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use weathervane_core::HourKey;

/// The new lines of a growing file.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let lines = self.partial[..complete]
            .lines()
            .map(str::to_owned)
            .collect();
        self.partial.drain(..complete);
        lines
    }
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()
}

pub struct Progress {
    ingester: LogTail,
    processor: LogTail,
    streamer: LogTail,
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
    pub fn new(
        ingester: PathBuf,
        processor: PathBuf,
        streamer: PathBuf,
        hours: Vec<HourKey>,
    ) -> Self {
        Self {
            ingester: LogTail::new(ingester),
            processor: LogTail::new(processor),
            streamer: LogTail::new(streamer),
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

    pub fn refresh(&mut self) {
        let mut lines = self.ingester.new_lines();
        lines.extend(self.processor.new_lines());
        for line in &lines {
            let hour = field(line, "hour").and_then(|h| h.parse::<HourKey>().ok());
            if line.contains("Batch received.") {
                if let (Some(hour), Some(batch)) =
                    (hour, field(line, "batch").and_then(|b| b.parse().ok()))
                {
                    self.batches.insert((hour, batch));
                }
            } else if line.contains("Hour stored;") {
                self.stored.extend(hour);
            } else if line.contains("Reports stored.") {
                self.reported.extend(hour);
            } else if line.contains("Requesting missing batches.") {
                self.requests += 1;
            }
            self.note_peak(line);
        }
        for line in self.streamer.new_lines() {
            if line.contains("Every hour is reported") {
                self.streamer_done = true;
            } else if line.contains("Hour reported.") {
                self.confirmed
                    .extend(field(&line, "hour").and_then(|h| h.parse::<HourKey>().ok()));
            }
            self.note_peak(&line);
        }
    }

    fn note_peak(&mut self, line: &str) {
        if line.contains("Target back;")
            && let (Some(buffer), Some(peak)) = (
                field(line, "buffer"),
                field(line, "peak").and_then(|p| p.parse().ok()),
            )
        {
            let entry = self.peaks.entry(buffer.to_owned()).or_default();
            *entry = (*entry).max(peak);
        }
    }

    fn hour(&self, index: usize) -> Option<HourKey> {
        self.hours.get(index.checked_sub(1)?).copied()
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
    pub fn peaks(&self) -> String {
        self.peaks
            .iter()
            .map(|(buffer, peak)| format!("{buffer} {peak}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_from_log_lines() {
        let line = "2026-11-23T18:13:22.324648Z DEBUG weathervane_ingester: Batch received. hour=2023-09-19T05 batch=3 rows=10";
        assert_eq!(field(line, "hour"), Some("2023-09-19T05"));
        assert_eq!(field(line, "batch"), Some("3"));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn follows_a_growing_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingester.log");
        let hour: HourKey = "2023-09-19T00".parse().unwrap();
        let mut progress = Progress::new(
            path.clone(),
            dir.path().join("p.log"),
            dir.path().join("s.log"),
            vec![hour],
        );
        std::fs::write(&path, "x DEBUG weathervane_ingester: Batch received. hour=2023-09-19T00 batch=0 rows=10\nx INFO weathervane_ingester: Hour stored; no").unwrap();
        progress.refresh();
        assert!(progress.has_batch(1, 0) && !progress.has_batch(1, 1));
        assert!(!progress.is_stored(1), "a partial line waits for its end");
        std::fs::write(&path, "x DEBUG weathervane_ingester: Batch received. hour=2023-09-19T00 batch=0 rows=10\nx INFO weathervane_ingester: Hour stored; notifying. hour=2023-09-19T00 rows=10\n").unwrap();
        progress.refresh();
        assert!(progress.is_stored(1));
    }

    #[test]
    fn counts_the_hours_the_streamer_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamer.log");
        let hours: Vec<HourKey> = ["2023-09-19T00", "2023-09-19T01"]
            .map(|h| h.parse().unwrap())
            .to_vec();
        let mut progress = Progress::new(
            dir.path().join("i.log"),
            dir.path().join("p.log"),
            path.clone(),
            hours,
        );
        let line = |hour: &str| {
            format!("x INFO weathervane_streamer: Hour reported. hour={hour} rows=10 states=3\n")
        };
        std::fs::write(&path, line("2023-09-19T00")).unwrap();
        progress.refresh();
        assert!(!progress.streamer_confirmed_all());
        std::fs::write(&path, line("2023-09-19T00") + &line("2023-09-19T01")).unwrap();
        progress.refresh();
        assert!(progress.streamer_confirmed_all());
        assert!(!progress.streamer_done(), "no --once line was logged");
    }
}
