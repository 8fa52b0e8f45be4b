//! The API resists exhaustion, tested against the real server on 127.0.0.1:0 over raw
//! TCP (so a test can stall half-way through a request as an attacker would) and, where
//! a slow or missing InfluxDB matters, a private `influxd` from the harness, paused with
//! SIGSTOP. Every wait is bounded by a timeout; the servers die with their owners.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weathervane_api::{AppState, Limits, ReportCache, SHUTDOWN_GRACE, app, serve};
use weathervane_core::config::InfluxArgs;
use weathervane_core::influx::InfluxClient;
use weathervane_harness::InfluxServer;

/// The API's own query timeout (`QUERY_TIMEOUT`), so a paused InfluxDB costs a request
/// this long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The first half of a request line: what a slowloris client sends before it stalls.
const HALF_A_REQUEST: &[u8] = b"GET /avg?state=CA&ho";

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(10),
        max_connections: 1024,
        request_timeout: Duration::from_secs(5),
        max_requests: 64,
        max_query_bytes: 1024,
    }
}

/// The API serving on a free loopback port; stops (within the grace period) on drop.
struct Api {
    addr: String,
    shutdown: CancellationToken,
    served: Option<JoinHandle<()>>,
}

impl Api {
    /// `influx_url` may be a closed port when the test never reaches InfluxDB.
    async fn start(limits: Limits, influx_url: String) -> Self {
        let args = InfluxArgs::plain(influx_url, "weather");
        let state = AppState {
            influx: InfluxClient::new(&args, QUERY_TIMEOUT).unwrap(),
            cache: Arc::new(ReportCache::new(Duration::from_secs(10))),
            store: Arc::new(std::sync::Mutex::new(weathervane_api::ReportStore::new(
                &weathervane_api::StoreArgs::default(),
            ))),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn({
            let (app, shutdown) = (app(state, &limits), shutdown.clone());
            async move { serve(listener, app, &limits, shutdown, SHUTDOWN_GRACE).await }
        });
        Self {
            addr,
            shutdown,
            served: Some(served),
        }
    }

    /// Cancels and waits for `serve` to return, at most `bound`.
    async fn stop_within(&mut self, bound: Duration) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        let served = self.served.take().unwrap();
        tokio::time::timeout(bound, served)
            .await
            .unwrap_or_else(|_| panic!("serve did not return within {bound:?}"))
            .unwrap();
        started.elapsed()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// A complete response: status, lower-cased head, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json_error(&self) -> String {
        assert!(
            self.head.contains("content-type: application/json"),
            "{self:?}"
        );
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        json["error"].as_str().unwrap().to_owned()
    }
}

/// `GET path` on a new connection, answered within `bound`.
async fn get(addr: &str, path: &str, bound: Duration) -> Answer {
    tokio::time::timeout(bound, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.unwrap();
        parse(&bytes)
    })
    .await
    .unwrap_or_else(|_| panic!("GET {path} not answered within {bound:?}"))
}

fn parse(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_lowercase(),
        body: body.to_owned(),
    }
}

/// Opens a connection and sends half a request line, then nothing more.
async fn stall(addr: &str) -> TcpStream {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect within 5 s")
        .unwrap();
    stream.write_all(HALF_A_REQUEST).await.unwrap();
    stream
}

