//! Export jobs end to end (issue 15): real redis-server, influxd and pipeline, data from
//! `weathervane gen` streamed by the real roles; the downloaded CSVs are checked against
//! the input file (raw rows cell by cell, reports against `Expected::from_rows`). Also:
//! the api's peak memory does not grow with the export's size, a resumed download
//! (`Range: bytes=N-`) concatenates to the whole file, a cancel stops a running job within
//! a second (by the job's own timestamps), and a job whose replica is killed with SIGKILL
//! is taken over and finished by another replica sharing Redis and the export directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weathervane_e2e::{CsvRow, Expected, Stack, close, http_client, parse_csv, read_csv};
use weathervane_harness::{LocalStack, ManagedProcess, Role, free_port};

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn post(addr: &str, body: Value) -> (u16, Value) {
    let response = http_client()
        .post(format!("http://{addr}/exports"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(status != 202 || response.headers().contains_key("location"));
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job(addr: &str, id: &str) -> Value {
    let response = http_client()
        .get(format!("http://{addr}/exports/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

/// Polls the job until `until` holds (or panics after `timeout`).
async fn wait_for(
    addr: &str,
    id: &str,
    timeout: Duration,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let job = job(addr, id).await;
        if until(&job) {
            return job;
        }
        assert!(started.elapsed() < timeout, "job never got there: {job}");
        assert_ne!(job["status"], "failed", "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn export(addr: &str, body: Value) -> (String, Value) {
    let (status, created) = post(addr, body).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let done = wait_for(addr, &id, Duration::from_secs(120), |job| {
        job["status"] == "done"
    })
    .await;
    (id, done)
}

async fn download(
    addr: &str,
    id: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = http_client().get(format!("http://{addr}/exports/{id}/file"));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn parse(bytes: &[u8]) -> Vec<CsvRow> {
    parse_csv(bytes)
}

/// The exported raw rows equal `input` (same rows, every cell: numbers numerically).
fn assert_rows_equal(exported: &[CsvRow], input: &[&CsvRow]) {
    assert_eq!(exported.len(), input.len(), "row count");
    let key = |row: &CsvRow| (row["time"].clone(), row["zip_code"].clone());
    let by_key: BTreeMap<_, _> = exported.iter().map(|row| (key(row), row)).collect();
    for row in input {
        let got = by_key
            .get(&key(row))
            .unwrap_or_else(|| panic!("row {:?} not exported", key(row)));
        for (column, want) in row.iter() {
            let have = &got[column];
            match (want.parse::<f64>(), have.parse::<f64>()) {
                (Ok(a), Ok(b)) if column != "zip_code" => {
                    assert!(close(a, b), "{:?} {column}: {want} vs {have}", key(row))
                }
                _ => assert_eq!(have, want, "{:?} {column}", key(row)),
            }
        }
    }
}

/// The exported reports of `dates` equal what the input says.
fn assert_reports_equal(exported: &[CsvRow], expected: &Expected) {
    let hour = |row: &CsvRow| format!("{}T{}", &row["time"][..10], &row["time"][11..13]);
    let metric_at = |name: &str| {
        weathervane_e2e::METRICS
            .iter()
            .position(|m| *m == name)
            .unwrap()
    };
    let (mut averages, mut zips, mut states) = (0, 0, 0);
    for row in exported {
        let figures = &expected.hours[&hour(row)];
        let number = |column: &str| row[column].parse::<f64>().unwrap();
        match row["kind"].as_str() {
            "average" => {
                let want = &figures[&row["state"]];
                assert_eq!(number("count") as u64, want.count, "{row:?}");
                for (i, metric) in weathervane_e2e::METRICS.iter().enumerate() {
                    assert!(
                        close(number(&format!("avg_{metric}")), want.means[i]),
                        "{row:?}"
                    );
                }
                averages += 1;
            }
            "zip_extreme" => {
                let (max, min) = &figures[&row["state"]].extremes[metric_at(&row["metric"])];
                assert_eq!(
                    (&row["max_holder"], number("max_value")),
                    (&max.holder, max.value),
                    "{row:?}"
                );
                assert_eq!(
                    (&row["min_holder"], number("min_value")),
                    (&min.holder, min.value),
                    "{row:?}"
                );
                zips += 1;
            }
            "state_extreme" => {
                let (max, min) = &expected.state_extremes(&hour(row))[metric_at(&row["metric"])];
                assert_eq!(row["max_holder"], max.holder, "{row:?}");
                assert!(close(number("max_value"), max.value), "{row:?}");
                assert_eq!(row["min_holder"], min.holder, "{row:?}");
                assert!(close(number("min_value"), min.value), "{row:?}");
                states += 1;
            }
            other => panic!("unknown kind {other}"),
        }
    }
    let state_hours: usize = expected.hours.values().map(BTreeMap::len).sum();
    assert_eq!(averages, state_hours);
    assert_eq!(zips, state_hours * 4);
    assert_eq!(states, expected.hours.len() * 4);
}

/// A second api replica on the same Redis, InfluxDB and export directory.
fn replica(stack: &Stack) -> (ManagedProcess, String) {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut process = stack.role(Role::Api).unwrap().env("API_ADDR", &addr).env(
        "WEATHERVANE_ADMIN_ADDR",
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    process.start().unwrap();
    (process, addr)
}

async fn wait_listening(addr: &str) {
    for _ in 0..100 {
        if http_client()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("api at {addr} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_match_the_input_stay_small_resume_cancel_and_survive_a_killed_replica() {
    let export_dir = tempfile::tempdir().unwrap();
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .env("API_EXPORT_DIR", export_dir.path())
        .env("API_EXPORT_CLAIM_AFTER", "2")
        .role(Role::Ingester)
        .role(Role::Processor)
        .role(Role::Api)
        .start()
        .unwrap();
    let mut stack = Stack::with(local);
    let input = stack.generate(60, 10, 15);
    stack.stream_once(
        &input,
        &["--batch-size", "50", "--hour-interval", "0", "--once"],
    );
    let rows = read_csv(&input);
    let addr = stack.api_addr().to_owned();
    wait_listening(&addr).await;
    let api_pid = stack.process(Role::Api).pid().unwrap();
    let first = rows
        .iter()
        .map(|r| r["time"][..10].to_owned())
        .min()
        .unwrap();
    let last = rows
        .iter()
        .map(|r| r["time"][..10].to_owned())
        .max()
        .unwrap();

    // Bad requests name their field; unknown ids are 404.
    let (status, body) = post(
        &addr,
        json!({"what": "rows", "from": first, "to": "2099-01-01"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("days"), "{body}");
    let (status, body) = post(
        &addr,
        json!({"what": "everything", "from": first, "to": first}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"what\""),
        "{body}"
    );
    let unknown = "0".repeat(32);
    let (status, _, _) = download(&addr, &unknown, None).await;
    assert_eq!(status, 404);

    // A day's raw rows.
    let (rss_base, _) = memory_kib(api_pid);
    let (day_id, day_job) =
        export(&addr, json!({"what": "rows", "from": first, "to": first})).await;
    let (status, headers, day_csv) = download(&addr, &day_id, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv");
    assert_eq!(
        headers["content-length"],
        day_csv.len().to_string().as_str()
    );
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let day_input: Vec<&CsvRow> = rows
        .iter()
        .filter(|r| r["time"].starts_with(&first))
        .collect();
    assert_eq!(day_job["rows"].as_u64(), Some(day_input.len() as u64));
    assert_rows_equal(&parse(&day_csv), &day_input);
    let (_, hwm_small) = memory_kib(api_pid);

    // All ten days: ten times the data, about the same peak memory.
    let (all_id, _) = export(&addr, json!({"what": "rows", "from": first, "to": last})).await;
    let (_, hwm_large) = memory_kib(api_pid);
    let (status, _, all_csv) = download(&addr, &all_id, None).await;
    assert_eq!(status, 200);
    assert_rows_equal(&parse(&all_csv), &rows.iter().collect::<Vec<_>>());
    let (small, large) = (
        hwm_small.saturating_sub(rss_base),
        hwm_large.saturating_sub(rss_base),
    );
    eprintln!(
        "api memory: base RSS {rss_base} KiB, peak after a day {hwm_small} KiB (+{small}), after ten days {hwm_large} KiB (+{large}); files {} and {} bytes",
        day_csv.len(),
        all_csv.len()
    );
    assert!(
        large < 3 * small.max(2048),
        "peak memory grew with the export: +{small} KiB for a day, +{large} KiB for ten days"
    );

    // A resumed download concatenates to the whole file; a range past the end is 416.
    let cut = all_csv.len() / 3;
    let (status, headers, head) =
        download(&addr, &all_id, Some(&format!("bytes=0-{}", cut - 1))).await;
    assert_eq!(status, 206);
    assert_eq!(headers["accept-ranges"], "bytes");
    let (status, _, tail) = download(&addr, &all_id, Some(&format!("bytes={cut}-"))).await;
    assert_eq!(status, 206);
    assert_eq!([head, tail].concat(), all_csv);
    let (status, _, _) = download(
        &addr,
        &all_id,
        Some(&format!("bytes={}-", all_csv.len() + 10)),
    )
    .await;
    assert_eq!(status, 416);

    // A week of reports.
    let seventh = chrono_add(&first, 6);
    let (reports_id, _) = export(
        &addr,
        json!({"what": "reports", "from": first, "to": seventh}),
    )
    .await;
    let (status, _, reports_csv) = download(&addr, &reports_id, None).await;
    assert_eq!(status, 200);
    let a_week: Vec<CsvRow> = rows
        .iter()
        .filter(|r| r["time"][..10] <= *seventh.as_str())
        .cloned()
        .collect();
    assert_reports_equal(&parse(&reports_csv), &Expected::from_rows(&a_week));

    // Cancel a long job (31 days, one chunk per hour and state) while it runs.
    let (status, created) = post(
        &addr,
        json!({"what": "rows", "from": first, "to": (chrono_add(&first, 30))}),
    )
    .await;
    assert_eq!(status, 202);
    let long_id = created["id"].as_str().unwrap().to_owned();
    wait_for(&addr, &long_id, Duration::from_secs(30), |job| {
        job["status"] == "running" && job["hours_done"].as_u64() > Some(0)
    })
    .await;
    let response = http_client()
        .delete(format!("http://{addr}/exports/{long_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let cancelled = wait_for(&addr, &long_id, Duration::from_secs(10), |job| {
        job["status"] == "cancelled"
    })
    .await;
    let took = cancelled["finished_ms"].as_i64().unwrap()
        - cancelled["cancel_requested_ms"].as_i64().unwrap();
    assert!(took < 1500, "the cancel took {took} ms: {cancelled}");
    assert!(cancelled["hours_done"].as_u64() < cancelled["hours_total"].as_u64());
    let (status, _, _) = download(&addr, &long_id, None).await;
    assert_eq!(status, 409);

    // The job list, newest first.
    let listed: Value = http_client()
        .get(format!("http://{addr}/exports"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [long_id.as_str(), &reports_id, &all_id, &day_id]);

    // Two replicas: the one running a job is killed; the other finishes it.
    let (mut other, other_addr) = replica(&stack);
    wait_listening(&other_addr).await;
    let (status, created) = post(&addr, json!({"what": "rows", "from": first, "to": last})).await;
    assert_eq!(status, 202);
    let id = created["id"].as_str().unwrap().to_owned();
    let running = wait_for(&addr, &id, Duration::from_secs(30), |job| {
        job["status"] == "running" && job["hours_done"].as_u64() > Some(0)
    })
    .await;
    let runner = running["runner"].as_str().unwrap().to_owned();
    let other_pid = other.pid().unwrap();
    let survivor = if runner.contains(&format!(":{api_pid}/")) {
        stack.process(Role::Api).kill();
        other_addr.clone()
    } else {
        assert!(
            runner.contains(&format!(":{other_pid}/")),
            "runner {runner}"
        );
        other.kill();
        addr.clone()
    };
    let done = wait_for(&survivor, &id, Duration::from_secs(120), |job| {
        job["status"] == "done"
    })
    .await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_ne!(done["runner"].as_str(), Some(runner.as_str()));
    let (status, _, taken_over_csv) = download(&survivor, &id, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        taken_over_csv, all_csv,
        "the taken-over export differs from the first"
    );
    let leftovers: Vec<_> = std::fs::read_dir(export_dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .collect();
    // The killed runner's temp file stays until the sweep (its TTL); at most that one.
    assert!(leftovers.len() <= 1, "{leftovers:?}");
    other.kill();
}

/// `date` (YYYY-MM-DD) plus `days`.
fn chrono_add(date: &str, days: u64) -> String {
    let (y, m, d): (i32, u32, u32) = (
        date[..4].parse().unwrap(),
        date[5..7].parse().unwrap(),
        date[8..10].parse().unwrap(),
    );
    // Plain arithmetic over a month table keeps chrono out of the tests' dependencies.
    let month_days = |y: i32, m: u32| match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (y, m, d + days as u32);
    while d > month_days(y, m) {
        d -= month_days(y, m);
        m += 1;
        if m > 12 {
            m = 1;
            y += 1;
        }
    }
    format!("{y:04}-{m:02}-{d:02}")
}
