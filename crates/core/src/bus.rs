//! Redis pub/sub with every call under a timeout: a [`Publisher`] that reconnects on the
//! next call after any failure, and a [`Subscription`] that reconnects, resubscribes and
//! tells its owner that messages may have been missed in between.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::buffer::{Delivery, Target};
use crate::channel::Pattern;
use crate::config::{ConfigError, RedisArgs, redact_url};
use crate::health::Check;
use crate::metrics;
use crate::shutdown::sleep_or_cancel;
use crate::tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a subscription may stay silent before we PING to learn whether Redis is still
/// there; a hung (SIGSTOPped) server keeps the socket open and says nothing.
const IDLE_PING_AFTER: Duration = Duration::from_secs(1);

/// Every URL in these errors is redacted: no password reaches a log through them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("REDIS_URL / --redis-url {url:?} is not usable: {reason}")]
    Config { url: String, reason: String },
    #[error("Redis settings: {0}")]
    Settings(#[from] ConfigError),
    #[error(
        "Redis at {url} failed the TLS certificate check: {reason} (check REDIS_CA_FILE, the server's name and certificate, or the client certificate)"
    )]
    Certificate { url: String, reason: String },
    #[error("Redis at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
}

/// A client for `args`: the URL's server and database, the user and password from the
/// settings (over any in the URL), and for `rediss://` the CA and client certificate.
/// Public for the api's export queue, which needs commands beyond pub/sub.
pub fn open(args: &RedisArgs) -> Result<Client, BusError> {
    let url = redact_url(&args.url);
    let config_error = |reason: String| BusError::Config {
        url: url.clone(),
        reason,
    };
    // redis's parse errors quote nothing of the URL, so they are safe to show.
    let mut info = args
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| config_error(e.to_string()))?;
    // No `CLIENT SETINFO` on connect: the shipped ACL (deploy/redis) grants the roles only
    // PING, PUBLISH and PSUBSCRIBE, and Redis 7.0 cannot name that subcommand in an ACL,
    // so on 7.2+ every connect would add a refusal to the ACL LOG that hides real ones.
    let mut login = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(user) = &args.user {
        login = login.set_username(user);
    }
    if let Some(password) = args.password()? {
        login = login.set_password(password.expose());
    }
    // With a login, no `CLIENT SETINFO` on connect: the shipped ACL (deploy/redis) grants
    // the roles only PING, PUBLISH and PSUBSCRIBE, and Redis 7.0 cannot name that
    // subcommand in an ACL, so on 7.2+ every connect would add a refusal to the ACL LOG
    // that hides real ones. The connect keeps one round trip either way (AUTH, or else
    // CLIENT SETINFO), which is where a TLS 1.3 server that wants a client certificate
    // says so: `check_certificates` relies on it.
    if login.password().is_some() {
        login = login.set_skip_set_lib_name();
    }
    info = info.set_redis_settings(login);
    let is_tls = args.url.to_ascii_lowercase().starts_with("rediss://");
    let certificate_files = args.ca_file.is_some() || args.client_cert.is_some();
    if !is_tls {
        if certificate_files {
            return Err(config_error(
                "REDIS_CA_FILE or REDIS_CLIENT_CERT is set, but the URL is not rediss:// (TLS)"
                    .into(),
            ));
        }
        return Client::open(info).map_err(|e| config_error(e.to_string()));
    }
    tls::install_provider();
    let root_cert = args
        .ca_file
        .as_deref()
        .map(|path| tls::read_certificates("REDIS_CA_FILE", path))
        .transpose()
        .map_err(ConfigError::from)?;
    let client_tls = tls::read_identity(
        "REDIS_CLIENT_CERT",
        args.client_cert.as_deref(),
        args.client_key.as_deref(),
    )
    .map_err(ConfigError::from)?
    .map(|identity| redis::ClientTlsConfig {
        client_cert: identity.certificate,
        client_key: identity.key,
    });
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    Client::build_with_tls(info, certificates).map_err(|e| config_error(e.to_string()))
}