/// How long after `since` the server closed `stream` (read returned 0 or an error), or
/// `None` if it was still open at `bound`. Whatever the server wrote first is skipped.
async fn closed_after(mut stream: TcpStream, since: Instant, bound: Duration) -> Option<Duration> {
    let deadline = tokio::time::Instant::from_std(since + bound);
    let mut buf = [0; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A connection whose one request (`GET /`, HTTP/1.1) was answered 200 and which is now
/// idle, kept alive.
async fn kept_alive_after_one_answer(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_within_the_header_timeout_while_requests_are_answered() {
    const STALLED: usize = 200;
    let header_timeout = Duration::from_secs(1);
    let margin = Duration::from_millis(1500);
    let api = Api::start(
        Limits {
            header_timeout,
            ..limits()
        },
        closed_port(),
    )
    .await;

    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(stall(&api.addr).await);
    }
    let all_open = opened.elapsed();
    assert!(
        all_open < header_timeout / 2,
        "opening {STALLED} connections took {all_open:?}: too slow to test a {header_timeout:?} timeout"
    );
    let closes: Vec<_> = stalled
        .into_iter()
        .map(|stream| tokio::spawn(closed_after(stream, opened, header_timeout + margin)))
        .collect();

    // Normal requests on other connections while the stalled ones are held open.
    let mut answered_at = Vec::new();
    while opened.elapsed() < header_timeout + margin {
        let answer = get(&api.addr, "/", Duration::from_millis(500)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body.contains("online"), "{answer:?}");
        answered_at.push(opened.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut closed = Vec::with_capacity(STALLED);
    for close in closes {
        closed.push(close.await.unwrap());
    }
    let still_open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {STALLED} stalled connections still open {:?} after they stalled",
        header_timeout + margin
    );
    let closed: Vec<Duration> = closed.into_iter().flatten().collect();
    let (first, last) = (*closed.iter().min().unwrap(), *closed.iter().max().unwrap());
    // Closed by the header timeout, not by something quicker (such as a connection limit).
    assert!(
        first >= header_timeout - Duration::from_millis(100),
        "a stalled connection closed after {first:?}, before the {header_timeout:?} timeout"
    );
    let during = answered_at.iter().filter(|at| **at < first).count();
    assert!(
        during >= 3,
        "only {during} normal requests answered while the stalled connections were open ({answered_at:?})"
    );
    eprintln!(
        "{STALLED} stalled connections opened in {all_open:?}, closed between {first:?} and \
         {last:?} after the first opened (header timeout {header_timeout:?}); {during} normal \
         requests answered meanwhile, {} in all",
        answered_at.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_a_connection_is_told_503_json_and_closed() {
    let header_timeout = Duration::from_secs(2);
    let api = Api::start(
        Limits {
            header_timeout,
            max_connections: 5,
            ..limits()
        },
        closed_port(),
    )
    .await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(stall(&api.addr).await);
    }
    // The accept loop takes connections in the order they came, so these are the sixth
    // and seventh. One that has not sent its request yet reads the 503 ...
    let mut quiet = TcpStream::connect(&api.addr).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), quiet.read_to_end(&mut bytes))
        .await
        .expect("refused within 1 s")
        .unwrap();
    let refused = parse(&bytes);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.head.contains("retry-after: 1"), "{refused:?}");
    let error = refused.json_error();
    assert!(error.contains("5 connections"), "{error}");
    // ... one that has (unread by the server, so its close may come as a reset that
    // overtakes the 503) is closed at once all the same.
    let eager = stall(&api.addr).await;
    let refused_at = Instant::now();
    let closed = closed_after(eager, refused_at, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a connection past the limit was kept open"
    );
    assert!(
        opened.elapsed() < header_timeout,
        "refused only after {:?}",
        opened.elapsed()
    );

    // The slots come back when the stalled connections are closed.
    for stream in stalled {
        assert!(
            closed_after(stream, opened, header_timeout + Duration::from_secs(2))
                .await
                .is_some(),
            "a stalled connection outlived the header timeout"
        );
    }
    assert_eq!(
        get(&api.addr, "/", Duration::from_secs(1)).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_request_limit_a_request_is_answered_503_json_while_influxdb_hangs() {
    let mut influx = InfluxServer::start().expect("a private influxd");
    let api = Api::start(
        Limits {
            max_requests: 2,
            ..limits()
        },
        influx.url(),
    )
    .await;
    influx.pause().unwrap();
    let started = Instant::now();
    // Two requests that each wait on the paused InfluxDB for the query timeout.
    let hung: Vec<_> = ["CA", "NY"]
        .map(|state| {
            let addr = api.addr.clone();
            tokio::spawn(async move {
                let path = format!("/avg?state={state}&hour=5&date=2023-09-19");
                get(&addr, &path, QUERY_TIMEOUT + Duration::from_secs(3)).await
            })
        })
        .into();
    // Until both hold their slots, `/` may still get through.
    let busy = loop {
        let answer = get(&api.addr, "/", Duration::from_millis(500)).await;
        if answer.status == 503 {
            break answer;
        }
        assert!(
            started.elapsed() < QUERY_TIMEOUT / 2,
            "no 503 while two requests hang: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = started.elapsed();
    assert!(busy.head.contains("retry-after: 1"), "{busy:?}");
    assert_eq!(
        busy.json_error(),
        "the API is already answering 2 requests, its limit; try again shortly"
    );
    for request in hung {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.json_error().contains("InfluxDB"), "{answer:?}");
    }
    assert!(started.elapsed() >= QUERY_TIMEOUT);
    assert_eq!(
        get(&api.addr, "/", Duration::from_secs(1)).await.status,
        200
    );
    eprintln!("the limit answered 503 {waited:?} after two requests started hanging");
    influx.resume().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_report_is_answered_from_the_cache_while_influxdb_hangs() {
    let mut influx = InfluxServer::start().expect("a private influxd");
    let api = Api::start(limits(), influx.url()).await;
    let missing = "/state_extremes?hour=5&date=2023-09-19";
    // No database yet: the report is missing, and InfluxDB said so.
    let first = get(&api.addr, missing, Duration::from_secs(5)).await;
    assert_eq!(first.status, 404, "{first:?}");
    let cached_at = Instant::now();

    influx.pause().unwrap();
    let started = Instant::now();
    let again = get(&api.addr, missing, QUERY_TIMEOUT).await;
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.json_error(), first.json_error());
    let from_cache = started.elapsed();
    assert!(
        from_cache < QUERY_TIMEOUT / 4,
        "took {from_cache:?}: asked InfluxDB"
    );
    // Another report does reach the paused InfluxDB, and fails.
    let other = get(
        &api.addr,
        "/state_extremes?hour=6&date=2023-09-19",
        QUERY_TIMEOUT + Duration::from_secs(3),
    )
    .await;
    assert_eq!(other.status, 503, "{other:?}");
    // Past the 2 s a "missing" is believed, InfluxDB is asked again.
    assert!(cached_at.elapsed() > Duration::from_secs(2));
    let expired = get(&api.addr, missing, QUERY_TIMEOUT + Duration::from_secs(3)).await;
    assert_eq!(expired.status, 503, "{expired:?}");
    influx.resume().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_within_the_grace_period() {
    let mut api = Api::start(limits(), closed_port()).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(stall(&api.addr).await);
    }
    // An idle kept-alive connection, after one answered request.
    open.push(kept_alive_after_one_answer(&api.addr).await);

    let stopping = Instant::now();
    let bound = SHUTDOWN_GRACE + Duration::from_secs(1);
    let took = api.stop_within(bound).await;
    for stream in open {
        assert!(
            closed_after(stream, stopping, bound).await.is_some(),
            "a connection outlived shutdown"
        );
    }
    assert!(
        TcpStream::connect(&api.addr).await.is_err(),
        "still accepting after shutdown"
    );
    eprintln!("shutdown with 10 stalled and 1 idle connection took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_idles_no_longer_than_the_header_timeout_and_heads_are_bounded() {
    let header_timeout = Duration::from_secs(1);
    let api = Api::start(
        Limits {
            header_timeout,
            ..limits()
        },
        closed_port(),
    )
    .await;
    let idle = kept_alive_after_one_answer(&api.addr).await;
    let answered = Instant::now();
    let closed = closed_after(idle, answered, header_timeout + Duration::from_secs(1))
        .await
        .expect("an idle kept-alive connection stayed open");
    assert!(
        closed >= header_timeout - Duration::from_millis(100),
        "{closed:?}"
    );

    // A head of 20 KiB (over the 16 KiB read) is refused before it reaches the app.
    let mut big = TcpStream::connect(&api.addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: api\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(20 * 1024)
    );
    // The server may close before reading it all; what matters is what it answers.
    let _ = big.write_all(head.as_bytes()).await;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), big.read_to_end(&mut bytes)).await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
}
