//! The processor: on `weather_channel:processor:<hour>` it reads that hour's rows
//! back from InfluxDB with one InfluxQL query, checks that exactly the announced number
//! of rows is there, computes the reports (state averages, zip-code and state extremes)
//! and writes them with one request (in pieces, in order, if InfluxDB finds it too large),
//! then publishes the reports themselves on `weather_channel:reports:<hour>` (for the api
//! replicas) and `weather_channel:reported:<hour>` (for the streamer).
//!
//! It never computes a report from an hour the ingester has not declared complete, and
//! keeps nothing on disk: reports are idempotent, so a restarted processor simply waits
//! for the hours the streamer announces again.

mod jobs;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weathervane_core::admin::{self, AdminArgs, AdminError, RoleAdmin};
use weathervane_core::buffer::{self, BoundedQueue, Delivery, Target};
use weathervane_core::bus::{
    self, BusError, BusEvent, Outbound, PublishTarget, Publisher, Subscription, Unheard,
};
use weathervane_core::channel::{Channel, Deployment, Pattern};
use weathervane_core::config::{InfluxArgs, RedisArgs};
use weathervane_core::event::{self, Event};
use weathervane_core::health::Health;
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::metrics;
use weathervane_core::payload::{self, HourReported, HourReports};
use weathervane_core::report::{self, HourReport, MetricValues};
use weathervane_core::row::Metric;
use weathervane_core::schema;
use weathervane_core::supervise::{Supervisor, TaskFailed};

use crate::jobs::{NoticeVerdict, ReportJob, ReportJobs};

const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, clap::Args)]
pub struct ProcessorConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub influx: InfluxArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The role's name: its metrics' prefix and its health's.
const ROLE: &str = "processor";
/// What its readiness checks: its subscription, and InfluxDB answering.
pub const CHECKS: &[&str] = &["redis", "influxdb"];

/// What the listener and the report flusher share.
struct ProcessorState {
    /// Report jobs waiting for the report flusher.
    queue: Arc<BoundedQueue<ReportJob>>,
    /// Which hours are queued or being computed.
    jobs: Mutex<ReportJobs>,
    /// `reports:<hour>` and `reported:<hour>` messages waiting to be published.
    reported: Arc<BoundedQueue<Outbound>>,
}

/// Computes the reports of every hour the ingester notifies, until shutdown.
///
/// Three supervised tasks: the listener, the report flusher (read-back, compute, write)
/// and the flusher of `reported:<hour>` messages. The listener races the shutdown token as
/// a whole and the flushers race it around every delivery, so a hung Redis or InfluxDB
/// cannot hold the role past shutdown. If a task ends early, fails or panics, the role
/// stops with [`TaskFailed`].
pub async fn run(
    config: ProcessorConfig,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let admin = RoleAdmin::serve(ROLE, CHECKS, &config.admin, admin::PROCESSOR_ADMIN).await?;
    run_with(config, shutdown, admin).await
}

/// [`run`] under `weathervane up`: the shared admin server shows `health`.
pub async fn run_shared(
    config: ProcessorConfig,
    shutdown: CancellationToken,
    health: Health,
) -> Result<(), ProcessorError> {
    run_with(config, shutdown, RoleAdmin::shared(health)).await
}

async fn run_with(
    config: ProcessorConfig,
    shutdown: CancellationToken,
    admin: RoleAdmin,
) -> Result<(), ProcessorError> {
    let influx = InfluxClient::new(&config.influx, QUERY_TIMEOUT)?.with_metrics(ROLE);
    let subscription = Subscription::new(&config.redis, &[Pattern::Stored])?
        .with_health(admin.health.check("redis"));
    bus::check_certificates(&config.redis).await?;
    influx.check_certificates().await?;
    // A report nobody hears is not kept: the streamer announces the hour again and the
    // report follows.
    let reported_target = PublishTarget {
        publisher: Publisher::new(&config.redis)?.with_metrics(ROLE),
        unheard: Unheard::Drop,
    };
    let state = Arc::new(ProcessorState {
        queue: Arc::new(BoundedQueue::new("processor-jobs", 10_000, usize::MAX)),
        jobs: Mutex::new(ReportJobs::new(config.redis.deployment())),
        reported: Arc::new(BoundedQueue::new("processor-acks", 10_000, 8 << 20)),
    });
    let mut supervisor = Supervisor::new();
    let health = admin.supervise(&mut supervisor);
    admin::supervise_influx_probe(&mut supervisor, influx.clone(), &health);
    let token = supervisor.token();
    let report_target = ReportTarget {
        influx,
        deployment: config.redis.deployment(),
        state: state.clone(),
        credentials_refused: false,
    };
    buffer::supervise_flush(&mut supervisor, state.queue.clone(), 1, report_target);
    buffer::supervise_flush(&mut supervisor, state.reported.clone(), 1, reported_target);
    supervisor.spawn_until_stopped("processor-listener", async move {
        token
            .run_until_cancelled(listen(state, subscription, token.clone()))
            .await;
    });
    supervisor.run(&shutdown).await?;
    Ok(())
}