/// `Unavailable`, or `Certificate` if `error` is a failed certificate check.
fn failure(url: &str, error: &(dyn std::error::Error + 'static)) -> BusError {
    let (url, reason) = (url.to_owned(), error.to_string());
    if tls::is_certificate_error(error) {
        BusError::Certificate { url, reason }
    } else {
        BusError::Unavailable { url, reason }
    }
}

/// A multiplexed connection for requests and answers (the publisher's, the api's export
/// queue's), bounded by the bus's connect and response timeouts. `url` is the redacted URL
/// its errors name.
pub async fn connect(client: &Client, url: &str) -> Result<MultiplexedConnection, BusError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, connecting)
        .await
        .map_err(|_| BusError::Unavailable {
            url: url.to_owned(),
            reason: "connect timed out".into(),
        })?
        .map_err(|e| failure(url, &e))
}

/// Connects once to fail fast on what no retry fixes: a `rediss://` server whose
/// certificate is not trusted, or that refuses ours. Redis being down, slow or refusing
/// the login is not an error here: the roles ride out outages, even at start, and
/// credentials may be rotated while they wait.
pub async fn check_certificates(args: &RedisArgs) -> Result<(), BusError> {
    let client = open(args)?;
    let url = redact_url(&args.url);
    let only_certificates = |error: redis::RedisError| match failure(&url, &error) {
        certificate @ BusError::Certificate { .. } => Err(certificate),
        _ => Ok(()),
    };
    // A pub/sub connection reads each answer in the caller's task, so a TLS alert arrives
    // as the error itself (a multiplexed connection's writer only sees "broken pipe").
    let connecting = client.get_async_pubsub();
    let mut pubsub =
        match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, connecting).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => return only_certificates(error),
            Err(_) => return Ok(()),
        };
    // With TLS 1.3 the client's handshake ends before the server has checked the client's
    // certificate: a server refusing it says so only in answer to the first command.
    match tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.ping::<redis::Value>()).await {
        Ok(Err(error)) => only_certificates(error),
        Err(_) | Ok(Ok(_)) => Ok(()),
    }
}

/// Publishes messages on one connection, owned by one task.
pub struct Publisher {
    client: Client,
    url: String,
    connection: Option<MultiplexedConnection>,
    /// The role whose `redis_*` metrics this publisher counts in, if any.
    metrics_role: Option<&'static str>,
}

impl Publisher {
    /// Checks the settings now; connects on first use.
    pub fn new(args: &RedisArgs) -> Result<Self, BusError> {
        Ok(Self {
            client: open(args)?,
            url: redact_url(&args.url),
            connection: None,
            metrics_role: None,
        })
    }

    /// This publisher, counting its calls' latency and errors in `role`'s metrics
    /// (`weathervane_<role>_redis_command_duration_seconds`, `..._redis_errors_total`).
    pub fn with_metrics(mut self, role: &'static str) -> Self {
        self.metrics_role = Some(role);
        self
    }

    /// Counts a failed delivery of kind `kind` (`unheard`: nobody subscribed).
    pub fn count_error(&self, kind: &'static str) {
        if let Some(role) = self.metrics_role {
            metrics::counter(role, "redis_errors_total", &[("kind", kind)]).increment(1);
        }
    }

    /// `PUBLISH`, counted: see [`Self::publish_uncounted`].
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<u32, BusError> {
        let started = Instant::now();
        let published = self.publish_uncounted(channel, payload).await;
        if let Some(role) = self.metrics_role {
            metrics::histogram(
                role,
                "redis_command_duration_seconds",
                &[("command", "publish")],
            )
            .record(started.elapsed().as_secs_f64());
            if let Err(error) = &published {
                let text = error.to_string();
                let kind = if text.contains("timed out") {
                    "timeout"
                } else if self.connection.is_none() && text.contains("connect") {
                    "connect"
                } else {
                    "command"
                };
                self.count_error(kind);
            }
        }
        published
    }

