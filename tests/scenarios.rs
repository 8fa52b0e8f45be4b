//! Every outage scenario in `exps/`, three runs in a row, and ten random schedules with
//! fixed seeds, each through `weathervane replay` on its own private servers. A run
//! passes only if InfluxDB ends up with exactly the input rows and correct reports for
//! every hour, the API answers correctly (and 503 during an InfluxDB outage), and the
//! pipeline recovers in time.

use std::path::Path;
use std::process::Command;

fn replay(args: &[&str]) {
    let binary = weathervane_harness::weathervane_binary().unwrap();
    let output = Command::new(binary)
        .arg("replay")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "replay {args:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("verdict       PASS"), "{stdout}");
    let rows = stdout.lines().find(|l| l.starts_with("rows ")).unwrap();
    let numbers: Vec<&str> = rows
        .split_whitespace()
        .filter(|w| w.parse::<u64>().is_ok())
        .collect();
    assert!(
        numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] != "0",
        "{rows}"
    );
}

fn three_runs(scenario: &str) {
    for _ in 0..3 {
        replay(&[&format!("exps/{scenario}.csv")]);
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                three_runs(stringify!($name));
            }
        )*
    };
}

scenarios!(
    exp1,
    exp1_between_hours,
    exp2,
    exp4_requests,
    exp5_before_notify,
    exp6_several_hours,
    exp7_influx_ingester,
    exp8_influx_processor,
    exp9_influx_api,
    whole_run,
    kill_streamer,
    kill_ingester,
    kill_processor,
    kill_api,
    hung_redis,
    hung_influxdb,
    both_down,
    graceful_restarts,
);

#[test]
fn every_scenario_file_has_a_test() {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("exps"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    files.sort();
    let mut tested: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(files, tested);
}

#[test]
fn random_schedules_seeds_1_to_5() {
    for seed in 1..=5 {
        replay(&["--seed", &seed.to_string(), "--faults", "4"]);
    }
}

#[test]
fn random_schedules_seeds_6_to_10() {
    for seed in 6..=10 {
        replay(&["--seed", &seed.to_string(), "--faults", "4"]);
    }
}
