//! The pipeline's milestones as typed events: the moments the lab (replay, bench) and the
//! tests wait for. Each is emitted through [`emit`], which logs a human line with fixed
//! fields and, when `WEATHERVANE_EVENTS` asks for it, writes the event as one JSON line;
//! [`parse_line`] reads such a line back. Nothing outside this module needs to know what a
//! role's log says.
//!
//! `WEATHERVANE_EVENTS`: unset or empty, no JSON lines; `stderr`, JSON lines on stderr
//! between the log lines (so a container's log carries them too); any other value, a file
//! the lines are appended to.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::HourKey;

/// The environment variable that turns the JSON event lines on.
pub const EVENTS_ENV: &str = "WEATHERVANE_EVENTS";

/// A milestone of the pipeline. The role that emits each is in its doc.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Streamer: the input is indexed.
    InputIndexed {
        files: usize,
        rows: u64,
        hours: usize,
        rejected: u64,
        already_confirmed: usize,
    },
    /// Streamer: every batch of an hour and its announcement are queued for publishing.
    HourQueued {
        hour: HourKey,
        batches: u32,
        rows: u64,
    },
    /// Ingester: a batch passed its checks and is accepted for storing (it is queued for
    /// InfluxDB once the hour is ready for its generation).
    BatchReceived {
        hour: HourKey,
        batch: u32,
        rows: u64,
    },
    /// Ingester: it asked the streamer for batches it lacks.
    BatchesRequested { hour: HourKey, batches: Vec<u32> },
    /// Ingester: every batch of the hour is stored; the processor is being notified.
    HourStored { hour: HourKey, rows: u64 },
    /// Ingester: InfluxDB refused `points` points of a batch for good, for `reason` (its
    /// own message); they are in the dead-letter file and the hour completes without them.
    PointsRefused {
        hour: HourKey,
        batch: u32,
        points: u64,
        reason: String,
    },
    /// Processor: the hour's reports are written to InfluxDB.
    HourReported {
        hour: HourKey,
        rows: u64,
        states: u32,
        elapsed_ms: u64,
    },
    /// Streamer: the processor's confirmation matched the rows sent; the hour is done.
    HourConfirmed { hour: HourKey, rows: u64 },
    /// Streamer with `--once`: every hour of the input is confirmed; it exits.
    AllHoursConfirmed { rows: u64 },
    /// A buffer's target (InfluxDB, a Redis channel) stopped taking items.
    OutageBegan {
        buffer: String,
        buffered: usize,
        reason: String,
    },
    /// A message on the bus could not be used (malformed, or inconsistent with its
    /// channel) and was set aside. `rejected` counts them since the role started.
    MessageRejected {
        channel: String,
        reason: String,
        rejected: u64,
    },
    /// A task of the role ended early, failed or panicked; the role stops and exits
    /// non-zero.
    TaskFailed { task: String, how: String },
    /// The target took items again after an outage.
    OutageEnded {
        buffer: String,
        buffered: usize,
        /// The most items the buffer ever held, so far.
        peak: usize,
        after_ms: u64,
    },
}

/// One event as written: when (ms since the Unix epoch) and what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A line that starts like an event record but is not one.
#[derive(Debug, thiserror::Error)]
#[error("malformed event line {line:?}: {source}")]
pub struct EventParseError {
    line: String,
    source: serde_json::Error,
}

/// Where an event record starts in a line.
const RECORD_START: &str = "{\"at_ms\":";

/// Reads one line of a log or events file: `None` if it is not an event line (a log line),
/// else the record. The record may follow other text on its line: another thread (a
/// panic's backtrace) can write to stderr without ending its line first.
pub fn parse_line(line: &str) -> Option<Result<EventRecord, EventParseError>> {
    let line = line.trim();
    let line = &line[line.find(RECORD_START)?..];
    Some(
        serde_json::from_str(line).map_err(|source| EventParseError {
            line: line.chars().take(200).collect(),
            source,
        }),
    )
}

enum Sink {
    None,
    Stderr,
    File(Mutex<File>),
}

static SINK: OnceLock<Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    SINK.get_or_init(|| match std::env::var(EVENTS_ENV) {
        Ok(target) if target == "stderr" => Sink::Stderr,
        Ok(path) if !path.is_empty() => {
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => Sink::File(Mutex::new(file)),
                Err(error) => {
                    tracing::error!(%path, %error, "Cannot open the events file; no event lines will be written.");
                    Sink::None
                }
            }
        }
        _ => Sink::None,
    })
}

/// Logs `event` as a human line and, if asked for, writes it as a JSON line.
pub fn emit(event: Event) {
    log(&event);
    let sink = sink();
    if matches!(sink, Sink::None) {
        return;
    }
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut line =
        serde_json::to_vec(&EventRecord { at_ms, event }).expect("an event always serializes");
    line.push(b'\n');
    // One write per line, so lines from several threads never interleave. A failed write
    // (a closed pipe) must not stop the role: the event is also in the log line above.
    let _ = match sink {
        Sink::Stderr => std::io::stderr().lock().write_all(&line),
        Sink::File(file) => file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&line),
        Sink::None => Ok(()),
    };
}

