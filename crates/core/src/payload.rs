//! Message bodies, as JSON (readable in `redis-cli`): `{"deployment": <id>, "body":
//! {...}}`. Every decode checks the deployment id against ours and the body against its
//! channel, so a message from another deployment, or that says one thing in its name and
//! another in its body, is rejected rather than stored under the wrong hour.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::DeploymentId;
use crate::report::HourReport;
use crate::row::Metric;
use crate::schema::{AverageFields, StateExtremeFields, ZipExtremeFields};
use crate::{Generation, HourKey, WeatherRow};

/// Most batches an hour may have: 100,000 batches of 500 rows is 50 million stations.
/// Anything larger in a payload is hostile or broken, and would make the ingester
/// allocate without bound.
pub const MAX_BATCHES_PER_HOUR: u32 = 100_000;
/// Most rows one batch may hold.
pub const MAX_ROWS_PER_BATCH: usize = 100_000;
/// Most bytes a message body may have: well under Redis's 32 MB pub/sub output limit, so
/// a batch is never dropped by Redis for its size. The streamer splits batches to stay
/// under [`BATCH_BYTES_TARGET`].
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;
/// The size the streamer keeps batches under.
pub const BATCH_BYTES_TARGET: usize = 4 << 20;

/// One batch of one hour, on `weather_channel:data:<batch>:<hour>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchEnvelope {
    pub hour: HourKey,
    /// 0-based index of this batch.
    pub batch: u32,
    /// How many batches the hour has, so a gap shows without waiting for the last one.
    pub batches: u32,
    /// The hour's content this batch belongs to.
    #[serde(default)]
    pub generation: Generation,
    pub rows: Vec<WeatherRow>,
}

/// On `weather_channel:announce:<hour>`: every batch of the hour has been published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourAnnouncement {
    pub batches: u32,
    pub rows: u64,
    #[serde(default)]
    pub generation: Generation,
}

/// On `weather_channel:processor:<hour>`: every row of the hour is stored. The processor
/// checks the stored row count against `rows` before it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourStored {
    pub rows: u64,
    /// Rows InfluxDB refused for good (dead letters): not stored, not in the reports.
    #[serde(default)]
    pub refused: u64,
    /// The content the stored rows are.
    #[serde(default)]
    pub generation: Generation,
}

/// On `weather_channel:reported:<hour>`: the reports of the hour are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourReported {
    pub rows: u64,
    /// Rows InfluxDB refused for good: `rows + refused` is every row the streamer sent.
    #[serde(default)]
    pub refused: u64,
    pub states: u32,
    /// The content the reports were computed from: the streamer confirms only its own.
    #[serde(default)]
    pub generation: Generation,
}

/// Most states an hour's reports may have (the US has 50 and a few territories; this
/// leaves room for other inputs while bounding what a message can make a replica hold).
pub const MAX_STATES_PER_HOUR: usize = 10_000;
/// Longest state or zip code a reports message may carry, in bytes.
pub const MAX_HOLDER_BYTES: usize = 256;

/// On `weather_channel:reports:<hour>`: the reports of the hour themselves, compact,
/// published by the processor once they are stored (its `hour_generations` record
/// last), so every api replica holds them without a query. The same type is what a
/// replica loads from InfluxDB when it catches up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HourReports {
    pub hour: HourKey,
    /// The content the reports were computed from (`hour_generations`).
    pub generation: Generation,
    /// Rows the reports count.
    pub rows: u64,
    /// Per state, sorted by state.
    pub states: Vec<StateReports>,
    /// Per metric, in [`Metric::ALL`] order: the states with the highest and lowest
    /// average. Empty only if `states` is.
    pub state_extremes: Vec<StateExtremeFields>,
}

/// One state's reports of an hour: its averages and, per metric in [`Metric::ALL`]
/// order, the zip codes holding the extremes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateReports {
    pub state: String,
    pub average: AverageFields,
    pub extremes: Vec<ZipExtremeFields>,
}

