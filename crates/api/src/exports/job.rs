//! The rules of an export job, pure and unit-tested: what a `POST /exports` body may ask
//! ([`ExportSpec::from_json`], every error naming its field), the job's record as the Redis
//! hash holds it ([`Job`], [`Status`]), the chunks a job is cut into (one hour each), and
//! what a cancel or a pick-up does in each status. The async code only feeds these.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Serialize;
use weathervane_core::HourKey;

/// The longest date range one export may span, in days (both ends included): a month of
/// raw rows at full scale is ~32 M rows, a few GB of CSV.
pub const MAX_DAYS: i64 = 31;
/// The most states one export may name (the 50 states, DC and territories fit).
pub const MAX_STATES: usize = 60;

/// What an export holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum What {
    /// The hourly reports: averages, zip-code extremes, state extremes (a `kind` column).
    Reports,
    /// The raw rows of `weather_data`, every column.
    Rows,
}

impl What {
    pub fn as_str(self) -> &'static str {
        match self {
            What::Reports => "reports",
            What::Rows => "rows",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "reports" => Some(What::Reports),
            "rows" => Some(What::Rows),
            _ => None,
        }
    }
}

/// A validated export request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    pub what: What,
    pub from: NaiveDate,
    /// Included.
    pub to: NaiveDate,
    /// Upper-case two-letter codes, sorted, no duplicates; empty means every state.
    pub states: Vec<String>,
}

impl ExportSpec {
    /// Reads and checks a `POST /exports` body; the error names the field and the cause.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or("the body must be a JSON object such as {\"what\": \"rows\", \"from\": \"2023-09-19\", \"to\": \"2023-09-19\"}")?;
        for key in object.keys() {
            if !["what", "from", "to", "states", "format"].contains(&key.as_str()) {
                return Err(format!(
                    "field {key:?} is unknown; the fields are what, from, to, states, format"
                ));
            }
        }
        let text = |field: &str| -> Result<&str, String> {
            match object.get(field) {
                None | Some(serde_json::Value::Null) => Err(format!("field {field:?} is missing")),
                Some(value) => value
                    .as_str()
                    .ok_or_else(|| format!("field {field:?} must be a string, not {value}")),
            }
        };
        let what = text("what")?;
        let what = What::parse(what)
            .ok_or_else(|| format!("field \"what\" is {what:?}; use \"reports\" or \"rows\""))?;
        let date = |field: &str| -> Result<NaiveDate, String> {
            let value = text(field)?;
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .filter(|d| value.len() == 10 && HourKey::from_date_hour(*d, 0).is_some())
                .ok_or_else(|| format!("field {field:?} is {value:?}, not a date YYYY-MM-DD"))
        };
        let (from, to) = (date("from")?, date("to")?);
        if to < from {
            return Err(format!("field \"to\" ({to}) is before \"from\" ({from})"));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_DAYS {
            return Err(format!(
                "fields \"from\" and \"to\" span {days} days, more than the {MAX_DAYS} one export may"
            ));
        }
        match object.get("format") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(format)) if format == "csv" => {}
            Some(other) => {
                return Err(format!(
                    "field \"format\" is {other}; only \"csv\" is offered"
                ));
            }
        }
        let mut states = Vec::new();
        match object.get("states") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                if items.len() > MAX_STATES {
                    return Err(format!(
                        "field \"states\" names {} states, more than {MAX_STATES}",
                        items.len()
                    ));
                }
                for item in items {
                    let state = item
                        .as_str()
                        .filter(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
                        .ok_or_else(|| {
                            format!("field \"states\" holds {item}, not a two-letter state code such as \"CA\"")
                        })?;
                    states.push(state.to_ascii_uppercase());
                }
                states.sort();
                states.dedup();
            }
            Some(other) => {
                return Err(format!(
                    "field \"states\" must be a list such as [\"CA\", \"NY\"], not {other}"
                ));
            }
        }
        Ok(Self {
            what,
            from,
            to,
            states,
        })
    }

    /// The hours the job reads, one chunk each, in order.
    pub fn hours(&self) -> impl Iterator<Item = HourKey> + use<> {
        let first = HourKey::from_date_hour(self.from, 0).expect("validated date");
        let count = self.hour_count();
        std::iter::successors(Some(first), |hour| Some(hour.next())).take(count as usize)
    }

    pub fn hour_count(&self) -> u64 {
        ((self.to - self.from).num_days() as u64 + 1) * 24
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Done,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Done, failed or cancelled: nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

/// What `DELETE /exports/{id}` does to a job, by its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelAction {
    /// Not started: it becomes `cancelled` at once (a runner that picks it up skips it).
    CancelNow,
    /// Running: the cancel flag is set; its runner stops before its next query.
    AskRunner,
    /// Done: its file is deleted and it becomes `cancelled`.
    DeleteFile,
    /// Failed or already cancelled: nothing to do.
    Nothing,
}

