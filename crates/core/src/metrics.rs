//! The one owner of metric names: every Prometheus metric a role exports is in
//! [`CATALOG`] (name, kind, help, which roles), named `weathervane_<role>_<what>` the
//! Prometheus way (`_total` counters, `_seconds` histograms, base units, low-cardinality
//! labels: never an hour or a zip code). [`install`] sets the process's one recorder (the
//! `metrics` facade over `metrics-exporter-prometheus`, without its HTTP server: the
//! admin route renders it, see [`crate::admin`]); under `weathervane up` the four roles
//! share it, told apart by their name prefix.
//!
//! Code counts through handles made by [`counter`], [`gauge`] and [`histogram`], which
//! are no-ops until a recorder is installed (unit tests).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use metrics::{Counter, Gauge, Histogram};

/// Latency buckets (seconds) for every `_seconds` histogram: from a loopback answer to a
/// write near its 20 s timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: `weathervane_<role>_<name>` for each of `roles`.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub roles: &'static [&'static str],
    pub name: &'static str,
    pub kind: Kind,
    /// Its labels, for the docs.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const STREAMER: &[&str] = &["streamer"];
const INGESTER: &[&str] = &["ingester"];
const PROCESSOR: &[&str] = &["processor"];
const API: &[&str] = &["api"];
const BUS_ROLES: &[&str] = &["streamer", "ingester", "processor"];
const INFLUX_ROLES: &[&str] = &["ingester", "processor", "api"];
const ALL: &[&str] = &["streamer", "ingester", "processor", "api"];

const fn def(
    roles: &'static [&'static str],
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        roles,
        name,
        kind,
        labels,
        help,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric, by role.