impl HourReports {
    /// The message of a computed report of content `generation`.
    pub fn from_report(report: &HourReport, generation: Generation) -> Self {
        let states = report
            .averages
            .iter()
            .map(|average| StateReports {
                state: average.state.clone(),
                average: average.into(),
                extremes: report
                    .zip_extremes
                    .get(&average.state)
                    .map(|pairs| {
                        Metric::ALL
                            .iter()
                            .zip(pairs)
                            .map(|(metric, pair)| ZipExtremeFields::new(*metric, pair))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Self {
            hour: report.hour,
            generation,
            rows: report.rows(),
            states,
            state_extremes: Metric::ALL
                .iter()
                .zip(&report.state_extremes)
                .map(|(metric, pair)| StateExtremeFields::new(*metric, pair))
                .collect(),
        }
    }

    /// Whether the reports are complete and within bounds: states sorted and unique, each
    /// with every metric's extremes once, every metric's state extremes, names bounded,
    /// row counts adding up.
    pub fn check(&self) -> Result<(), String> {
        if self.states.len() > MAX_STATES_PER_HOUR {
            return Err(format!(
                "{} states; an hour has at most {MAX_STATES_PER_HOUR}",
                self.states.len()
            ));
        }
        let metrics = Metric::ALL.map(|m| m.name());
        let long = |name: &str| name.is_empty() || name.len() > MAX_HOLDER_BYTES;
        for pair in self.states.windows(2) {
            if pair[0].state >= pair[1].state {
                return Err(format!(
                    "states not sorted or repeated: {:?} before {:?}",
                    pair[0].state, pair[1].state
                ));
            }
        }
        let mut rows = 0u64;
        for state in &self.states {
            if long(&state.state) {
                return Err(format!(
                    "a state name of {} bytes (1 to {MAX_HOLDER_BYTES})",
                    state.state.len()
                ));
            }
            let names: Vec<&str> = state.extremes.iter().map(|e| e.metric.as_str()).collect();
            if names != metrics {
                return Err(format!(
                    "state {:?}: extremes of {names:?}, expected {metrics:?}",
                    state.state
                ));
            }
            if state
                .extremes
                .iter()
                .any(|e| long(&e.max_zip_code) || long(&e.min_zip_code))
            {
                return Err(format!(
                    "state {:?}: a zip code of 0 or over {MAX_HOLDER_BYTES} bytes",
                    state.state
                ));
            }
            rows = rows.saturating_add(state.average.count);
        }
        if rows != self.rows {
            return Err(format!(
                "the states count {rows} rows, the message says {}",
                self.rows
            ));
        }
        let names: Vec<&str> = self
            .state_extremes
            .iter()
            .map(|e| e.metric.as_str())
            .collect();
        let expected: &[&str] = if self.states.is_empty() {
            &[]
        } else {
            &metrics
        };
        if names != expected {
            return Err(format!(
                "state extremes of {names:?}, expected {expected:?}"
            ));
        }
        if self
            .state_extremes
            .iter()
            .any(|e| long(&e.max_state) || long(&e.min_state))
        {
            return Err(format!(
                "a state extreme's state of 0 or over {MAX_HOLDER_BYTES} bytes"
            ));
        }
        Ok(())
    }

    /// Decodes the reports on `channel` (of `hour`) and checks them ([`Self::check`]) and
    /// their hour against the channel's.
    pub fn decode_for(
        channel: &str,
        hour: HourKey,
        body: &[u8],
        deployment: &DeploymentId,
    ) -> Result<Self, PayloadError> {
        let reports: Self = decode(channel, body, deployment)?;
        let error = |reason: String| PayloadError {
            channel: channel.to_owned(),
            reason,
        };
        if reports.hour != hour {
            return Err(error(format!(
                "body says hour {}, channel says {hour}",
                reports.hour
            )));
        }
        reports.check().map_err(error)?;
        Ok(reports)
    }
}

/// A message body that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("bad payload on {channel:?}: {reason}")]
pub struct PayloadError {
    pub channel: String,
    pub reason: String,
}

/// A message body as sent: who sends it, and what it says.
#[derive(Serialize)]
struct Sent<'a, T> {
    deployment: &'a str,
    body: &'a T,
}

/// A message body as received.
#[derive(Deserialize)]
struct Received<T> {
    deployment: String,
    body: T,
}

/// Only the sender of a message whose body could not be read, for a better reason.
#[derive(Deserialize)]
struct Sender {
    deployment: String,
}

pub fn encode<T: Serialize>(deployment: &DeploymentId, payload: &T) -> Vec<u8> {
    let sent = Sent {
        deployment: deployment.as_str(),
        body: payload,
    };
    serde_json::to_vec(&sent).expect("payload types always serialize")
}

/// Decodes a message of `deployment` on `channel`; one from another deployment is an
/// error that says so.
pub fn decode<T: DeserializeOwned>(
    channel: &str,
    body: &[u8],
    deployment: &DeploymentId,
) -> Result<T, PayloadError> {
    let error = |reason: String| PayloadError {
        channel: channel.to_owned(),
        reason,
    };
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(error(format!(
            "{} bytes, more than the {MAX_PAYLOAD_BYTES} a message may have",
            body.len()
        )));
    }
    let foreign = |sender: &str| {
        error(format!(
            "from deployment {sender:?}, not this one ({deployment}); refused"
        ))
    };
    match serde_json::from_slice::<Received<T>>(body) {
        Ok(received) if received.deployment == deployment.as_str() => Ok(received.body),
        Ok(received) => Err(foreign(&received.deployment)),
        Err(parse) => match serde_json::from_slice::<Sender>(body) {
            Ok(sender) if sender.deployment != deployment.as_str() => {
                Err(foreign(&sender.deployment))
            }
            _ => Err(error(parse.to_string())),
        },
    }
}

/// Whether `batches` and `rows` can describe one hour: 1 to [`MAX_BATCHES_PER_HOUR`]
/// batches, each of 1 to [`MAX_ROWS_PER_BATCH`] rows.
fn check_counts(batches: u32, rows: Option<u64>) -> Result<(), String> {
    if batches == 0 || batches > MAX_BATCHES_PER_HOUR {
        return Err(format!(
            "{batches} batches; an hour has 1 to {MAX_BATCHES_PER_HOUR}"
        ));
    }
    if let Some(rows) = rows {
        let most = u64::from(batches) * MAX_ROWS_PER_BATCH as u64;
        if rows < u64::from(batches) || rows > most {
            return Err(format!(
                "{rows} rows cannot fill {batches} batches of 1 to {MAX_ROWS_PER_BATCH} rows"
            ));
        }
    }
    Ok(())
}

impl HourAnnouncement {
    /// Decodes an announcement and checks that its counts can describe one hour.
    pub fn decode_for(
        channel: &str,
        body: &[u8],
        deployment: &DeploymentId,
    ) -> Result<Self, PayloadError> {
        let announcement: Self = decode(channel, body, deployment)?;
        check_counts(announcement.batches, Some(announcement.rows)).map_err(|reason| {
            PayloadError {
                channel: channel.to_owned(),
                reason,
            }
        })?;
        Ok(announcement)
    }
}

/// A [`BatchEnvelope`] that borrows its rows, for encoding without copying them.
#[derive(Serialize)]
struct BorrowedBatch<'a> {
    hour: HourKey,
    batch: u32,
    batches: u32,
    generation: Generation,
    rows: &'a [WeatherRow],
}

impl BatchEnvelope {
    /// Encodes batch `batch` of `batches` of `hour`, holding `rows`, without copying
    /// the rows into an envelope: the same bytes as [`encode`] of the envelope.
    pub fn encode_rows(
        deployment: &DeploymentId,
        hour: HourKey,
        batch: u32,
        batches: u32,
        generation: Generation,
        rows: &[WeatherRow],
    ) -> std::sync::Arc<[u8]> {
        let batch = BorrowedBatch {
            hour,
            batch,
            batches,
            generation,
            rows,
        };
        encode(deployment, &batch).into()
    }

