//! Resumable CSV uploads over tus 1.0 (core, creation, termination, checksum), served by
//! the streamer on `--upload-addr` (it owns the input; the api stays read-only):
//! `OPTIONS /uploads`, `POST /uploads`, `HEAD`, `PATCH`, `DELETE` and (progress through
//! the pipeline, as JSON) `GET /uploads/{id}`.
//!
//! Each upload is two files in the staging directory (`--upload-dir`, by default
//! `INBOX/.uploads`, so on the inbox's file system): `<id>.part`, the bytes received, and
//! `<id>.json`, its length, metadata and committed offset. A chunk is appended and
//! fsynced, and only then is the offset in `<id>.json` advanced (written to a temporary
//! file, synced, renamed), so a client that disconnects or a streamer killed mid-chunk
//! resumes from an offset whose bytes are on disk; a restarted streamer cuts each `.part`
//! back to its committed offset. A chunk with `Upload-Checksum` is kept only if its digest
//! matches (else 460, offset unchanged); a full disk is a 507 and the chunk is cut off
//! again. A finished upload's header is checked (the same check as every input's) and the
//! file renamed into the inbox as `<id>-<filename>.csv`, whence it is streamed like any
//! inbox file.
//!
//! Why our own handling rather than a crate: rustus is a standalone server, not a
//! library; fileloft-axum (0.x, young) embeds in axum, but the parts that matter here
//! would be ours anyway (its store would have to fsync before committing an offset, map
//! ENOSPC to 507, check the header and hand the file to the inbox, and report progress
//! through the pipeline), and the protocol subset served is small, with its rules pure
//! in [`tus`]. Revisit if the crate matures.

pub mod tus;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::options;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use weathervane_core::config::Secret;
use weathervane_core::cors::CorsOrigins;
use weathervane_core::listen::ListenAddr;
use weathervane_core::metrics::{self, Counter};
use weathervane_core::row::{CsvSource, ReadOptions};
use weathervane_core::supervise::Supervisor;

use crate::ROLE;
use crate::inbox::{FileState, Inbox, write_synced};
use tus::TusError;

/// How long the server waits for the next piece of a PATCH body before it keeps what
/// arrived and ends the request.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, clap::Args)]
pub struct UploadArgs {
    /// Serve tus uploads here (host:port, or a bare port on 127.0.0.1); off unless given.
    /// Needs `--inbox`, where finished uploads go.
    #[arg(long, env = "WEATHERVANE_UPLOAD_ADDR")]
    pub upload_addr: Option<ListenAddr>,
    /// Staging directory for uploads in progress; on the inbox's file system (a finished
    /// upload is renamed into the inbox). Default: INBOX/.uploads.
    #[arg(long, env = "WEATHERVANE_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,
    /// Largest upload taken (Upload-Length), in bytes.
    #[arg(long, env = "WEATHERVANE_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,
    /// Most uploads in progress at once; a creation past it is a 429.
    #[arg(long, env = "WEATHERVANE_MAX_UPLOADS", default_value_t = 8)]
    pub max_uploads: usize,
    /// File holding the bearer token uploads must present (`Authorization: Bearer ...`).
    #[arg(long, env = "WEATHERVANE_UPLOAD_TOKEN_FILE")]
    pub upload_token_file: Option<PathBuf>,
    /// Hours after its last chunk an unfinished upload is dropped (its files deleted), so
    /// abandoned uploads do not hold `--max-uploads` slots and disk for ever.
    #[arg(long, env = "WEATHERVANE_UPLOAD_EXPIRY_HOURS", default_value_t = 24.0)]
    pub upload_expiry_hours: f64,
    /// Serve uploads without a token on an address other than loopback (by default that
    /// is refused: uploads are writes).
    #[arg(long, env = "WEATHERVANE_UPLOAD_ALLOW_ANONYMOUS")]
    pub upload_allow_anonymous: bool,
    /// Origins whose pages may upload from a browser (CORS; the dashboard's origin, as the
    /// browser sends it): a list (repeat the flag, or commas), or * for any. None (the
    /// default): no CORS headers at all.
    #[arg(long = "upload-cors-origin", env = "WEATHERVANE_UPLOAD_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', value_parser = weathervane_core::cors::parse_item)]
    pub upload_cors_origins: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("--upload-addr needs --inbox: finished uploads are streamed from the inbox")]
    NoInbox,
    #[error("cannot listen for uploads on {addr} (--upload-addr): {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error(
        "uploads on {addr} would take writes from anyone: give WEATHERVANE_UPLOAD_TOKEN_FILE, listen on loopback, or pass --upload-allow-anonymous"
    )]
    Anonymous { addr: ListenAddr },
    #[error("upload token file {path} (WEATHERVANE_UPLOAD_TOKEN_FILE): {why}")]
    Token { path: PathBuf, why: String },
    #[error("--upload-cors-origin: {0}")]
    Cors(String),
    #[error("--upload-expiry-hours {0} must be a positive number of hours")]
    Expiry(f64),
    #[error("upload directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where an upload is, as recorded in `<id>.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Stage {
    /// Receiving chunks.
    Uploading,
    /// Complete and handed to the inbox.
    Finished,
    /// Complete but refused (bad header); nothing of it is streamed.
    Failed,
}