    fn unavailable(&self, reason: impl ToString) -> BusError {
        BusError::Unavailable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// `PUBLISH`: how many subscribers received the message (0 means nobody did).
    async fn publish_uncounted(&mut self, channel: &str, payload: &[u8]) -> Result<u32, BusError> {
        if self.connection.is_none() {
            self.connection = Some(connect(&self.client, &self.url).await?);
        }
        let connection = self.connection.as_mut().expect("connected above");
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        match tokio::time::timeout(RESPONSE_TIMEOUT, command.query_async::<u32>(connection)).await {
            Ok(Ok(receivers)) => Ok(receivers),
            Ok(Err(error)) => {
                self.connection = None;
                Err(self.unavailable(error))
            }
            Err(_) => {
                self.connection = None;
                Err(self.unavailable("PUBLISH timed out"))
            }
        }
    }
}

/// A message waiting to be published.
#[derive(Clone, Debug)]
pub struct Outbound {
    pub channel: String,
    pub payload: std::sync::Arc<[u8]>,
    /// For a data batch, its rows: counted as published (`rows_published_total`,
    /// `batches_published_total`) once Redis takes it.
    pub data_rows: Option<u64>,
}

impl Outbound {
    pub fn new(channel: String, payload: impl Into<std::sync::Arc<[u8]>>) -> Self {
        Self {
            channel,
            payload: payload.into(),
            data_rows: None,
        }
    }

    /// A data batch of `rows` rows.
    pub fn batch_of(mut self, rows: u64) -> Self {
        self.data_rows = Some(rows);
        self
    }

    /// Weight in a buffer.
    pub fn bytes(&self) -> usize {
        self.channel.len() + self.payload.len()
    }
}

/// What to do with a message nobody was subscribed to receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unheard {
    /// Keep it and publish again: someone must receive it.
    Retry,
    /// Let it go: it is a courtesy that the receiver asks for again if it needs it.
    Drop,
}

/// Delivers [`Outbound`] messages one by one through a [`Publisher`].
pub struct PublishTarget {
    pub publisher: Publisher,
    pub unheard: Unheard,
}

impl Target<Outbound> for PublishTarget {
    async fn deliver(&mut self, items: &[Outbound]) -> Delivery {
        for message in items {
            match self
                .publisher
                .publish(&message.channel, &message.payload)
                .await
            {
                Ok(0) if self.unheard == Unheard::Retry => {
                    self.publisher.count_error("unheard");
                    return Delivery::Retry(format!("nobody is subscribed to {}", message.channel));
                }
                Ok(_) => {
                    if let (Some(rows), Some(role)) =
                        (message.data_rows, self.publisher.metrics_role)
                    {
                        metrics::counter(role, "rows_published_total", &[]).increment(rows);
                        metrics::counter(role, "batches_published_total", &[]).increment(1);
                    }
                }
                Err(error) => return Delivery::Retry(error.to_string()),
            }
        }
        Delivery::Done
    }
}

/// What a subscription hands its owner.
#[derive(Debug)]
pub enum BusEvent {
    /// (Re)subscribed. Anything published while we were not subscribed is gone, so the
    /// owner should ask for whatever it may have missed.
    Subscribed,
    Message {
        channel: String,
        payload: Vec<u8>,
    },
}

/// Why a subscription could not be made.
struct ConnectFailure {
    reason: String,
    /// A failed certificate check, which no retry fixes.
    certificate: bool,
}

impl ConnectFailure {
    fn of(context: &str, error: &redis::RedisError) -> Self {
        Self {
            reason: format!("{context}{error}"),
            certificate: tls::is_certificate_error(error),
        }
    }

    fn timed_out(reason: String) -> Self {
        Self {
            reason,
            certificate: false,
        }
    }
}

/// A pattern subscription that survives Redis outages (not a certificate Redis or we
/// refuse: that ends it, see [`Subscription::next`]).
pub struct Subscription {
    client: Client,
    url: String,
    patterns: Vec<String>,
    session: Option<(PubSubSink, PubSubStream)>,
    backoff: Backoff,
    /// When the current outage began, for the "recovered after" log line.
    lost_at: Option<Instant>,
    /// Whether a session was ever established: the first failure is "cannot reach", not
    /// "lost".
    ever_connected: bool,
    /// Where the subscription's state is reported (the role's `redis` readiness check).
    health: Option<Check>,
}

