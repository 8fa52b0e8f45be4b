//! An input edited between runs, or under a running streamer: the streamer streams again
//! exactly the hours whose content changed (their generation), and InfluxDB ends up
//! holding exactly the new file. The ingester and processor keep running throughout.

use std::path::Path;
use std::time::{Duration, Instant};

use weathervane_e2e::{Stack, assert_stored_exactly, hour_of, read_csv};
use weathervane_harness::events::Event;
use weathervane_harness::{ManagedProcess, Role};

const TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a streamer with `--once` to the end; returns the hours it queued in this run.
fn run_streamer(stack: &Stack, input: &Path, state: &Path, args: &[&str]) -> Vec<String> {
    let mut streamer = streamer(stack, input, state, args);
    let before = stack.events(&streamer).len();
    streamer.start().unwrap();
    let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
    let warnings = |role| -> String {
        let log = stack.role_log(role);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "streamer did not finish: {status:?}\n{}\nprocessor's last warnings:\n{}",
        stack.log(&streamer),
        warnings(Role::Processor)
    );
    queued(&stack.events(&streamer)[before..])
}

/// A streamer with `--once`, the state file and `args` (by default `--hour-interval 0`).
fn streamer(stack: &Stack, input: &Path, state: &Path, args: &[&str]) -> ManagedProcess {
    let state = state.to_str().unwrap();
    let mut all = vec!["--once", "--state-file", state];
    if !args.contains(&"--hour-interval") {
        all.extend(["--hour-interval", "0"]);
    }
    stack.streamer(input, &[&all[..], args].concat())
}

/// The hours in `HourQueued` events, in order.
fn queued(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::HourQueued { hour, .. } => Some(hour.to_string()),
            _ => None,
        })
        .collect()
}

/// Rewrites the CSV at `path` with `edit` applied to its records (header excluded).
fn edit_csv(path: &Path, edit: impl FnOnce(&mut Vec<csv::StringRecord>)) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    let mut records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    edit(&mut records);
    let mut writer = csv::Writer::from_path(path).unwrap();
    writer.write_record(&header).unwrap();
    records
        .iter()
        .for_each(|record| writer.write_record(record).unwrap());
    writer.flush().unwrap();
}

/// Changes the `temp_c` of the `index`th row with one; returns that row's hour.
fn edit_temperature(path: &Path, index: usize) -> String {
    let header = csv::Reader::from_path(path)
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let (temp, time) = (column("temp_c"), column("time"));
    let mut hour = String::new();
    edit_csv(path, |records| {
        let record = records[index..]
            .iter_mut()
            .find(|r| !r[temp].is_empty())
            .expect("a row with a temperature");
        let value: f64 = record[temp].parse().unwrap();
        let mut cells: Vec<String> = record.iter().map(str::to_owned).collect();
        cells[temp] = format!("{:.1}", value + 3.5);
        hour = hour_of(&cells[time]);
        *record = csv::StringRecord::from(cells);
    });
    hour
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_value_streams_its_hour_again_after_a_restart() {
    let stack = Stack::start();
    let input = stack.generate(30, 1, 21);
    let state = stack.dir().join("streamer-state");
    let first = run_streamer(&stack, &input, &state, &[]);
    assert_eq!(first.len(), 24, "every hour: {first:?}");
    assert_stored_exactly(&stack, &read_csv(&input)).await;

    let edited = edit_temperature(&input, 300);
    let again = run_streamer(&stack, &input, &state, &[]);
    assert_eq!(again, [edited], "only the edited hour is streamed again");
    assert_stored_exactly(&stack, &read_csv(&input)).await;

    let nothing = run_streamer(&stack, &input, &state, &[]);
    assert_eq!(nothing, Vec::<String>::new(), "nothing changed since");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_row_streams_its_hour_again_and_is_gone_from_influxdb() {
    let stack = Stack::start();
    let input = stack.generate(30, 1, 22);
    let state = stack.dir().join("streamer-state");
    run_streamer(&stack, &input, &state, &[]);
    assert_stored_exactly(&stack, &read_csv(&input)).await;

    let removed = read_csv(&input).remove(200);
    edit_csv(&input, |records| {
        records.remove(200);
    });
    let again = run_streamer(&stack, &input, &state, &[]);
    assert_eq!(again, [hour_of(&removed["time"])]);
    assert_stored_exactly(&stack, &read_csv(&input)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edited_under_a_running_streamer_is_indexed_again() {
    let stack = Stack::start();
    let input = stack.generate(30, 1, 23);
    let state = stack.dir().join("streamer-state");
    let mut streamer = streamer(&stack, &input, &state, &["--hour-interval", "0.4"]);
    streamer.start().unwrap();
    // Edit an hour the streamer has confirmed, while later ones are still to come.
    let first_hour = hour_of(&read_csv(&input)[0]["time"]);
    let started = Instant::now();
    while !stack.events(&streamer).iter().any(
        |event| matches!(event, Event::HourConfirmed { hour, .. } if hour.to_string() == first_hour),
    ) {
        assert!(started.elapsed() < TIMEOUT, "{}", stack.log(&streamer));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let edited = edit_temperature(&input, 0);
    assert_eq!(edited, first_hour);
    let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
    let log = stack.log(&streamer);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let hours = queued(&stack.events(&streamer));
    assert_eq!(
        hours.iter().filter(|hour| **hour == edited).count(),
        2,
        "the edited hour is streamed again: {hours:?}"
    );
    assert_eq!(hours.len(), 25, "and no other: {hours:?}");
    assert!(log.contains("An input file changed"), "{log}");
    assert_stored_exactly(&stack, &read_csv(&input)).await;
}

/// Waits until the ingester has received at least `count` batches in all.
fn wait_for_batches(stack: &Stack, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let events =
            weathervane_harness::events::events_of(&stack.log_path(Role::Ingester)).unwrap();
        let received = events
            .iter()
            .filter(|r| matches!(r.event, Event::BatchReceived { .. }))
            .count();
        if received >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {received} batches received"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_size_changed_while_influxdb_hangs_credits_no_old_batch_to_a_new_slot() {
    let mut stack = Stack::start();
    let input = stack.generate(30, 1, 27);
    let state = stack.dir().join("streamer-state");
    // The first streamer's batches of 7 rows wait in the ingester: InfluxDB hangs.
    stack.influx.pause().unwrap();
    let mut first = streamer(&stack, &input, &state, &["--batch-size", "7"]);
    first.start().unwrap();
    tokio::task::block_in_place(|| wait_for_batches(&stack, 8));
    first.stop();
    // Restarted with batches of 11 while InfluxDB still hangs, then InfluxDB comes back
    // with both layouts queued.
    let mut second = streamer(&stack, &input, &state, &["--batch-size", "11"]);
    second.start().unwrap();
    tokio::task::block_in_place(|| {
        std::thread::sleep(Duration::from_secs(2));
        stack.influx.resume().unwrap();
        let status = second.wait_timeout(TIMEOUT).unwrap();
        let tail = |log: String| -> String {
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            lines[lines.len().saturating_sub(12)..].join("\n")
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "the second streamer did not finish: {status:?}\nstreamer:\n{}\ningester:\n{}\nprocessor:\n{}",
            tail(stack.log(&second)),
            tail(stack.role_log(Role::Ingester)),
            tail(stack.role_log(Role::Processor)),
        );
    });
    assert_stored_exactly(&stack, &read_csv(&input)).await;
}