/// One upload's record (`<id>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UploadInfo {
    id: String,
    length: u64,
    /// Bytes received, fsynced and committed.
    offset: u64,
    /// `Upload-Metadata` as the client sent it (HEAD echoes it).
    metadata: String,
    /// The name it gets in the inbox, after `<id>-`.
    file_name: String,
    stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl UploadInfo {
    fn inbox_name(&self) -> String {
        format!("{}-{}", self.id, self.file_name)
    }
}

/// One upload: its record as last committed, readable at once (HEAD, GET) even while a
/// PATCH runs, and the lock a PATCH or DELETE holds while it changes the upload's files.
struct Upload {
    info: Mutex<UploadInfo>,
    busy: tokio::sync::Mutex<()>,
}

impl Upload {
    fn new(info: UploadInfo) -> Arc<Self> {
        Arc::new(Self {
            info: Mutex::new(info),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    fn info(&self) -> UploadInfo {
        self.info.lock().unwrap().clone()
    }

    fn set(&self, info: UploadInfo) {
        *self.info.lock().unwrap() = info;
    }

    /// The lock for changing the upload's files; a 423 if another request holds it.
    fn try_busy(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Refusal> {
        self.busy.try_lock().map_err(|_| {
            Refusal::new(
                423,
                format!(
                    "upload {} is taking another PATCH or DELETE; try again when it ends",
                    self.info().id
                ),
            )
        })
    }
}

/// A refusal: a status and a JSON `{"error": ...}` body.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }

    fn io(what: &str, id: &str, error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull {
            return Self::new(
                507,
                format!(
                    "no space left to store upload {id} ({what}): the chunk was not stored; free space and resume"
                ),
            );
        }
        tracing::error!(upload = id, %error, "Upload storage failed: {what}.");
        Self::new(500, format!("upload {id}: cannot {what}: {error}"))
    }
}

impl From<TusError> for Refusal {
    fn from(error: TusError) -> Self {
        Self::new(error.status(), error.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        response
            .headers_mut()
            .insert("Tus-Resumable", HeaderValue::from_static(tus::VERSION));
        response
    }
}

type Reply = Result<Response, Refusal>;

/// The uploads and the staging directory.
struct Uploads {
    dir: PathBuf,
    inbox: Arc<Inbox>,
    read: ReadOptions,
    max_bytes: u64,
    max_uploads: usize,
    /// How long an unfinished upload may go without a chunk.
    expiry: Duration,
    token: Option<Secret>,
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
    /// Uploads terminated in this run: 410 rather than 404.
    gone: Mutex<HashSet<String>>,
    started: Counter,
    finished: Counter,
    failed: Counter,
    received: Counter,
}

/// The upload server, bound, ready to run under the role's supervisor.
pub struct UploadServer {
    listener: TcpListener,
    cors: CorsOrigins,
    uploads: Arc<Uploads>,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl UploadServer {
    /// Checks the credentials rule, loads the uploads a previous run left (cutting each
    /// `.part` back to its committed offset) and binds the address.
    pub async fn bind(
        args: &UploadArgs,
        inbox: &Arc<Inbox>,
        read: ReadOptions,
    ) -> Result<Self, UploadError> {
        let addr = args.upload_addr.clone().ok_or(UploadError::NoInbox)?;
        let hours = args.upload_expiry_hours;
        if !(hours.is_finite() && hours > 0.0) {
            return Err(UploadError::Expiry(hours));
        }
        let cors = CorsOrigins::from_list(&args.upload_cors_origins).map_err(UploadError::Cors)?;
        let token = match &args.upload_token_file {
            Some(path) => Some(read_token(path)?),
            None if is_loopback(&addr.host) || args.upload_allow_anonymous => None,
            None => return Err(UploadError::Anonymous { addr }),
        };
        let dir = args
            .upload_dir
            .clone()
            .unwrap_or_else(|| inbox.dir().join(".uploads"));
        let uploads = load(&dir).map_err(|source| UploadError::Dir {
            path: dir.clone(),
            source,
        })?;
        let listener = TcpListener::bind((addr.host.as_str(), addr.port))
            .await
            .map_err(|source| UploadError::Bind {
                addr: addr.clone(),
                source,
            })?;
        if let Ok(local) = listener.local_addr() {
            tracing::info!(addr = %local, dir = %dir.display(), auth = token.is_some(), "Upload server listening (tus 1.0 at /uploads).");
        }
        let counter = |name| metrics::counter(ROLE, name, &[]);
        Ok(Self {
            listener,
            cors,
            uploads: Arc::new(Uploads {
                dir,
                inbox: inbox.clone(),
                read,
                max_bytes: args.max_upload_bytes,
                max_uploads: args.max_uploads,
                expiry: Duration::from_secs_f64(hours * 3600.0),
                token,
                uploads: Mutex::new(uploads),
                gone: Mutex::new(HashSet::new()),
                started: counter("uploads_started_total"),
                finished: counter("uploads_finished_total"),
                failed: counter("uploads_failed_total"),
                received: counter("upload_received_bytes_total"),
            }),
        })
    }

    /// Serves until the supervisor stops.
    pub fn supervise(self, supervisor: &mut Supervisor) {
        let token = supervisor.token();
        let connections = self.uploads.max_uploads * 4 + 16;
        let (uploads, token_expiry) = (self.uploads.clone(), supervisor.token());
        supervisor.spawn_until_stopped("upload-expiry", async move {
            while weathervane_core::shutdown::sleep_or_cancel(EXPIRY_SWEEP, &token_expiry).await {
                let uploads = uploads.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    uploads.expire(std::time::SystemTime::now())
                })
                .await;
            }
        });
        let app = with_cors(router(self.uploads), &self.cors);
        let listener = self.listener;
        supervisor.spawn_until_stopped("upload-server", serve(listener, app, connections, token));
    }
}

/// How often unfinished uploads are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(60);

/// Whether an unfinished upload whose last chunk was written at `last_write` has expired
/// at `now` (a clock that went back expires nothing).
fn expired(
    last_write: std::time::SystemTime,
    now: std::time::SystemTime,
    expiry: Duration,
) -> bool {
    now.duration_since(last_write)
        .is_ok_and(|idle| idle >= expiry)
}

/// Time a client has to send a request's line and headers (and an idle kept-alive
/// connection to send the next), so a connection that sends nothing does not stay open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The accept loop: hyper's HTTP/1 with a header-read timeout (which `axum::serve` leaves
/// off), at most `max_connections` open at once (past that a new one is closed at once),
/// each closed gracefully on shutdown. The api has the full version of this loop
/// (`api/src/server.rs`); this one is its minimum for a writes-only endpoint.
async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Upload server cannot accept a connection; pausing.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max_connections,
                "Upload server at its connection limit; closing a new one."
            );
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let shutdown = shutdown.clone();
        // In the role's span, so the handlers' log lines say whose they are.
        connections.spawn(tracing::Instrument::in_current_span(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "Upload connection ended with an error.");
            }
        }));
    }
    drop(listener);
    // The supervisor aborts what is still open after its grace period.
    while connections.join_next().await.is_some() {}
}