pub const CATALOG: &[MetricDef] = &[
    def(
        STREAMER,
        "rows_read_total",
        C,
        &[],
        "Input rows read from the CSV files (accepted rows, counted when read for publishing, resends included).",
    ),
    def(
        STREAMER,
        "rows_rejected_total",
        C,
        &[],
        "Input rows rejected while indexing (bad values, duplicates); they are in the rejects file.",
    ),
    def(
        STREAMER,
        "rows_published_total",
        C,
        &[],
        "Rows in data batches Redis took (PUBLISH answered), resends included.",
    ),
    def(
        STREAMER,
        "batches_published_total",
        C,
        &[],
        "Data batches Redis took, resends included.",
    ),
    def(
        STREAMER,
        "batches_resent_total",
        C,
        &[],
        "Batches read again and queued because the ingester requested them.",
    ),
    def(
        STREAMER,
        "hour_backlog",
        G,
        &[],
        "Hours streamed and not yet confirmed.",
    ),
    def(
        STREAMER,
        "hour_confirmations_total",
        C,
        &[],
        "Hours whose report counted exactly the rows sent.",
    ),
    def(
        STREAMER,
        "uploads_started_total",
        C,
        &[],
        "tus uploads created (POST /uploads answered 201).",
    ),
    def(
        STREAMER,
        "uploads_finished_total",
        C,
        &[],
        "tus uploads received whole, checked and moved into the inbox.",
    ),
    def(
        STREAMER,
        "uploads_failed_total",
        C,
        &[],
        "tus uploads received whole but refused (not a CSV the streamer takes).",
    ),
    def(
        STREAMER,
        "upload_received_bytes_total",
        C,
        &[],
        "Bytes of tus upload chunks stored and fsynced.",
    ),
    def(
        STREAMER,
        "inbox_files_total",
        C,
        &["outcome"],
        "Inbox files finished: streamed and reported (`done`) or unreadable (`failed`).",
    ),
    def(
        INGESTER,
        "rows_received_total",
        C,
        &[],
        "Rows of batches accepted for storing.",
    ),
    def(
        INGESTER,
        "rows_stored_total",
        C,
        &[],
        "Rows InfluxDB acknowledged (204) as written.",
    ),
    def(
        INGESTER,
        "rows_dead_lettered_total",
        C,
        &[],
        "Rows InfluxDB refused for good; they are in the dead-letter file.",
    ),
    def(
        INGESTER,
        "batches_requested_total",
        C,
        &[],
        "Batches asked of the streamer again (gaps, reconnects, announcements).",
    ),
    def(
        INGESTER,
        "hour_completions_total",
        C,
        &[],
        "Hours with every batch stored (the processor is notified).",
    ),
    def(
        BUS_ROLES,
        "messages_rejected_total",
        C,
        &[],
        "Bus messages set aside as malformed, inconsistent or from another deployment.",
    ),
    def(
        PROCESSOR,
        "hour_reports_total",
        C,
        &[],
        "Hours whose reports were written.",
    ),
    def(
        PROCESSOR,
        "rows_reported_total",
        C,
        &[],
        "Rows of the hours reported.",
    ),
    def(
        PROCESSOR,
        "report_duration_seconds",
        H,
        &[],
        "Time to read an hour back, compute its reports and write them.",
    ),
    def(
        API,
        "http_requests_total",
        C,
        &["endpoint", "status"],
        "Requests answered, by matched route and status.",
    ),
    def(
        API,
        "http_request_duration_seconds",
        H,
        &["endpoint"],
        "Time to answer a request, by matched route.",
    ),
    def(
        API,
        "cache_hits_total",
        C,
        &[],
        "Report answers served from memory.",
    ),
    def(
        API,
        "cache_misses_total",
        C,
        &[],
        "Report answers that had to ask InfluxDB.",
    ),
    def(
        API,
        "store_hour_reports",
        G,
        &[],
        "Hours whose reports this replica holds in memory.",
    ),
    def(
        API,
        "store_bytes",
        G,
        &[],
        "Estimated bytes of the reports held in memory (bounded by --store-bytes).",
    ),
    def(
        API,
        "report_answers_total",
        C,
        &["source"],
        "Report answers by where they came from (memory, influxdb).",
    ),
    def(
        API,
        "report_updates_total",
        C,
        &["outcome"],
        "Reports messages received, by outcome (applied, duplicate, not_kept, rejected).",
    ),
    def(
        API,
        "store_loads_total",
        C,
        &[],
        "Hours whose reports were loaded from InfluxDB (warm-up and catch-up).",
    ),
    def(
        BUS_ROLES,
        "buffer_items",
        G,
        &["buffer"],
        "Items waiting in a bounded buffer.",
    ),
    def(
        BUS_ROLES,
        "buffer_bytes",
        G,
        &["buffer"],
        "Bytes waiting in a bounded buffer.",
    ),
    def(
        ALL,
        "outage",
        G,
        &["target"],
        "1 while a target (redis, influxdb) is unreachable, else 0.",
    ),
    def(
        ALL,
        "outage_seconds_total",
        C,
        &["target"],
        "Seconds a target (redis, influxdb) has been unreachable.",
    ),
    def(
        INFLUX_ROLES,
        "influxdb_request_duration_seconds",
        H,
        &["op"],
        "InfluxDB HTTP calls (op: write, query, ping), answered or not.",
    ),
    def(
        INFLUX_ROLES,
        "influxdb_errors_total",
        C,
        &["kind"],
        "Failed InfluxDB calls by kind (timeout, connect, unavailable, unauthorized, rejected, certificate).",
    ),
    def(
        API,
        "export_jobs_total",
        C,
        &["status"],
        "Export jobs by the status they reached (queued when asked; done, failed or cancelled when their run ended).",
    ),
    def(
        API,
        "export_jobs_running",
        G,
        &[],
        "Export jobs this replica is running now.",
    ),
    def(
        API,
        "export_rows_total",
        C,
        &[],
        "Rows (raw rows or report lines) written to export files.",
    ),
    def(
        API,
        "export_bytes_total",
        C,
        &[],
        "Bytes written to export files (headers included).",
    ),
    def(
        BUS_ROLES,
        "redis_command_duration_seconds",
        H,
        &["command"],
        "Redis calls (publish), answered or not.",
    ),
    def(
        BUS_ROLES,
        "redis_errors_total",
        C,
        &["kind"],
        "Failed Redis calls by kind (timeout, connect, command, unheard).",
    ),
];

