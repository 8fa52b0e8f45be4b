//! The roles' Prometheus metrics against the truth: after a pipeline run on a generated
//! CSV, the counters equal what the CSV holds (counted here with the `csv` crate) and what
//! InfluxDB holds (`SELECT COUNT`); every role's `/metrics` passes `promtool check
//! metrics`; and a real Prometheus (Debian's) scraping the running stack sees every
//! target up and the same values.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use weathervane_e2e::admin::{promtool_check, sample, scrape, value, wait_readyz};
use weathervane_e2e::{CsvRow, Stack, api_get, hour_of, read_csv};
use weathervane_harness::events::Event;
use weathervane_harness::{LocalStack, ManagedProcess, PrometheusServer, Role};

/// A pipeline that has streamed `input` and confirmed every hour, with its streamer
/// still running (its metrics are read after). Waits for the ingester and processor to
/// be ready first, so no batch goes unheard and none is resent.
struct Run {
    stack: Stack,
    _streamer: ManagedProcess,
    rows: Vec<CsvRow>,
    hours: usize,
}

async fn run_pipeline(stations: u32, seed: u64) -> Run {
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .role(Role::Ingester)
        .role(Role::Processor)
        .role(Role::Api)
        .start()
        .unwrap();
    let stack = Stack::with(local);
    for role in [Role::Ingester, Role::Processor, Role::Api] {
        wait_readyz(
            &stack.admin_url(role),
            Duration::from_secs(30),
            "ready",
            |status, _| status == 200,
        )
        .await;
    }
    let input = stack.generate(stations, 1, seed);
    let rows = read_csv(&input);
    let hours = rows
        .iter()
        .map(|row| hour_of(&row["time"]))
        .collect::<BTreeSet<_>>()
        .len();
    // No --once: the streamer stays so its counters can be read. A long announce interval
    // keeps every hour reported exactly once (a re-announcement would recompute it).
    let mut streamer = stack.streamer(&input, &["--batch-size", "7", "--announce-interval", "60"]);
    streamer.start().unwrap();
    let started = Instant::now();
    loop {
        let confirmed = stack
            .events(&streamer)
            .iter()
            .filter(|event| matches!(event, Event::HourConfirmed { .. }))
            .count();
        if confirmed == hours {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{confirmed} of {hours} hours confirmed; streamer log:\n{}",
            stack.log(&streamer)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Run {
        stack,
        _streamer: streamer,
        rows,
        hours,
    }
}

async fn influx_count(stack: &Stack) -> f64 {
    let rows = stack.query("SELECT COUNT(temp_c) FROM weather_data").await;
    rows[0]["count"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_agree_with_the_csv_and_influxdb_and_promtool_finds_no_problem() {
    let run = run_pipeline(20, 5).await;
    let stack = &run.stack;
    let csv_rows = run.rows.len() as f64;
    let hours = run.hours as f64;
    assert_eq!(csv_rows, 20.0 * 24.0, "the generator's rows");
    let stored_in_influx = influx_count(stack).await;
    assert_eq!(stored_in_influx, csv_rows);

    // Requests of every kind the api counts: two answers from memory (the api holds
    // every reported hour), and an unknown path.
    let hour = &run.rows[0]["time"];
    let (state, date, hh) = (&run.rows[0]["state"], &hour[..10], &hour[11..13]);
    let avg = format!("/avg?state={state}&hour={hh}&date={date}");
    for _ in 0..2 {
        let (status, body) = api_get(stack.api_addr(), &avg).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = api_get(stack.api_addr(), "/no/such/thing").await;
    assert_eq!(status, 404);

    let streamer = scrape(&stack.admin_url(Role::Streamer)).await;
    let ingester = scrape(&stack.admin_url(Role::Ingester)).await;
    let processor = scrape(&stack.admin_url(Role::Processor)).await;
    let api = scrape(&stack.admin_url(Role::Api)).await;

    let m = |text: &str, name: &str| value(text, name, &[]);
    assert_eq!(
        m(&streamer, "weathervane_streamer_batches_resent_total"),
        0.0,
        "a clean run resends nothing"
    );
    assert_eq!(
        m(&streamer, "weathervane_streamer_rows_read_total"),
        csv_rows
    );
    assert_eq!(
        m(&streamer, "weathervane_streamer_rows_published_total"),
        csv_rows
    );
    let mut per_hour = std::collections::BTreeMap::<String, usize>::new();
    for row in &run.rows {
        *per_hour.entry(hour_of(&row["time"])).or_default() += 1;
    }
    let batches: usize = per_hour.values().map(|rows| rows.div_ceil(7)).sum();
    assert_eq!(
        m(&streamer, "weathervane_streamer_batches_published_total"),
        batches as f64
    );
    assert_eq!(
        m(&streamer, "weathervane_streamer_rows_rejected_total"),
        0.0
    );
    assert_eq!(
        m(&streamer, "weathervane_streamer_hour_confirmations_total"),
        hours
    );
    assert_eq!(m(&streamer, "weathervane_streamer_hour_backlog"), 0.0);

    assert_eq!(
        m(&ingester, "weathervane_ingester_rows_stored_total"),
        stored_in_influx
    );
    assert_eq!(
        m(&ingester, "weathervane_ingester_rows_stored_total"),
        csv_rows
    );
    assert_eq!(
        m(&ingester, "weathervane_ingester_rows_received_total"),
        csv_rows
    );
    assert_eq!(
        m(&ingester, "weathervane_ingester_rows_dead_lettered_total"),
        0.0
    );
    assert_eq!(
        m(&ingester, "weathervane_ingester_hour_completions_total"),
        hours
    );
    assert_eq!(
        value(
            &ingester,
            "weathervane_ingester_buffer_items",
            &[("buffer", "writes")]
        ),
        0.0
    );
    assert!(
        value(
            &ingester,
            "weathervane_ingester_influxdb_request_duration_seconds_count",
            &[("op", "write")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &ingester,
            "weathervane_ingester_outage",
            &[("target", "influxdb")]
        ),
        0.0
    );

    // A re-announcement may have the processor report an hour again: what it reported
    // is in its events, and covers every hour of the CSV.
    let reported: Vec<(String, u64)> =
        weathervane_harness::events::events_of(&stack.log_path(Role::Processor))
            .unwrap()
            .into_iter()
            .filter_map(|record| match record.event {
                Event::HourReported { hour, rows, .. } => Some((hour.to_string(), rows)),
                _ => None,
            })
            .collect();
    let reported_hours: BTreeSet<&String> = reported.iter().map(|(hour, _)| hour).collect();
    assert_eq!(reported_hours.len() as f64, hours);
    let times = reported.len() as f64;
    let rows_reported: u64 = reported.iter().map(|(_, rows)| rows).sum();
    assert_eq!(
        m(&processor, "weathervane_processor_hour_reports_total"),
        times
    );
    assert_eq!(
        m(&processor, "weathervane_processor_rows_reported_total"),
        rows_reported as f64
    );
    assert_eq!(
        m(
            &processor,
            "weathervane_processor_report_duration_seconds_count"
        ),
        times
    );

    let requests = |endpoint: &str, status: &str| {
        sample(
            &api,
            "weathervane_api_http_requests_total",
            &[("endpoint", endpoint), ("status", status)],
        )
    };
    assert_eq!(requests("/avg", "200"), Some(2.0), "{api}");
    assert_eq!(requests("other", "404"), Some(1.0), "{api}");
    let answers = |source: &str| {
        sample(
            &api,
            "weathervane_api_report_answers_total",
            &[("source", source)],
        )
    };
    assert_eq!(answers("memory"), Some(2.0), "{api}");
    assert_eq!(answers("influxdb"), None, "{api}");
    assert_eq!(m(&api, "weathervane_api_cache_misses_total"), 0.0);
    assert_eq!(m(&api, "weathervane_api_store_hour_reports"), hours);
    assert!(m(&api, "weathervane_api_store_bytes") > 0.0);
    let applied = sample(
        &api,
        "weathervane_api_report_updates_total",
        &[("outcome", "applied")],
    )
    .unwrap_or(0.0);
    let loaded = m(&api, "weathervane_api_store_loads_total");
    assert!(applied + loaded >= hours, "{api}");

    for (role, text) in [
        ("streamer", &streamer),
        ("ingester", &ingester),
        ("processor", &processor),
        ("api", &api),
    ] {
        promtool_check(role, text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_every_role_and_sees_the_truth() {
    let run = run_pipeline(10, 9).await;
    let stack = &run.stack;
    let csv_rows = run.rows.len() as f64;
    let targets: Vec<(String, String)> = Role::ALL
        .iter()
        .map(|role| (role.name().to_owned(), stack.admin_addr(*role).to_owned()))
        .collect();
    let prometheus = PrometheusServer::start(&targets).unwrap();

    /// One instant vector: `(job, value)` per series, or what Prometheus said.
    fn vector(answer: &str) -> Vec<(String, f64)> {
        let json: serde_json::Value = serde_json::from_str(answer).unwrap();
        assert_eq!(json["status"], "success", "{json}");
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                (
                    series["metric"]["job"].as_str().unwrap_or("").to_owned(),
                    series["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }
    let query = |promql: &str| vector(&prometheus.query(promql).unwrap());

    // Scraped every second: wait until each of the four targets has been scraped.
    let started = Instant::now();
    loop {
        let up = query("up");
        if up.len() == 4 && up.iter().all(|(_, v)| *v == 1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "targets not all up: {up:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let jobs: BTreeSet<String> = query("up").into_iter().map(|(job, _)| job).collect();
    assert_eq!(
        jobs,
        ["api", "ingester", "processor", "streamer"]
            .map(str::to_owned)
            .into(),
    );
    let one = |promql: &str| {
        let answer = query(promql);
        assert_eq!(answer.len(), 1, "{promql}: {answer:?}");
        answer[0].1
    };
    assert_eq!(one("weathervane_ingester_rows_stored_total"), csv_rows);
    assert_eq!(
        one("weathervane_ingester_rows_stored_total"),
        influx_count(stack).await
    );
    assert_eq!(one("weathervane_streamer_rows_published_total"), csv_rows);
    assert!(one("weathervane_processor_hour_reports_total") >= run.hours as f64);
    assert_eq!(
        one("sum(weathervane_ingester_outage) + sum(weathervane_processor_outage)"),
        0.0
    );
    // Histograms arrive as buckets: the report times' count is the hours reported.
    assert_eq!(
        one("weathervane_processor_report_duration_seconds_count"),
        one("weathervane_processor_hour_reports_total")
    );
    assert!(one("weathervane_processor_report_duration_seconds_sum") > 0.0);
    assert_eq!(
        query("weathervane_streamer_buffer_items").len(),
        1,
        "the streamer's one buffer"
    );
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    ticks / 100.0
}

/// The pids of a run's four roles.
fn role_pids(run: &mut Run) -> Vec<(Role, u32)> {
    let mut pids: Vec<(Role, u32)> = [Role::Ingester, Role::Processor, Role::Api]
        .into_iter()
        .map(|role| (role, run.stack.process(role).pid().unwrap()))
        .collect();
    pids.insert(0, (Role::Streamer, run._streamer.pid().unwrap()));
    pids
}

/// What a `/metrics` scrape costs each role: a measurement, printed, not a check (its
/// figures depend on the machine). `cargo test --test metrics -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run with --ignored --nocapture"]
async fn scrape_cost() {
    const SCRAPES: u32 = 1000;
    let mut run = run_pipeline(200, 21).await;
    println!("after a run of {} rows:", run.rows.len());
    let pids = role_pids(&mut run);
    // One client, kept alive, as Prometheus scrapes.
    let client = weathervane_e2e::http_client();
    for (role, pid) in pids {
        let admin = run.stack.admin_url(role);
        let size = scrape(&admin).await.len();
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..SCRAPES {
            let one = Instant::now();
            scrape_once(&client, &admin).await.unwrap();
            slowest = slowest.max(one.elapsed());
        }
        let wall = started.elapsed() / SCRAPES;
        let cpu = (cpu_seconds(pid) - cpu_before) / f64::from(SCRAPES);
        println!(
            "{role:>9}: {size} bytes; {SCRAPES} scrapes: {:.3} ms each (wall, slowest {:.2} ms), {:.3} ms of the role's CPU each",
            wall.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0,
            cpu * 1000.0
        );
    }

    // A whole run with and without a scraper hitting every role as fast as it answers.
    for scraping in [false, true] {
        let local = LocalStack::builder()
            .role(Role::Ingester)
            .role(Role::Processor)
            .role(Role::Api)
            .start()
            .unwrap();
        let mut stack = Stack::with(local);
        for role in [Role::Ingester, Role::Processor, Role::Api] {
            wait_readyz(
                &stack.admin_url(role),
                Duration::from_secs(30),
                "ready",
                |s, _| s == 200,
            )
            .await;
        }
        let input = stack.generate(200, 1, 21);
        let admins: Vec<String> = Role::ALL.iter().map(|r| stack.admin_url(*r)).collect();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper = scraping.then(|| {
            let done = done.clone();
            tokio::spawn(async move {
                let client = weathervane_e2e::http_client();
                let mut scrapes = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for admin in &admins {
                        // The streamer may not listen yet, or any more.
                        let _ = scrape_once(&client, admin).await;
                        scrapes += 1;
                    }
                }
                scrapes
            })
        });
        let started = Instant::now();
        let mut streamer = stack.streamer(&input, &["--once"]);
        streamer.start().unwrap();
        let streamer_pid = streamer.pid().unwrap();
        let mut streamer_cpu = 0.0;
        while streamer.is_running() {
            streamer_cpu = cpu_seconds(streamer_pid).max(streamer_cpu);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let scrapes = match scraper {
            Some(task) => task.await.unwrap(),
            None => 0,
        };
        let cpu: Vec<String> = [Role::Ingester, Role::Processor, Role::Api]
            .into_iter()
            .map(|role| {
                let pid = stack.process(role).pid().unwrap();
                format!("{role} {:.2} s", cpu_seconds(pid))
            })
            .collect();
        println!(
            "run of 4800 rows {}: {:.1} s; CPU: streamer ≥{streamer_cpu:.2} s, {} ({scrapes} scrapes)",
            if scraping {
                "while scraped nonstop"
            } else {
                "unscraped"
            },
            elapsed.as_secs_f64(),
            cpu.join(", "),
        );
    }
}

/// `/metrics` once, ignoring failures (for the nonstop scraper).
async fn scrape_once(client: &reqwest::Client, admin: &str) -> Result<(), ()> {
    client
        .get(format!("{admin}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(drop)?
        .text()
        .await
        .map_err(drop)?;
    Ok(())
}
