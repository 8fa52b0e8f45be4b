//! Outage scenarios: a schedule of fault actions read from an `exps/*.csv` file (or drawn
//! at random from a seed), each fired at a time offset or when the pipeline reaches a
//! named point.
//!
//! File format: `#` lines are comments (the first ones say what the scenario
//! reproduces), then a header `when,action,target`, then one action per line.
//! - `when`: `3s` (after streaming starts), `+2.5s` (after the previous action), or a
//!   point with an optional delay: `batch:H:B` (the ingester has received batch B of the
//!   H-th hour; B may be `last`), `stored:H` (the ingester has stored hour H),
//!   `reported:H` (the processor has stored the reports of hour H), `requesting` (the
//!   ingester is asking for missing batches), e.g. `batch:1:2+0.5s`. Hours count from 1.
//! - `action`: `kill` (SIGKILL), `stop` (SIGTERM), `start`, `pause` (SIGSTOP), `resume`
//!   (SIGCONT).
//! - `target`: `redis`, `influxdb`, `streamer`, `ingester`, `processor`, `api`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Redis,
    Influxdb,
    Streamer,
    Ingester,
    Processor,
    Api,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Redis,
        Target::Influxdb,
        Target::Streamer,
        Target::Ingester,
        Target::Processor,
        Target::Api,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Redis => "redis",
            Target::Influxdb => "influxdb",
            Target::Streamer => "streamer",
            Target::Ingester => "ingester",
            Target::Processor => "processor",
            Target::Api => "api",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Kill,
    Stop,
    Start,
    Pause,
    Resume,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    /// Whether this action takes the target down (rather than bringing it back).
    pub fn is_fault(self) -> bool {
        matches!(self, Action::Kill | Action::Stop | Action::Pause)
    }
}

/// A named point in the pipeline's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Start,
    /// Batch `batch` (`None`: the last) of the `hour`-th hour received by the ingester.
    Batch {
        hour: usize,
        batch: Option<u32>,
    },
    Stored {
        hour: usize,
    },
    Reported {
        hour: usize,
    },
    Requesting,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// At `point`, plus a delay.
    After { point: Point, delay: Duration },
    /// A delay after the previous action.
    AfterPrevious(Duration),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub when: When,
    pub action: Action,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// The leading comment lines.
    pub description: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ScheduleError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let number = text
        .strip_suffix('s')
        .ok_or_else(|| format!("{text:?} is not a duration like 2.5s"))?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 2.5s"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a duration like 2.5s"));
    }
    Ok(Duration::from_secs_f64(value))
}

impl FromStr for Point {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hour = |h: &str| {
            h.parse::<usize>()
                .ok()
                .filter(|h| *h >= 1)
                .ok_or_else(|| format!("hour {h:?} is not a number from 1"))
        };
        match text.split(':').collect::<Vec<_>>()[..] {
            ["start"] => Ok(Point::Start),
            ["requesting"] => Ok(Point::Requesting),
            ["stored", h] => Ok(Point::Stored { hour: hour(h)? }),
            ["reported", h] => Ok(Point::Reported { hour: hour(h)? }),
            ["batch", h, "last"] => Ok(Point::Batch {
                hour: hour(h)?,
                batch: None,
            }),
            ["batch", h, b] => Ok(Point::Batch {
                hour: hour(h)?,
                batch: Some(
                    b.parse()
                        .map_err(|_| format!("batch {b:?} is not a number or `last`"))?,
                ),
            }),
            _ => Err(format!(
                "{text:?} is not a point: start, batch:H:B, batch:H:last, stored:H, reported:H, requesting"
            )),
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Start => write!(f, "start"),
            Point::Requesting => write!(f, "requesting"),
            Point::Stored { hour } => write!(f, "stored:{hour}"),
            Point::Reported { hour } => write!(f, "reported:{hour}"),
            Point::Batch { hour, batch: None } => write!(f, "batch:{hour}:last"),
            Point::Batch {
                hour,
                batch: Some(b),
            } => write!(f, "batch:{hour}:{b}"),
        }
    }
}

impl FromStr for When {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(delay) = text.strip_prefix('+') {
            return Ok(When::AfterPrevious(seconds(delay)?));
        }
        if text.ends_with('s') && text.starts_with(|c: char| c.is_ascii_digit()) {
            return Ok(When::After {
                point: Point::Start,
                delay: seconds(text)?,
            });
        }
        let (point, delay) = match text.split_once('+') {
            Some((point, delay)) => (point, seconds(delay)?),
            None => (text, Duration::ZERO),
        };
        Ok(When::After {
            point: point.parse()?,
            delay,
        })
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::AfterPrevious(delay) => write!(f, "+{:.1}s", delay.as_secs_f64()),
            When::After { point, delay } if delay.is_zero() => write!(f, "{point}"),
            When::After { point, delay } => write!(f, "{point}+{:.1}s", delay.as_secs_f64()),
        }
    }
}

