//! A thin client for InfluxDB's v1 HTTP API (`/ping`, `/write`, `/query`), served by
//! InfluxDB 1.x and by the v1-compatibility endpoints of 2.x and 3.x. Every request has a
//! connect timeout and a total timeout, so a hung server fails like a dead one.

use std::future::Future;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, InfluxArgs, Secret, redact_url};
use crate::metrics;
use crate::tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest `Retry-After` honoured: a server asking for more is retried after this
/// anyway, so every hour ends within bounded time of the last fault.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a request failed, sorted by what the caller should do about it (the way Telegraf's
/// and Vector's InfluxDB outputs sort answers).
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// Down, hung, restarting or overloaded (no answer, 408, 429, 5xx): retry later, not
    /// before `retry_after` when the server said so.
    #[error("InfluxDB at {url} is unavailable: {reason}")]
    Unavailable {
        url: String,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the credentials are wrong or were rotated. An operator must act; the
    /// data is fine, so retry (with backoff) until they do.
    #[error("InfluxDB at {url} refused our credentials ({status}): {body}")]
    Unauthorized {
        url: String,
        status: u16,
        body: String,
    },
    /// 413: the request is too large. Retry it in smaller pieces.
    #[error("InfluxDB at {url} found the request too large (413): {body}")]
    TooLarge { url: String, body: String },
    /// The server refused the request itself (bad line protocol, field-type conflict,
    /// partial write, bad query; any other 4xx): retrying the same request would fail
    /// again, but a write may be split to find the points it refuses.
    #[error("InfluxDB at {url} rejected the request ({status}): {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    /// The database does not exist (yet).
    #[error("InfluxDB at {url} has no database {db:?}")]
    DatabaseNotFound { url: String, db: String },
    /// The configuration cannot work (for example a malformed URL).
    #[error("InfluxDB configuration: {0}")]
    Config(String),
    #[error("InfluxDB settings: {0}")]
    Settings(#[from] ConfigError),
    /// The server's certificate is not trusted (unknown CA, wrong name, expired), or it
    /// refused ours: no retry can fix it.
    #[error(
        "InfluxDB at {url} failed the TLS certificate check: {reason} (check INFLUXDB_CA_FILE and the server's name and certificate)"
    )]
    Certificate { url: String, reason: String },
    /// An answer of another shape than the statement asks for.
    #[error("InfluxDB at {url} answered {statement:?} unexpectedly: {reason}")]
    UnexpectedAnswer {
        url: String,
        statement: String,
        reason: String,
    },
}

impl InfluxError {
    /// Would the same request succeed later, unchanged? True for outages and for refused
    /// credentials (which an operator fixes without the data changing).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            InfluxError::Unavailable { .. } | InfluxError::Unauthorized { .. }
        )
    }

    /// The least pause the server asked for before the next attempt (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InfluxError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Sorts an answer that was not a success; the body is InfluxDB's message (the
    /// `error` of its JSON answer, or the text as it came). `retry_after` is the raw
    /// `Retry-After` header, read against `now`. Pure, so every rule is unit-tested.
    pub fn from_answer(
        url: &str,
        db: &str,
        status: u16,
        body: &str,
        retry_after: Option<&str>,
        now: SystemTime,
    ) -> InfluxError {
        let url = url.to_owned();
        let body = message(body);
        match status {
            401 | 403 => InfluxError::Unauthorized { url, status, body },
            408 | 429 | 500..=599 => InfluxError::Unavailable {
                url,
                reason: format!("{status}: {body}"),
                retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
            },
            413 => InfluxError::TooLarge { url, body },
            404 if body.contains("database not found") => InfluxError::DatabaseNotFound {
                url,
                db: db.to_owned(),
            },
            _ => InfluxError::Rejected { url, status, body },
        }
    }
}

/// InfluxDB's message in an error answer: `{"error":"..."}` gives the text inside.
fn message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorAnswer {
        error: String,
    }
    match serde_json::from_str::<ErrorAnswer>(body) {
        Ok(answer) => answer.error.trim().to_owned(),
        Err(_) => body.trim().to_owned(),
    }
}

/// Reads a `Retry-After` value: delay seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), as a pause from `now`, at most [`MAX_RETRY_AFTER`].
/// A date in the past is no pause; anything unreadable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let at = SystemTime::from(at);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// One series of a `/query` answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Series {
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