impl Subscription {
    /// Checks the settings now; connects on the first [`Subscription::next`]. The
    /// patterns are in the deployment's namespace.
    pub fn new(args: &RedisArgs, patterns: &[Pattern]) -> Result<Self, BusError> {
        Ok(Self {
            client: open(args)?,
            url: redact_url(&args.url),
            patterns: patterns
                .iter()
                .map(|p| p.in_namespace(&args.namespace))
                .collect(),
            session: None,
            backoff: Backoff::new(),
            lost_at: None,
            ever_connected: false,
            health: None,
        })
    }

    /// This subscription, reporting whether it is up as `check` (ready once subscribed,
    /// not ready from a lost connection or a failed PING until subscribed again).
    pub fn with_health(mut self, check: Check) -> Self {
        self.health = Some(check);
        self
    }

    async fn connect(&mut self) -> Result<(PubSubSink, PubSubStream), ConnectFailure> {
        let mut pubsub = tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            self.client.get_async_pubsub(),
        )
        .await
        .map_err(|_| ConnectFailure::timed_out("connect timed out".to_owned()))?
        .map_err(|e| ConnectFailure::of("", &e))?;
        for pattern in &self.patterns {
            tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.psubscribe(pattern.as_str()))
                .await
                .map_err(|_| ConnectFailure::timed_out(format!("PSUBSCRIBE {pattern} timed out")))?
                .map_err(|e| ConnectFailure::of(&format!("PSUBSCRIBE {pattern}: "), &e))?;
        }
        Ok(pubsub.split())
    }

    fn lost(&mut self, reason: &str) {
        if let Some(check) = &self.health {
            check.failed(format!("Redis subscription at {} down: {reason}", self.url));
        }
        let was_connected = self.session.take().is_some() || self.ever_connected;
        if self.lost_at.is_none() {
            if was_connected {
                tracing::warn!(url = %self.url, %reason, "Redis subscription lost; reconnecting.");
            } else {
                tracing::warn!(url = %self.url, %reason, "Cannot reach Redis yet; retrying.");
            }
            self.lost_at = Some(Instant::now());
        }
    }

    /// The next event; `None` once `shutdown` is cancelled, or when the subscription
    /// cannot be made because a certificate check failed (logged as an error).
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<BusEvent> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let Some((sink, stream)) = self.session.as_mut() else {
                // A hung Redis may hold a connect for its whole timeout: shutdown first.
                let connected = tokio::select! {
                    connected = self.connect() => connected,
                    _ = shutdown.cancelled() => return None,
                };
                match connected {
                    Ok(session) => {
                        self.session = Some(session);
                        self.ever_connected = true;
                        if let Some(check) = &self.health {
                            check.ok();
                        }
                        match self.lost_at.take() {
                            Some(since) => {
                                tracing::info!(patterns = ?self.patterns, after_ms = since.elapsed().as_millis() as u64, "Redis subscription recovered.")
                            }
                            None => {
                                tracing::info!(patterns = ?self.patterns, "Subscribed to Redis.")
                            }
                        }
                        return Some(BusEvent::Subscribed);
                    }
                    Err(failure) if failure.certificate => {
                        // No retry fixes it: end the subscription, and with it the role,
                        // saying what to check.
                        let error = BusError::Certificate {
                            url: self.url.clone(),
                            reason: failure.reason,
                        };
                        tracing::error!(%error, "Stopping: the Redis subscription cannot be made.");
                        return None;
                    }
                    Err(ConnectFailure { reason, .. }) => {
                        self.lost(&reason);
                        if !sleep_or_cancel(self.backoff.next_delay(), shutdown).await {
                            return None;
                        }
                        continue;
                    }
                }
            };
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        self.backoff.reset();
                        let channel = message.get_channel_name().to_owned();
                        return Some(BusEvent::Message { channel, payload: message.get_payload_bytes().to_vec() });
                    }
                    None => self.lost("connection closed"),
                },
                _ = tokio::time::sleep(IDLE_PING_AFTER) => {
                    let pinged = tokio::select! {
                        pinged = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()) => pinged,
                        _ = shutdown.cancelled() => return None,
                    };
                    match pinged {
                        Ok(Ok(_)) => {
                        self.backoff.reset();
                        if let Some(check) = &self.health {
                            check.ok();
                        }
                    }
                        Ok(Err(error)) => self.lost(&error.to_string()),
                        Err(_) => self.lost("PING timed out (Redis hung?)"),
                    }
                }
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}
