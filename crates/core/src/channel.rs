//! Redis channel names: the seed's three (`data`, `request`, `processor`) plus the two
//! this design adds so that the streamer learns when an hour is done (`announce`,
//! `reported`), and `reports`, which carries an hour's reports to the api replicas; each under the deployment's [`Namespace`] (the seed's `weather_channel`
//! by default). Each name ends with an [`HourKey`], which has no `:`. Also the
//! [`DeploymentId`] every payload carries, so a message from another deployment sharing
//! the Redis is refused even where the namespaces or ACLs were set up wrong.

use std::fmt;
use std::str::FromStr;

use crate::HourKey;

/// What a namespace or deployment id may be: 1 to 64 of `A-Z a-z 0-9 _ . -`, so it can
/// be neither a pattern (`*?[]`) nor split a channel name (`:`), nor forge a log line.
fn check_name(what: &str, text: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if (1..=64).contains(&text.len()) && text.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!(
            "{what} {text:?} must be 1 to 64 letters, digits, '_', '.' or '-'"
        ))
    }
}

/// The first part of every channel name of a deployment (`<namespace>:data:...`).
/// Deployments sharing one Redis use different namespaces and never see each other's
/// messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub const DEFAULT: &str = "weather_channel";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace(Self::DEFAULT.to_owned())
    }
}

impl FromStr for Namespace {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        check_name("channel namespace", text)?;
        Ok(Namespace(text.to_owned()))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The deployment a message comes from, carried in every payload: a role refuses (and
/// counts) a message from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeploymentId(String);

impl DeploymentId {
    pub const DEFAULT: &str = "default";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for DeploymentId {
    fn default() -> Self {
        DeploymentId(Self::DEFAULT.to_owned())
    }
}

impl FromStr for DeploymentId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        check_name("deployment id", text)?;
        Ok(DeploymentId(text.to_owned()))
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a deployment's messages are and whose they are: what a role needs to name
/// channels and to write and read payloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deployment {
    pub namespace: Namespace,
    pub id: DeploymentId,
}

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
    /// Processor → api replicas: the reports of `hour` themselves, compact, published
    /// after they are stored (`payload::HourReports`), so every replica holds them
    /// without a query.
    Reports { hour: HourKey },
}

/// A kind of channel, for the pattern a role `PSUBSCRIBE`s to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Data,
    Request,
    Stored,
    Announce,
    Reported,
    Reports,
}

impl Pattern {
    /// `<namespace>:<kind>:*`.
    pub fn in_namespace(self, namespace: &Namespace) -> String {
        let kind = match self {
            Pattern::Data => "data",
            Pattern::Request => "request",
            Pattern::Stored => "processor",
            Pattern::Announce => "announce",
            Pattern::Reported => "reported",
            Pattern::Reports => "reports",
        };
        format!("{namespace}:{kind}:*")
    }
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
            | Channel::Reported { hour }
            | Channel::Reports { hour } => hour,
        }
    }

    /// Parses a channel name of `namespace`.
    pub fn parse(name: &str, namespace: &Namespace) -> Result<Self, ChannelError> {
        let error = |reason: &str| ChannelError {
            channel: name.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = name.split(':').collect();
        if parts.first() != Some(&namespace.as_str()) {
            return Err(error(&format!("does not start with {namespace}:")));
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
            ["reports", h] => Ok(Channel::Reports { hour: hour(h)? }),
            _ => Err(error(
                "expected data|request:<batch>:<hour> or processor|announce|reported|reports:<hour>",
            )),
        }
    }

    /// The channel's name under `namespace`.
    pub fn name(&self, namespace: &Namespace) -> String {
        let ns = namespace;
        match self {
            Channel::Data { batch, hour } => format!("{ns}:data:{batch}:{hour}"),
            Channel::Request { batch, hour } => format!("{ns}:request:{batch}:{hour}"),
            Channel::Stored { hour } => format!("{ns}:processor:{hour}"),
            Channel::Announce { hour } => format!("{ns}:announce:{hour}"),
            Channel::Reported { hour } => format!("{ns}:reported:{hour}"),
            Channel::Reports { hour } => format!("{ns}:reports:{hour}"),
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
    fn names_match_the_seed_by_default() {
        let ns = Namespace::default();
        let data = Channel::Data {
            batch: 3,
            hour: hour(),
        };
        assert_eq!(data.name(&ns), "weather_channel:data:3:2023-09-19T05");
        let request = Channel::Request {
            batch: 0,
            hour: hour(),
        };
        assert_eq!(request.name(&ns), "weather_channel:request:0:2023-09-19T05");
        assert_eq!(
            Channel::Stored { hour: hour() }.name(&ns),
            "weather_channel:processor:2023-09-19T05"
        );
    }

    #[test]
    fn every_channel_round_trips_in_its_namespace_and_matches_its_pattern() {
        let channels = [
            (
                Channel::Data {
                    batch: 87,
                    hour: hour(),
                },
                Pattern::Data,
            ),
            (
                Channel::Request {
                    batch: 1,
                    hour: hour(),
                },
                Pattern::Request,
            ),
            (Channel::Stored { hour: hour() }, Pattern::Stored),
            (Channel::Announce { hour: hour() }, Pattern::Announce),
            (Channel::Reported { hour: hour() }, Pattern::Reported),
            (Channel::Reports { hour: hour() }, Pattern::Reports),
        ];
        let other: Namespace = "site-b".parse().unwrap();
        for ns in [Namespace::default(), other.clone()] {
            for (channel, pattern) in channels {
                let name = channel.name(&ns);
                assert_eq!(Channel::parse(&name, &ns), Ok(channel));
                let pattern = pattern.in_namespace(&ns);
                assert!(name.starts_with(pattern.trim_end_matches('*')), "{name}");
                assert_eq!(channel.hour(), hour());
            }
        }
        let theirs = Channel::Reported { hour: hour() }.name(&other);
        let error = Channel::parse(&theirs, &Namespace::default()).unwrap_err();
        assert!(error.to_string().contains("weather_channel:"), "{error}");
    }

    #[test]
    fn malformed_names_say_why() {
        let ns = Namespace::default();
        for (name, why) in [
            ("weather_channel:data:x:2023-09-19T05", "batch index"),
            ("weather_channel:data:1:2023-09-19 05", "invalid hour"),
            ("weather_channel:data:1", "expected"),
            ("other:data:1:2023-09-19T05", "weather_channel"),
        ] {
            let error = Channel::parse(name, &ns).unwrap_err();
            assert!(error.to_string().contains(why), "{name}: {error}");
            assert!(error.to_string().contains(name));
        }
    }

    #[test]
    fn namespaces_and_deployment_ids_cannot_be_patterns_or_split_names() {
        for bad in ["", "a:b", "w*", "x?", "[a]", "new\nline", &"n".repeat(65)] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad:?}");
            assert!(bad.parse::<DeploymentId>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "prod-2.eu_west".parse::<DeploymentId>().unwrap().as_str(),
            "prod-2.eu_west"
        );
    }
}