impl CancelAction {
    pub fn of(status: Status) -> Self {
        match status {
            Status::Queued => CancelAction::CancelNow,
            Status::Running => CancelAction::AskRunner,
            Status::Done => CancelAction::DeleteFile,
            Status::Failed | Status::Cancelled => CancelAction::Nothing,
        }
    }
}

/// One job as stored in its Redis hash (every field a string there) and as answered by
/// `GET /exports/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    #[schema(value_type = String, example = "rows")]
    pub what: What,
    #[schema(value_type = String, example = "2023-09-19")]
    pub from: NaiveDate,
    #[schema(value_type = String, example = "2023-09-19")]
    pub to: NaiveDate,
    /// Empty: every state.
    pub states: Vec<String>,
    pub format: &'static str,
    pub status: Status,
    /// Hours read so far and in all (a chunk is an hour).
    pub hours_done: u64,
    pub hours_total: u64,
    /// `hours_done / hours_total`, 0 to 1.
    pub progress: f64,
    /// Data rows written to the file so far (the header not counted).
    pub rows: u64,
    /// Bytes of the file so far.
    pub bytes: u64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Times in milliseconds since the epoch (UTC).
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// When a cancel was asked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_ms: Option<i64>,
    /// The run that has it (`host:pid/n`: the replica and its run number), once started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// How often it was started (more than once: taken over from a replica that died).
    pub attempts: u64,
}

impl Job {
    /// A job just asked for.
    pub fn new(id: String, spec: &ExportSpec, now_ms: i64) -> Self {
        Self {
            id,
            what: spec.what,
            from: spec.from,
            to: spec.to,
            states: spec.states.clone(),
            format: "csv",
            status: Status::Queued,
            hours_done: 0,
            hours_total: spec.hour_count(),
            progress: 0.0,
            rows: 0,
            bytes: 0,
            error: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            cancel_requested_ms: None,
            runner: None,
            attempts: 0,
        }
    }

    pub fn spec(&self) -> ExportSpec {
        ExportSpec {
            what: self.what,
            from: self.from,
            to: self.to,
            states: self.states.clone(),
        }
    }

    /// The file name a client is offered.
    pub fn file_name(&self) -> String {
        format!(
            "weathervane-{}-{}-{}.csv",
            self.what.as_str(),
            self.from,
            self.to
        )
    }

    /// Every field, as the hash stores it.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let optional = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        vec![
            ("id", self.id.clone()),
            ("what", self.what.as_str().into()),
            ("from", self.from.to_string()),
            ("to", self.to.to_string()),
            ("states", self.states.join(",")),
            ("status", self.status.as_str().into()),
            ("hours_done", self.hours_done.to_string()),
            ("hours_total", self.hours_total.to_string()),
            ("rows", self.rows.to_string()),
            ("bytes", self.bytes.to_string()),
            ("error", self.error.clone().unwrap_or_default()),
            ("created_ms", self.created_ms.to_string()),
            ("updated_ms", self.updated_ms.to_string()),
            ("started_ms", optional(self.started_ms)),
            ("finished_ms", optional(self.finished_ms)),
            ("cancel_requested_ms", optional(self.cancel_requested_ms)),
            ("runner", self.runner.clone().unwrap_or_default()),
            ("attempts", self.attempts.to_string()),
        ]
    }

    /// A job from its hash; the error names the field that is missing or malformed.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        let get = |name: &str| -> Result<&str, String> {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| format!("field {name} is missing"))
        };
        let number = |name: &str| -> Result<u64, String> {
            get(name)?
                .parse()
                .map_err(|_| format!("field {name} is not a number"))
        };
        let optional = |name: &str| -> Result<Option<i64>, String> {
            match fields.get(name).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("field {name} is not a number")),
            }
        };
        let text = |name: &str| fields.get(name).filter(|v| !v.is_empty()).cloned();
        let date = |name: &str| -> Result<NaiveDate, String> {
            NaiveDate::parse_from_str(get(name)?, "%Y-%m-%d")
                .map_err(|_| format!("field {name} is not a date"))
        };
        let (hours_done, hours_total) = (number("hours_done")?, number("hours_total")?);
        let status = get("status")?;
        Ok(Self {
            id: get("id")?.to_owned(),
            what: What::parse(get("what")?).ok_or("field what is unknown")?,
            from: date("from")?,
            to: date("to")?,
            states: get("states")?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            format: "csv",
            status: Status::parse(status).ok_or_else(|| format!("status {status:?} is unknown"))?,
            hours_done,
            hours_total,
            progress: if hours_total == 0 {
                0.0
            } else {
                hours_done as f64 / hours_total as f64
            },
            rows: number("rows")?,
            bytes: number("bytes")?,
            error: text("error"),
            created_ms: optional("created_ms")?.ok_or("field created_ms is missing")?,
            updated_ms: optional("updated_ms")?.ok_or("field updated_ms is missing")?,
            started_ms: optional("started_ms")?,
            finished_ms: optional("finished_ms")?,
            cancel_requested_ms: optional("cancel_requested_ms")?,
            runner: text("runner"),
            attempts: number("attempts")?,
        })
    }

    /// Whether a runner that has just taken this job from the queue should run it: not if
    /// it is final already or a cancel was asked meanwhile.
    pub fn should_run(&self) -> bool {
        !self.status.is_final() && self.cancel_requested_ms.is_none()
    }
}

