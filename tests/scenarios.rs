//! Every outage scenario in `exps/`, three runs in a row, and ten random schedules with
//! fixed seeds, each through `weathervane_lab::replay::run` on its own private servers. A
//! run passes only if InfluxDB ends up with exactly the input rows and correct reports for
//! every hour, the API answers correctly (and 503 during an InfluxDB outage), and the
//! pipeline recovers in time.

use std::path::Path;

use weathervane_lab::replay::{self, ReplayArgs};

fn replay(args: &[&str]) {
    let args = ReplayArgs::from_args(args).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let verdict = runtime
        .block_on(replay::run(args))
        .unwrap_or_else(|error| panic!("replay could not run: {error:#}"));
    assert!(verdict.passed(), "{verdict}");
    assert!(
        verdict.stored.rows_expected == verdict.stored.rows_stored
            && verdict.stored.rows_expected != 0,
        "{verdict}"
    );
}

fn scenario(name: &str) -> String {
    format!("{}/exps/{name}.csv", env!("CARGO_MANIFEST_DIR"))
}

fn three_runs(name: &str) {
    for _ in 0..3 {
        replay(&[&scenario(name)]);
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
