//! The dead-letter file: every point InfluxDB refused for good, as CSV
//! `hour,zip_code,time,reason` with InfluxDB's own reason. Created on first use, appended
//! to, never truncated; a letter already in the file (the same batch written again after a
//! redelivery or a restart) is not written twice.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

const HEADER: [&str; 4] = ["hour", "zip_code", "time", "reason"];

/// One refused point: its hour, its station, its time (RFC 3339) and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeadLetter {
    pub hour: String,
    pub zip_code: String,
    pub time: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    /// Every letter in the file: those found at start and those written since.
    written: HashSet<DeadLetter>,
}

impl DeadLetters {
    /// Reads the letters an earlier run left in `path`, if any.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let mut written = HashSet::new();
        match csv::ReaderBuilder::new().flexible(true).from_path(&path) {
            Ok(mut reader) => {
                for record in reader.records() {
                    let record = record.map_err(io::Error::other)?;
                    if let [hour, zip_code, time, reason] = record.iter().collect::<Vec<_>>()[..] {
                        written.insert(DeadLetter {
                            hour: hour.into(),
                            zip_code: zip_code.into(),
                            time: time.into(),
                            reason: reason.into(),
                        });
                    }
                }
            }
            Err(error) if matches!(error.kind(), csv::ErrorKind::Io(e) if e.kind() == io::ErrorKind::NotFound) =>
                {}
            Err(error) => return Err(io::Error::other(error)),
        }
        Ok(Self { path, written })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the letters not in the file yet; returns how many were new. On an error
    /// nothing is counted as written, so the caller may try again.
    pub fn record(&mut self, letters: &[DeadLetter]) -> io::Result<usize> {
        let mut new: Vec<&DeadLetter> = Vec::new();
        for letter in letters {
            if !self.written.contains(letter) && !new.contains(&letter) {
                new.push(letter);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let empty = file.metadata()?.len() == 0;
        let mut writer = csv::Writer::from_writer(file);
        if empty {
            writer.write_record(HEADER)?;
        }
        for letter in &new {
            writer.write_record([&letter.hour, &letter.zip_code, &letter.time, &letter.reason])?;
        }
        writer.flush()?;
        let count = new.len();
        self.written.extend(new.into_iter().cloned());
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(zip: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            hour: "2023-09-21T05".into(),
            zip_code: zip.into(),
            time: "2023-09-21T05:00:00Z".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn appends_once_per_letter_across_redeliveries_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-letters.csv");
        let conflict =
            "partial write: field type conflict: input field \"uv\", is type float dropped=1";
        let mut letters = DeadLetters::open(&path).unwrap();
        assert!(!path.exists(), "created on first use only");
        assert_eq!(
            letters
                .record(&[letter("02134", conflict), letter("02134", conflict)])
                .unwrap(),
            1
        );
        assert_eq!(letters.record(&[letter("02134", conflict)]).unwrap(), 0);
        drop(letters);

        let mut again = DeadLetters::open(&path).unwrap();
        assert_eq!(
            again
                .record(&[letter("02134", conflict), letter("10001", "other")])
                .unwrap(),
            1
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "hour,zip_code,time,reason");
        assert!(lines[1].starts_with("2023-09-21T05,02134,2023-09-21T05:00:00Z,\"partial write"));
        assert_eq!(DeadLetters::open(&path).unwrap().written.len(), 2);
    }
}
