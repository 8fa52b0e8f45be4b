//! The replica's side of the herd: two supervised loops that keep the [`ReportStore`]
//! current, and only move messages (the rules are the store's).
//!
//! - `herd-listener` subscribes to `<namespace>:reports:*` (subscribe only: the api
//!   publishes nothing) and applies every hour's reports the processor publishes. On
//!   every (re)subscription it asks for a catch-up, since anything published while it
//!   was not subscribed is gone.
//! - `herd-catch-up` loads from InfluxDB what the store lacks: at start (the warm-up,
//!   after which `/readyz`'s `warmed` check passes), on every (re)subscription and every
//!   `--catch-up-interval`. It reads `hour_generations` (the list of reported hours and
//!   their generations; one small query), and for the hours within the budget that are
//!   missing or held with another generation, their reports (three queries per date).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weathervane_core::bus::{BusEvent, Subscription};
use weathervane_core::channel::{Channel, Deployment};
use weathervane_core::event::{self, Event};
use weathervane_core::health::Check;
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::metrics;
use weathervane_core::payload::{HourReports, StateReports};
use weathervane_core::schema::{self, AverageFields, StateExtremeFields, ZipExtremeFields};
use weathervane_core::supervise::Supervisor;
use weathervane_core::{Generation, HourKey};

use crate::answer::Timed;
use crate::metrics::ROLE;
use crate::store::{Applied, ReportStore};

/// The store the handlers read and the loops write; a std mutex, never held across an
/// await.
pub type SharedStore = Arc<Mutex<ReportStore>>;

/// Starts the listener and the catch-up under `supervisor`.
pub fn supervise(
    supervisor: &mut Supervisor,
    subscription: Subscription,
    store: SharedStore,
    influx: InfluxClient,
    deployment: Deployment,
    warmed: Check,
    interval: Duration,
) {
    let wake = Arc::new(Notify::new());
    let token = supervisor.token();
    let (listen_store, listen_wake) = (store.clone(), wake.clone());
    supervisor.spawn_until_stopped("herd-listener", async move {
        listen(subscription, listen_store, deployment, listen_wake, token).await;
    });
    let token = supervisor.token();
    supervisor.spawn_until_stopped("herd-catch-up", async move {
        catch_up_loop(store, influx, warmed, wake, interval, token).await;
    });
}

async fn listen(
    mut subscription: Subscription,
    store: SharedStore,
    deployment: Deployment,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut rejected = 0;
    while let Some(event) = subscription.next(&shutdown).await {
        let (channel, payload) = match event {
            BusEvent::Subscribed => {
                wake.notify_one();
                continue;
            }
            BusEvent::Message { channel, payload } => (channel, payload),
        };
        let decoded = match Channel::parse(&channel, &deployment.namespace) {
            Ok(Channel::Reports { hour }) => {
                HourReports::decode_for(&channel, hour, &payload, &deployment.id)
                    .map_err(|e| e.reason)
            }
            Ok(_) => Err("not a reports channel".to_owned()),
            Err(error) => Err(error.reason),
        };
        let outcome = match decoded {
            Ok(reports) => apply(&store, reports).label(),
            Err(reason) => {
                rejected += 1;
                event::emit(Event::MessageRejected {
                    channel,
                    reason,
                    rejected,
                });
                "rejected"
            }
        };
        metrics::counter(ROLE, "report_updates_total", &[("outcome", outcome)]).increment(1);
    }
}

/// Applies one hour's reports and brings the store's gauges up to date.
fn apply(store: &SharedStore, reports: HourReports) -> Applied {
    let mut store = store.lock().unwrap();
    let applied = store.apply(reports);
    metrics::gauge(ROLE, "store_hour_reports", &[]).set(store.len() as f64);
    metrics::gauge(ROLE, "store_bytes", &[]).set(store.bytes() as f64);
    applied
}

