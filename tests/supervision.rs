//! Supervision, end to end: a role whose task dies exits non-zero within 2 s (the
//! supervisor's `WEATHERVANE_PANIC_TASK` hook makes a named task panic); SIGTERM ends the
//! ingester within 2 s while InfluxDB is SIGSTOPped and its writes hang, and once it is
//! restarted nothing is missing; a role whose stderr reader has gone keeps working and
//! still stops on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weathervane_e2e::{Stack, assert_stored_exactly, read_csv};
use weathervane_harness::events::{Event, EventRecord, events_of};
use weathervane_harness::{LocalStack, ManagedProcess, Role};

const TIMEOUT: Duration = Duration::from_secs(120);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits for the first event in `log` that `wanted` accepts.
fn wait_for_event(log: &Path, what: &str, wanted: impl Fn(&Event) -> bool) -> EventRecord {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(record) = events_of(log)
            .unwrap()
            .into_iter()
            .find(|r| wanted(&r.event))
        {
            return record;
        }
        assert!(Instant::now() < deadline, "no {what} in {}", log.display());
        sleep(Duration::from_millis(20));
    }
}

/// A two-row CSV: enough for a streamer to have something to publish.
fn small_input(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("small.csv");
    std::fs::write(
        &path,
        "zip_code,state,time,temp_c,pressure_mb,humidity,precip_mm\n\
         02134,MA,2023-09-19 05:00,14.2,1015,88,0\n\
         10001,NY,2023-09-19 05:00,15.0,1012,70,0.1\n",
    )
    .unwrap();
    path
}

/// A streamer of the stack for `input`, with `args`, not started.
fn streamer_for(
    stack: &LocalStack,
    input: &Path,
    args: &[&str],
) -> weathervane_harness::ManagedProcess {
    stack
        .role(Role::Streamer)
        .unwrap()
        .args(["--input".as_ref(), input.as_os_str()])
        .args([
            "--rejects".as_ref(),
            stack.dir().join("rejects.csv").as_os_str(),
        ])
        .args(args)
}

#[test]
fn a_role_whose_task_panics_names_it_and_exits_non_zero_within_2_s() {
    let stack = LocalStack::builder().start().unwrap();
    let input = small_input(stack.dir());
    for (role, task) in [
        (Role::Ingester, "ingester-writes"),
        (Role::Ingester, "ingester-subscription"),
        (Role::Processor, "processor-jobs"),
        (Role::Processor, "processor-listener"),
        (Role::Streamer, "streamer-outbound"),
        (Role::Streamer, "streamer-listener"),
    ] {
        let process = match role {
            Role::Streamer => streamer_for(&stack, &input, &[]),
            _ => stack.role(role).unwrap(),
        };
        let mut process = process.env("WEATHERVANE_PANIC_TASK", task);
        let log = process.log_path().to_owned();
        let seen_before = events_of(&log).unwrap().len();
        process.start().unwrap();
        let failed = wait_for_event(
            &log,
            "TaskFailed",
            |event| matches!(event, Event::TaskFailed { task: t, .. } if t == task),
        );
        let status = process
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_or_else(|| panic!("{role} still runs 10 s after {task} died"));
        let exited_after_ms = now_ms().saturating_sub(failed.at_ms);
        assert!(
            !status.success(),
            "{role} exited {status} after {task} died"
        );
        assert!(
            exited_after_ms <= 2000,
            "{role} exited {exited_after_ms} ms after {task} died"
        );
        let Event::TaskFailed { how, .. } = &failed.event else {
            unreachable!()
        };
        assert!(how.contains("panicked"), "{how}");
        assert!(events_of(&log).unwrap().len() > seen_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_ingester_within_2_s_while_influxdb_hangs_and_nothing_is_lost() {
    let mut stack = Stack::start();
    let input = stack.generate(40, 1, 5);
    stack.influx.pause().unwrap();
    let mut streamer = stack.streamer(
        &input,
        &[
            "--batch-size",
            "10",
            "--hour-interval",
            "0",
            "--announce-interval",
            "1",
            "--once",
        ],
    );
    streamer.start().unwrap();
    let ingester_log = stack.log_path(Role::Ingester);
    tokio::task::block_in_place(|| {
        wait_for_event(&ingester_log, "BatchReceived", |event| {
            matches!(event, Event::BatchReceived { .. })
        })
    });
    // The ingester now holds batches whose writes InfluxDB takes and never answers.
    sleep(Duration::from_millis(300));
    let ingester = stack.process(Role::Ingester);
    let asked = Instant::now();
    let status = ingester.stop().expect("the ingester was running");
    let took = asked.elapsed();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    assert!(took <= Duration::from_secs(2), "exit took {took:?}");

    stack.influx.resume().unwrap();
    stack.process(Role::Ingester).start().unwrap();
    let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "the streamer did not see every hour reported: {status:?}\n{}",
        stack.log(&streamer)
    );
    assert_stored_exactly(&stack, &read_csv(&input)).await;
}

/// Kills the child on drop, so a failing assertion leaves nothing behind.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_role_whose_stderr_reader_is_gone_keeps_working_and_stops_on_sigterm() {
    let mut stack = LocalStack::builder().role(Role::Processor).start().unwrap();
    let mut ingester = Owned(
        Command::new(weathervane_harness::weathervane_binary().unwrap())
            .arg("ingester")
            .env("REDIS_URL", stack.redis.url())
            .env("INFLUXDB_URL", stack.influx.url())
            .env("INFLUXDB_DB", weathervane_harness::stack::DB)
            .env("RUST_LOG", "debug")
            .env("WEATHERVANE_EVENTS", "stderr")
            // Not the fixed default port: tests run side by side.
            .env("WEATHERVANE_ADMIN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The reader goes away at once: every later log write meets a closed pipe.
    drop(ingester.0.stderr.take());
    drop(ingester.0.stdout.take());

    let input = small_input(stack.dir());
    let mut streamer = streamer_for(
        &stack,
        &input,
        &["--hour-interval", "0", "--announce-interval", "1", "--once"],
    );
    streamer.start().unwrap();
    let status = streamer.wait_timeout(TIMEOUT).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the pipeline stalled with the ingester's stderr closed: {status:?}"
    );
    assert!(
        ingester.0.try_wait().unwrap().is_none(),
        "the ingester died"
    );

    let pid = ingester.0.id().to_string();
    let asked = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = ingester.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "SIGTERM ignored with stderr closed"
        );
        sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    stack.process(Role::Processor).stop();
}

#[test]
fn exit_codes_say_done_fail_could_not_run_and_interrupted() {
    let stack = LocalStack::builder().start().unwrap();
    let input = small_input(stack.dir());
    let verify = |influx: &str| {
        Command::new(weathervane_harness::weathervane_binary().unwrap())
            .args(["verify", "--input"])
            .arg(&input)
            .args(["--influxdb-url", influx])
            .output()
            .unwrap()
            .status
            .code()
    };
    // Nothing stored: the check runs and fails.
    assert_eq!(verify(&stack.influx.url()), Some(1));
    // No InfluxDB there: the check could not run.
    let closed = format!(
        "http://127.0.0.1:{}",
        weathervane_harness::free_port().unwrap()
    );
    assert_eq!(verify(&closed), Some(2));

    // A streamer with --once whose hours can never be confirmed (no ingester), stopped.
    let mut streamer = streamer_for(&stack, &input, &["--hour-interval", "0", "--once"]);
    streamer.start().unwrap();
    wait_for_event(streamer.log_path(), "HourQueued", |event| {
        matches!(event, Event::HourQueued { .. })
    });
    let status = streamer.stop().expect("the streamer was running");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "interrupted --once: {status}"
    );
}