impl Series {
    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Every row as a `T` whose fields are named like the columns (extra columns, such
    /// as `time`, are ignored unless `T` has them).
    pub fn records<T: DeserializeOwned>(&self) -> Result<Vec<T>, serde_json::Error> {
        self.values
            .iter()
            .map(|row| {
                let object: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect();
                serde_json::from_value(serde_json::Value::Object(object))
            })
            .collect()
    }
}

/// The rows of every series of an answer as `T`s (see [`Series::records`]).
pub fn records<T: DeserializeOwned>(series: &[Series]) -> Result<Vec<T>, serde_json::Error> {
    let mut all = Vec::new();
    for one in series {
        all.extend(one.records()?);
    }
    Ok(all)
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct InfluxClient {
    http: reqwest::Client,
    /// The URL requests go to.
    base: String,
    /// `base` as errors show it: without credentials.
    shown: String,
    db: String,
    /// Sent as HTTP Basic auth, never in the URL (which proxies and servers log).
    user: Option<(String, Secret)>,
    token: Option<Secret>,
    /// The role whose `influxdb_*` metrics this client's calls count in, if any.
    metrics_role: Option<&'static str>,
}

impl InfluxClient {
    /// A client whose every request gives up after `timeout`.
    pub fn new(args: &InfluxArgs, timeout: Duration) -> Result<Self, InfluxError> {
        let base = args.url.trim_end_matches('/').to_owned();
        let shown = redact_url(&base);
        // `localhost:8086` parses too, as scheme `localhost`, and would then fail every
        // request like an outage, forever.
        let no_scheme = || {
            InfluxError::Config(format!(
                "INFLUXDB_URL {shown:?} must start with http:// or https://, e.g. http://{shown}"
            ))
        };
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(no_scheme());
        }
        reqwest::Url::parse(&base)
            .map_err(|e| InfluxError::Config(format!("INFLUXDB_URL {shown:?}: {e}")))?;
        if args.db.is_empty() || args.db.contains(['"', '\\', '\n']) {
            return Err(InfluxError::Config(format!(
                "INFLUXDB_DB {:?} is not a usable database name",
                args.db
            )));
        }
        let is_tls = lower.starts_with("https://");
        if args.ca_file.is_some() && !is_tls {
            return Err(InfluxError::Config(format!(
                "INFLUXDB_CA_FILE is set, but INFLUXDB_URL {shown:?} is not https://"
            )));
        }
        tls::install_provider();
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        if let Some(path) = &args.ca_file {
            let pem =
                tls::read_certificates("INFLUXDB_CA_FILE", path).map_err(ConfigError::from)?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                InfluxError::Config(format!("INFLUXDB_CA_FILE {}: {e}", path.display()))
            })?;
            // Only the given CA: a private CA is the point of the option.
            http = http.tls_certs_only(certificates);
        } else if !is_tls {
            // Plain http needs no CA at all: without this, building the client reads the
            // system's CA store, and fails where there is none (a slim container).
            http = http.tls_certs_only(Vec::new());
        }
        let http = http.build().map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            InfluxError::Config(format!(
                "cannot set up the HTTP client{cause} (for https://, install the system's CA certificates or set INFLUXDB_CA_FILE)"
            ))
        })?;
        let password = args.password()?;
        let user = args.user.clone().map(|user| {
            (
                user,
                password.unwrap_or_else(|| Secret::from(String::new())),
            )
        });
        Ok(Self {
            http,
            base,
            shown,
            db: args.db.clone(),
            user,
            token: args.token()?,
            metrics_role: None,
        })
    }

    /// This client, counting its calls' latency and errors in `role`'s metrics
    /// (`weathervane_<role>_influxdb_request_duration_seconds`, `..._influxdb_errors_total`).
    pub fn with_metrics(mut self, role: &'static str) -> Self {
        self.metrics_role = Some(role);
        self
    }

    /// Counts one call of `op` that took `elapsed` and failed with `error` (kind), if so.
    fn count(&self, op: &'static str, elapsed: Duration, error: Option<&'static str>) {
        let Some(role) = self.metrics_role else {
            return;
        };
        metrics::histogram(role, "influxdb_request_duration_seconds", &[("op", op)])
            .record(elapsed.as_secs_f64());
        if let Some(kind) = error {
            metrics::counter(role, "influxdb_errors_total", &[("kind", kind)]).increment(1);
        }
    }

    /// This client logging in as `user` with `password` instead of what its
    /// [`InfluxArgs`] said: for tools that learn a login at run time (replay `--compose`
    /// reads the api's from its container), where a variable or file would outlive it.
    pub fn with_login(mut self, user: String, password: Secret) -> Self {
        self.user = Some((user, password));
        self.token = None;
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.user {
            request = request.basic_auth(user, Some(password.expose()));
        }
        if let Some(token) = &self.token {
            let value = format!("Token {}", token.expose());
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request
    }

    /// Pings once to fail fast on what no retry fixes: an `https://` server whose
    /// certificate is not trusted. InfluxDB being down, slow or refusing the credentials
    /// is not an error here: the roles ride out outages, even at start.
    pub async fn check_certificates(&self) -> Result<(), InfluxError> {
        match self.ping().await {
            Err(certificate @ InfluxError::Certificate { .. }) => Err(certificate),
            _ => Ok(()),
        }
    }

    fn unavailable(&self, reason: impl ToString) -> InfluxError {
        InfluxError::Unavailable {
            url: self.shown.clone(),
            reason: reason.to_string(),
            retry_after: None,
        }
    }

    /// Sends `request`; a 5xx, 408 or 429 answer is [`InfluxError::Unavailable`] (with the
    /// server's `Retry-After`), a 401 or 403 [`InfluxError::Unauthorized`]; any other
    /// answer is the caller's to read.
    async fn send(
        &self,
        op: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), InfluxError> {
        let started = std::time::Instant::now();
        let answer = self.send_uncounted(request).await;
        let kind = match &answer {
            Ok((status, _)) if status.is_success() => None,
            Ok(_) | Err(InfluxError::Rejected { .. } | InfluxError::TooLarge { .. }) => {
                Some("rejected")
            }
            Err(InfluxError::Unauthorized { .. }) => Some("unauthorized"),
            Err(InfluxError::Certificate { .. }) => Some("certificate"),
            Err(InfluxError::Unavailable { reason, .. }) if reason.starts_with("timed out") => {
                Some("timeout")
            }
            Err(InfluxError::Unavailable { reason, .. })
                if reason.starts_with("cannot connect") =>
            {
                Some("connect")
            }
            Err(_) => Some("unavailable"),
        };
        self.count(op, started.elapsed(), kind);
        answer
    }

    async fn send_uncounted(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), InfluxError> {
        let response = request.send().await.map_err(|e| {
            if tls::is_certificate_error(&e) {
                InfluxError::Certificate {
                    url: self.shown.clone(),
                    reason: describe(e),
                }
            } else {
                self.unavailable(describe(e))
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|e| self.unavailable(describe(e)))?;
        let code = status.as_u16();
        if status.is_server_error() || matches!(code, 401 | 403 | 408 | 429) {
            return Err(InfluxError::from_answer(
                &self.shown,
                &self.db,
                code,
                &body,
                retry_after.as_deref(),
                SystemTime::now(),
            ));
        }
        Ok((status, body))
    }

    /// `GET /ping`: is the server there?
    pub async fn ping(&self) -> Result<(), InfluxError> {
        let (status, body) = self
            .send("ping", self.request(reqwest::Method::GET, "/ping"))
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(InfluxError::Rejected {
                url: self.shown.clone(),
                status: status.as_u16(),
                body,
            }),
        }
    }

    pub async fn create_database(&self) -> Result<(), InfluxError> {
        let statement = format!("CREATE DATABASE \"{}\"", self.db);
        let request = self
            .request(reqwest::Method::POST, "/query")
            .query(&[("q", statement.as_str())]);
        let (status, body) = self.send("query", request).await?;
        if !status.is_success() {
            return Err(InfluxError::Rejected {
                url: self.shown.clone(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(())
    }

    /// `POST /write` of line protocol with second-precision timestamps. Creates the
    /// database and writes again if it is missing. Writes are idempotent: a point with the
    /// same measurement, tags and time overwrites the earlier one.
    pub async fn write(&self, lines: &[u8]) -> Result<(), InfluxError> {
        match self.write_once(lines).await {
            Err(InfluxError::DatabaseNotFound { .. }) => {
                self.create_database().await?;
                self.write_once(lines).await
            }
            result => result,
        }
    }

    /// Like [`Self::write`], but a write InfluxDB (or a proxy) finds too large (413) is
    /// written in pieces instead, in order (see [`write_in_pieces`]): the last line is
    /// stored last, so a line that declares the ones before it complete stays true.
    /// [`InfluxError::TooLarge`] only if one line alone is too large.
    pub async fn write_split_on_too_large(&self, lines: &[u8]) -> Result<(), InfluxError> {
        write_in_pieces(lines, |piece| self.write(piece)).await
    }

    async fn write_once(&self, lines: &[u8]) -> Result<(), InfluxError> {
        let request = self
            .request(reqwest::Method::POST, "/write")
            .query(&[("db", self.db.as_str()), ("precision", "s")])
            .body(lines.to_vec());
        let (status, body) = self.send("write", request).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(InfluxError::from_answer(
                &self.shown,
                &self.db,
                status.as_u16(),
                &body,
                None,
                SystemTime::now(),
            )),
        }
    }

    /// `GET /query` of one InfluxQL statement, times as epoch seconds. The statement must
    /// be built from validated values only.
    pub async fn query(&self, statement: &str) -> Result<Vec<Series>, InfluxError> {
        self.statement(reqwest::Method::GET, statement).await
    }

    /// `GET /query` of one InfluxQL statement answered as CSV (`Accept: application/csv`,
    /// times as epoch seconds): a header `name,tags,time,<columns>` and a line per row.
    /// InfluxDB encodes CSV with less CPU than JSON (BENCHMARKS.md, read-back). A
    /// statement's error comes back as `error` and its message, and is returned as
    /// [`InfluxError::Rejected`]; a missing database gives an empty answer, not an error.
    pub async fn query_csv(&self, statement: &str) -> Result<String, InfluxError> {
        let request = self
            .request(reqwest::Method::GET, "/query")
            .header(reqwest::header::ACCEPT, "application/csv")
            .query(&[("db", self.db.as_str()), ("q", statement), ("epoch", "s")]);
        let (status, body) = self.send("query", request).await?;
        let rejected = |body: String| InfluxError::Rejected {
            url: self.shown.clone(),
            status: status.as_u16(),
            body,
        };
        if !status.is_success() {
            return Err(rejected(message(&body)));
        }
        if let Some(error) = body.strip_prefix("error\n") {
            return Err(rejected(error.trim().trim_matches('"').to_owned()));
        }
        Ok(body)
    }

    /// The rows `statement` selects, as `T`s (see [`Series::records`]); a database that
    /// does not exist yet holds none.
    pub async fn query_records<T: DeserializeOwned>(
        &self,
        statement: &str,
    ) -> Result<Vec<T>, InfluxError> {
        let series = match self.query(statement).await {
            Err(InfluxError::DatabaseNotFound { .. }) => return Ok(Vec::new()),
            answer => answer?,
        };
        records(&series).map_err(|error| InfluxError::UnexpectedAnswer {
            url: self.shown.clone(),
            statement: statement.to_owned(),
            reason: error.to_string(),
        })
    }

    /// `POST /query` of statements that change data (`DELETE`), which InfluxDB does not
    /// take over GET. The statements must be built from validated values only.
    pub async fn execute(&self, statements: &str) -> Result<(), InfluxError> {
        self.statement(reqwest::Method::POST, statements)
            .await
            .map(drop)
    }

    async fn statement(
        &self,
        method: reqwest::Method,
        statement: &str,
    ) -> Result<Vec<Series>, InfluxError> {
        let request = self.request(method, "/query").query(&[
            ("db", self.db.as_str()),
            ("q", statement),
            ("epoch", "s"),
        ]);
        let (status, body) = self.send("query", request).await?;
        let rejected = |body: String| InfluxError::Rejected {
            url: self.shown.clone(),
            status: status.as_u16(),
            body,
        };
        let parsed: QueryResponse =
            serde_json::from_str(&body).map_err(|_| rejected(body.clone()))?;
        let statement_error = parsed.results.iter().find_map(|r| r.error.clone());
        if let Some(error) = parsed.error.or(statement_error) {
            if error.contains("database not found") {
                return Err(InfluxError::DatabaseNotFound {
                    url: self.shown.clone(),
                    db: self.db.clone(),
                });
            }
            return Err(rejected(error));
        }
        if !status.is_success() {
            return Err(rejected(body));
        }
        Ok(parsed.results.into_iter().flat_map(|r| r.series).collect())
    }
}

/// Writes `lines` (line protocol, `\n` after each line) through `write`, first whole; a
/// piece answered [`InfluxError::TooLarge`] is split in two at a line end (see [`halves`])
/// and the first half is written, split further as needed, before the second, so the
/// lines are stored in their order. Stops at the first other error (the caller retries
/// the whole write: writes are idempotent), or at a single line too large.
///
/// A newline only ever ends a line here: line protocol has no way to escape one in a tag,
/// and the callers' string fields hold none.
pub async fn write_in_pieces<'a, F, Fut>(lines: &'a [u8], mut write: F) -> Result<(), InfluxError>
where
    F: FnMut(&'a [u8]) -> Fut,
    Fut: Future<Output = Result<(), InfluxError>>,
{
    // The pieces still to write, the next on top.
    let mut todo = Vec::new();
    todo.push(0..lines.len());
    while let Some(piece) = todo.pop() {
        match write(&lines[piece.clone()]).await {
            Ok(()) => {}
            Err(InfluxError::TooLarge { url, body }) => match halves(lines, piece) {
                Some((first, second)) => {
                    todo.push(second);
                    todo.push(first);
                }
                None => return Err(InfluxError::TooLarge { url, body }),
            },
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The two halves of `piece` (a range of whole lines of `lines`), split after the `\n`
/// nearest its middle byte so each half holds whole lines; `None` if it holds one line.
pub fn halves(lines: &[u8], piece: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let middle = piece.start + piece.len() / 2;
    // A split point is just after a newline, and strictly inside the piece.
    let inside = piece.start + 1..piece.end;
    let at_or_after = lines[middle..piece.end]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| middle + i + 1)
        .filter(|at| inside.contains(at));
    let before = lines[piece.start..middle]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| piece.start + i + 1)
        .filter(|at| inside.contains(at));
    let at = match (before, at_or_after) {
        (Some(before), Some(after)) => {
            if middle - before <= after - middle {
                before
            } else {
                after
            }
        }
        (one, other) => one.or(other)?,
    };
    Some((piece.start..at, at..piece.end))
}

/// reqwest's own message for a timeout or refused connection is terse; name the cause,
/// and the innermost reason (a certificate problem hides several wrappers deep). The URL
/// is left out: it may carry credentials.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let cause = causes.last().map(|c| format!(": {c}")).unwrap_or_default();
    if error.is_timeout() {
        format!("timed out ({error}{cause})")
    } else if error.is_connect() {
        format!("cannot connect ({error}{cause})")
    } else {
        format!("{error}{cause}")
    }
}

/// Quotes a validated string for an InfluxQL single-quoted literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> InfluxArgs {
        InfluxArgs::plain(url, "weather")
    }

    #[test]
    fn a_url_without_an_http_scheme_fails_at_start_and_says_so() {
        for url in ["localhost:8086", "127.0.0.1:8086", "ftp://host"] {
            let error = InfluxClient::new(&args(url), Duration::from_secs(1)).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("must start with http:// or https://"),
                "{url}: {error}"
            );
        }
        for url in ["http://127.0.0.1:8086", "https://influx.example:8086/"] {
            assert!(InfluxClient::new(&args(url), Duration::from_secs(1)).is_ok());
        }
    }

    fn sort(status: u16, body: &str, retry_after: Option<&str>) -> InfluxError {
        InfluxError::from_answer(
            "http://influx",
            "weather",
            status,
            body,
            retry_after,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn answers_are_sorted_the_way_telegraf_and_vector_sort_them() {
        for status in [401, 403] {
            let error = sort(status, r#"{"error":"authorization failed"}"#, None);
            assert!(
                matches!(&error, InfluxError::Unauthorized { body, .. } if body == "authorization failed"),
                "{error:?}"
            );
            assert!(error.is_retriable(), "credentials are fixed, data is kept");
        }
        for status in [408, 429, 500, 502, 503, 504] {
            let error = sort(status, "busy", Some("7"));
            assert!(error.is_retriable(), "{status}");
            assert_eq!(
                error.retry_after(),
                Some(Duration::from_secs(7)),
                "{status}"
            );
        }
        assert_eq!(sort(503, "", None).retry_after(), None);
        assert!(matches!(
            sort(413, "too large", None),
            InfluxError::TooLarge { .. }
        ));
        assert!(matches!(
            sort(404, r#"{"error":"database not found: \"weather\""}"#, None),
            InfluxError::DatabaseNotFound { .. }
        ));
        let partial = sort(
            400,
            r#"{"error":"partial write: field type conflict: input field \"uv\" on measurement \"weather_data\" is type float, already exists as type string dropped=1"}"#,
            None,
        );
        assert!(
            matches!(&partial, InfluxError::Rejected { status: 400, body, .. }
                if body.starts_with("partial write: field type conflict")),
            "{partial:?}"
        );
        for status in [400, 404, 405, 409, 422] {
            let error = sort(status, "no", Some("1"));
            assert!(matches!(error, InfluxError::Rejected { .. }), "{status}");
            assert!(!error.is_retriable() && error.retry_after().is_none());
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no pause"
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn halves_split_after_the_newline_nearest_the_middle() {
        let lines = b"aa\nbbbb\nc\n";
        // Middle byte 5: the line ends at 3 and 8 are 2 and 3 away.
        assert_eq!(halves(lines, 0..10), Some((0..3, 3..10)));
        // Middle byte 6: only 8 is inside (the newline at 2 is outside the piece).
        assert_eq!(halves(lines, 3..10), Some((3..8, 8..10)));
        assert_eq!(halves(lines, 8..10), None, "one line");
        assert_eq!(halves(lines, 0..3), None, "one line");
        assert_eq!(
            halves(b"aa\nbb", 0..5),
            Some((0..3, 3..5)),
            "no last newline"
        );
        assert_eq!(halves(b"", 0..0), None);
    }

    fn too_large() -> InfluxError {
        InfluxError::TooLarge {
            url: "u".into(),
            body: "Request Entity Too Large".into(),
        }
    }

    /// Writes `lines` through a server that answers 413 to a body over `limit` bytes,
    /// returning the result and the bodies it stored, in order.
    async fn write_with_limit(
        lines: &[u8],
        limit: usize,
    ) -> (Result<(), InfluxError>, Vec<Vec<u8>>) {
        let stored = std::cell::RefCell::new(Vec::new());
        let result = write_in_pieces(lines, |piece| {
            let answer = if piece.len() > limit {
                Err(too_large())
            } else {
                stored.borrow_mut().push(piece.to_vec());
                Ok(())
            };
            async move { answer }
        })
        .await;
        (result, stored.into_inner())
    }

    #[tokio::test]
    async fn a_write_too_large_is_stored_in_pieces_in_order_with_the_last_line_last() {
        let mut lines = Vec::new();
        for i in 0..37 {
            lines.extend_from_slice(
                format!("report,state=S{i} v={}\n", "9".repeat(i % 7)).as_bytes(),
            );
        }
        let marker = b"hour_generations generation=\"abc\",rows=37i 1695099600\n";
        lines.extend_from_slice(marker);
        let longest = lines
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::len)
            .max()
            .unwrap();

        let (result, stored) = write_with_limit(&lines, lines.len()).await;
        assert!(result.is_ok());
        assert_eq!(
            stored,
            vec![lines.clone()],
            "a write that fits is one write"
        );

        for limit in [longest, longest + 1, 200, lines.len() / 2, lines.len() - 1] {
            let (result, stored) = write_with_limit(&lines, limit).await;
            assert!(result.is_ok(), "limit {limit}: {result:?}");
            assert!(stored.len() > 1, "limit {limit}");
            assert_eq!(
                stored.concat(),
                lines,
                "limit {limit}: every line once, in order"
            );
            assert!(
                stored
                    .iter()
                    .all(|piece| piece.len() <= limit && piece.ends_with(b"\n"))
            );
            assert!(stored.last().unwrap().ends_with(marker), "limit {limit}");
        }
    }

    #[tokio::test]
    async fn one_line_too_large_alone_is_too_large_after_the_lines_before_it() {
        let lines = b"a 1\nb 2\nccccccccccccccccc 3\nd 4\n";
        let (result, stored) = write_with_limit(lines, 8).await;
        assert!(
            matches!(result, Err(InfluxError::TooLarge { .. })),
            "{result:?}"
        );
        assert_eq!(
            stored.concat(),
            b"a 1\nb 2\n",
            "what comes before it is stored"
        );
    }

    #[tokio::test]
    async fn another_error_midway_stops_the_write_for_a_retry() {
        let lines = b"a 1\nb 2\nc 3\nd 4\n";
        let mut calls = 0;
        let result = write_in_pieces(lines, |_| {
            calls += 1;
            let answer = match calls {
                1 => Err(too_large()),
                _ => Err(InfluxError::Unavailable {
                    url: "u".into(),
                    reason: "503".into(),
                    retry_after: None,
                }),
            };
            async move { answer }
        })
        .await;
        assert!(result.unwrap_err().is_retriable());
        assert_eq!(calls, 2);
    }
}
