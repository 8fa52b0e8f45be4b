//! Redis channel names: the seed's three (`data`, `request`, `processor`) plus the two
//! this design adds so that the streamer learns when an hour is done (`announce`,
//! `reported`). Each name ends with an [`HourKey`], which has no `:`.

use std::fmt;

use crate::HourKey;

const PREFIX: &str = "weather_channel";

/// One channel, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Streamer → ingester: batch `batch` (0-based) of `hour`.
    Data { batch: u32, hour: HourKey },
    /// Ingester → streamer: please publish batch `batch` of `hour` again.
    Request { batch: u32, hour: HourKey },
    /// Ingester → processor: every row of `hour` is stored (the seed's `processor`
    /// channel, named here for what it says).
    Stored { hour: HourKey },
    /// Streamer → ingester: every batch of `hour` has been published; the ingester answers
    /// by asking for what it lacks or by re-notifying the processor.
    Announce { hour: HourKey },
    /// Processor → streamer (and anyone watching): the reports of `hour` are stored.
    Reported { hour: HourKey },
}

/// The pattern each role `PSUBSCRIBE`s to.
pub mod pattern {
    pub const DATA: &str = "weather_channel:data:*";
    pub const REQUEST: &str = "weather_channel:request:*";
    pub const STORED: &str = "weather_channel:processor:*";
    pub const ANNOUNCE: &str = "weather_channel:announce:*";
    pub const REPORTED: &str = "weather_channel:reported:*";
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown channel {channel:?}: {reason}")]
pub struct ChannelError {
    pub channel: String,
    pub reason: String,
}

impl Channel {
    pub fn hour(&self) -> HourKey {
        match *self {
            Channel::Data { hour, .. }
            | Channel::Request { hour, .. }
            | Channel::Stored { hour }
            | Channel::Announce { hour }
            | Channel::Reported { hour } => hour,
        }
    }

    pub fn parse(name: &str) -> Result<Self, ChannelError> {
        let error = |reason: &str| ChannelError {
            channel: name.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = name.split(':').collect();
        if parts.first() != Some(&PREFIX) {
            return Err(error("does not start with weather_channel:"));
        }
        let hour = |text: &str| text.parse::<HourKey>().map_err(|e| error(&e.to_string()));
        let batch = |text: &str| {
            text.parse::<u32>()
                .map_err(|_| error(&format!("batch index {text:?} is not a number")))
        };
        match parts[1..] {
            ["data", b, h] => Ok(Channel::Data {
                batch: batch(b)?,
                hour: hour(h)?,
            }),
            ["request", b, h] => Ok(Channel::Request {
                batch: batch(b)?,
                hour: hour(h)?,
            }),
            ["processor", h] => Ok(Channel::Stored { hour: hour(h)? }),
            ["announce", h] => Ok(Channel::Announce { hour: hour(h)? }),
            ["reported", h] => Ok(Channel::Reported { hour: hour(h)? }),
            _ => Err(error(
                "expected data|request:<batch>:<hour> or processor|announce|reported:<hour>",
            )),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Data { batch, hour } => write!(f, "{PREFIX}:data:{batch}:{hour}"),
            Channel::Request { batch, hour } => write!(f, "{PREFIX}:request:{batch}:{hour}"),
            Channel::Stored { hour } => write!(f, "{PREFIX}:processor:{hour}"),
            Channel::Announce { hour } => write!(f, "{PREFIX}:announce:{hour}"),
            Channel::Reported { hour } => write!(f, "{PREFIX}:reported:{hour}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> HourKey {
        "2023-09-19T05".parse().unwrap()
    }

    #[test]
    fn names_match_the_seed() {
        assert_eq!(
            Channel::Data {
                batch: 3,
                hour: hour()
            }
            .to_string(),
            "weather_channel:data:3:2023-09-19T05"
        );
        assert_eq!(
            Channel::Request {
                batch: 0,
                hour: hour()
            }
            .to_string(),
            "weather_channel:request:0:2023-09-19T05"
        );
        assert_eq!(
            Channel::Stored { hour: hour() }.to_string(),
            "weather_channel:processor:2023-09-19T05"
        );
    }

    #[test]
    fn every_channel_round_trips_and_matches_its_pattern() {
        let channels = [
            (
                Channel::Data {
                    batch: 87,
                    hour: hour(),
                },
                pattern::DATA,
            ),
            (
                Channel::Request {
                    batch: 1,
                    hour: hour(),
                },
                pattern::REQUEST,
            ),
            (Channel::Stored { hour: hour() }, pattern::STORED),
            (Channel::Announce { hour: hour() }, pattern::ANNOUNCE),
            (Channel::Reported { hour: hour() }, pattern::REPORTED),
        ];
        for (channel, pattern) in channels {
            let name = channel.to_string();
            assert_eq!(Channel::parse(&name), Ok(channel));
            assert!(name.starts_with(pattern.trim_end_matches('*')));
            assert_eq!(channel.hour(), hour());
        }
    }

    #[test]
    fn malformed_names_say_why() {
        for (name, why) in [
            ("weather_channel:data:x:2023-09-19T05", "batch index"),
            ("weather_channel:data:1:2023-09-19 05", "invalid hour"),
            ("weather_channel:data:1", "expected"),
            ("other:data:1:2023-09-19T05", "weather_channel"),
        ] {
            let error = Channel::parse(name).unwrap_err();
            assert!(error.to_string().contains(why), "{name}: {error}");
            assert!(error.to_string().contains(name));
        }
    }
}
