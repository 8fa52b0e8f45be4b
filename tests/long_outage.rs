//! Long outages while full hours stream: Redis down for 60 s, then InfluxDB down for 60 s,
//! with an hour of 1,500 stations every 15 s. Every role's peak memory (VmHWM) must stay
//! within the bound README's "Memory" section documents for the flags used, and
//! afterwards InfluxDB holds exactly the input and the right reports.

use std::thread::sleep;
use std::time::Duration;

use weathervane_e2e::{Stack, assert_stored_exactly, read_csv};
use weathervane_harness::Role;

const OUTAGE: Duration = Duration::from_secs(60);
const BUFFER_ROWS: u64 = 3_000;
const STATIONS: u64 = 1_500;
const MAX_PENDING_HOURS: u64 = 3;

/// A memory figure of a running process (`VmHWM`, the peak, or `VmRSS`), in bytes.
fn memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    Some(kib * 1024)
}

/// README's bound: a base for the binary and its runtime, plus what the flags let a role
/// hold (see README, "Memory").
fn bound(role: Role, input_rows: u64) -> u64 {
    const BASE: u64 = 96 << 20;
    let buffers = match role {
        Role::Streamer => input_rows * 100 + BUFFER_ROWS * 400 * 2,
        Role::Ingester => BUFFER_ROWS * 500 * 2,
        Role::Processor => STATIONS * 1_000,
        Role::Api => 0,
    };
    BASE + buffers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_influxdb_down_a_minute_each_memory_stays_bounded_and_nothing_is_lost() {
    let mut stack = Stack::start();
    let input = stack.generate(STATIONS as u32, 1, 41);
    // Eight hours of the day, so hours keep coming through both outages.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let kept: Vec<&str> = lines
        .filter(|l| l.contains("2023-09-19 0"))
        .filter(|l| !l.contains("2023-09-19 08") && !l.contains("2023-09-19 09"))
        .collect();
    let input = stack.dir().join("eight-hours.csv");
    std::fs::write(&input, format!("{header}\n{}\n", kept.join("\n"))).unwrap();
    let rows = read_csv(&input);
    assert_eq!(rows.len() as u64, STATIONS * 8);

    let mut streamer = stack.streamer(
        &input,
        &[
            "--hour-interval",
            "15",
            "--once",
            "--buffer-rows",
            &BUFFER_ROWS.to_string(),
            "--max-pending-hours",
            &MAX_PENDING_HOURS.to_string(),
            "--announce-interval",
            "2",
        ],
    );
    streamer.start().unwrap();
    // The streamer exits with --once, taking its peak with it: sample it while it runs.
    let streamer_pid = streamer.pid().unwrap();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(peak_so_far) = memory(streamer_pid, "VmHWM:") {
            peak = peak.max(peak_so_far);
            sleep(Duration::from_millis(100));
        }
        peak
    });
    tokio::task::block_in_place(|| {
        sleep(Duration::from_secs(5));
        stack.redis.kill();
        sleep(OUTAGE);
        stack.redis.start_again().unwrap();
        stack.influx.pause().unwrap();
        sleep(OUTAGE);
        stack.influx.resume().unwrap();
        let status = streamer.wait_timeout(Duration::from_secs(240)).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "the streamer did not finish: {status:?}"
        );
    });
    assert_stored_exactly(&stack, &rows).await;

    let mut peaks = vec![(Role::Streamer, sampler.join().unwrap())];
    for role in [Role::Ingester, Role::Processor, Role::Api] {
        let process = stack.process(role);
        assert!(process.is_running(), "{role} died");
        peaks.push((role, memory(process.pid().unwrap(), "VmHWM:").unwrap()));
    }
    for (role, peak) in peaks {
        let bound = bound(role, rows.len() as u64);
        eprintln!("{role}: peak {} MiB, bound {} MiB", peak >> 20, bound >> 20);
        assert!(peak <= bound, "{role} peaked at {peak} bytes, over {bound}");
    }
}
