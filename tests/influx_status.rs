//! How the roles take InfluxDB's answers, end to end, against the real `influxd`: a small
//! HTTP proxy in front of it answers chosen `/write` requests with 401, 429 (with
//! `Retry-After: 1`), 503 and 413 (raw-row bodies over a size, and the processor's report
//! bodies over another) and passes everything else through; nothing is lost, nothing is
//! dead-lettered, every hour is confirmed once the proxy passes again, and every hour's
//! reports, written in pieces, are stored before the record that declares them complete.
//! Then a point InfluxDB itself refuses (a field-type conflict) ends in the dead-letter
//! file with InfluxDB's reason while the rest is stored and every hour is still declared
//! stored, with the reduced count.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use weathervane_e2e::{DB, Stack, assert_stored_exactly, hour_of, read_csv, rfc3339};
use weathervane_harness::events::Event;
use weathervane_harness::{LocalStack, Role};

const TIMEOUT: Duration = Duration::from_secs(180);

/// What the proxy does to `/write` requests, in order: the first `unauthorized` get a 401,
/// the next `too_many` a 429 with `Retry-After: 1`, the next `unavailable` a 503; after
/// that a body of raw rows over `max_row_body` bytes, or any other body (the processor's
/// reports) over `max_report_body` bytes, gets a 413 and the rest pass.
#[derive(Clone, Copy)]
struct Faults {
    unauthorized: usize,
    too_many: usize,
    unavailable: usize,
    max_row_body: usize,
    max_report_body: usize,
}

/// What the proxy saw and answered.
#[derive(Debug, Default)]
struct Seen {
    /// Arrival of every `/write`, with the status the proxy answered itself (0: passed)
    /// and whether it was a report write (not raw rows).
    writes: Vec<(Instant, u16, bool)>,
    /// The bodies of the report writes passed to InfluxDB, in order.
    reports: Vec<String>,
}

impl Seen {
    fn count(&self, status: u16) -> usize {
        self.writes.iter().filter(|(_, s, _)| *s == status).count()
    }

    fn count_reports(&self, status: u16) -> usize {
        self.writes
            .iter()
            .filter(|(_, s, report)| *s == status && *report)
            .count()
    }
}

