//! A thin client for InfluxDB's v1 HTTP API (`/ping`, `/write`, `/query`), served by
//! InfluxDB 1.x and by the v1-compatibility endpoints of 2.x and 3.x. Every request has a
//! connect timeout and a total timeout, so a hung server fails like a dead one.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::InfluxArgs;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a request failed, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// Down, hung, restarting or overloaded: retry later.
    #[error("InfluxDB at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The server refused the request itself (bad line protocol, field-type conflict, bad
    /// query): retrying the same request would fail again.
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
    /// An answer of another shape than the statement asks for.
    #[error("InfluxDB at {url} answered {statement:?} unexpectedly: {reason}")]
    UnexpectedAnswer {
        url: String,
        statement: String,
        reason: String,
    },
}

impl InfluxError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, InfluxError::Unavailable { .. })
    }
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
    base: String,
    db: String,
    user: Option<(String, String)>,
    token: Option<String>,
}

impl InfluxClient {
    /// A client whose every request gives up after `timeout`.
    pub fn new(args: &InfluxArgs, timeout: Duration) -> Result<Self, InfluxError> {
        let base = args.url.trim_end_matches('/').to_owned();
        // `localhost:8086` parses too, as scheme `localhost`, and would then fail every
        // request like an outage, forever.
        let no_scheme = || {
            InfluxError::Config(format!(
                "INFLUXDB_URL {base:?} must start with http:// or https://, e.g. http://{base}"
            ))
        };
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(no_scheme());
        }
        reqwest::Url::parse(&base)
            .map_err(|e| InfluxError::Config(format!("INFLUXDB_URL {base:?}: {e}")))?;
        if args.db.is_empty() || args.db.contains(['"', '\\', '\n']) {
            return Err(InfluxError::Config(format!(
                "INFLUXDB_DB {:?} is not a usable database name",
                args.db
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .build()
            .map_err(|e| InfluxError::Config(e.to_string()))?;
        let user = match (&args.user, &args.password) {
            (Some(user), password) => Some((
                user.clone(),
                password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
            )),
            (None, _) => None,
        };
        Ok(Self {
            http,
            base,
            db: args.db.clone(),
            user,
            token: args.token.as_ref().map(|t| t.expose().to_owned()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.user {
            request = request.query(&[("u", user), ("p", password)]);
        }
        if let Some(token) = &self.token {
            request = request.header(reqwest::header::AUTHORIZATION, format!("Token {token}"));
        }
        request
    }

    fn unavailable(&self, reason: impl ToString) -> InfluxError {
        InfluxError::Unavailable {
            url: self.base.clone(),
            reason: reason.to_string(),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), InfluxError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(describe(&e)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.unavailable(describe(&e)))?;
        if status.is_server_error() {
            return Err(self.unavailable(format!("{status}: {}", body.trim())));
        }
        Ok((status, body))
    }

    /// `GET /ping`: is the server there?
    pub async fn ping(&self) -> Result<(), InfluxError> {
        let (status, body) = self
            .send(self.request(reqwest::Method::GET, "/ping"))
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(InfluxError::Rejected {
                url: self.base.clone(),
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
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(InfluxError::Rejected {
                url: self.base.clone(),
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

    async fn write_once(&self, lines: &[u8]) -> Result<(), InfluxError> {
        let request = self
            .request(reqwest::Method::POST, "/write")
            .query(&[("db", self.db.as_str()), ("precision", "s")])
            .body(lines.to_vec());
        let (status, body) = self.send(request).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND if body.contains("database not found") => {
                Err(InfluxError::DatabaseNotFound {
                    url: self.base.clone(),
                    db: self.db.clone(),
                })
            }
            _ => Err(InfluxError::Rejected {
                url: self.base.clone(),
                status: status.as_u16(),
                body: body.trim().to_owned(),
            }),
        }
    }

    /// `GET /query` of one InfluxQL statement, times as epoch seconds. The statement must
    /// be built from validated values only.
    pub async fn query(&self, statement: &str) -> Result<Vec<Series>, InfluxError> {
        self.statement(reqwest::Method::GET, statement).await
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
            url: self.base.clone(),
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
        let (status, body) = self.send(request).await?;
        let rejected = |body: String| InfluxError::Rejected {
            url: self.base.clone(),
            status: status.as_u16(),
            body,
        };
        let parsed: QueryResponse =
            serde_json::from_str(&body).map_err(|_| rejected(body.clone()))?;
        let statement_error = parsed.results.iter().find_map(|r| r.error.clone());
        if let Some(error) = parsed.error.or(statement_error) {
            if error.contains("database not found") {
                return Err(InfluxError::DatabaseNotFound {
                    url: self.base.clone(),
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

/// reqwest's own message for a timeout or refused connection is terse; name the cause.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("timed out ({error})")
    } else if error.is_connect() {
        format!("cannot connect ({error})")
    } else {
        error.to_string()
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
        InfluxArgs {
            url: url.into(),
            db: "weather".into(),
            user: None,
            password: None,
            token: None,
        }
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
}