    /// Decodes a batch and checks it against the `batch` and `hour` of its channel and
    /// every row against the row rules.
    pub fn decode_for(
        channel: &str,
        batch: u32,
        hour: HourKey,
        body: &[u8],
        deployment: &DeploymentId,
    ) -> Result<Self, PayloadError> {
        let envelope: Self = decode(channel, body, deployment)?;
        let error = |reason: String| PayloadError {
            channel: channel.to_owned(),
            reason,
        };
        if envelope.hour != hour || envelope.batch != batch {
            return Err(error(format!(
                "body says batch {} of {}, channel says batch {batch} of {hour}",
                envelope.batch, envelope.hour
            )));
        }
        check_counts(envelope.batches, None).map_err(error)?;
        if envelope.batch >= envelope.batches {
            return Err(error(format!(
                "batch {} of only {} batches",
                envelope.batch, envelope.batches
            )));
        }
        if envelope.rows.is_empty() || envelope.rows.len() > MAX_ROWS_PER_BATCH {
            return Err(error(format!(
                "{} rows; a batch has 1 to {MAX_ROWS_PER_BATCH}",
                envelope.rows.len()
            )));
        }
        for (index, row) in envelope.rows.iter().enumerate() {
            row.validate()
                .map_err(|reason| error(format!("row {index}: {reason}")))?;
            if row.hour() != hour {
                return Err(error(format!(
                    "row {index} is at {}, not in hour {hour}",
                    row.time_utc()
                )));
            }
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::NUMERIC_COLUMNS;

    #[test]
    fn hour_reports_round_trip_and_are_checked_against_their_channel() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let rows = [
            ("CA", "90001", [20.0, 1010.0, 40.0, 0.0]),
            ("CA", "90002", [22.0, 1012.0, 42.0, 0.5]),
            ("NY", "10001", [15.0, 1020.0, 80.0, 1.0]),
        ];
        let report = crate::report::compute(hour, rows.iter().map(|(s, z, v)| (*s, *z, *v)));
        let generation: Generation = "00000000000000ab".parse().unwrap();
        let reports = HourReports::from_report(&report, generation);
        assert_eq!(reports.rows, 3);
        assert_eq!(reports.states.len(), 2);
        assert_eq!(reports.states[0].average.count, 2);
        assert_eq!(reports.states[0].extremes[0].max_zip_code, "90002");
        assert_eq!(reports.state_extremes[0].max_state, "CA");
        assert_eq!(reports.state_extremes[0].max_value, 21.0);
        let body = encode(&ours(), &reports);
        assert!(body.len() < 2048, "compact: {} bytes", body.len());
        assert_eq!(
            HourReports::decode_for("c", hour, &body, &ours()).unwrap(),
            reports
        );
        let other_hour: HourKey = "2023-09-19T06".parse().unwrap();
        let error = HourReports::decode_for("c", other_hour, &body, &ours()).unwrap_err();
        assert!(error.to_string().contains("channel says"), "{error}");

        let mut broken = reports.clone();
        broken.states[1].extremes.pop();
        assert!(broken.check().unwrap_err().contains("NY"));
        let mut broken = reports.clone();
        broken.states.swap(0, 1);
        assert!(broken.check().unwrap_err().contains("sorted"));
        let mut broken = reports.clone();
        broken.rows = 4;
        assert!(broken.check().unwrap_err().contains("3 rows"));
        let mut broken = reports.clone();
        broken.state_extremes.truncate(2);
        assert!(broken.check().unwrap_err().contains("state extremes"));
        let mut broken = reports;
        broken.states[0].extremes[0].max_zip_code = "9".repeat(MAX_HOLDER_BYTES + 1);
        assert!(broken.check().is_err());
    }

    fn ours() -> DeploymentId {
        DeploymentId::default()
    }

    fn row(zip: &str, time: i64) -> WeatherRow {
        let mut values = [None; NUMERIC_COLUMNS.len()];
        for metric in crate::row::Metric::ALL {
            values[metric.index()] = Some(1.5);
        }
        WeatherRow {
            zip_code: zip.into(),
            state: "CA".into(),
            name: "n".into(),
            time,
            wind_dir: "N".into(),
            values,
        }
    }

    #[test]
    fn a_batch_round_trips() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let envelope = BatchEnvelope {
            hour,
            batch: 1,
            batches: 3,
            generation: "00000000000000ff".parse().unwrap(),
            rows: vec![row("02134", hour.start_secs())],
        };
        let body = encode(&ours(), &envelope);
        let decoded = BatchEnvelope::decode_for("c", 1, hour, &body, &ours()).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(
            &*BatchEnvelope::encode_rows(&ours(), hour, 1, 3, envelope.generation, &envelope.rows),
            &body[..]
        );
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("\"hour\":\"2023-09-19T05\"")
        );
    }