fn read_token(path: &Path) -> Result<Secret, UploadError> {
    let error = |why: String| UploadError::Token {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(error("it is empty".into()));
    }
    Ok(Secret::from(token.to_owned()))
}

/// The uploads recorded in `dir` (created if missing); each unfinished `.part` is cut back
/// to its committed offset (bytes written after the last commit were never acknowledged).
fn load(dir: &Path) -> std::io::Result<HashMap<String, Arc<Upload>>> {
    std::fs::create_dir_all(dir)?;
    let mut uploads = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(info) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<UploadInfo>(&bytes).ok())
        else {
            tracing::warn!(file = %path.display(), "Unreadable upload record; ignored.");
            continue;
        };
        let part = dir.join(format!("{}.part", info.id));
        if info.stage == Stage::Uploading {
            match std::fs::OpenOptions::new().write(true).open(&part) {
                Ok(file) => {
                    if file.metadata()?.len() != info.offset {
                        file.set_len(info.offset)?;
                        file.sync_all()?;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        uploads.insert(info.id.clone(), Upload::new(info));
    }
    Ok(uploads)
}

fn router(uploads: Arc<Uploads>) -> Router {
    Router::new()
        .route("/uploads", options(options_uploads).post(create))
        .route(
            "/uploads/{id}",
            axum::routing::head(head)
                .patch(patch)
                .delete(terminate)
                .get(progress)
                .options(options_uploads),
        )
        .fallback(|| async { Refusal::new(404, "no such endpoint: tus uploads are at /uploads") })
        .with_state(uploads)
}

/// `router` answering browsers from `origins` (unchanged when off): the tus methods, the
/// request headers a tus client sends, and the answer headers it must read (a browser
/// hides every other from the page). Preflights are answered by the CORS layer, before
/// `admit`; an OPTIONS without `Access-Control-Request-Method` is tus discovery and goes
/// to the router (tower-http's layer would answer every OPTIONS as a preflight, hiding
/// `Tus-Version` and the rest from tus clients).
fn with_cors(router: Router, origins: &CorsOrigins) -> Router {
    use axum::http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow_origin = match origins {
        CorsOrigins::Off => return router,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.clone()),
    };
    let names = |names: &[&'static str]| -> Vec<HeaderName> {
        names.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    let layer = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(
            [header::AUTHORIZATION, header::CONTENT_TYPE]
                .into_iter()
                .chain(names(&[
                    "tus-resumable",
                    "upload-length",
                    "upload-metadata",
                    "upload-offset",
                    "upload-checksum",
                    "upload-defer-length",
                    "x-http-method-override",
                ]))
                .collect::<Vec<_>>(),
        )
        .expose_headers(
            [header::LOCATION]
                .into_iter()
                .chain(names(&[
                    "tus-resumable",
                    "tus-version",
                    "tus-extension",
                    "tus-max-size",
                    "tus-checksum-algorithm",
                    "upload-offset",
                    "upload-length",
                    "upload-metadata",
                ]))
                .collect::<Vec<_>>(),
        )
        .max_age(Duration::from_secs(600));
    let plain = router.clone();
    let cors = router.layer(layer);
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        use tower::ServiceExt as _;
        let discovery = request.method() == Method::OPTIONS
            && !request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let service = if discovery {
            plain.clone()
        } else {
            cors.clone()
        };
        service.oneshot(request)
    }))
}

