//! The api as a herd: three replicas beside the pipeline on real servers. After each hour
//! is reported they answer every report identically and correctly (against values
//! computed from the CSV), and the time from the processor's `HourReported` to "answered
//! by all three" is measured and printed; they answer from memory (InfluxDB's own query
//! counter does not move across a round of requests) and keep answering every reported
//! hour through 30 s of InfluxDB killed, while a never-reported hour is 503; a replica
//! killed and restarted while hours are reported, with Redis restarted meanwhile,
//! converges to the others.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weathervane_e2e::admin::{scrape, value, wait_readyz};
use weathervane_e2e::{CsvRow, Expected, Stack, close, http_client, read_csv};
use weathervane_harness::events::{Event, LogTail};
use weathervane_harness::{ApiReplica, LocalStack, Role};

const REPLICAS: usize = 3;
const SETTLE: Duration = Duration::from_secs(60);
const METRICS: [&str; 4] = ["temp_c", "pressure_mb", "humidity", "precip_mm"];

fn herd_stack(catch_up_interval: &str) -> Stack {
    let interval = catch_up_interval.to_owned();
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .role(Role::Ingester)
        .role(Role::Processor)
        .api_replicas(REPLICAS, move |process| {
            process.env("API_CATCH_UP_INTERVAL", &interval)
        })
        .start()
        .unwrap();
    Stack::with(local)
}

async fn all_ready(replicas: &[ApiReplica]) {
    for replica in replicas {
        wait_readyz(&replica.admin_url(), SETTLE, "ready", |status, body| {
            status == 200 && body["ready"] == true
        })
        .await;
    }
}

/// One client for every request (a client per request costs more than the answer).
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(http_client)
}

/// GET with a timeout: status and body text (`None`: no answer).
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let response = client()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Every report path of `hour` (`YYYY-MM-DDTHH`): `/avg` and `/extremes` of each state,
/// `/state_extremes`, and the day's `/state_extremes`.
fn paths(expected: &Expected, hour: &str) -> Vec<String> {
    let (date, hh) = (&hour[..10], &hour[11..13]);
    let mut paths = vec![format!("/state_extremes?hour={hh}&date={date}")];
    for state in expected.hours[hour].keys() {
        paths.push(format!("/avg?state={state}&hour={hh}&date={date}"));
        paths.push(format!("/extremes?state={state}&hour={hh}&date={date}"));
    }
    paths
}