    #[test]
    fn counts_no_hour_can_have_are_rejected_before_anything_is_allocated() {
        let announce = |batches: u32, rows: u64| {
            let body = encode(
                &ours(),
                &HourAnnouncement {
                    batches,
                    rows,
                    generation: Generation::default(),
                },
            );
            HourAnnouncement::decode_for("a", &body, &ours())
        };
        assert!(announce(4, 2000).is_ok());
        for (batches, rows, reason) in [
            (u32::MAX, 1, "4294967295 batches"),
            (10_000_000, 10_000_000, "10000000 batches"),
            (0, 1, "0 batches"),
            (4, 3, "3 rows cannot fill 4 batches"),
            (1, 1_000_000, "1000000 rows cannot fill 1 batches"),
        ] {
            let error = announce(batches, rows).unwrap_err().to_string();
            assert!(error.contains(reason), "{batches}/{rows}: {error}");
        }
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let empty = encode(
            &ours(),
            &BatchEnvelope {
                hour,
                batch: 0,
                batches: 1,
                generation: Generation::default(),
                rows: vec![],
            },
        );
        let error = BatchEnvelope::decode_for("d", 0, hour, &empty, &ours()).unwrap_err();
        assert!(error.to_string().contains("0 rows"), "{error}");
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let error = decode::<HourStored>("p", &huge, &ours()).unwrap_err();
        assert!(error.to_string().contains("more than the"), "{error}");
    }