/// A tus answer: `status` with `Tus-Resumable` and `headers`.
fn answer(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut response = status.into_response();
    let map = response.headers_mut();
    map.insert("Tus-Resumable", HeaderValue::from_static(tus::VERSION));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(*name, value);
        }
    }
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Uploads {
    /// Every request but OPTIONS: the token when one is configured, and tus 1.0.0.
    fn admit(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(token) = &self.token {
            let presented = header(headers, "authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if !tus::token_matches(presented.as_bytes(), token.expose().as_bytes()) {
                return Err(Refusal::new(
                    401,
                    "uploads need Authorization: Bearer <token> (the upload token)",
                ));
            }
        }
        tus::check_version(header(headers, "tus-resumable"))?;
        Ok(())
    }

    fn find(&self, id: &str) -> Result<Arc<Upload>, Refusal> {
        if let Some(upload) = self.uploads.lock().unwrap().get(id) {
            return Ok(upload.clone());
        }
        if self.gone.lock().unwrap().contains(id) {
            return Err(Refusal::new(410, format!("upload {id} was terminated")));
        }
        Err(Refusal::new(404, format!("no upload {id}")))
    }

    fn part(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    fn record(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn commit(&self, info: &UploadInfo) -> std::io::Result<()> {
        write_synced(
            &self.record(&info.id),
            &serde_json::to_vec(info).expect("an upload record serializes"),
        )
    }

    /// Drops the unfinished uploads idle past the expiry (by their `.part`'s modification
    /// time, which every chunk sets and a restart keeps), unless a request holds one.
    fn expire(&self, now: std::time::SystemTime) {
        let candidates: Vec<Arc<Upload>> = self.uploads.lock().unwrap().values().cloned().collect();
        for upload in candidates {
            let Ok(_busy) = upload.busy.try_lock() else {
                continue;
            };
            let info = upload.info();
            if info.stage != Stage::Uploading {
                continue;
            }
            let last_write = std::fs::metadata(self.part(&info.id)).and_then(|m| m.modified());
            if !last_write.is_ok_and(|at| expired(at, now, self.expiry)) {
                continue;
            }
            for path in [self.part(&info.id), self.record(&info.id)] {
                let _ = std::fs::remove_file(path);
            }
            self.uploads.lock().unwrap().remove(&info.id);
            self.gone.lock().unwrap().insert(info.id.clone());
            tracing::info!(upload = %info.id, offset = info.offset, length = info.length, "Unfinished upload expired; dropped.");
        }
    }

    fn in_progress(&self) -> usize {
        self.uploads
            .lock()
            .unwrap()
            .values()
            .filter(|upload| upload.info().stage == Stage::Uploading)
            .count()
    }
}

async fn options_uploads(State(uploads): State<Arc<Uploads>>) -> Response {
    answer(
        StatusCode::NO_CONTENT,
        &[
            ("Tus-Version", tus::VERSION.into()),
            ("Tus-Extension", tus::EXTENSIONS.into()),
            ("Tus-Max-Size", uploads.max_bytes.to_string()),
            ("Tus-Checksum-Algorithm", tus::CHECKSUM_ALGORITHMS.into()),
        ],
    )
}

/// Creation: `Upload-Length` (required; deferred lengths are not taken), optional
/// `Upload-Metadata` (`filename`).
async fn create(State(uploads): State<Arc<Uploads>>, headers: HeaderMap) -> Reply {
    uploads.admit(&headers)?;
    let length = tus::parse_size("Upload-Length", header(&headers, "upload-length"))?;
    if length > uploads.max_bytes {
        return Err(TusError::TooLarge {
            length,
            max: uploads.max_bytes,
        }
        .into());
    }
    let metadata = header(&headers, "upload-metadata")
        .unwrap_or_default()
        .to_owned();
    let pairs = tus::parse_metadata(&metadata)?;
    if uploads.in_progress() >= uploads.max_uploads {
        return Err(Refusal::new(
            429,
            format!(
                "{} uploads are in progress, the most taken at once (--max-uploads): finish or terminate one, or try later",
                uploads.max_uploads
            ),
        ));
    }
    let id = new_id();
    let info = UploadInfo {
        id: id.clone(),
        length,
        offset: 0,
        metadata,
        file_name: tus::safe_file_name(pairs.get("filename").map(String::as_str)),
        stage: Stage::Uploading,
        error: None,
    };
    let created = {
        let (uploads, info) = (uploads.clone(), info.clone());
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(uploads.part(&info.id))?;
            file.sync_all()?;
            uploads.commit(&info)
        })
        .await
        .expect("creating an upload does not panic")
    };
    created.map_err(|error| Refusal::io("create its files", &id, &error))?;
    uploads
        .uploads
        .lock()
        .unwrap()
        .insert(id.clone(), Upload::new(info));
    uploads.started.increment(1);
    tracing::info!(upload = %id, length, "Upload created.");
    let mut response = answer(
        StatusCode::CREATED,
        &[
            ("Location", format!("/uploads/{id}")),
            ("Upload-Offset", "0".into()),
        ],
    );
    if length == 0 {
        // Nothing will be PATCHed: finish at once.
        let upload = uploads.find(&id)?;
        let _busy = upload.busy.lock().await;
        let mut info = upload.info();
        let finished = finish(&uploads, &mut info).await;
        upload.set(info);
        if let Err(refusal) = finished {
            *response.status_mut() = refusal.status;
        }
    }
    Ok(response)
}

