//! `HourKey`: one UTC date plus hour, the unit the pipeline streams, stores and reports.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// A UTC hour such as `2023-09-19T05`. It is one Redis channel segment, so its text form
/// has no `:`; ordering is chronological.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HourKey {
    /// Seconds since the Unix epoch at the start of the hour (always a multiple of 3600).
    start: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid hour {input:?}: expected YYYY-MM-DDTHH, for example 2023-09-19T05")]
pub struct ParseHourError {
    input: String,
}

impl HourKey {
    /// The hour that contains `time`.
    pub fn containing(time: DateTime<Utc>) -> Self {
        let secs = time.timestamp();
        Self {
            start: secs - secs.rem_euclid(3600),
        }
    }

    /// The hour `hour` (0-23) of `date`; `None` if `hour` is out of range.
    pub fn from_date_hour(date: NaiveDate, hour: u32) -> Option<Self> {
        let time = date.and_hms_opt(hour, 0, 0)?.and_utc();
        Some(Self::containing(time))
    }

    /// Start of the hour, seconds since the Unix epoch.
    pub fn start_secs(self) -> i64 {
        self.start
    }

    /// Start of the hour as a UTC time.
    pub fn start(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.start, 0).expect("an HourKey is always a valid time")
    }

    pub fn date(self) -> NaiveDate {
        self.start().date_naive()
    }

    pub fn hour(self) -> u32 {
        self.start().hour()
    }

    /// The same hour-of-day key as InfluxQL wants it in a `time` condition.
    pub fn rfc3339(self) -> String {
        self.start().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    pub fn next(self) -> Self {
        Self {
            start: self.start + 3600,
        }
    }
}

impl fmt::Display for HourKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.start().format("%Y-%m-%dT%H"))
    }
}

impl FromStr for HourKey {
    type Err = ParseHourError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseHourError {
            input: input.to_owned(),
        };
        // Exactly `YYYY-MM-DDTHH`: chrono alone would also take `2023-09-19T5`.
        if input.len() != 13 || input.as_bytes()[10] != b'T' {
            return Err(error());
        }
        let time = NaiveDateTime::parse_from_str(&format!("{input}:00"), "%Y-%m-%dT%H:%M")
            .map_err(|_| error())?;
        Ok(Self::containing(time.and_utc()))
    }
}

impl TryFrom<String> for HourKey {
    type Error = ParseHourError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<HourKey> for String {
    fn from(hour: HourKey) -> Self {
        hour.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_has_no_colon() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        assert_eq!(hour.to_string(), "2023-09-19T05");
        assert!(!hour.to_string().contains(':'));
        assert_eq!(hour.hour(), 5);
        assert_eq!(hour.date(), NaiveDate::from_ymd_opt(2023, 9, 19).unwrap());
        assert_eq!(hour.rfc3339(), "2023-09-19T05:00:00Z");
        assert_eq!(hour.start_secs() % 3600, 0);
    }

    #[test]
    fn rejects_malformed_hours() {
        for bad in [
            "2023-09-19T5",
            "2023-09-19T24",
            "2023-09-19 05",
            "2023-13-01T00",
            "",
            "x",
        ] {
            assert!(bad.parse::<HourKey>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn hour_23_rolls_into_the_next_day() {
        let hour: HourKey = "2023-09-19T23".parse().unwrap();
        assert_eq!(hour.next().to_string(), "2023-09-20T00");
        let date = NaiveDate::from_ymd_opt(2023, 9, 19).unwrap();
        assert_eq!(HourKey::from_date_hour(date, 23), Some(hour));
        assert_eq!(HourKey::from_date_hour(date, 24), None);
    }

    #[test]
    fn containing_truncates_minutes() {
        let time = DateTime::parse_from_rfc3339("2023-09-19T05:59:59Z")
            .unwrap()
            .to_utc();
        assert_eq!(HourKey::containing(time).to_string(), "2023-09-19T05");
    }
}
