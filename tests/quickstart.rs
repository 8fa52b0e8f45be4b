//! `scripts/quickstart` itself, as the README has a new user run it: on free loopback
//! ports (REDIS_URL, INFLUXDB_URL, API_ADDR), with the debug binary (WEATHERVANE_BIN)
//! instead of a release build. Paced like a live feed it returns after the first hour
//! with example queries that answer what the input says; `stop` ends every process it
//! started; and when no hour is ever reported it says so and stops what it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weathervane_e2e::{Expected, METRICS, api_get, close, read_csv};
use weathervane_harness::{InfluxServer, free_port, weathervane_binary};

/// One run of the script in its own state directory; `stop` is run on drop, so a failed
/// assertion leaves nothing running.
struct Quickstart {
    dir: tempfile::TempDir,
    redis_port: u16,
    influx_port: u16,
    influx_rpc_port: u16,
    admin_port: u16,
    api_addr: String,
}

impl Quickstart {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            redis_port: free_port().unwrap(),
            influx_port: free_port().unwrap(),
            influx_rpc_port: free_port().unwrap(),
            admin_port: free_port().unwrap(),
            api_addr: format!("127.0.0.1:{}", free_port().unwrap()),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .args(args)
            .env("STATE_DIR", self.state_dir())
            .env("WEATHERVANE_BIN", weathervane_binary().unwrap())
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis_port),
            )
            .env(
                "INFLUXDB_URL",
                format!("http://127.0.0.1:{}", self.influx_port),
            )
            .env("INFLUXDB_RPC_PORT", self.influx_rpc_port.to_string())
            .env("API_ADDR", &self.api_addr)
            .env(
                "WEATHERVANE_ADMIN_ADDR",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .env_remove("HOUR_INTERVAL")
            .env_remove("INPUT");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    /// The PIDs the script recorded, by name.
    fn pids(&self) -> Vec<(String, u32)> {
        ["weathervane", "influxd", "redis"]
            .into_iter()
            .filter_map(|name| {
                let text = std::fs::read_to_string(self.state_dir().join(format!("{name}.pid")));
                text.ok()
                    .map(|pid| (name.to_owned(), pid.trim().parse().unwrap()))
            })
            .collect()
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.run(&["stop"], &[]);
    }
}

fn running(pid: u32) -> bool {
    // A zombie has exited: only its parent (gone, for these daemons) has yet to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// Every process in this machine whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
                && running(*pid)
        })
        .collect()
}

fn generate(dir: &Path, stations: u32, hours: u32, seed: u64) -> PathBuf {
    let out = dir.join("input.csv");
    let status = Command::new(weathervane_binary().unwrap())
        .args(["gen", "--stations", &stations.to_string(), "--hours"])
        .arg(hours.to_string())
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// `HOUR_INTERVAL=60 scripts/quickstart` used to wait for hour 05, five minutes away, and
/// fail; now it returns once the first hour is reported, whichever hour that is.
#[tokio::test(flavor = "multi_thread")]
async fn paced_like_a_live_feed_it_returns_after_the_first_hour_and_stop_ends_everything() {
    let quickstart = Quickstart::new();
    let input = generate(quickstart.dir.path(), 40, 3, 12);
    let rows = read_csv(&input);
    let expected = Expected::from_rows(&rows);
    let first_hour = expected.hours.keys().next().unwrap().clone();

    let output = quickstart.run(
        &[],
        &[("HOUR_INTERVAL", "60"), ("INPUT", input.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );

    // It started all three, and says where the API is and what to ask it.
    let pids = quickstart.pids();
    let names: Vec<&str> = pids.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["weathervane", "influxd", "redis"], "{stdout}");
    for (name, pid) in &pids {
        assert!(running(*pid), "{name} ({pid}) is not running");
    }
    assert!(
        stdout.contains(&format!("API at http://{}", quickstart.api_addr)),
        "{stdout}"
    );
    let avg_line = stdout
        .lines()
        .find(|line| line.contains("/avg?"))
        .unwrap_or_else(|| panic!("no /avg example in:\n{stdout}"));
    let path = avg_line
        .split(&quickstart.api_addr)
        .nth(1)
        .unwrap()
        .trim_end_matches('\'');
    let hh = &first_hour[11..13];
    assert!(path.ends_with(&format!("&hour={hh}")), "{avg_line}");

    // The example answers what the input says, for a state of the input's first hour.
    let state = path
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let want = &expected.hours[&first_hour][state];
    let (status, body) = api_get(&quickstart.api_addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(body["count"].as_u64(), Some(want.count), "{body}");
    for (i, metric) in METRICS.iter().enumerate() {
        let served = body[format!("avg_{metric}")].as_f64().unwrap();
        assert!(close(served, want.means[i]), "{metric}: {body}");
    }

    let stop = quickstart.run(&["stop"], &[]);
    assert!(stop.status.success());
    for (name, pid) in pids {
        assert!(wait_gone(pid), "{name} ({pid}) still runs after stop");
    }
    assert!(quickstart.pids().is_empty(), "stop leaves no PID file");
}

/// When no hour is ever reported (here: every row is rejected), the script says what did
/// not come up and stops what it started, instead of leaving the pipeline running.
#[tokio::test(flavor = "multi_thread")]
async fn when_no_hour_comes_it_says_so_and_stops_what_it_started() {
    // Servers that already answer are used, not started: the script starts only the
    // pipeline, so every process it leaves would be a weathervane with our state dir.
    let redis = weathervane_harness::RedisServer::start().unwrap();
    let influx = InfluxServer::start().unwrap();
    let mut quickstart = Quickstart::new();
    quickstart.redis_port = redis.port();
    quickstart.influx_port = influx.port();
    let input = quickstart.dir.path().join("bad.csv");
    std::fs::write(
        &input,
        "zip_code,state,time,temp_c,pressure_mb,humidity,precip_mm\n\
         90001,California,2023-09-19 05:00,20,1010,50,0\n",
    )
    .unwrap();

    let output = quickstart.run(
        &[],
        &[("INPUT", input.to_str().unwrap()), ("WAIT_SECONDS", "8")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the first reported hour did not come up within 8 s"),
        "{stderr}"
    );
    assert!(stderr.contains("Stopping what was started"), "{stderr}");
    assert!(quickstart.pids().is_empty(), "no PID file is left");
    let state_dir = quickstart.state_dir();
    let needle = state_dir.to_str().unwrap();
    let mut left = processes_mentioning(needle);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_mentioning(needle);
    }
    assert!(left.is_empty(), "still running: {left:?}");
    // The rejected row was reported, so the user can see why nothing came.
    let rejects = std::fs::read_to_string(state_dir.join("rejects.csv")).unwrap();
    assert!(rejects.contains("California"), "{rejects}");
}