/// 16 random bytes in hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn head(
    State(uploads): State<Arc<Uploads>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Reply {
    uploads.admit(&headers)?;
    let upload = uploads.find(&id)?;
    let info = upload.info();
    let mut fields = vec![
        ("Upload-Offset", info.offset.to_string()),
        ("Upload-Length", info.length.to_string()),
        ("Cache-Control", "no-store".into()),
    ];
    if !info.metadata.is_empty() {
        fields.push(("Upload-Metadata", info.metadata.clone()));
    }
    Ok(answer(StatusCode::OK, &fields))
}

/// Appends a chunk at `Upload-Offset`: streamed to the `.part`, fsynced, checked against
/// `Upload-Checksum` if given, then committed. A client that goes away mid-chunk keeps
/// what arrived (unless the chunk has a checksum, which it could not match).
async fn patch(
    State(uploads): State<Arc<Uploads>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    uploads.admit(&headers)?;
    if header(&headers, "content-type") != Some(tus::PATCH_CONTENT_TYPE) {
        return Err(TusError::ContentType.into());
    }
    let given = tus::parse_size("Upload-Offset", header(&headers, "upload-offset"))?;
    let checksum = header(&headers, "upload-checksum")
        .map(tus::parse_checksum)
        .transpose()?;
    let upload = uploads.find(&id)?;
    let _busy = upload.try_busy()?;
    let mut info = upload.info();
    tus::check_offset(info.offset, given)?;
    if info.stage != Stage::Uploading {
        return Ok(answer(
            StatusCode::NO_CONTENT,
            &[("Upload-Offset", info.offset.to_string())],
        ));
    }
    let offset = info.offset;
    let part = uploads.part(&id);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .await
        .map_err(|e| Refusal::io("open its staged file", &id, &e))?;
    file.set_len(offset)
        .await
        .map_err(|e| Refusal::io("cut its staged file to the offset", &id, &e))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| Refusal::io("seek in its staged file", &id, &e))?;
    let mut hasher = checksum.as_ref().map(|c| tus::Hasher::new(c.algorithm));
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    let mut failure: Option<Refusal> = None;
    let mut disconnected = false;
    loop {
        let next = match tokio::time::timeout(BODY_READ_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(bytes))) => bytes,
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                disconnected = true;
                break;
            }
        };
        if let Err(error) = tus::check_room(info.length, offset, received + next.len() as u64) {
            failure = Some(error.into());
            break;
        }
        if let Err(error) = file.write_all(&next).await {
            failure = Some(Refusal::io("write the chunk", &id, &error));
            break;
        }
        if let Some(hasher) = &mut hasher {
            hasher.update(&next);
        }
        received += next.len() as u64;
    }
    if failure.is_none()
        && let (Some(checksum), Some(hasher)) = (&checksum, hasher)
        && (disconnected || hasher.finish() != checksum.digest)
    {
        failure = Some(
            TusError::ChecksumMismatch {
                algorithm: checksum.algorithm.name(),
                offset,
            }
            .into(),
        );
    }
    if failure.is_none() {
        let synced = async {
            file.flush().await?;
            file.sync_all().await
        };
        if let Err(error) = synced.await {
            failure = Some(Refusal::io("sync the chunk to disk", &id, &error));
        }
    }
    if let Some(refusal) = failure {
        // Nothing of the chunk counts: cut it off again (best effort; a restart cuts the
        // file back to the committed offset anyway).
        let _ = file.set_len(offset).await;
        let _ = file.sync_all().await;
        tracing::warn!(upload = %id, offset, error = %refusal.message, "Upload chunk refused.");
        return Err(refusal);
    }
    drop(file);
    let mut updated = info.clone();
    updated.offset = offset + received;
    let committed = {
        let (uploads, updated) = (uploads.clone(), updated.clone());
        tokio::task::spawn_blocking(move || uploads.commit(&updated))
            .await
            .expect("committing an offset does not panic")
    };
    if let Err(error) = committed {
        let refusal = Refusal::io("record the new offset", &id, &error);
        if let Ok(file) = tokio::fs::OpenOptions::new().write(true).open(&part).await {
            let _ = file.set_len(offset).await;
        }
        return Err(refusal);
    }
    info = updated;
    upload.set(info.clone());
    uploads.received.increment(received);
    if info.offset == info.length {
        let finished = finish(&uploads, &mut info).await;
        upload.set(info.clone());
        finished?;
    }
    Ok(answer(
        StatusCode::NO_CONTENT,
        &[("Upload-Offset", info.offset.to_string())],
    ))
}