    #[test]
    fn mismatches_and_garbage_are_rejected_with_the_channel_named() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let ok = |batch, batches, time| {
            encode(
                &ours(),
                &BatchEnvelope {
                    hour,
                    batch,
                    batches,
                    generation: Generation::default(),
                    rows: vec![row("1", time)],
                },
            )
        };
        let cases: [(Vec<u8>, &str); 4] = [
            (b"{not json".to_vec(), "key must be a string"),
            (ok(2, 3, hour.start_secs()), "channel says batch 1"),
            (ok(1, 1, hour.start_secs()), "of only 1 batches"),
            (ok(1, 3, hour.start_secs() + 3600), "not in hour"),
        ];
        for (body, why) in cases {
            let error = BatchEnvelope::decode_for(
                "weather_channel:data:1:2023-09-19T05",
                1,
                hour,
                &body,
                &ours(),
            )
            .unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains(why) && text.contains("weather_channel:data:1"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_message_from_another_deployment_is_refused_and_says_whose_it_is() {
        let reported = HourReported {
            rows: 10,
            refused: 0,
            states: 1,
            generation: Generation::default(),
        };
        let theirs: DeploymentId = "site-b".parse().unwrap();
        let body = encode(&theirs, &reported);
        assert_eq!(
            decode::<HourReported>("r", &body, &theirs).unwrap(),
            reported
        );
        let error = decode::<HourReported>("r", &body, &ours()).unwrap_err();
        assert!(
            error.to_string().contains("from deployment \"site-b\""),
            "{error}"
        );
        // Even when its body is not one we could read.
        let odd = br#"{"deployment":"site-b","body":{"rows":"many"}}"#;
        let error = decode::<HourReported>("r", odd, &ours()).unwrap_err();
        assert!(error.to_string().contains("site-b"), "{error}");
        // And a message without one is not ours either.
        let bare = br#"{"rows":10,"refused":0,"states":1}"#;
        assert!(decode::<HourReported>("r", bare, &ours()).is_err());
    }
}