/// Turns `processor:<hour>` notices into report jobs.
async fn listen(
    state: Arc<ProcessorState>,
    mut subscription: Subscription,
    shutdown: CancellationToken,
) {
    let mut rejected = 0;
    while let Some(event) = subscription.next(&shutdown).await {
        let BusEvent::Message { channel, payload } = event else {
            continue;
        };
        let verdict = state.jobs.lock().unwrap().on_message(&channel, &payload);
        match verdict {
            NoticeVerdict::Queue(job) => state.queue.push(job, 1).await,
            NoticeVerdict::AlreadyQueued | NoticeVerdict::NotANotice => {}
            NoticeVerdict::Malformed(reason) => {
                rejected += 1;
                metrics::counter(ROLE, "messages_rejected_total", &[]).increment(1);
                event::emit(Event::MessageRejected {
                    channel,
                    reason,
                    rejected,
                });
            }
        }
    }
}

/// The reports of an hour and, as the last line, the record of which content they come
/// from: stored last, it declares the reports before it complete even when the write is
/// split.
fn report_lines(report: &HourReport, job: ReportJob) -> Vec<u8> {
    schema::encode_hour_generation(report::encode(report), job.hour, job.generation, job.rows)
}

/// Computes and stores the reports of one hour.
struct ReportTarget {
    influx: InfluxClient,
    /// Where and as whom the `reported` messages go.
    deployment: Deployment,
    state: Arc<ProcessorState>,
    /// InfluxDB is refusing our credentials (logged once per such outage).
    credentials_refused: bool,
}

