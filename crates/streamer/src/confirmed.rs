//! The streamer's record of confirmed hours on local disk: one `<hour> <generation>` line
//! per confirmation, appended as each is confirmed, so a streamer killed and started again
//! skips the hours whose content it already saw confirmed. An hour confirmed again with
//! another generation (its input was edited) gets another line; the last one counts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use weathervane_core::{Generation, HourKey};

pub struct ConfirmedHours {
    /// The generation each hour was last confirmed with; `None` for an hour recorded
    /// without one (a line of the old format, or one a kill cut short): such an hour is
    /// never confirmed for any generation, so it is streamed again (harmless).
    hours: BTreeMap<HourKey, Option<Generation>>,
    file: Option<File>,
}

impl ConfirmedHours {
    /// Loads the record at `path` (created if missing); `None` keeps it in memory only.
    /// A line that is not an hour (a write cut short by a kill) is skipped; an hour
    /// without a readable generation counts as confirmed with an unknown one.
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                hours: BTreeMap::new(),
                file: None,
            });
        };
        let mut hours = BTreeMap::new();
        let mut torn = false;
        if path.exists() {
            let text = std::fs::read(&path)?;
            torn = text.last().is_some_and(|b| *b != b'\n');
            for line in BufReader::new(&text[..]).split(b'\n') {
                let line = line?;
                if let Some((hour, generation)) = parse_line(&String::from_utf8_lossy(&line)) {
                    hours.insert(hour, generation);
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

    /// Whether `hour` was confirmed with exactly `generation` (the content it has now).
    pub fn is_confirmed(&self, hour: HourKey, generation: Generation) -> bool {
        self.hours.get(&hour) == Some(&Some(generation))
    }

    /// `hour` is confirmed with `generation`; written (and synced) unless it is already
    /// recorded with that generation.
    pub fn record(&mut self, hour: HourKey, generation: Generation) -> std::io::Result<()> {
        if self.hours.insert(hour, Some(generation)) != Some(Some(generation))
            && let Some(file) = &mut self.file
        {
            writeln!(file, "{hour} {generation}")?;
            file.sync_data()?;
        }
        Ok(())
    }
}

/// `<hour> <generation>`, or `<hour>` alone (the old format; also what is left of a line
/// cut short inside its generation): the hour with an unknown generation. `None` if the
/// line does not start with an hour.
fn parse_line(line: &str) -> Option<(HourKey, Option<Generation>)> {
    let mut fields = line.split_whitespace();
    let hour = fields.next()?.parse().ok()?;
    let generation = match (fields.next(), fields.next()) {
        (Some(generation), None) => generation.parse().ok(),
        _ => None,
    };
    Some((hour, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: Generation = Generation::from_bits(0x0123_4567_89ab_cdef);
    const G2: Generation = Generation::from_bits(2);

    fn hour(text: &str) -> HourKey {
        text.parse().unwrap()
    }

    fn append(path: &std::path::Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn hours_and_generations_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut first = ConfirmedHours::load(Some(path.clone())).unwrap();
        first.record(hour("2023-09-19T05"), G1).unwrap();
        first.record(hour("2023-09-19T06"), G2).unwrap();
        first.record(hour("2023-09-19T06"), G2).unwrap();
        drop(first);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "2023-09-19T05 0123456789abcdef\n2023-09-19T06 0000000000000002\n",
            "one line per confirmation, none for a repeat"
        );
        let again = ConfirmedHours::load(Some(path)).unwrap();
        assert!(again.is_confirmed(hour("2023-09-19T05"), G1));
        assert!(again.is_confirmed(hour("2023-09-19T06"), G2));
        assert!(!again.is_confirmed(hour("2023-09-19T07"), G1));
    }

    #[test]
    fn a_changed_generation_is_not_confirmed_until_recorded_and_the_last_line_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let h = hour("2023-09-19T05");
        let mut state = ConfirmedHours::load(Some(path.clone())).unwrap();
        state.record(h, G1).unwrap();
        assert!(!state.is_confirmed(h, G2), "the hour's content changed");
        state.record(h, G2).unwrap();
        assert!(state.is_confirmed(h, G2) && !state.is_confirmed(h, G1));
        drop(state);
        let again = ConfirmedHours::load(Some(path)).unwrap();
        assert!(again.is_confirmed(h, G2) && !again.is_confirmed(h, G1));
    }

    #[test]
    fn an_old_format_line_is_an_hour_of_unknown_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, "2023-09-19T05\n2023-09-19T06 0000000000000002\n").unwrap();
        let state = ConfirmedHours::load(Some(path)).unwrap();
        assert!(!state.is_confirmed(hour("2023-09-19T05"), G1));
        assert!(!state.is_confirmed(hour("2023-09-19T05"), Generation::default()));
        assert!(state.is_confirmed(hour("2023-09-19T06"), G2));
    }

    #[test]
    fn a_torn_line_is_unknown_or_skipped_and_the_next_is_not_glued_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let h = hour("2023-09-19T23");
        ConfirmedHours::load(Some(path.clone()))
            .unwrap()
            .record(h, G1)
            .unwrap();
        // A kill cut a line short inside its generation.
        append(&path, b"2023-09-20T00 01234");
        let mut reloaded = ConfirmedHours::load(Some(path.clone())).unwrap();
        assert!(reloaded.is_confirmed(h, G1));
        let torn = hour("2023-09-20T00");
        assert!(!reloaded.is_confirmed(torn, Generation::from_bits(0x01234)));
        // And one cut inside its hour, after a restart ended the torn line.
        let next = hour("2023-09-20T01");
        reloaded.record(next, G2).unwrap();
        append(&path, b"2023-09-");
        let mut again = ConfirmedHours::load(Some(path.clone())).unwrap();
        assert!(
            again.is_confirmed(next, G2),
            "the hour after a torn line is not glued to it"
        );
        again.record(torn, G1).unwrap();
        let last = ConfirmedHours::load(Some(path)).unwrap();
        assert!(last.is_confirmed(torn, G1) && last.is_confirmed(h, G1));
    }
}