#[test]
fn gen_refuses_zero_stations_and_ends_quietly_when_its_reader_goes() {
    let binary = weathervane_harness::weathervane_binary().unwrap();
    let zero = Command::new(&binary)
        .args(["gen", "--stations", "0", "--out", "-"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2), "a usage error");
    let message = String::from_utf8_lossy(&zero.stderr);
    assert!(message.contains("--stations"), "{message}");
    assert!(zero.stdout.is_empty(), "no header-only file");

    // `gen --out - | head -1`: the reader takes one line and goes.
    let mut generator = Command::new(&binary)
        .args(["gen", "--stations", "2000", "--days", "3", "--out", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(generator.stdout.take().unwrap());
        lines.read_line(&mut first).unwrap();
    }
    assert!(first.starts_with("zip_code,"), "{first}");
    let output = generator.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}

#[test]
fn plain_http_needs_no_ca_store_and_https_without_one_says_what_to_install() {
    let binary = weathervane_harness::weathervane_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = small_input(dir.path());
    let closed = weathervane_harness::free_port().unwrap();
    let verify = |scheme: &str| {
        // As in a slim container: no CA certificates anywhere.
        Command::new(&binary)
            .args(["verify", "--input"])
            .arg(&input)
            .args(["--influxdb-url", &format!("{scheme}://127.0.0.1:{closed}")])
            .env("SSL_CERT_FILE", dir.path().join("none.pem"))
            .env("SSL_CERT_DIR", dir.path().join("none"))
            .output()
            .unwrap()
    };
    let plain = verify("http");
    let text = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot connect"),
        "an outage, not a setup error: {text}"
    );
    let tls = verify("https");
    let text = String::from_utf8_lossy(&tls.stderr);
    assert_eq!(tls.status.code(), Some(2), "{text}");
    assert!(text.contains("INFLUXDB_CA_FILE"), "{text}");
}

#[test]
fn under_up_every_json_log_line_names_its_role() {
    let stack = LocalStack::builder().start().unwrap();
    let input = small_input(stack.dir());
    let api_addr = format!("127.0.0.1:{}", weathervane_harness::free_port().unwrap());
    let mut up = ManagedProcess::weathervane("up", stack.dir())
        .unwrap()
        .args(["--log-format", "json", "up", "--once", "--input"])
        .arg(&input)
        .arg("--rejects")
        .arg(stack.dir().join("rejects.csv"))
        .env("REDIS_URL", stack.redis.url())
        .env("INFLUXDB_URL", stack.influx.url())
        .env("API_ADDR", &api_addr)
        // Not the fixed default port: tests run side by side.
        .env("WEATHERVANE_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    up.start().unwrap();
    let status = up.wait_timeout(Duration::from_secs(120)).unwrap();
    let log = std::fs::read_to_string(up.log_path()).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let mut roles = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| l.starts_with("{\"timestamp\"")) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let role = record["span"]["role"]
            .as_str()
            .unwrap_or_else(|| panic!("a line without its role: {line}"));
        roles.insert(role.to_owned());
    }
    for role in ["streamer", "ingester", "processor", "api"] {
        assert!(roles.contains(role), "no line from the {role}: {roles:?}");
    }
}