/// The human log line of each event: one message per kind, the event's data as fields.
fn log(event: &Event) {
    match event {
        Event::InputIndexed {
            files,
            rows,
            hours,
            rejected,
            already_confirmed,
        } => {
            tracing::info!(
                files,
                rows,
                hours,
                rejected,
                already_confirmed,
                "Input indexed."
            )
        }
        Event::HourQueued {
            hour,
            batches,
            rows,
        } => tracing::info!(%hour, batches, rows, "Hour queued for publishing."),
        Event::BatchReceived { hour, batch, rows } => {
            tracing::debug!(%hour, batch, rows, "Batch received.")
        }
        Event::BatchesRequested { hour, batches } => {
            tracing::info!(%hour, ?batches, "Requesting missing batches.")
        }
        Event::HourStored { hour, rows } => {
            tracing::info!(%hour, rows, "Hour stored; notifying the processor.")
        }
        Event::PointsRefused {
            hour,
            batch,
            points,
            reason,
        } => {
            tracing::error!(%hour, batch, points, %reason, "InfluxDB refused points for good; they are in the dead-letter file.")
        }
        Event::HourReported {
            hour,
            rows,
            states,
            elapsed_ms,
        } => tracing::info!(%hour, rows, states, elapsed_ms, "Reports stored."),
        Event::HourConfirmed { hour, rows } => tracing::info!(%hour, rows, "Hour reported."),
        Event::AllHoursConfirmed { rows } => {
            tracing::info!(rows, "Every hour is reported; exiting (--once).")
        }
        Event::OutageBegan {
            buffer,
            buffered,
            reason,
        } => {
            tracing::warn!(%buffer, buffered, %reason, "Target unavailable; buffering and retrying.")
        }
        Event::OutageEnded {
            buffer,
            buffered,
            peak,
            after_ms,
        } => tracing::info!(%buffer, buffered, peak, after_ms, "Target back; flushing."),
        Event::MessageRejected {
            channel,
            reason,
            rejected,
        } => tracing::warn!(?channel, %reason, rejected, "Malformed message set aside."),
        Event::TaskFailed { task, how } => {
            tracing::error!(%task, %how, "A task of the role ended; stopping the role.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant: adding a variant without adding it here fails to compile
    /// (the match below is exhaustive).
    fn every_variant() -> Vec<Event> {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let all = vec![
            Event::InputIndexed {
                files: 2,
                rows: 7200,
                hours: 24,
                rejected: 3,
                already_confirmed: 1,
            },
            Event::HourQueued {
                hour,
                batches: 3,
                rows: 1001,
            },
            Event::BatchReceived {
                hour,
                batch: 2,
                rows: 1,
            },
            Event::BatchesRequested {
                hour,
                batches: vec![0, 4],
            },
            Event::HourStored { hour, rows: 1001 },
            Event::PointsRefused {
                hour,
                batch: 4,
                points: 2,
                reason: "partial write: field type conflict: input field \"uv\" dropped=2".into(),
            },
            Event::HourReported {
                hour,
                rows: 1001,
                states: 51,
                elapsed_ms: 704,
            },
            Event::HourConfirmed { hour, rows: 1001 },
            Event::AllHoursConfirmed { rows: 7200 },
            Event::OutageBegan {
                buffer: "ingester-writes".into(),
                buffered: 9,
                reason: "InfluxDB at http://127.0.0.1:1 is unavailable: \"quoted\"\nnext".into(),
            },
            Event::OutageEnded {
                buffer: "streamer-outbound".into(),
                buffered: 0,
                peak: 17,
                after_ms: 4000,
            },
            Event::TaskFailed {
                task: "ingester-writes".into(),
                how: "panicked: poisoned".into(),
            },
            Event::MessageRejected {
                channel: "weather_channel:data:0:2023-09-19T05\nforged".into(),
                reason: "bad payload".into(),
                rejected: 2,
            },
        ];
        for event in &all {
            match event {
                Event::InputIndexed { .. }
                | Event::HourQueued { .. }
                | Event::BatchReceived { .. }
                | Event::BatchesRequested { .. }
                | Event::HourStored { .. }
                | Event::PointsRefused { .. }
                | Event::HourReported { .. }
                | Event::HourConfirmed { .. }
                | Event::AllHoursConfirmed { .. }
                | Event::OutageBegan { .. }
                | Event::OutageEnded { .. }
                | Event::TaskFailed { .. }
                | Event::MessageRejected { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_event_survives_the_round_trip_through_a_line() {
        for event in every_variant() {
            let record = EventRecord {
                at_ms: 1_764_000_000_123,
                event,
            };
            let line = serde_json::to_string(&record).unwrap();
            assert!(!line.contains('\n'), "one line per event: {line}");
            let parsed = parse_line(&format!("{line}\n")).unwrap().unwrap();
            assert_eq!(parsed, record);
        }
    }

    #[test]
    fn log_lines_are_not_events_and_a_torn_event_is_an_error() {
        assert!(parse_line("2026-11-25T00:00:00Z  INFO weathervane_ingester: Hour stored; notifying the processor. hour=2023-09-19T05 rows=10").is_none());
        assert!(parse_line("").is_none());
        let error = parse_line(r#"{"at_ms":1,"event":"hour_stored","hour":"2023-09-19T05""#)
            .unwrap()
            .unwrap_err();
        assert!(
            error.to_string().contains("malformed event line"),
            "{error}"
        );
        let unknown = parse_line(r#"{"at_ms":1,"event":"no_such_event"}"#).unwrap();
        assert!(unknown.is_err());
        let glued = r#"  43: tokio::runtime::task::raw::poll{"at_ms":7,"event":"task_failed","task":"t","how":"h"}"#;
        let record = parse_line(glued).unwrap().unwrap();
        assert_eq!(
            record.at_ms, 7,
            "a record after a torn line of another writer"
        );
    }
}