/// A complete upload: checks its header and renames it into the inbox (or records why
/// not, and drops its bytes: a 422).
async fn finish(uploads: &Arc<Uploads>, info: &mut UploadInfo) -> Result<(), Refusal> {
    let part = uploads.part(&info.id);
    let target = uploads.inbox.dir().join(info.inbox_name());
    let checked = {
        let (part, read) = (part.clone(), uploads.read);
        tokio::task::spawn_blocking(move || CsvSource::open_with(&part, &read).map(|_| ()))
            .await
            .expect("checking a header does not panic")
    };
    let mut updated = info.clone();
    let refusal = match checked {
        Ok(()) => {
            if let Err(error) = std::fs::rename(&part, &target) {
                return Err(Refusal::io("move it into the inbox", &info.id, &error));
            }
            updated.stage = Stage::Finished;
            None
        }
        Err(error) => {
            let why = error
                .to_string()
                .replace(&part.display().to_string(), &format!("upload {}", info.id));
            let _ = std::fs::remove_file(&part);
            updated.stage = Stage::Failed;
            updated.error = Some(why.clone());
            Some(Refusal::new(422, why))
        }
    };
    if let Err(error) = uploads.commit(&updated) {
        tracing::error!(upload = %info.id, %error, "Cannot record a finished upload; a restart still finds it in the inbox.");
    }
    *info = updated;
    match refusal {
        None => {
            uploads.finished.increment(1);
            tracing::info!(upload = %info.id, file = %target.display(), "Upload complete; moved into the inbox.");
            Ok(())
        }
        Some(refusal) => {
            uploads.failed.increment(1);
            tracing::warn!(upload = %info.id, error = %refusal.message, "Upload complete but not a CSV the streamer takes.");
            Err(refusal)
        }
    }
}

/// Termination: the upload's files are deleted and nothing of it is streamed. An upload
/// already handed to the inbox cannot be taken back (409).
async fn terminate(
    State(uploads): State<Arc<Uploads>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Reply {
    uploads.admit(&headers)?;
    let upload = uploads.find(&id)?;
    let _busy = upload.try_busy()?;
    let info = upload.info();
    if info.stage == Stage::Finished {
        return Err(Refusal::new(
            409,
            format!("upload {id} is complete and handed to the inbox; it cannot be terminated"),
        ));
    }
    for path in [uploads.part(&id), uploads.record(&id)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Refusal::io("delete its files", &id, &error)),
        }
    }
    uploads.uploads.lock().unwrap().remove(&id);
    uploads.gone.lock().unwrap().insert(id.clone());
    tracing::info!(upload = %id, "Upload terminated.");
    Ok(answer(StatusCode::NO_CONTENT, &[]))
}