impl Scenario {
    pub fn parse(name: &str, text: &str) -> Result<Self, ScheduleError> {
        let error = |line: usize, reason: String| ScheduleError {
            file: name.to_owned(),
            line,
            reason,
        };
        let mut description = Vec::new();
        let mut steps = Vec::new();
        let mut header_seen = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if let Some(comment) = line.strip_prefix('#') {
                if steps.is_empty() && !header_seen {
                    description.push(comment.trim().to_owned());
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if !header_seen {
                if cells != ["when", "action", "target"] {
                    return Err(error(
                        number,
                        "expected the header when,action,target".into(),
                    ));
                }
                header_seen = true;
                continue;
            }
            let [when, action, target] = cells[..] else {
                return Err(error(
                    number,
                    format!("expected 3 cells, found {}", cells.len()),
                ));
            };
            let action = [
                Action::Kill,
                Action::Stop,
                Action::Start,
                Action::Pause,
                Action::Resume,
            ]
            .into_iter()
            .find(|a| a.name() == action)
            .ok_or_else(|| {
                error(
                    number,
                    format!("unknown action {action:?}: kill, stop, start, pause, resume"),
                )
            })?;
            let target = Target::ALL
                .into_iter()
                .find(|t| t.name() == target)
                .ok_or_else(|| error(number, format!("unknown target {target:?}: redis, influxdb, streamer, ingester, processor, api")))?;
            steps.push(Step {
                when: when.parse().map_err(|reason| error(number, reason))?,
                action,
                target,
            });
        }
        if !header_seen {
            return Err(error(1, "no header when,action,target".into()));
        }
        Ok(Self {
            name: name.to_owned(),
            description: description.join(" "),
            steps,
        })
    }

    /// `faults` faults on random targets, each a take-down followed by its restore after
    /// 0.5 to 4 s, at random times in the first `span` of streaming; one target is never
    /// down twice at once.
    pub fn random(seed: u64, faults: usize, span: Duration) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut windows: Vec<(Duration, Step)> = Vec::new();
        let mut busy_until: std::collections::BTreeMap<Target, Duration> = Default::default();
        for _ in 0..faults {
            let target = Target::ALL[rng.random_range(0..Target::ALL.len())];
            let (down, up) = match rng.random_range(0..3) {
                0 => (Action::Kill, Action::Start),
                1 => (Action::Stop, Action::Start),
                _ => (Action::Pause, Action::Resume),
            };
            let free = busy_until.get(&target).copied().unwrap_or_default();
            let at = free.max(Duration::from_secs_f64(
                rng.random_range(0.0..span.as_secs_f64()),
            ));
            let length = Duration::from_secs_f64(rng.random_range(0.5..4.0));
            busy_until.insert(target, at + length + Duration::from_millis(200));
            windows.push((
                at,
                Step {
                    when: When::After {
                        point: Point::Start,
                        delay: at,
                    },
                    action: down,
                    target,
                },
            ));
            windows.push((
                at + length,
                Step {
                    when: When::After {
                        point: Point::Start,
                        delay: at + length,
                    },
                    action: up,
                    target,
                },
            ));
        }
        windows.sort_by_key(|(at, _)| *at);
        let steps: Vec<Step> = windows.into_iter().map(|(_, step)| step).collect();
        let description = steps
            .iter()
            .map(|s| format!("{} {} {}", s.when, s.action.name(), s.target.name()))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            name: format!("random seed {seed}, {faults} faults"),
            description,
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_offsets_and_comments() {
        let text = "# Redis dies mid-hour.\n# Second line.\nwhen,action,target\nbatch:1:2,kill,redis\n+5s,start,redis\n3.5s,pause,influxdb\nstored:2+0.5s,resume,influxdb\nbatch:1:last,kill,ingester\n";
        let scenario = Scenario::parse("x.csv", text).unwrap();
        assert_eq!(scenario.description, "Redis dies mid-hour. Second line.");
        assert_eq!(scenario.steps.len(), 5);
        assert_eq!(
            scenario.steps[0],
            Step {
                when: When::After {
                    point: Point::Batch {
                        hour: 1,
                        batch: Some(2)
                    },
                    delay: Duration::ZERO
                },
                action: Action::Kill,
                target: Target::Redis
            }
        );
        assert_eq!(
            scenario.steps[1].when,
            When::AfterPrevious(Duration::from_secs(5))
        );
        assert_eq!(
            scenario.steps[2].when,
            When::After {
                point: Point::Start,
                delay: Duration::from_millis(3500)
            }
        );
        assert_eq!(
            scenario.steps[3].when,
            When::After {
                point: Point::Stored { hour: 2 },
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(
            scenario.steps[4].when,
            When::After {
                point: Point::Batch {
                    hour: 1,
                    batch: None
                },
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn errors_name_the_file_line_and_cell() {
        for (text, why) in [
            ("when,action,target\nsoon,kill,redis\n", "not a point"),
            (
                "when,action,target\n1s,explode,redis\n",
                "unknown action \"explode\"",
            ),
            ("when,action,target\n1s,kill,postgres\n", "unknown target"),
            ("when,action,target\nbatch:0:1,kill,redis\n", "hour \"0\""),
            ("1s,kill,redis\n", "header"),
        ] {
            let error = Scenario::parse("bad.csv", text).unwrap_err().to_string();
            assert!(
                error.starts_with("bad.csv:") && error.contains(why),
                "{error}"
            );
        }
    }

    #[test]
    fn random_schedules_are_reproducible_and_restore_every_fault() {
        let a = Scenario::random(7, 5, Duration::from_secs(10));
        assert_eq!(a, Scenario::random(7, 5, Duration::from_secs(10)));
        assert_ne!(
            a.steps,
            Scenario::random(8, 5, Duration::from_secs(10)).steps
        );
        assert_eq!(a.steps.len(), 10);
        for target in Target::ALL {
            let actions: Vec<Action> = a
                .steps
                .iter()
                .filter(|s| s.target == target)
                .map(|s| s.action)
                .collect();
            for pair in actions.chunks(2) {
                assert!(
                    pair[0].is_fault() && !pair[1].is_fault(),
                    "{target:?}: {actions:?}"
                );
            }
        }
    }
}
