//! An hour's generation: a digest of exactly what the streamer publishes for it (its rows,
//! in order, and the batch size they are split by). It travels in every batch,
//! announcement, notice and report of the hour, so a role can tell the current content of
//! an hour from an older one: the ingester rewrites an hour whose generation changed and
//! never credits an older generation's batch to the new one, the processor reports the
//! generation it read, and the streamer confirms an hour only for the generation it sent
//! (and records it, so a changed or extended hour is streamed again after a restart).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::WeatherRow;

/// 64 bits of digest, written as 16 hex digits (a JSON number that large would lose
/// precision in JavaScript clients).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Generation(u64);

impl Generation {
    /// The generation with these 64 bits (for tests and tools; roles compute generations
    /// with [`GenerationDigest`]).
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid generation {0:?}: expected 16 hex digits")]
pub struct ParseGenerationError(String);

impl FromStr for Generation {
    type Err = ParseGenerationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 16 {
            return Err(ParseGenerationError(text.chars().take(40).collect()));
        }
        u64::from_str_radix(text, 16)
            .map(Generation)
            .map_err(|_| ParseGenerationError(text.to_owned()))
    }
}

impl TryFrom<String> for Generation {
    type Error = ParseGenerationError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Generation> for String {
    fn from(generation: Generation) -> Self {
        generation.to_string()
    }
}

/// Folds an hour's rows, in publishing order, into its [`Generation`].
#[derive(Clone, Debug)]
pub struct GenerationDigest {
    state: u64,
    buffer: Vec<u8>,
}

impl GenerationDigest {
    /// A digest for rows split into batches of `batch_size`.
    pub fn new(batch_size: u32) -> Self {
        Self {
            state: xxh3_64_with_seed(&batch_size.to_le_bytes(), 0x5745_4154_4845_5256),
            buffer: Vec::new(),
        }
    }

    pub fn add(&mut self, row: &WeatherRow) {
        let buffer = &mut self.buffer;
        buffer.clear();
        for text in [&row.zip_code, &row.state, &row.name, &row.wind_dir] {
            buffer.extend_from_slice(&(text.len() as u64).to_le_bytes());
            buffer.extend_from_slice(text.as_bytes());
        }
        buffer.extend_from_slice(&row.time.to_le_bytes());
        for value in &row.values {
            match value {
                Some(value) => {
                    buffer.push(1);
                    buffer.extend_from_slice(&value.to_bits().to_le_bytes());
                }
                None => buffer.push(0),
            }
        }
        self.state = xxh3_64_with_seed(buffer, self.state);
    }

    pub fn finish(&self) -> Generation {
        Generation(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::NUMERIC_COLUMNS;

    fn row(zip: &str, temp: f64) -> WeatherRow {
        let mut values = [None; NUMERIC_COLUMNS.len()];
        values[2] = Some(temp);
        WeatherRow {
            zip_code: zip.into(),
            state: "MA".into(),
            name: "n".into(),
            time: 1_695_099_600,
            wind_dir: String::new(),
            values,
        }
    }

    fn digest(batch_size: u32, rows: &[WeatherRow]) -> Generation {
        let mut digest = GenerationDigest::new(batch_size);
        rows.iter().for_each(|r| digest.add(r));
        digest.finish()
    }

    #[test]
    fn any_change_of_content_order_or_batch_size_is_a_new_generation() {
        let rows = [row("02134", 14.2), row("02135", 15.0)];
        let base = digest(500, &rows);
        assert_eq!(
            base,
            digest(500, &rows),
            "the same input, the same generation"
        );
        assert_ne!(base, digest(500, &[row("02134", 14.3), row("02135", 15.0)]));
        assert_ne!(base, digest(500, &rows[..1]), "a row removed");
        assert_ne!(base, digest(500, &[rows[1].clone(), rows[0].clone()]));
        assert_ne!(base, digest(7, &rows), "another batch size");
        // Field boundaries count: "ab"+"c" is not "a"+"bc".
        let mut a = row("ab", 1.0);
        a.state = "C".into();
        let mut b = row("a", 1.0);
        b.state = "BC".into();
        assert_ne!(digest(1, &[a]), digest(1, &[b]));
    }

    #[test]
    fn a_generation_reads_back_from_its_text() {
        let generation = digest(500, &[row("02134", 14.2)]);
        let text = generation.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Generation>().unwrap(), generation);
        let json = serde_json::to_string(&generation).unwrap();
        assert_eq!(
            serde_json::from_str::<Generation>(&json).unwrap(),
            generation
        );
        assert!("xyz".parse::<Generation>().is_err());
        assert!("0123456789abcdefff".parse::<Generation>().is_err());
    }
}