/// A job id: 32 lower-case hex digits (128 random bits), so ids cannot be guessed.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: &str) -> Result<ExportSpec, String> {
        ExportSpec::from_json(body.as_bytes())
    }

    #[test]
    fn a_request_is_read_with_states_normalised() {
        let read = spec(
            r#"{"what":"rows","from":"2023-09-19","to":"2023-09-20","states":["ca","NY","CA"],"format":"csv"}"#,
        )
        .unwrap();
        assert_eq!(read.what, What::Rows);
        assert_eq!(read.states, ["CA", "NY"]);
        assert_eq!(read.hour_count(), 48);
        let hours: Vec<String> = read.hours().map(|h| h.to_string()).collect();
        assert_eq!(hours.len(), 48);
        assert_eq!(hours[0], "2023-09-19T00");
        assert_eq!(hours[47], "2023-09-20T23");
        let all = spec(r#"{"what":"reports","from":"2023-09-19","to":"2023-09-19"}"#).unwrap();
        assert!(all.states.is_empty());
    }

    #[test]
    fn every_bad_request_names_its_field() {
        for (body, field) in [
            ("[]", "JSON object"),
            ("{", "not JSON"),
            (
                r#"{"from":"2023-09-19","to":"2023-09-19"}"#,
                "\"what\" is missing",
            ),
            (
                r#"{"what":"all","from":"2023-09-19","to":"2023-09-19"}"#,
                "\"what\"",
            ),
            (
                r#"{"what":"rows","from":"2023-9-19","to":"2023-09-19"}"#,
                "\"from\"",
            ),
            (r#"{"what":"rows","from":"2023-09-19","to":7}"#, "\"to\""),
            (
                r#"{"what":"rows","from":"2023-09-20","to":"2023-09-19"}"#,
                "before",
            ),
            (
                r#"{"what":"rows","from":"2023-01-01","to":"2023-02-01"}"#,
                "32 days",
            ),
            (
                r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19","format":"xlsx"}"#,
                "\"format\"",
            ),
            (
                r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19","states":"CA"}"#,
                "\"states\"",
            ),
            (
                r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19","states":["C A"]}"#,
                "\"states\"",
            ),
            (
                r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19","state":["CA"]}"#,
                "\"state\"",
            ),
        ] {
            let error = spec(body).unwrap_err();
            assert!(error.contains(field), "{body}: {error}");
        }
        assert!(spec(r#"{"what":"rows","from":"2023-01-01","to":"2023-01-31"}"#).is_ok());
    }

    #[test]
    fn a_job_survives_its_hash() {
        let spec = spec(r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19","states":["CA"]}"#)
            .unwrap();
        let mut job = Job::new("0".repeat(32), &spec, 1_000);
        job.status = Status::Running;
        job.hours_done = 6;
        job.started_ms = Some(1_500);
        job.runner = Some("host:42/1".into());
        let fields: HashMap<String, String> = job
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let back = Job::from_fields(&fields).unwrap();
        assert_eq!(back.progress, 0.25);
        job.progress = 0.25;
        assert_eq!(back, job);
        let mut broken = fields.clone();
        broken.remove("rows");
        assert!(Job::from_fields(&broken).unwrap_err().contains("rows"));
    }

    #[test]
    fn cancel_and_pickup_follow_the_status() {
        assert_eq!(CancelAction::of(Status::Queued), CancelAction::CancelNow);
        assert_eq!(CancelAction::of(Status::Running), CancelAction::AskRunner);
        assert_eq!(CancelAction::of(Status::Done), CancelAction::DeleteFile);
        assert_eq!(CancelAction::of(Status::Failed), CancelAction::Nothing);
        let spec = spec(r#"{"what":"rows","from":"2023-09-19","to":"2023-09-19"}"#).unwrap();
        let mut job = Job::new("a".repeat(32), &spec, 0);
        assert!(job.should_run());
        // Taken over from a replica that died while running it: run it again.
        job.status = Status::Running;
        assert!(job.should_run());
        job.cancel_requested_ms = Some(5);
        assert!(!job.should_run());
        job.cancel_requested_ms = None;
        job.status = Status::Done;
        assert!(!job.should_run());
        assert!(is_valid_id(&"a".repeat(32)));
        assert!(!is_valid_id("../etc/passwd"));
    }
}
