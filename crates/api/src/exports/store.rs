//! The export jobs in Redis, every call under a timeout. Keys, all under the deployment's
//! namespace:
//!
//! - `<ns>:exports`: a Stream, one entry per job to run (`job=<id>`), read by the consumer
//!   group `exporters`: any replica takes a new entry (`XREADGROUP`), the runner keeps its
//!   entry fresh (`XCLAIM ... JUSTID`, a heartbeat), and an entry idle past the
//!   visibility timeout (its replica died) is taken over (`XAUTOCLAIM`). Acknowledged and
//!   deleted (`XACK`, `XDEL`) when the job ends.
//! - `<ns>:export:<id>`: a hash per job ([`Job::to_fields`]), expiring `--export-ttl` after
//!   its last change.
//! - `<ns>:exports:index`: a sorted set of job ids by creation time, for the job list.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use tokio::sync::Mutex;
use weathervane_core::bus::{self, BusError};
use weathervane_core::config::{RedisArgs, redact_url};

use super::job::Job;

/// The bus's response timeout (`bus::connect` sets it on the connection); a command gets
/// it and half a second more before it is abandoned.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const GROUP: &str = "exporters";
/// The stream keeps at most about this many entries (`MAXLEN ~`): a backlog bound, far
/// above any real queue.
const STREAM_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Config(#[from] BusError),
    #[error("Redis at {url} is unavailable for the export queue: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("export job {id} in Redis is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
}

/// One queue entry: the stream entry's id and the job it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub entry: String,
    pub job: String,
}

pub struct Store {
    client: Client,
    url: String,
    connection: Mutex<Option<MultiplexedConnection>>,
    stream: String,
    index: String,
    prefix: String,
    ttl: Duration,
}

impl Store {
    pub fn new(args: &RedisArgs, ttl: Duration) -> Result<Self, StoreError> {
        let namespace = args.namespace.as_str();
        Ok(Self {
            client: bus::open(args)?,
            url: redact_url(&args.url),
            connection: Mutex::new(None),
            stream: format!("{namespace}:exports"),
            index: format!("{namespace}:exports:index"),
            prefix: format!("{namespace}:export:"),
            ttl,
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn unavailable(&self, reason: impl ToString) -> StoreError {
        StoreError::Unavailable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Runs `command`, connecting first if need be; a failure drops the connection so the
    /// next call connects afresh.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        let answer = tokio::time::timeout(
            RESPONSE_TIMEOUT + Duration::from_millis(500),
            command.query_async::<T>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if !matches!(error.kind(), redis::ErrorKind::Server(_)) {
                    *self.connection.lock().await = None;
                }
                Err(self.unavailable(error))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(self.unavailable("no answer in time"))
            }
        }
    }

    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(
            RESPONSE_TIMEOUT + Duration::from_millis(500),
            pipe.query_async::<T>(&mut connection),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                *self.connection.lock().await = None;
                Err(self.unavailable(error))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(self.unavailable("no answer in time"))
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        // The export queue names every Redis failure as its own "unavailable".
        let connection =
            bus::connect(&self.client, &self.url)
                .await
                .map_err(|error| match error {
                    BusError::Unavailable { reason, .. } | BusError::Certificate { reason, .. } => {
                        self.unavailable(reason)
                    }
                    other => self.unavailable(other),
                })?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Creates the consumer group (and the stream) if missing; from the stream's start, so
    /// entries added before it existed are not skipped.
    pub async fn ensure_group(&self) -> Result<(), StoreError> {
        let mut command = redis::cmd("XGROUP");
        command
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.run::<Value>(&command).await {
            Err(StoreError::Unavailable { reason, .. }) if reason.contains("BUSYGROUP") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Stores `job` and queues it.
    pub async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let key = self.key(&job.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(job.to_fields())
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.ttl.as_secs().max(1))
            .ignore()
            .cmd("ZADD")
            .arg(&self.index)
            .arg(job.created_ms)
            .arg(&job.id)
            .ignore()
            .cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX)
            .arg("*")
            .arg("job")
            .arg(&job.id)
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    /// The job `id`, if it exists (has not expired).
    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.key(id));
        let fields: HashMap<String, String> = self.run(&command).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Job::from_fields(&fields)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt {
                id: id.to_owned(),
                reason,
            })
    }