impl Target<ReportJob> for ReportTarget {
    async fn deliver(&mut self, jobs: &[ReportJob]) -> Delivery {
        let job = jobs[0];
        let started = Instant::now();
        let delivery = match self.report(job).await {
            Ok(report) => {
                self.credentials_refused = false;
                let states = report.averages.len() as u32;
                event::emit(Event::HourReported {
                    hour: job.hour,
                    rows: job.rows,
                    states,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                metrics::histogram(ROLE, "report_duration_seconds", &[])
                    .record(started.elapsed().as_secs_f64());
                metrics::counter(ROLE, "hour_reports_total", &[]).increment(1);
                metrics::counter(ROLE, "rows_reported_total", &[]).increment(job.rows);
                // The reports themselves, for the api replicas: they hold them without
                // a query. Let go when unheard, like `reported`: a replica that was not
                // subscribed catches up from InfluxDB.
                let reports = Outbound::new(
                    Channel::Reports { hour: job.hour }.name(&self.deployment.namespace),
                    payload::encode(
                        &self.deployment.id,
                        &HourReports::from_report(&report, job.generation),
                    ),
                );
                let bytes = reports.bytes();
                self.state.reported.push(reports, bytes).await;
                let reported = Outbound::new(
                    Channel::Reported { hour: job.hour }.name(&self.deployment.namespace),
                    payload::encode(
                        &self.deployment.id,
                        &HourReported {
                            generation: job.generation,
                            rows: job.rows,
                            refused: job.refused,
                            states,
                        },
                    ),
                );
                let bytes = reported.bytes();
                self.state.reported.push(reported, bytes).await;
                Delivery::Done
            }
            // An outage, a 408, 429 or 5xx, or refused credentials (401, 403; loud, an
            // operator must act): retry, not before the server's Retry-After.
            Err(JobError::Influx(error)) if error.is_retriable() => {
                if let InfluxError::Unauthorized { url, status, body } = &error
                    && !std::mem::replace(&mut self.credentials_refused, true)
                {
                    tracing::error!(%url, status, message = %body, "InfluxDB refuses our credentials; check INFLUXDB_USER, INFLUXDB_PASSWORD or INFLUXDB_TOKEN. Retrying.");
                }
                return match error.retry_after() {
                    Some(at_least) => Delivery::RetryAfter(error.to_string(), at_least),
                    None => Delivery::Retry(error.to_string()),
                };
            }
            Err(error) => {
                tracing::warn!(hour = %job.hour, %error, "Hour not reported; it will be reported when the ingester notifies it again.");
                Delivery::Rejected
            }
        };
        self.state.jobs.lock().unwrap().finished(job.hour);
        delivery
    }
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Influx(#[from] InfluxError),
    #[error("InfluxDB holds {stored} rows for the hour, the ingester stored {expected}")]
    RowCount { stored: u64, expected: u64 },
    #[error("unexpected query answer: {0}")]
    Answer(String),
    #[error("the hour's rows give a report that is not finite; it is not written")]
    NotFinite,
}

impl ReportTarget {
    async fn report(&self, job: ReportJob) -> Result<HourReport, JobError> {
        // As CSV: InfluxDB spends less CPU encoding it than JSON (BENCHMARKS.md,
        // read-back), and it holds the same exact values.
        let answer = self
            .influx
            .query_csv(&schema::hour_rows_query(job.hour))
            .await?;
        let rows = hour_rows_csv(&answer)?;
        if rows.len() as u64 != job.rows {
            return Err(JobError::RowCount {
                stored: rows.len() as u64,
                expected: job.rows,
            });
        }
        let report = report::compute(
            job.hour,
            rows.iter()
                .map(|(state, zip, values)| (state.as_str(), zip.as_str(), *values)),
        );
        if !report.is_finite() {
            return Err(JobError::NotFinite);
        }
        // In one write; in pieces, in order, if InfluxDB (or a proxy) finds it too large.
        self.influx
            .write_split_on_too_large(&report_lines(&report, job))
            .await?;
        self.delete_vanished_states(&report).await?;
        Ok(report)
    }

    /// Deletes the per-state reports of states the hour had before its content changed and
    /// has no longer (their points would not be overwritten). After the write, so a state
    /// in both the old and the new content is never missing.
    async fn delete_vanished_states(&self, report: &HourReport) -> Result<(), InfluxError> {
        #[derive(serde::Deserialize)]
        struct StateRecord {
            state: String,
        }
        let stored: Vec<StateRecord> = self
            .influx
            .query_records(&schema::report_states_query(report.hour))
            .await?;
        let vanished: Vec<String> = stored
            .into_iter()
            .filter(|r| !report.averages.iter().any(|a| a.state == r.state))
            .map(|r| schema::delete_state_reports(&r.state, report.hour))
            .collect();
        if !vanished.is_empty() {
            tracing::info!(hour = %report.hour, states = vanished.len(), "States no longer in the hour; deleting their reports.");
            self.influx.execute(&vanished.join("; ")).await?;
        }
        Ok(())
    }
}

/// `(state, zip_code, metrics)` for every row of a CSV answer (see
/// [`InfluxClient::query_csv`]): columns found by name in the header, which InfluxDB
/// repeats when a new series starts; an empty answer has no rows.
fn hour_rows_csv(answer: &str) -> Result<Vec<(String, String, MetricValues)>, JobError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(answer.as_bytes());
    let mut rows = Vec::new();
    // Positions of the state, the zip code and the metrics, from the last header.
    let mut columns: Option<(usize, usize, [usize; 4])> = None;
    for record in reader.records() {
        let record = record.map_err(|e| JobError::Answer(format!("CSV: {e}")))?;
        if record.get(0) == Some("name") {
            let find = |name: &str| {
                record
                    .iter()
                    .position(|c| c == name)
                    .ok_or_else(|| JobError::Answer(format!("no column {name}")))
            };
            let mut metrics = [0; 4];
            for (slot, metric) in metrics.iter_mut().zip(Metric::ALL) {
                *slot = find(metric.name())?;
            }
            columns = Some((
                find(schema::TAG_STATE)?,
                find(schema::TAG_ZIP_CODE)?,
                metrics,
            ));
            continue;
        }
        let (state, zip, metric_columns) =
            columns.ok_or_else(|| JobError::Answer("a row before the CSV header".into()))?;
        let mut metrics = [0.0; 4];
        for ((slot, column), metric) in metrics.iter_mut().zip(metric_columns).zip(Metric::ALL) {
            *slot = record
                .get(column)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| JobError::Answer(format!("row without {}", metric.name())))?;
        }
        match (record.get(state), record.get(zip)) {
            (Some(state), Some(zip)) if !state.is_empty() && !zip.is_empty() => {
                rows.push((state.to_owned(), zip.to_owned(), metrics))
            }
            _ => return Err(JobError::Answer("row without state or zip_code".into())),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_zip_and_metrics_from_the_csv_answer_whatever_the_column_order() {
        let answer = "name,tags,time,state,humidity,zip_code,temp_c,precip_mm,pressure_mb\n\
                      weather_data,,1,CA,40,90001,20.5,0,1012.5\n\
                      weather_data,,1,NY,90,\"10,001\",5,1.25,1020\n";
        let rows = hour_rows_csv(answer).unwrap();
        assert_eq!(
            rows[0],
            (
                "CA".to_string(),
                "90001".to_string(),
                [20.5, 1012.5, 40.0, 0.0]
            )
        );
        assert_eq!(rows[1].1, "10,001");
        assert_eq!(rows[1].2, [5.0, 1020.0, 90.0, 1.25]);
        assert!(hour_rows_csv("").unwrap().is_empty());
    }

    #[test]
    fn a_repeated_header_starts_a_series_with_its_own_column_order() {
        let answer = "name,tags,time,temp_c,pressure_mb,humidity,precip_mm,state,zip_code\n\
                      weather_data,,1,1,2,3,4,CA,90001\n\
                      name,tags,time,state,zip_code,precip_mm,humidity,pressure_mb,temp_c\n\
                      weather_data,,1,NY,10001,4,3,2,1\n";
        let rows = hour_rows_csv(answer).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].2, rows[1].2);
        assert_eq!(rows[1].0, "NY");
    }

    #[test]
    fn a_missing_column_or_value_is_an_error_not_a_wrong_report() {
        let no_zip = "name,tags,time,state,temp_c,pressure_mb,humidity,precip_mm\n\
                      weather_data,,1,CA,1,1,1,1\n";
        assert!(
            hour_rows_csv(no_zip)
                .unwrap_err()
                .to_string()
                .contains("zip_code")
        );
        let empty_metric = "name,tags,time,state,zip_code,temp_c,pressure_mb,humidity,precip_mm\n\
                            weather_data,,1,CA,1,,1,1,1\n";
        assert!(
            hour_rows_csv(empty_metric)
                .unwrap_err()
                .to_string()
                .contains("temp_c")
        );
        let no_header = "weather_data,,1,CA,1,1,1,1,1\n";
        assert!(hour_rows_csv(no_header).is_err());
    }

    #[test]
    fn the_hour_generation_record_is_the_last_line_of_the_report_write() {
        let hour: weathervane_core::HourKey = "2023-09-19T05".parse().unwrap();
        let rows = [
            ("CA", "90001", [20.0, 1010.0, 40.0, 0.0]),
            ("CA", "90002", [22.0, 1012.0, 42.0, 0.5]),
            ("NY", "10001", [15.0, 1020.0, 80.0, 1.0]),
            ("TX", "73301", [30.0, 1005.0, 30.0, 0.0]),
        ];
        let job = ReportJob {
            hour,
            rows: rows.len() as u64,
            refused: 0,
            generation: weathervane_core::Generation::from_bits(0xabc),
        };
        let report = report::compute(hour, rows.iter().map(|(s, z, v)| (*s, *z, *v)));
        let lines = report_lines(&report, job);
        let text = String::from_utf8(lines).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // 3 states: an average and 4 zip-code extremes each, 4 state extremes, the record.
        assert_eq!(lines.len(), 3 + 3 * 4 + 4 + 1, "{text}");
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("hour_generations ")
                && last.contains("\"0000000000000abc\"")
                && last.contains("rows=4i"),
            "{last}"
        );
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|line| !line.starts_with("hour_generations")),
            "{text}"
        );
    }
}
