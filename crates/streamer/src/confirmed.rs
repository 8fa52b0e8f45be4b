//! The streamer's record of confirmed hours on local disk: one hour per line, appended as
//! each is confirmed, so a streamer killed and started again skips them.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use weathervane_core::HourKey;

pub struct ConfirmedHours {
    hours: BTreeSet<HourKey>,
    file: Option<File>,
}

impl ConfirmedHours {
    /// Loads the record at `path` (created if missing); `None` keeps it in memory only.
    /// A line that is not an hour (a write cut short by a kill) is skipped.
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                hours: BTreeSet::new(),
                file: None,
            });
        };
        let mut hours = BTreeSet::new();
        let mut torn = false;
        if path.exists() {
            let text = std::fs::read(&path)?;
            torn = text.last().is_some_and(|b| *b != b'\n');
            for line in BufReader::new(&text[..]).lines() {
                if let Ok(hour) = line?.trim().parse() {
                    hours.insert(hour);
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        if torn {
            // End the torn line, so the next hour is not glued to it.
            file.write_all(b"\n")?;
        }
        Ok(Self {
            hours,
            file: Some(file),
        })
    }

    pub fn contains(&self, hour: HourKey) -> bool {
        self.hours.contains(&hour)
    }

    pub fn len(&self) -> usize {
        self.hours.len()
    }

    pub fn record(&mut self, hour: HourKey) -> std::io::Result<()> {
        if self.hours.insert(hour)
            && let Some(file) = &mut self.file
        {
            writeln!(file, "{hour}")?;
            file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let hour: HourKey = "2023-09-19T23".parse().unwrap();
        ConfirmedHours::load(Some(path.clone()))
            .unwrap()
            .record(hour)
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2023-09-")
            .unwrap();
        let mut reloaded = ConfirmedHours::load(Some(path.clone())).unwrap();
        assert!(reloaded.contains(hour));
        assert_eq!(reloaded.len(), 1);
        let next: HourKey = "2023-09-20T00".parse().unwrap();
        reloaded.record(next).unwrap();
        let again = ConfirmedHours::load(Some(path)).unwrap();
        assert!(
            again.contains(next),
            "the hour after a torn line is not glued to it"
        );
    }
}