/// An upload's way through the pipeline (`GET /uploads/{id}`).
#[derive(Debug, Serialize)]
struct Progress {
    id: String,
    file_name: String,
    bytes_received: u64,
    bytes_total: u64,
    /// uploading, queued, streaming, done or failed.
    state: &'static str,
    rows_read: u64,
    rows_rejected: u64,
    hours: u64,
    hours_streamed: u64,
    hours_reported: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejects_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn progress(
    State(uploads): State<Arc<Uploads>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Reply {
    // Progress is for anyone the upload's token admits; no Tus-Resumable needed.
    if uploads.token.is_some() {
        let mut admitted = headers.clone();
        admitted.insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
        uploads.admit(&admitted)?;
    }
    let upload = uploads.find(&id)?;
    let info = upload.info();
    let mut progress = Progress {
        id: info.id.clone(),
        file_name: info.file_name.clone(),
        bytes_received: info.offset,
        bytes_total: info.length,
        state: "uploading",
        rows_read: 0,
        rows_rejected: 0,
        hours: 0,
        hours_streamed: 0,
        hours_reported: 0,
        file: None,
        rejects_file: None,
        error: info.error.clone(),
    };
    match info.stage {
        Stage::Uploading => {}
        Stage::Failed => progress.state = "failed",
        Stage::Finished => {
            let name = info.inbox_name();
            let report = uploads.inbox.status(&name);
            match report {
                None => progress.state = "queued",
                Some(report) => {
                    progress.state = match report.state {
                        FileState::Queued => "queued",
                        FileState::Streaming => "streaming",
                        FileState::Done => "done",
                        FileState::Failed => "failed",
                    };
                    progress.rows_read = report.rows_read;
                    progress.rows_rejected = report.rows_rejected;
                    progress.hours = report.hours;
                    progress.hours_streamed = report.hours_streamed;
                    progress.hours_reported = report.hours_reported;
                    progress.file = Some(report.file);
                    progress.rejects_file = Some(report.rejects_file);
                    progress.error = progress.error.or(report.error);
                }
            }
        }
    }
    let mut response = axum::Json(progress).into_response();
    response
        .headers_mut()
        .insert("Cache-Control", HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;
    use crate::inbox::InboxArgs;

    const HEADER: &str = "zip_code,state,time,temp_c,pressure_mb,humidity,precip_mm\n";

    fn uploads(dir: &Path, max_uploads: usize, token: Option<&str>) -> Arc<Uploads> {
        let inbox_dir = dir.join("inbox");
        let args = InboxArgs {
            inbox: Some(inbox_dir.clone()),
            inbox_quiet: 2.0,
        };
        let read = ReadOptions::default();
        let inbox =
            Arc::new(Inbox::open(&inbox_dir, &args, read, dir.join("rejects.csv")).unwrap());
        let staging = inbox_dir.join(".uploads");
        Arc::new(Uploads {
            uploads: Mutex::new(load(&staging).unwrap()),
            dir: staging,
            inbox,
            read,
            max_bytes: 1000,
            max_uploads,
            expiry: Duration::from_secs(3600),
            token: token.map(|t| Secret::from(t.to_owned())),
            gone: Mutex::new(HashSet::new()),
            started: Counter::noop(),
            finished: Counter::noop(),
            failed: Counter::noop(),
            received: Counter::noop(),
        })
    }

    async fn send(
        uploads: &Arc<Uploads>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router(uploads.clone())
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

    async fn create(uploads: &Arc<Uploads>, length: &str) -> (u16, String) {
        let (status, headers, body) = send(
            uploads,
            "POST",
            "/uploads",
            &[TUS, ("Upload-Length", length)],
            "",
        )
        .await;
        let location = headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (status, location.unwrap_or(body))
    }

    #[tokio::test]
    async fn cors_is_off_by_default_and_lets_the_origins_given_use_tus() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 2, None);
        let preflight = |origin: &str| {
            Request::builder()
                .method("OPTIONS")
                .uri("/uploads")
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "tus-resumable,upload-length,upload-metadata,authorization",
                )
                .body(Body::empty())
                .unwrap()
        };
        let off = router(uploads.clone())
            .oneshot(preflight("http://dash.example"))
            .await
            .unwrap();
        assert!(off.headers().get("access-control-allow-origin").is_none());

        let origins = CorsOrigins::from_list(&["http://dash.example".into()]).unwrap();
        let app = || with_cors(router(uploads.clone()), &origins);
        let allowed = app()
            .oneshot(preflight("http://dash.example"))
            .await
            .unwrap();
        let header = |response: &Response, name: &str| {
            response.headers()[name]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
        };
        assert_eq!(
            header(&allowed, "access-control-allow-origin"),
            "http://dash.example"
        );
        for method in ["post", "patch", "head", "delete"] {
            assert!(header(&allowed, "access-control-allow-methods").contains(method));
        }
        for name in [
            "tus-resumable",
            "upload-length",
            "upload-metadata",
            "authorization",
        ] {
            assert!(header(&allowed, "access-control-allow-headers").contains(name));
        }
        let other = app()
            .oneshot(preflight("http://evil.example"))
            .await
            .unwrap();
        assert!(other.headers().get("access-control-allow-origin").is_none());

        // A creation from the page: the client may read Location and Upload-Offset.
        let created = app()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri("/uploads")
                    .header("Origin", "http://dash.example")
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Length", "10")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let exposed = header(&created, "access-control-expose-headers");
        for name in [
            "location",
            "upload-offset",
            "upload-length",
            "tus-resumable",
        ] {
            assert!(exposed.contains(name), "{exposed}");
        }
    }

    #[tokio::test]
    async fn creation_is_refused_past_the_limits_and_without_the_version_or_length() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 1, None);
        let (status, body) = create(&uploads, "1001").await;
        assert_eq!(status, 413);
        assert!(body.contains("--max-upload-bytes"), "{body}");
        let (status, _, _) =
            send(&uploads, "POST", "/uploads", &[("Upload-Length", "5")], "").await;
        assert_eq!(status, 412, "no Tus-Resumable");
        let (status, _, body) = send(&uploads, "POST", "/uploads", &[TUS], "").await;
        assert_eq!(
            (status, body.contains("Upload-Length")),
            (400, true),
            "{body}"
        );
        let (status, _) = create(&uploads, "100").await;
        assert_eq!(status, 201);
        let (status, body) = create(&uploads, "100").await;
        assert_eq!(status, 429, "one upload at a time");
        assert!(
            body.contains("--max-uploads") && body.starts_with("{\"error\""),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_token_is_required_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 4, Some("s3cret"));
        let (status, _) = create(&uploads, "10").await;
        assert_eq!(status, 401);
        let bad = ("Authorization", "Bearer s3cre");
        let (status, _, body) = send(
            &uploads,
            "POST",
            "/uploads",
            &[TUS, bad, ("Upload-Length", "10")],
            "",
        )
        .await;
        assert_eq!(status, 401);
        assert!(!body.contains("s3cret"), "the token is never shown");
        let good = ("Authorization", "Bearer s3cret");
        let (status, _, _) = send(
            &uploads,
            "POST",
            "/uploads",
            &[TUS, good, ("Upload-Length", "10")],
            "",
        )
        .await;
        assert_eq!(status, 201);
        let (status, headers, _) = send(&uploads, "OPTIONS", "/uploads", &[], "").await;
        assert_eq!(status, 204, "OPTIONS needs no token");
        assert_eq!(headers["tus-extension"], tus::EXTENSIONS);
    }

    #[tokio::test]
    async fn chunks_append_at_the_offset_and_a_finished_upload_goes_to_the_inbox_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 4, None);
        let content = format!("{HEADER}1,CA,2023-09-19 05:00,1,1000,50,0\n");
        let (_, location) = create(&uploads, &content.len().to_string()).await;
        let octets = ("Content-Type", tus::PATCH_CONTENT_TYPE);
        let (status, _, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, ("Upload-Offset", "0")],
            "zip",
        )
        .await;
        assert_eq!(status, 415, "not offset+octet-stream");
        let (first, rest) = content.split_at(20);
        let (status, headers, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "0")],
            first,
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(headers["upload-offset"], "20");
        let (status, _, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "0")],
            rest,
        )
        .await;
        assert_eq!(status, 409);
        let too_much = format!("{rest}extra");
        let (status, _, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "20")],
            &too_much,
        )
        .await;
        assert_eq!(status, 413, "past Upload-Length");
        let (_, headers, _) = send(&uploads, "HEAD", &location, &[TUS], "").await;
        assert_eq!(
            headers["upload-offset"], "20",
            "a refused chunk leaves the offset"
        );
        let (status, _, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "20")],
            rest,
        )
        .await;
        assert_eq!(status, 204);
        let id = location.rsplit('/').next().unwrap();
        let moved = dir.path().join("inbox").join(format!("{id}-upload.csv"));
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), content);
        let (_, _, body) = send(&uploads, "GET", &location, &[], "").await;
        assert!(body.contains("\"state\":\"queued\""), "{body}");
        let (status, _, _) = send(&uploads, "DELETE", &location, &[TUS], "").await;
        assert_eq!(status, 409, "handed to the inbox already");

        // Not a weather CSV: refused once complete, nothing goes to the inbox.
        let (_, location) = create(&uploads, "9").await;
        let (status, _, body) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "0")],
            "a,b,c\n1,2",
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body.contains("bad header") && !body.contains(".part"),
            "{body}"
        );
        let (_, _, body) = send(&uploads, "GET", &location, &[], "").await;
        assert!(body.contains("\"state\":\"failed\""), "{body}");

        // Terminated: gone.
        let (_, location) = create(&uploads, "9").await;
        let (status, _, _) = send(&uploads, "DELETE", &location, &[TUS], "").await;
        assert_eq!(status, 204);
        let (status, _, _) = send(&uploads, "HEAD", &location, &[TUS], "").await;
        assert_eq!(status, 410);
        let (status, _, _) = send(&uploads, "HEAD", "/uploads/nosuch", &[TUS], "").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn a_restart_cuts_an_unacknowledged_tail_and_keeps_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let uploads_before = uploads(dir.path(), 4, None);
        let (_, location) = create(&uploads_before, "100").await;
        let octets = ("Content-Type", tus::PATCH_CONTENT_TYPE);
        send(
            &uploads_before,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "0")],
            "zip_code",
        )
        .await;
        let id = location.rsplit('/').next().unwrap().to_owned();
        let part = uploads_before.part(&id);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b",never acknowledged"))
            .unwrap();
        let after = uploads(dir.path(), 4, None);
        let (_, headers, _) = send(&after, "HEAD", &location, &[TUS], "").await;
        assert_eq!(headers["upload-offset"], "8");
        assert_eq!(std::fs::read(&part).unwrap(), b"zip_code");
    }

    #[tokio::test]
    async fn head_answers_while_a_patch_waits_for_its_body_and_a_second_patch_is_423() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 4, None);
        let (_, location) = create(&uploads, "100").await;
        let slow = futures_util::stream::iter([Ok::<_, std::io::Error>(
            axum::body::Bytes::from_static(b"zip_code"),
        )])
        .chain(futures_util::stream::pending());
        let request = Request::builder()
            .method("PATCH")
            .uri(&location)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", tus::PATCH_CONTENT_TYPE)
            .header("Upload-Offset", "0")
            .body(Body::from_stream(slow))
            .unwrap();
        let patching = tokio::spawn(router(uploads.clone()).oneshot(request));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let head = tokio::time::timeout(
            Duration::from_secs(2),
            send(&uploads, "HEAD", &location, &[TUS], ""),
        )
        .await
        .expect("HEAD does not wait for the PATCH");
        assert_eq!(head.1["upload-offset"], "0", "nothing committed yet");
        let octets = ("Content-Type", tus::PATCH_CONTENT_TYPE);
        let (status, _, _) = send(
            &uploads,
            "PATCH",
            &location,
            &[TUS, octets, ("Upload-Offset", "0")],
            "x",
        )
        .await;
        assert_eq!(status, 423);
        patching.abort();
    }

    #[tokio::test]
    async fn an_idle_unfinished_upload_expires_and_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = uploads(dir.path(), 1, None);
        let (_, location) = create(&uploads, "100").await;
        let now = std::time::SystemTime::now();
        uploads.expire(now);
        let (status, _, _) = send(&uploads, "HEAD", &location, &[TUS], "").await;
        assert_eq!(status, 200, "not idle long enough");
        uploads.expire(now + Duration::from_secs(3601));
        let (status, _, _) = send(&uploads, "HEAD", &location, &[TUS], "").await;
        assert_eq!(status, 410);
        let (status, _) = create(&uploads, "100").await;
        assert_eq!(status, 201, "its slot is free");
        assert!(
            !expired(now, now - Duration::from_secs(10), Duration::ZERO),
            "clock went back"
        );
    }

    #[test]
    fn a_full_disk_is_a_507_and_anonymous_uploads_only_on_loopback() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let refusal = Refusal::io("write the chunk", "abc", &full);
        assert_eq!(refusal.status.as_u16(), 507);
        assert!(refusal.message.contains("no space"), "{}", refusal.message);
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("0.0.0.0") && !is_loopback("example.org"));
    }
}