/// `weathervane_<role>_<name>`. Counts of hours say `hour` in the singular
/// (`hour_reports_total`): promtool reads a `hours` word as a unit and asks for seconds.
pub fn name(role: &str, metric: &str) -> String {
    format!("weathervane_{role}_{metric}")
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Sets the process's recorder, once (later calls return the same handle). `None` if
/// another recorder was set first (then nothing is exported).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "Another metrics recorder is set; /metrics stays empty.");
                    None
                }
            }
        })
        .clone()
}

/// The installed recorder's handle, if [`install`] has run.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned().flatten()
}

/// Describes `role`'s metrics (the `# HELP` lines) and makes its unlabeled counters and
/// gauges exist at 0, so a scrape shows every series from the start.
pub fn register(role: &str) {
    for metric in CATALOG.iter().filter(|m| m.roles.contains(&role)) {
        let full = name(role, metric.name);
        match metric.kind {
            Kind::Counter => {
                metrics::describe_counter!(full.clone(), metric.help);
                if metric.labels.is_empty() {
                    metrics::counter!(full).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(full.clone(), metric.help);
                if metric.labels.is_empty() {
                    metrics::gauge!(full).set(0.0);
                }
            }
            Kind::Histogram => {
                metrics::describe_histogram!(full, metrics::Unit::Seconds, metric.help);
            }
        }
    }
}

/// Labels as the `metrics` macros take them.
type Labels<'a> = &'a [(&'static str, &'a str)];

fn labels(labels: Labels<'_>) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, (*v).to_owned()))
        .collect()
}

pub fn counter(role: &str, metric: &str, with: Labels<'_>) -> Counter {
    metrics::counter!(name(role, metric), labels(with))
}

pub fn gauge(role: &str, metric: &str, with: Labels<'_>) -> Gauge {
    metrics::gauge!(name(role, metric), labels(with))
}

pub fn histogram(role: &str, metric: &str, with: Labels<'_>) -> Histogram {
    metrics::histogram!(name(role, metric), labels(with))
}

/// Runs `work` with a recorder of its own (on this thread only) and returns what it
/// counted, as Prometheus text: for unit tests of code that counts, without the process's
/// global recorder.
pub fn capture(work: impl FnOnce()) -> String {
    let recorder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .expect("the buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, work);
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_sees_what_was_counted_under_it_only() {
        let text = capture(|| counter("ingester", "rows_stored_total", &[]).increment(3));
        assert!(
            text.contains("weathervane_ingester_rows_stored_total 3"),
            "{text}"
        );
        let text = capture(|| {});
        assert!(!text.contains("rows_stored"), "{text}");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for metric in CATALOG {
            assert!(
                metric
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                metric.name
            );
            match metric.kind {
                Kind::Counter => assert!(metric.name.ends_with("_total"), "{}", metric.name),
                Kind::Histogram => assert!(metric.name.ends_with("_seconds"), "{}", metric.name),
                Kind::Gauge => assert!(!metric.name.ends_with("_total"), "{}", metric.name),
            }
            for role in metric.roles {
                assert!(ALL.contains(role), "{role}");
                assert!(
                    seen.insert(name(role, metric.name)),
                    "{} twice",
                    metric.name
                );
            }
            assert!(
                !metric.name.split('_').any(|word| word == "hours"),
                "promtool takes `hours` for a unit: {}",
                metric.name
            );
            for label in metric.labels {
                assert!(!["hour", "zip_code", "state"].contains(label), "{label}");
            }
        }
    }
}