    /// Sets fields of a job and renews its expiry (`--export-ttl` after its last change).
    /// Callers update only jobs they have just read, so a job cannot expire in between
    /// unless a run outlasts the TTL.
    pub async fn update(&self, id: &str, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(fields)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.ttl.as_secs().max(1))
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    /// What a runner checks between chunks: whether a cancel was asked, and who runs it.
    pub async fn control(&self, id: &str) -> Result<(bool, String), StoreError> {
        let mut command = redis::cmd("HMGET");
        command
            .arg(self.key(id))
            .arg("cancel_requested_ms")
            .arg("runner");
        let (cancel, runner): (Option<String>, Option<String>) = self.run(&command).await?;
        Ok((
            cancel.is_some_and(|c| !c.is_empty()),
            runner.unwrap_or_default(),
        ))
    }

    /// The newest `limit` jobs, newest first.
    pub async fn list(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut command = redis::cmd("ZREVRANGE");
        command.arg(&self.index).arg(0).arg(limit.saturating_sub(1));
        let ids: Vec<String> = self.run(&command).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id).await? {
                Some(job) => jobs.push(job),
                None => {
                    // Expired: its index entry goes too.
                    let mut remove = redis::cmd("ZREM");
                    remove.arg(&self.index).arg(&id);
                    self.run::<Value>(&remove).await?;
                }
            }
        }
        Ok(jobs)
    }

    /// A new entry for `consumer`, if any.
    pub async fn next_new(&self, consumer: &str) -> Result<Option<Entry>, StoreError> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">");
        match self.run::<Value>(&command).await {
            Ok(value) => Ok(first_entry(&value)),
            Err(StoreError::Unavailable { reason, .. }) if reason.contains("NOGROUP") => {
                // Redis lost the group (restarted without persistence): make it again.
                self.ensure_group().await?;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// An entry whose runner has not beaten for `idle`, now `consumer`'s, if any.
    pub async fn take_over(
        &self,
        consumer: &str,
        idle: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        let mut command = redis::cmd("XAUTOCLAIM");
        command
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1);
        match self.run::<Value>(&command).await {
            Ok(value) => Ok(first_entry(&value)),
            Err(StoreError::Unavailable { reason, .. }) if reason.contains("NOGROUP") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Keeps `entry` from being taken over: resets its idle time. False if it is gone
    /// (acknowledged by another runner).
    pub async fn heartbeat(&self, consumer: &str, entry: &str) -> Result<bool, StoreError> {
        let mut command = redis::cmd("XCLAIM");
        command
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry)
            .arg("JUSTID");
        let claimed: Vec<String> = self.run(&command).await?;
        Ok(!claimed.is_empty())
    }

    /// The job of `entry` has ended: the entry leaves the queue.
    pub async fn finish(&self, entry: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(entry)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(entry)
            .ignore();
        self.pipeline::<()>(&pipe).await
    }

    /// Drops index entries of jobs created before `before_ms` (their hashes have expired
    /// or will soon).
    pub async fn sweep_index(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut command = redis::cmd("ZREMRANGEBYSCORE");
        command
            .arg(&self.index)
            .arg("-inf")
            .arg(format!("({before_ms}"));
        self.run(&command).await
    }
}

/// The first `(entry id, job id)` in an XREADGROUP or XAUTOCLAIM answer (RESP2 or RESP3).
fn first_entry(value: &Value) -> Option<Entry> {
    match value {
        Value::Array(items) => {
            if let [Value::BulkString(id), Value::Array(fields)] = items.as_slice() {
                let fields: Vec<String> = fields.iter().filter_map(text).collect();
                if let Some(at) = fields.iter().position(|f| f == "job") {
                    return Some(Entry {
                        entry: String::from_utf8_lossy(id).into_owned(),
                        job: fields.get(at + 1)?.clone(),
                    });
                }
            }
            items.iter().find_map(first_entry)
        }
        Value::Map(pairs) => pairs
            .iter()
            .find_map(|(key, value)| first_entry(key).or_else(|| first_entry(value))),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn entries_are_found_in_both_answers() {
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("job"), bulk("abc")]),
        ]);
        let read = Value::Array(vec![Value::Array(vec![
            bulk("ns:exports"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let want = Some(Entry {
            entry: "1-0".into(),
            job: "abc".into(),
        });
        assert_eq!(first_entry(&read), want);
        let claimed = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry]),
            Value::Array(vec![]),
        ]);
        assert_eq!(first_entry(&claimed), want);
        let nothing = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]);
        assert_eq!(first_entry(&nothing), None);
        assert_eq!(first_entry(&Value::Nil), None);
    }
}