/// Checks one answer against the CSV's figures.
fn check_answer(expected: &Expected, path: &str, body: &str) -> Result<(), String> {
    let body: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{path}: {e}: {body}"))?;
    let param = |name: &str| {
        path.split(['?', '&'])
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let hour = format!("{}T{}", param("date"), param("hour"));
    let wrong = || Err(format!("{path}: wrong answer {body}"));
    let same = |served: &serde_json::Value, holder: &str, value: f64| {
        served["value"].as_f64().is_some_and(|v| close(v, value))
            && (served["state"] == holder || served["zip_code"] == holder)
    };
    if path.starts_with("/state_extremes") {
        for (i, (max, min)) in expected.state_extremes(&hour).iter().enumerate() {
            let metric = METRICS[i];
            if !same(&body["max"][metric], &max.holder, max.value)
                || !same(&body["min"][metric], &min.holder, min.value)
            {
                return wrong();
            }
        }
        return Ok(());
    }
    let want = &expected.hours[&hour][&param("state")];
    if path.starts_with("/avg") {
        if body["count"].as_u64() != Some(want.count) {
            return wrong();
        }
        for (i, metric) in METRICS.iter().enumerate() {
            let served = body[format!("avg_{metric}")].as_f64();
            if !served.is_some_and(|v| close(v, want.means[i])) {
                return wrong();
            }
        }
    } else {
        for (i, (max, min)) in want.extremes.iter().enumerate() {
            let metric = METRICS[i];
            if !same(&body["max"][metric], &max.holder, max.value)
                || !same(&body["min"][metric], &min.holder, min.value)
            {
                return wrong();
            }
        }
    }
    Ok(())
}

/// Asks every replica (`addrs`) every report of `hours`: each must be 200, identical
/// across the replicas and correct. Returns how many requests were made, or the first
/// thing that was not so.
async fn herd_answers(
    addrs: &[String],
    expected: &Expected,
    hours: &[String],
) -> Result<usize, String> {
    let mut asked = 0;
    for hour in hours {
        for path in paths(expected, hour) {
            let mut first: Option<String> = None;
            for addr in addrs {
                let (status, body) = get(addr, &path)
                    .await
                    .ok_or_else(|| format!("{addr} gave no answer to {path}"))?;
                asked += 1;
                if status != 200 {
                    return Err(format!("{addr} {path}: {status} {body}"));
                }
                match &first {
                    None => {
                        check_answer(expected, &path, &body)?;
                        first = Some(body);
                    }
                    Some(first) if &body != first => {
                        return Err(format!("{addr} {path}: {body} differs from {first}"));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(asked)
}

fn addrs(replicas: &[ApiReplica]) -> Vec<String> {
    replicas.iter().map(|r| r.addr.clone()).collect()
}

async fn assert_herd_answers(
    replicas: &[ApiReplica],
    expected: &Expected,
    hours: &[String],
) -> usize {
    herd_answers(&addrs(replicas), expected, hours)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// InfluxDB's own count of `/query` requests (`httpd` `queryReq` in `/debug/vars`).
async fn influx_queries(stack: &Stack) -> u64 {
    let vars: serde_json::Value = http_client()
        .get(format!("{}/debug/vars", stack.influx.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    vars.as_object()
        .unwrap()
        .values()
        .filter(|v| v["name"] == "httpd")
        .map(|v| v["values"]["queryReq"].as_u64().unwrap_or(0))
        .sum()
}

async fn answers(replica: &ApiReplica, source: &str) -> f64 {
    let text = scrape(&replica.admin_url()).await;
    weathervane_e2e::admin::sample(
        &text,
        "weathervane_api_report_answers_total",
        &[("source", source)],
    )
    .unwrap_or(0.0)
}

/// Follows the processor's `HourReported` events while `done` is false, and for each
/// hour the time until all three replicas answer its `/state_extremes` with 200 and the
/// same body. Returns hour → milliseconds.
async fn measure_convergence(
    stack: &Stack,
    streamer: &mut weathervane_harness::ManagedProcess,
    hours: usize,
) -> BTreeMap<String, u64> {
    let mut tail = LogTail::new(stack.log_path(Role::Processor));
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    let mut measured: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    while measured.len() < hours {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {} of {hours} hours converged: {measured:?}, pending {pending:?}\n{}",
            measured.len(),
            stack.log(streamer)
        );
        for record in tail.new_events().unwrap() {
            if let Event::HourReported { hour, .. } = record.event {
                pending.entry(hour.to_string()).or_insert(record.at_ms);
            }
        }
        let mut converged = Vec::new();
        for (hour, at_ms) in &pending {
            let path = format!(
                "/state_extremes?hour={}&date={}",
                &hour[11..13],
                &hour[..10]
            );
            let mut bodies = BTreeSet::new();
            let mut all = true;
            for replica in &stack.replicas {
                match get(&replica.addr, &path).await {
                    Some((200, body)) => {
                        bodies.insert(body);
                    }
                    _ => all = false,
                }
            }
            if all && bodies.len() == 1 {
                converged.push((hour.clone(), now_ms().saturating_sub(*at_ms)));
            }
        }
        for (hour, ms) in converged {
            pending.remove(&hour);
            measured.entry(hour).or_insert(ms);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    measured
}

fn print_convergence(what: &str, measured: &BTreeMap<String, u64>) {
    let mut times: Vec<u64> = measured.values().copied().collect();
    times.sort_unstable();
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "herd convergence ({what}): {} hours, reported -> answered by all {REPLICAS}: median {} ms, p90 {} ms, max {} ms",
        times.len(),
        p(0.5),
        p(0.9),
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_every_hour_identically_from_memory_and_through_an_influxdb_outage() {
    // No periodic catch-up: every query InfluxDB sees during the rounds below would be an
    // answer's.
    let mut stack = herd_stack("3600");
    all_ready(&stack.replicas).await;
    let input = stack.generate(20, 1, 21);
    let rows: Vec<CsvRow> = read_csv(&input);
    let expected = Expected::from_rows(&rows);
    let hours: Vec<String> = expected.hours.keys().cloned().collect();
    let mut streamer = stack.streamer(
        &input,
        &["--batch-size", "5", "--hour-interval", "0.2", "--once"],
    );
    streamer.start().unwrap();
    let measured = measure_convergence(&stack, &mut streamer, hours.len()).await;
    print_convergence("clean run", &measured);
    let status = streamer.wait_timeout(Duration::from_secs(120)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        stack.log(&streamer)
    );

    // Every report, identical and correct, and not one InfluxDB query for it.
    let queries = influx_queries(&stack).await;
    let mut from_influx = Vec::new();
    for replica in &stack.replicas {
        from_influx.push(answers(replica, "influxdb").await);
    }
    let started = Instant::now();
    let asked = assert_herd_answers(&stack.replicas, &expected, &hours).await;
    println!(
        "herd: {asked} answers from three replicas in {:?}",
        started.elapsed()
    );
    assert_eq!(
        influx_queries(&stack).await,
        queries,
        "InfluxDB was queried while the replicas answered {asked} requests"
    );
    for (replica, before) in stack.replicas.iter().zip(&from_influx) {
        assert_eq!(
            answers(replica, "influxdb").await,
            *before,
            "{}",
            replica.addr
        );
        assert!(answers(replica, "memory").await >= (asked / REPLICAS) as f64);
        let metrics = scrape(&replica.admin_url()).await;
        assert_eq!(
            value(&metrics, "weathervane_api_store_hour_reports", &[]),
            hours.len() as f64
        );
        let bytes = value(&metrics, "weathervane_api_store_bytes", &[]);
        println!(
            "herd: {} holds {} hours in {bytes} bytes ({:.0} bytes per hour of {} states)",
            replica.addr,
            hours.len(),
            bytes / hours.len() as f64,
            expected.hours[&hours[0]].len()
        );
    }

    // InfluxDB killed for 30 s: every reported hour still 200 and correct, a
    // never-reported hour 503, and every replica stays ready.
    stack.influx.kill();
    let down = Instant::now();
    let mut rounds = 0;
    while down.elapsed() < Duration::from_secs(30) {
        assert_herd_answers(&stack.replicas, &expected, &hours).await;
        rounds += 1;
        for replica in &stack.replicas {
            let (status, body) = get(&replica.addr, "/state_extremes?hour=05&date=2020-01-01")
                .await
                .unwrap();
            assert_eq!(status, 503, "never reported, InfluxDB down: {body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for replica in &stack.replicas {
        let body = wait_readyz(
            &replica.admin_url(),
            SETTLE,
            "ready, influxdb shown down",
            |status, body| status == 200 && body["checks"]["influxdb"]["ok"] == false,
        )
        .await;
        assert_eq!(body["checks"]["warmed"]["ok"], true, "{body}");
    }
    println!("herd: {rounds} full rounds answered with InfluxDB down for 30 s");
    stack.influx.start_again().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_and_restarted_with_redis_restarted_meanwhile_converges() {
    let mut stack = herd_stack("1");
    all_ready(&stack.replicas).await;
    let input = stack.generate(10, 1, 22);
    let rows = read_csv(&input);
    let expected = Expected::from_rows(&rows);
    let hours: Vec<String> = expected.hours.keys().cloned().collect();
    let mut streamer = stack.streamer(
        &input,
        &["--batch-size", "5", "--hour-interval", "0.3", "--once"],
    );
    streamer.start().unwrap();
    let mut tail = LogTail::new(stack.log_path(Role::Processor));
    let mut reported = 0;
    let mut wait_reported = async |count: usize| {
        let started = Instant::now();
        while reported < count {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "hour {count} never reported"
            );
            reported += tail
                .new_events()
                .unwrap()
                .iter()
                .filter(|r| matches!(r.event, Event::HourReported { .. }))
                .count();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_reported(4).await;
    stack.replicas[1].process.kill();
    wait_reported(8).await;
    stack.redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.redis.start_again().unwrap();
    wait_reported(12).await;
    stack.replicas[1].process.start().unwrap();
    let status = streamer.wait_timeout(Duration::from_secs(180)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        stack.log(&streamer)
    );
    let done = Instant::now();
    // Converged: every replica answers every hour identically and correctly.
    let addrs = addrs(&stack.replicas);
    loop {
        let attempt = herd_answers(&addrs, &expected, &hours).await;
        if attempt.is_ok() {
            break;
        }
        assert!(
            done.elapsed() < SETTLE,
            "the restarted replica never converged: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "herd: all {REPLICAS} replicas identical on all {} hours {:?} after the streamer finished",
        hours.len(),
        done.elapsed()
    );
    all_ready(&stack.replicas).await;
}
