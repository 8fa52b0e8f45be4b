//! The roles' typed events as they appear in a log: every line that
//! `weathervane_core::event::parse_line` takes for an event, and nothing else. A log is
//! read whole ([`events_in`]) or followed as it grows ([`LogTail`]); a line still being
//! written is left for the next read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use weathervane_core::event::parse_line;
pub use weathervane_core::event::{Event, EventParseError, EventRecord};

/// The events in the complete lines of `text` (a log read so far), in order.
pub fn events_in(text: &str) -> Result<Vec<EventRecord>, EventParseError> {
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    text[..complete].lines().filter_map(parse_line).collect()
}

/// The events of a log file so far; none if it does not exist yet.
pub fn events_of(path: &std::path::Path) -> Result<Vec<EventRecord>, EventParseError> {
    events_in(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Follows a growing log file: each call returns the events of the lines completed since
/// the last one.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// The events of the lines completed since the last call (none while the file does
    /// not exist).
    pub fn new_events(&mut self) -> Result<Vec<EventRecord>, EventParseError> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(Vec::new());
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return Ok(Vec::new());
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let events = events_in(&self.partial[..complete]);
        self.partial.drain(..complete);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{"at_ms":1,"event":"hour_stored","hour":"2023-09-19T00","rows":10}"#;

    #[test]
    fn only_event_lines_count_and_a_partial_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingester.log");
        let mut tail = LogTail::new(&path);
        assert!(tail.new_events().unwrap().is_empty(), "no file yet");
        let log_line =
            "x INFO weathervane_ingester: a log line that names hour=2023-09-19T00 rows=10\n";
        std::fs::write(&path, format!("{log_line}{}", &STORED[..20])).unwrap();
        assert!(tail.new_events().unwrap().is_empty());
        std::fs::write(&path, format!("{log_line}{STORED}\n")).unwrap();
        let events = tail.new_events().unwrap();
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0].event,
            Event::HourStored { rows: 10, .. }
        ));
        assert_eq!(events_of(&path).unwrap().len(), 1);
    }
}