struct Proxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Proxy {
    /// Listens on a free loopback port; each connection is served by a thread of its own,
    /// one request per connection (`Connection: close`). The threads end with the test.
    fn start(upstream: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = shared.clone();
                thread::spawn(move || {
                    let _ = serve(client, upstream, faults, &seen);
                });
            }
        });
        Proxy { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Reads one request: the head (request line and headers) and the body.
fn read_request(client: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0; 64 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.trim().parse::<usize>().unwrap());
    let mut body = data.split_off(head_end);
    while body.len() < length {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok((head, body))
}

fn answer(status: u16, extra_header: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} Proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_header}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    faults: Faults,
    seen: &Mutex<Seen>,
) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, body) = read_request(&mut client)?;
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if path.starts_with("/write") {
        let mut seen = seen.lock().unwrap();
        let n = seen.writes.len();
        let report = !body.starts_with(b"weather_data");
        let limit = if report {
            faults.max_report_body
        } else {
            faults.max_row_body
        };
        let response = if n < faults.unauthorized {
            Some((401, answer(401, "", r#"{"error":"authorization failed"}"#)))
        } else if n < faults.unauthorized + faults.too_many {
            Some((
                429,
                answer(429, "Retry-After: 1\r\n", r#"{"error":"slow down"}"#),
            ))
        } else if n < faults.unauthorized + faults.too_many + faults.unavailable {
            Some((503, answer(503, "", r#"{"error":"unavailable"}"#)))
        } else if body.len() > limit {
            Some((
                413,
                answer(413, "", r#"{"error":"Request Entity Too Large"}"#),
            ))
        } else {
            None
        };
        seen.writes.push((
            Instant::now(),
            response.as_ref().map_or(0, |(s, _)| *s),
            report,
        ));
        if report && response.is_none() {
            seen.reports
                .push(String::from_utf8_lossy(&body).into_owned());
        }
        if let Some((_, response)) = response {
            drop(seen);
            client.write_all(response.as_bytes())?;
            return client.shutdown(Shutdown::Both);
        }
    }
    // Pass it on, asking InfluxDB to close after answering, and copy the answer back.
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut forwarded: String = head
        .trim_end()
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    server.write_all(forwarded.as_bytes())?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    client.write_all(&response)?;
    client.shutdown(Shutdown::Both)
}

/// Checks the report writes InfluxDB got, in order: for every hour (line timestamp), each
/// report series (measurement and tags) of that hour in any write came before the first
/// `hour_generations` line of the hour, and in a write that record is the last line.
fn assert_reports_stored_before_their_record(bodies: &[String]) {
    let mut before_record: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut all: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut recorded: BTreeSet<&str> = BTreeSet::new();
    for body in bodies {
        let lines: Vec<&str> = body.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let series = line.split(' ').next().unwrap();
            let time = line.rsplit(' ').next().unwrap();
            if series == "hour_generations" {
                assert_eq!(i + 1, lines.len(), "the record is the last line: {body}");
                recorded.insert(time);
            } else {
                all.entry(time).or_default().insert(series);
                if !recorded.contains(time) {
                    before_record.entry(time).or_default().insert(series);
                }
            }
        }
    }
    assert!(!recorded.is_empty(), "no record was written");
    for time in &recorded {
        assert_eq!(
            before_record.get(time),
            all.get(time),
            "reports of {time} written after its record"
        );
    }
}

/// The dead-letter file's lines after the header.
fn dead_letters(path: &Path) -> Vec<BTreeMap<String, String>> {
    if !path.exists() {
        return Vec::new();
    }
    read_csv(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_429_503_and_413_lose_nothing_and_every_hour_is_confirmed() {
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .start()
        .unwrap();
    let faults = Faults {
        unauthorized: 4,
        too_many: 2,
        unavailable: 3,
        max_row_body: 3000,
        // Far under an hour's report write (an average and 4 zip-code extremes per state,
        // 4 state extremes and the record, over 100 bytes each), over any one line.
        max_report_body: 1500,
    };
    let proxy = Proxy::start(local.influx.port(), faults);
    let dead = local.dir().join("dead-letters.csv");
    // One writer, so the pauses between its writes can be checked against Retry-After.
    let mut ingester = local
        .role(Role::Ingester)
        .unwrap()
        .env("INFLUXDB_URL", proxy.url())
        .env("WEATHERVANE_WRITERS", "1")
        .env("WEATHERVANE_DEAD_LETTERS", &dead);
    let mut processor = local
        .role(Role::Processor)
        .unwrap()
        .env("INFLUXDB_URL", proxy.url());
    ingester.start().unwrap();
    processor.start().unwrap();
    let stack = Stack::with(local);
    let input = stack.generate(30, 1, 23);
    let mut streamer = stack.streamer(
        &input,
        &["--batch-size", "10", "--hour-interval", "0", "--once"],
    );
    streamer.start().unwrap();
    let status = streamer.wait_timeout(TIMEOUT).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "streamer did not finish: {status:?}\n{}\ningester:\n{}",
        stack.log(&streamer),
        stack.log(&ingester)
    );
    let rows = read_csv(&input);
    assert_stored_exactly(&stack, &rows).await;
    assert!(dead_letters(&dead).is_empty(), "nothing is dead-lettered");

    // Every hour has its record, with its row count as counted here from the input.
    let records: BTreeMap<String, u64> = stack
        .query("SELECT * FROM hour_generations")
        .await
        .into_iter()
        .map(|r| {
            (
                hour_of(&r["time"].as_str().unwrap().replace('T', " ")),
                r["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        *want.entry(hour_of(&row["time"])).or_default() += 1;
    }
    assert_eq!(records, want, "the hour_generations records");

    let seen = proxy.seen.lock().unwrap();
    assert_eq!(
        (seen.count(401), seen.count(429), seen.count(503)),
        (4, 2, 3),
        "{seen:?}"
    );
    assert!(
        seen.count(413) > seen.count_reports(413),
        "some row writes were too large: {seen:?}"
    );
    let hours: BTreeSet<String> = rows.iter().map(|r| hour_of(&r["time"])).collect();
    assert!(
        seen.count_reports(413) >= hours.len(),
        "report writes were too large, at least once per hour: {seen:?}"
    );
    assert_reports_stored_before_their_record(&seen.reports);
    // Only the ingester writes until it has stored an hour, so the write after each 429
    // is its retry: never sooner than the Retry-After second.
    for (i, (at, status, _)) in seen.writes.iter().enumerate() {
        if *status == 429 {
            let (next, _, _) = seen.writes[i + 1];
            assert!(
                next.duration_since(*at) >= Duration::from_millis(950),
                "retried {:?} after a 429 with Retry-After: 1",
                next.duration_since(*at)
            );
        }
    }
    let log = stack.log(&ingester);
    assert_eq!(
        log.matches("InfluxDB refuses our credentials").count(),
        1,
        "refused credentials are logged once per outage:\n{log}"
    );
    drop(seen);
    ingester.stop();
    processor.stop();
}

/// A copy of the CSV at `path` whose rows before `day` have an empty `uv` (no such field).
fn without_uv_before(path: &Path, day: &str) -> std::path::PathBuf {
    let out = path.with_extension("some-uv.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (uv, time) = (column("uv"), column("time"));
    let mut writer = csv::Writer::from_path(&out).unwrap();
    writer.write_record(&headers).unwrap();
    for record in reader.records() {
        let record = record.unwrap();
        let keep_uv = record[time] >= *day;
        let cells = record
            .iter()
            .enumerate()
            .map(|(i, cell)| if i == uv && !keep_uv { "" } else { cell });
        writer.write_record(cells).unwrap();
    }
    writer.flush().unwrap();
    out
}

/// The hours whose `HourStored` event the ingester has logged, with their row counts.
fn hours_stored(
    stack: &Stack,
    ingester: &weathervane_harness::ManagedProcess,
) -> BTreeMap<String, u64> {
    stack
        .events(ingester)
        .into_iter()
        .filter_map(|event| match event {
            Event::HourStored { hour, rows } => Some((hour.to_string(), rows)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_influxdb_refuses_are_dead_lettered_with_its_reason_and_the_hours_complete_without_them()
 {
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .start()
        .unwrap();
    // A string `uv` (at an hour not in the input): every row with a numeric `uv` is then
    // refused with a field-type conflict (InfluxDB 1.6's in-memory index keeps field
    // types per database). Only the rows of 2023-09-21 keep their `uv`.
    let http = weathervane_e2e::http_client();
    let influx = local.influx.url();
    let created = http
        .post(format!("{influx}/query"))
        .query(&[("q", format!("CREATE DATABASE \"{DB}\""))])
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let conflict = http
        .post(format!("{influx}/write"))
        .query(&[("db", DB), ("precision", "s")])
        .body("weather_data,state=ZZ,zip_code=00000 uv=\"x\" 1695384000") // 2023-09-22 12:00
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status().as_u16(), 204);

    let dead = local.dir().join("dead-letters.csv");
    let mut ingester = local
        .role(Role::Ingester)
        .unwrap()
        .env("WEATHERVANE_DEAD_LETTERS", &dead);
    let mut processor = local.role(Role::Processor).unwrap();
    ingester.start().unwrap();
    processor.start().unwrap();
    let stack = Stack::with(local);
    let input = without_uv_before(&stack.generate(5, 3, 31), "2023-09-21");
    let rows = read_csv(&input);
    let hours: BTreeSet<String> = rows.iter().map(|r| hour_of(&r["time"])).collect();
    // Without --once: the streamer cannot confirm an hour whose count went down (that
    // needs the streamer to accept a refused count), so it is stopped once every hour is
    // declared stored.
    let mut streamer = stack.streamer(
        &input,
        &[
            "--batch-size",
            "3",
            "--hour-interval",
            "0",
            "--max-pending-hours",
            "100",
        ],
    );
    streamer.start().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while hours_stored(&stack, &ingester).len() < hours.len() {
        assert!(
            Instant::now() < deadline,
            "not every hour was stored: {:?}\n{}",
            hours_stored(&stack, &ingester),
            stack.log(&ingester)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| r["time"].starts_with("2023-09-21"))
        .map(|r| (r["zip_code"].clone(), rfc3339(&r["time"])))
        .collect();
    let kept: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| !r["time"].starts_with("2023-09-21"))
        .map(|r| (r["zip_code"].clone(), rfc3339(&r["time"])))
        .collect();
    assert_eq!(refused.len(), 5 * 24);

    let letters = dead_letters(&dead);
    assert_eq!(letters.len(), refused.len(), "one line per refused point");
    let lettered: BTreeSet<(String, String)> = letters
        .iter()
        .map(|l| (l["zip_code"].clone(), l["time"].clone()))
        .collect();
    assert_eq!(lettered, refused);
    for letter in &letters {
        assert!(
            letter["reason"].contains("field type conflict")
                && !letter["reason"].contains("dropped="),
            "InfluxDB's reason for the point (not the request's count): {letter:?}"
        );
        assert_eq!(letter["hour"], hour_of(&letter["time"].replace('T', " ")));
    }

    let stored: BTreeSet<(String, String)> = stack
        .query("SELECT zip_code, temp_c FROM weather_data")
        .await
        .into_iter()
        .map(|r| {
            (
                r["zip_code"].as_str().unwrap().to_owned(),
                r["time"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(zip, _)| zip != "00000")
        .collect();
    assert_eq!(stored, kept, "every other row is stored");

    let counts = hours_stored(&stack, &ingester);
    for hour in &hours {
        let want = kept
            .iter()
            .filter(|(_, time)| hour_of(&time.replace('T', " ")) == *hour)
            .count() as u64;
        assert_eq!(counts[hour], want, "rows declared stored for {hour}");
    }
    let refused_hours: BTreeSet<String> = stack
        .events(&ingester)
        .into_iter()
        .filter_map(|event| match event {
            Event::PointsRefused { hour, reason, .. } => {
                assert!(reason.contains("field type conflict"), "{reason}");
                Some(hour.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(refused_hours.len(), 24, "{refused_hours:?}");
    // The processor reports every hour over the rows stored (none, for 2023-09-21).
    let reported = |stack: &Stack| -> BTreeMap<String, u64> {
        stack
            .events(&processor)
            .into_iter()
            .filter_map(|event| match event {
                Event::HourReported { hour, rows, .. } => Some((hour.to_string(), rows)),
                _ => None,
            })
            .collect()
    };
    while reported(&stack).len() < hours.len() {
        assert!(
            Instant::now() < deadline,
            "not every hour was reported: {:?}\n{}",
            reported(&stack),
            stack.log(&processor)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reported(&stack), counts);
    streamer.stop();
    ingester.stop();
    processor.stop();
}