async fn catch_up_loop(
    store: SharedStore,
    influx: InfluxClient,
    warmed: Check,
    wake: Arc<Notify>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut is_warm = false;
    loop {
        match catch_up(&store, &influx).await {
            Ok(loaded) => {
                if !is_warm {
                    tracing::info!(
                        hours = loaded,
                        "Warmed up: the reports within the budget are in memory."
                    );
                }
                is_warm = true;
                warmed.ok();
            }
            Err(error) if !is_warm => {
                warmed.failed(format!("not warmed up: {error}"));
            }
            Err(error) => {
                tracing::debug!(%error, "Catch-up failed; answering from memory, trying again.");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("cannot read the reports from InfluxDB: {0}")]
    Influx(#[from] InfluxError),
}

#[derive(Deserialize)]
struct GenerationRecord {
    generation: String,
}

#[derive(Deserialize)]
struct StateAverage {
    state: String,
    #[serde(flatten)]
    fields: AverageFields,
}

#[derive(Deserialize)]
struct StateZipExtreme {
    state: String,
    #[serde(flatten)]
    fields: ZipExtremeFields,
}

/// One catch-up: the hours the store wants, loaded date by date. Returns how many hours
/// were loaded.
async fn catch_up(store: &SharedStore, influx: &InfluxClient) -> Result<usize, CatchUpError> {
    let reported: Vec<Timed<GenerationRecord>> = match influx
        .query_records(&schema::hour_generations_query())
        .await
    {
        Err(InfluxError::DatabaseNotFound { .. }) => Vec::new(),
        records => records?,
    };
    let reported: BTreeMap<HourKey, Generation> = reported
        .into_iter()
        .filter_map(|r| Some((r.hour()?, r.record.generation.parse().ok()?)))
        .collect();
    let wanted = store.lock().unwrap().wanted(&reported);
    let mut by_date: BTreeMap<chrono::NaiveDate, Vec<HourKey>> = BTreeMap::new();
    for hour in wanted {
        by_date.entry(hour.date()).or_default().push(hour);
    }
    let mut loaded = 0;
    for hours in by_date.values() {
        let (from, until) = (hours[0], hours[hours.len() - 1].next());
        for reports in load(influx, from, until, &reported).await? {
            if hours.contains(&reports.hour) {
                // A reported hour has rows; none read back is a read that raced a rewrite.
                let check = match reports.states.is_empty() {
                    true => Err("no reports read back".to_owned()),
                    false => reports.check(),
                };
                match check {
                    Ok(()) => {
                        apply(store, reports);
                        loaded += 1;
                        metrics::counter(ROLE, "store_loads_total", &[]).increment(1);
                    }
                    // Being rewritten right now, most likely: the next catch-up loads it.
                    Err(reason) => {
                        tracing::debug!(hour = %reports.hour, %reason, "Reports incomplete in InfluxDB; trying again later.")
                    }
                }
            }
        }
    }
    Ok(loaded)
}

/// The reports of every reported hour from `from` to before `until`, as the processor
/// published them.
async fn load(
    influx: &InfluxClient,
    from: HourKey,
    until: HourKey,
    reported: &BTreeMap<HourKey, Generation>,
) -> Result<Vec<HourReports>, InfluxError> {
    let averages: Vec<Timed<StateAverage>> = influx
        .query_records(&schema::averages_between_query(from, until))
        .await?;
    let zips: Vec<Timed<StateZipExtreme>> = influx
        .query_records(&schema::zip_extremes_between_query(from, until))
        .await?;
    let states: Vec<Timed<StateExtremeFields>> = influx
        .query_records(&schema::state_extremes_between_query(from, until))
        .await?;
    Ok(assemble(from..until, reported, averages, zips, states))
}

/// The reports of the reported hours in `range`, put together from the three report
/// measurements' records as [`HourReports`] (states sorted, extremes in metric order),
/// each with its generation from `reported`. An hour whose records are incomplete comes
/// out incomplete, for [`HourReports::check`] to refuse.
fn assemble(
    range: std::ops::Range<HourKey>,
    reported: &BTreeMap<HourKey, Generation>,
    averages: Vec<Timed<StateAverage>>,
    zips: Vec<Timed<StateZipExtreme>>,
    states: Vec<Timed<StateExtremeFields>>,
) -> Vec<HourReports> {
    let metric_order = |metric: &str| {
        weathervane_core::row::Metric::ALL
            .iter()
            .position(|m| m.name() == metric)
            .unwrap_or(usize::MAX)
    };
    let mut hours: BTreeMap<HourKey, HourReports> = reported
        .range(range)
        .map(|(hour, generation)| {
            let reports = HourReports {
                hour: *hour,
                generation: *generation,
                rows: 0,
                states: Vec::new(),
                state_extremes: Vec::new(),
            };
            (*hour, reports)
        })
        .collect();
    for average in averages {
        if let Some(reports) = average.hour().and_then(|h| hours.get_mut(&h)) {
            reports.rows += average.record.fields.count;
            reports.states.push(StateReports {
                state: average.record.state,
                average: average.record.fields,
                extremes: Vec::new(),
            });
        }
    }
    for reports in hours.values_mut() {
        reports.states.sort_by(|a, b| a.state.cmp(&b.state));
    }
    for zip in zips {
        if let Some(reports) = zip.hour().and_then(|h| hours.get_mut(&h))
            && let Ok(at) = reports
                .states
                .binary_search_by(|s| s.state.as_str().cmp(&zip.record.state))
        {
            reports.states[at].extremes.push(zip.record.fields);
        }
    }
    for state in states {
        if let Some(reports) = state.hour().and_then(|h| hours.get_mut(&h)) {
            reports.state_extremes.push(state.record);
        }
    }
    for reports in hours.values_mut() {
        for state in &mut reports.states {
            state.extremes.sort_by_key(|e| metric_order(&e.metric));
        }
        reports
            .state_extremes
            .sort_by_key(|e| metric_order(&e.metric));
    }
    hours.into_values().collect()
}

#[cfg(test)]
mod tests {
    use weathervane_core::report;

    use super::*;

    /// The three measurements' records of an hour.
    type Records = (
        Vec<Timed<StateAverage>>,
        Vec<Timed<StateZipExtreme>>,
        Vec<Timed<StateExtremeFields>>,
    );

    /// The records InfluxDB would give back for `reports`, in a scrambled order.
    fn records(reports: &HourReports) -> Records {
        let time = reports.hour.start_secs();
        let averages = reports
            .states
            .iter()
            .rev()
            .map(|s| Timed {
                time,
                record: StateAverage {
                    state: s.state.clone(),
                    fields: s.average.clone(),
                },
            })
            .collect();
        let zips = reports
            .states
            .iter()
            .flat_map(|s| {
                s.extremes.iter().rev().map(|e| Timed {
                    time,
                    record: StateZipExtreme {
                        state: s.state.clone(),
                        fields: e.clone(),
                    },
                })
            })
            .collect();
        let states = reports
            .state_extremes
            .iter()
            .rev()
            .map(|e| Timed {
                time,
                record: e.clone(),
            })
            .collect();
        (averages, zips, states)
    }

    #[test]
    fn records_read_back_assemble_into_the_reports_the_processor_published() {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let rows = [
            ("CA", "90001", [20.0, 1010.0, 40.0, 0.0]),
            ("CA", "90002", [22.0, 1012.0, 42.0, 0.5]),
            ("NY", "10001", [15.0, 1020.0, 80.0, 1.0]),
            ("TX", "73301", [30.0, 1005.0, 30.0, 0.0]),
        ];
        let report = report::compute(hour, rows.iter().map(|(s, z, v)| (*s, *z, *v)));
        let published = HourReports::from_report(&report, Generation::from_bits(7));
        let (averages, zips, states) = records(&published);
        let reported = BTreeMap::from([(hour, Generation::from_bits(7))]);
        let assembled = assemble(hour..hour.next(), &reported, averages, zips, states);
        assert_eq!(assembled, vec![published.clone()]);
        assert!(assembled[0].check().is_ok());

        // A state's extremes missing (a write in progress): assembled, but refused.
        let (averages, mut zips, states) = records(&published);
        zips.pop();
        let partial = assemble(hour..hour.next(), &reported, averages, zips, states);
        assert!(partial[0].check().is_err());

        // Records of an hour not in the list are left out; a listed hour with no
        // records comes out empty, and is refused too.
        let other: HourKey = "2023-09-19T06".parse().unwrap();
        let (averages, zips, states) = records(&published);
        let listed = BTreeMap::from([(other, Generation::from_bits(1))]);
        let empty = assemble(hour..other.next(), &listed, averages, zips, states);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].hour, other);
        assert!(
            empty[0].states.is_empty(),
            "which the catch-up does not apply"
        );
    }
}
