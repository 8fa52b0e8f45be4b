//! The container stack as users run it: docker-compose.yml and the Dockerfile, with only
//! the images swapped for ones built without a registry (scripts/docker-base makes the
//! Debian base with redis-server and influxd; the Dockerfile's `prebuilt` target wraps
//! the host-built binary in it).
//!
//! The stack runs as users get it: secure by default, with the credentials its one-shot
//! services generate, Redis's ACL file and InfluxDB's auth on. The sample day streams
//! through it while the Redis container is killed in the middle of an hour and the
//! InfluxDB container while the ingester writes; once both are back, InfluxDB holds
//! exactly the input and the right reports (`weathervane verify`, logged in as the
//! read-only user), the API answers `/avg` with the figures computed here from the CSV,
//! logins are required and privileges hold, reads through the load balancer in front of
//! the three api replicas all answer 200 and correctly while one replica and InfluxDB
//! are killed, the streamer's published upload port refuses an upload without the
//! generated token and takes one with it (CORS allowing the api's origin), no password
//! is in a log or a container's
//! configuration, `up` again keeps the credentials, a restarted streamer finds its state
//! on its volume, and `down -v` leaves no container, network or volume of the project
//! behind. A second test runs `weathervane replay --compose` on one scenario.
//!
//! Without a Docker engine the tests say so and pass, unless `CI` is set: then they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use weathervane_e2e::{Expected, METRICS, api_get, close, http_client, read_csv};
use weathervane_harness::compose::{ComposeProject, Container};
use weathervane_harness::events::{Event, events_in};

const BASE_IMAGE: &str = "weathervane/debian-base:bookworm";
const IMAGE: &str = "weathervane/weathervane:test";
/// The longest wait for one stage of a test (stack up, a pipeline point, recovery).
const STAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// One stack at a time: two on a 2-core machine would only slow each other down.
static ONE_STACK: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `eprintln!` past the test harness's capture, so that CI logs show skips and timings.
macro_rules! note {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr(), $($arg)*);
    };
}

/// Whether to run: a Docker engine answers. Without one, skip with a message, or fail
/// when `CI` is set.
fn docker_ready() -> bool {
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no Docker engine answers `docker info`"
        );
        note!("SKIPPED: no Docker engine answers `docker info` (with CI set this fails)");
    }
    answers
}

/// Runs a command to its end and returns its stdout; panics with its output otherwise.
fn run(command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(
        status.success(),
        "{command:?}: {status}\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// The base image (built by scripts/docker-base unless it exists) and the weathervane
/// image around the host-built binary, once per test run.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        run(&mut Command::new(repo().join("scripts/docker-base")));
        note!(
            "base image ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let started = Instant::now();
        let binary = product_binary();
        note!(
            "product binary built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(&binary, context.path().join("weathervane")).unwrap();
        let previous = Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", IMAGE])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let dockerfile = repo().join("Dockerfile");
        let built = docker(&[
            "build",
            "-q",
            "-f",
            dockerfile.to_str().unwrap(),
            "--target",
            "prebuilt",
            "--build-arg",
            "WEATHERVANE_BINARY=weathervane",
            "--build-arg",
            &format!("RUNTIME_IMAGE={BASE_IMAGE}"),
            "-t",
            IMAGE,
            context.path().to_str().unwrap(),
        ]);
        // The image this one replaces would otherwise stay behind, untagged.
        if let Some(previous) = previous.filter(|p| !built.contains(p.as_str())) {
            let _ = Command::new("docker")
                .args(["rmi", &previous])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        note!(
            "weathervane image built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
}

/// The binary the image ships: the product without the lab tools, as the Dockerfile
/// builds it, in a target dir of its own so the default (lab) binary stays as it is.
fn product_binary() -> PathBuf {
    let target = repo().join("target/product");
    run(Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "-p",
            "weathervane",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(repo()));
    target.join("debug/weathervane")
}

/// The variables that choose the images: the ones built here, as no registry answers.
fn image_env() -> Vec<(&'static str, String)> {
    vec![
        ("WEATHERVANE_IMAGE", IMAGE.to_owned()),
        ("REDIS_IMAGE", BASE_IMAGE.to_owned()),
        ("INFLUXDB_IMAGE", BASE_IMAGE.to_owned()),
        // Debian's haproxy, in the same base image (scripts/docker-base).
        ("HAPROXY_IMAGE", BASE_IMAGE.to_owned()),
    ]
}

/// A compose project of this test run (`down -v` on drop, so a failing test cleans up).
/// What the stack streams comes from the compose file's defaults, as for a user.
fn project(suffix: &str, env: Vec<(&'static str, String)>) -> ComposeProject {
    let project = ComposeProject::new(
        format!("wvtest-{}-{suffix}", std::process::id()),
        vec![repo().join("docker-compose.yml")],
    )
    .unwrap()
    .current_dir(repo())
    .env_remove("WEATHERVANE_DATA")
    .env_remove("WEATHERVANE_INPUT")
    .env_remove("COMPOSE_FILE")
    .env_remove("COMPOSE_PROJECT_NAME");
    env.into_iter()
        .fold(project, |project, (key, value)| project.env(key, value))
}

/// The files of the volume `secrets`: every password the stack runs with (the
/// credentials service makes them; deploy/compose/make-credentials).
const SECRET_FILES: [&str; 9] = [
    "redis-streamer",
    "redis-ingester",
    "redis-processor",
    "redis-api",
    "redis-healthcheck",
    "influxdb-admin",
    "influxdb-writer",
    "influxdb-reader",
    "upload-token",
];

/// The generated passwords by file name, read from the project's volume `secrets` in a
/// throwaway container (the volume is root's); panics unless each file is there and holds
/// a password.
fn generated_secrets(project: &ComposeProject) -> BTreeMap<&'static str, String> {
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.name()),
        "--filter",
        "label=com.docker.compose.volume=secrets",
    ]);
    let volume = volumes.trim();
    assert!(
        !volume.is_empty() && !volume.contains('\n'),
        "the volume `secrets`: {volumes:?}"
    );
    // One line per file: its name, a space, its content (64 hex digits, no newline).
    let listing = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/secrets:ro"),
        BASE_IMAGE,
        "sh",
        "-c",
        &format!(
            "for f in {}; do printf '%s %s\\n' \"$f\" \"$(cat /secrets/$f)\"; done",
            SECRET_FILES.join(" ")
        ),
    ]);
    let secrets: BTreeMap<&str, String> = SECRET_FILES
        .iter()
        .zip(listing.lines())
        .map(|(name, line)| {
            let value = line
                .strip_prefix(&format!("{name} "))
                .unwrap_or_else(|| panic!("{name}: no such line in the listing"));
            (*name, value.to_owned())
        })
        .collect();
    for (name, value) in &secrets {
        // Not the value: this message may end up in a CI log.
        assert!(
            value.len() >= 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}: {} characters, not a generated password",
            value.len()
        );
    }
    assert_eq!(secrets.len(), SECRET_FILES.len(), "generated secrets");
    let distinct: BTreeSet<&String> = secrets.values().collect();
    assert_eq!(distinct.len(), secrets.len(), "every password is its own");
    secrets
}

/// Panics (naming the password's file, never the password) if `text` holds one of
/// `secrets`.
fn assert_no_secret_in(what: &str, text: &str, secrets: &BTreeMap<&str, String>) {
    for (name, value) in secrets {
        assert!(
            !text.contains(value.as_str()),
            "the password {name} is in {what}"
        );
    }
}

/// Logins are required and each login may only what it needs: InfluxDB answers no query
/// without one (401) and no write from the reader (403); Redis takes no PUBLISH before
/// AUTH (NOAUTH) nor from the PING-only healthcheck user (NOPERM).
fn assert_auth_is_required(
    runtime: &tokio::runtime::Runtime,
    influx_port: u16,
    redis: &Container,
    secrets: &BTreeMap<&str, String>,
) {
    let influx = format!("http://127.0.0.1:{influx_port}");
    let (anonymous, reader_write) = runtime.block_on(async {
        let http = http_client();
        let anonymous = http
            .get(format!("{influx}/query"))
            .query(&[("q", "SHOW DATABASES")])
            .send()
            .await
            .unwrap()
            .status();
        let reader_write = http
            .post(format!("{influx}/write"))
            .query(&[("db", "weather")])
            .basic_auth("reader", Some(&secrets["influxdb-reader"]))
            .body("intruder value=1")
            .send()
            .await
            .unwrap()
            .status();
        (anonymous, reader_write)
    });
    assert_eq!(anonymous.as_u16(), 401, "a query without a login");
    assert_eq!(reader_write.as_u16(), 403, "a write by the read-only user");

    // `|| true`: redis-cli's exit status on an error reply differs between versions.
    let publish = "redis-cli PUBLISH weather_channel:reported:2023-09-19T05 x 2>&1 || true";
    let anonymous = redis.exec(&["sh", "-c", publish]).unwrap();
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
    let healthcheck = redis
        .exec(&[
            "sh",
            "-c",
            &format!(
                "REDISCLI_AUTH=\"$(cat /run/secrets/redis-healthcheck)\" {}",
                publish.replace("redis-cli", "redis-cli --user healthcheck")
            ),
        ])
        .unwrap();
    assert!(healthcheck.contains("NOPERM"), "{healthcheck}");
}

/// No password in any container's log or configuration (its environment, command and
/// mounts as `docker inspect` shows them), the one-shot services' included.
/// The streamer's upload server on its published port: an upload without the generated
/// token is refused (401); with it, one is created (in the inbox volume's staging
/// directory) and terminated; a browser on the api's published origin may call it (CORS).
async fn assert_uploads_need_the_token(port: u16, api_origin: &str, token: &str) {
    let client = http_client();
    let base = format!("http://127.0.0.1:{port}/uploads");
    let create = |token: Option<&str>| {
        let request = client
            .post(&base)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "10");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let refused = create(None).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let created = create(Some(token)).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let deleted = client
        .delete(format!("http://127.0.0.1:{port}{location}"))
        .header("Tus-Resumable", "1.0.0")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let preflight = client
        .request(reqwest::Method::OPTIONS, &base)
        .header("Origin", api_origin)
        .header("Access-Control-Request-Method", "PATCH")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        api_origin,
        "the dashboard's origin may upload"
    );
}

fn assert_no_secret_shown(project: &ComposeProject, secrets: &BTreeMap<&str, String>) {
    let logs = project.run(&["logs", "--no-color"]).unwrap();
    assert!(
        logs.contains("make-credentials:") && logs.contains("make-influxdb-users:"),
        "the one-shot services' logs are missing:\n{logs}"
    );
    assert_no_secret_in("the logs", &logs, secrets);
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", project.name()),
    ]);
    // Two one-shot services, the two servers, the four roles (the api as three replicas)
    // and the load balancer.
    assert_eq!(ids.lines().count(), 11, "the project's containers: {ids}");
    let mut inspect = vec!["inspect"];
    inspect.extend(ids.lines());
    assert_no_secret_in("`docker inspect`", &docker(&inspect), secrets);
}

/// The typed events a container has logged so far.
fn events(container: &Container) -> Vec<Event> {
    events_in(&container.logs().unwrap())
        .unwrap()
        .into_iter()
        .map(|record| record.event)
        .collect()
}

/// Polls `condition` on a container's events until it holds; panics with the log after
/// STAGE_TIMEOUT.
fn wait_for_events(container: &Container, what: &str, condition: impl Fn(&[Event]) -> bool) {
    let deadline = Instant::now() + STAGE_TIMEOUT;
    loop {
        if condition(&events(container)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; log:\n{}",
            container.logs().unwrap()
        );
        sleep(Duration::from_millis(50));
    }
}

/// The hours of the events `hour_of` picks (`HourStored`, `HourConfirmed`, ...).
fn hours_with(events: &[Event], hour_of: impl Fn(&Event) -> Option<String>) -> BTreeSet<String> {
    events.iter().filter_map(hour_of).collect()
}

fn stored(event: &Event) -> Option<String> {
    match event {
        Event::HourStored { hour, .. } => Some(hour.to_string()),
        _ => None,
    }
}

fn confirmed(event: &Event) -> Option<String> {
    match event {
        Event::HourConfirmed { hour, .. } => Some(hour.to_string()),
        _ => None,
    }
}

#[test]
fn the_compose_stack_loses_nothing_when_redis_and_influxdb_are_killed() {
    if !docker_ready() {
        return;
    }
    let _one = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    images();
    let sample = repo().join("data/sample.csv");
    let rows = read_csv(&sample);
    let expected = Expected::from_rows(&rows);
    let hours: BTreeSet<String> = expected.hours.keys().cloned().collect();
    assert_eq!((rows.len(), hours.len()), (7200, 24), "the sample day");

    let (api_port, influx_port, upload_port) = (
        weathervane_harness::free_port().unwrap(),
        weathervane_harness::free_port().unwrap(),
        weathervane_harness::free_port().unwrap(),
    );
    let mut env = image_env();
    // 300 stations in batches of 50: six batches an hour, 0.1 s apart, so that the
    // faults land inside an hour while the day still streams.
    env.extend([
        ("API_PORT", api_port.to_string()),
        ("INFLUXDB_PORT", influx_port.to_string()),
        ("UPLOAD_PORT", upload_port.to_string()),
        ("WEATHERVANE_HOUR_INTERVAL", "0.3".to_owned()),
        ("WEATHERVANE_BATCH_SIZE", "50".to_owned()),
        ("WEATHERVANE_BATCH_INTERVAL", "0.1".to_owned()),
        ("WEATHERVANE_EVENTS", "stderr".to_owned()),
    ]);
    let project = project("faults", env);
    let started = Instant::now();
    project.run(&["up", "-d"]).unwrap();
    note!("stack up in {:.1} s", started.elapsed().as_secs_f64());
    let [redis, influxdb, ingester, streamer] =
        ["redis", "influxdb", "ingester", "streamer"].map(|s| project.container(s).unwrap());

    // Redis killed in the middle of hour 03 (batches 0-2 of 0-5 in), back 2 s later.
    let received = |hour: &'static str, batch: u32| {
        let hour = format!("2023-09-19T{hour}");
        move |events: &[Event]| {
            events.iter().any(|event| {
                matches!(event, Event::BatchReceived { hour: h, batch: b, .. }
                    if h.to_string() == hour && *b == batch)
            })
        }
    };
    wait_for_events(&ingester, "batch 2 of hour 03", received("03", 2));
    redis.kill().unwrap();
    let stored_hours = hours_with(&events(&ingester), stored);
    assert!(
        stored_hours.len() < 24,
        "Redis died after the whole day was stored"
    );
    sleep(Duration::from_secs(2));
    redis.start().unwrap();
    redis.wait_healthy(STAGE_TIMEOUT).unwrap();

    // InfluxDB killed while the ingester writes hour 12 (batches 0-1 of 0-5 in), back
    // 3 s later.
    wait_for_events(&ingester, "batch 1 of hour 12", received("12", 1));
    influxdb.kill().unwrap();
    let stored_hours = hours_with(&events(&ingester), stored);
    assert!(
        !stored_hours.contains("2023-09-19T12"),
        "InfluxDB died after hour 12 was stored: {stored_hours:?}"
    );
    sleep(Duration::from_secs(3));
    influxdb.start().unwrap();
    influxdb.wait_healthy(STAGE_TIMEOUT).unwrap();
    let last_fault = Instant::now();

    // The streamer has every hour confirmed as reported.
    wait_for_events(&streamer, "every hour confirmed", |events| {
        hours_with(events, confirmed).len() == hours.len()
    });
    note!(
        "every hour reported {:.1} s after InfluxDB was back ({:.1} s since up)",
        last_fault.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Every role's healthcheck (its /readyz, through `weathervane probe`: the image has
    // no curl) passes once its dependencies are back, and its /metrics counts its work.
    for (role, port) in [
        ("streamer", 9101),
        ("ingester", 9102),
        ("processor", 9103),
        ("api", 9104),
        ("api2", 9104),
        ("api3", 9104),
    ] {
        let container = project.container(role).unwrap();
        let role = role.trim_end_matches(['2', '3']);
        container.wait_healthy(STAGE_TIMEOUT).unwrap();
        let metrics = container
            .exec(&[
                "weathervane",
                "probe",
                &format!("http://127.0.0.1:{port}/metrics"),
            ])
            .unwrap();
        let outage = format!("weathervane_{role}_outage{{target=\"influxdb\"}}");
        assert!(
            metrics.contains(&format!("weathervane_{role}_")),
            "{role}: {metrics}"
        );
        if role != "streamer" {
            assert!(
                metrics.contains(&format!("{outage} 0")),
                "{role}: {metrics}"
            );
        }
    }

    let secrets = generated_secrets(&project);
    // As the README says to: the read-only user, its password from the volume, in a file
    // (a variable would be in the command that a failing `run` shows).
    let password_dir = tempfile::tempdir().unwrap();
    let password_file = password_dir.path().join("influxdb-reader");
    std::fs::write(&password_file, &secrets["influxdb-reader"]).unwrap();
    let verify = run(
        Command::new(weathervane_harness::weathervane_binary().unwrap())
            .args(["verify", "--input"])
            .arg(&sample)
            .env("INFLUXDB_URL", format!("http://127.0.0.1:{influx_port}"))
            .env("INFLUXDB_DB", "weather")
            .env("INFLUXDB_USER", "reader")
            .env("INFLUXDB_PASSWORD_FILE", &password_file)
            .env_remove("INFLUXDB_PASSWORD"),
    );
    assert!(
        verify.contains("7200 expected, 7200 stored") && verify.contains("24/24; PASS"),
        "{verify}"
    );

    // The API, through its published port, against the figures from the CSV.
    let want = &expected.hours["2023-09-19T05"]["CA"];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = format!("127.0.0.1:{api_port}");
    let (status, body) = runtime.block_on(api_get(&addr, "/avg?state=CA&hour=05"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["date"].as_str(), body["hour"].as_str()),
        (Some("2023-09-19"), Some("05"))
    );
    assert_eq!(body["count"].as_u64(), Some(want.count), "{body}");
    for (metric, mean) in METRICS.iter().zip(want.means) {
        let got = body[format!("avg_{metric}")].as_f64().unwrap();
        assert!(close(got, mean), "avg_{metric}: {got} != {mean}");
    }

    assert_auth_is_required(&runtime, influx_port, &redis, &secrets);
    runtime.block_on(assert_uploads_need_the_token(
        upload_port,
        &format!("http://127.0.0.1:{api_port}"),
        &secrets["upload-token"],
    ));

    // The herd: one api replica and InfluxDB killed, every hour read through the load
    // balancer for 10 s: every answer 200 and correct (the replicas left answer from
    // memory; HAProxy retries a connection to the dead one elsewhere, then drops it).
    let api2 = project.container("api2").unwrap();
    api2.kill().unwrap();
    influxdb.kill().unwrap();
    let killed = Instant::now();
    let mut answered = 0;
    while killed.elapsed() < Duration::from_secs(10) {
        for (hour, states) in &expected.hours {
            let (date, hh) = (&hour[..10], &hour[11..13]);
            let path = format!("/state_extremes?hour={hh}&date={date}");
            let (status, body) = runtime.block_on(api_get(&addr, &path));
            assert_eq!(status, 200, "{path} with api2 and InfluxDB killed: {body}");
            for (i, (max, min)) in expected.state_extremes(hour).iter().enumerate() {
                let metric = METRICS[i];
                assert_eq!(body["max"][metric]["state"], max.holder.as_str(), "{body}");
                assert_eq!(body["min"][metric]["state"], min.holder.as_str(), "{body}");
            }
            let (state, want) = states.iter().next().unwrap();
            let path = format!("/avg?state={state}&hour={hh}&date={date}");
            let (status, body) = runtime.block_on(api_get(&addr, &path));
            assert_eq!(status, 200, "{path} with api2 and InfluxDB killed: {body}");
            assert_eq!(body["count"].as_u64(), Some(want.count), "{body}");
            for (metric, mean) in METRICS.iter().zip(want.means) {
                let got = body[format!("avg_{metric}")].as_f64().unwrap();
                assert!(close(got, mean), "{path} avg_{metric}: {got} != {mean}");
            }
            answered += 2;
        }
    }
    note!(
        "{answered} answers through the load balancer, all 200 and correct, with api2 and InfluxDB killed"
    );
    influxdb.start().unwrap();
    api2.start().unwrap();
    influxdb.wait_healthy(STAGE_TIMEOUT).unwrap();
    api2.wait_healthy(STAGE_TIMEOUT).unwrap();

    // `up` again runs the one-shot services again: they keep every password, and the
    // roles, untouched, still log in.
    let started_again = Instant::now();
    project.run(&["up", "-d"]).unwrap();
    // Not assert_eq!: its message would show the passwords.
    assert!(
        generated_secrets(&project) == secrets,
        "`up` again changed the passwords"
    );
    // Compose may recreate the load balancer; its checks find the replicas within
    // seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = runtime.block_on(api_get(&addr, "/avg?state=CA&hour=05"));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after `up` again: {status} {body}"
        );
        sleep(Duration::from_millis(200));
    }
    note!("up again in {:.1} s", started_again.elapsed().as_secs_f64());
    assert_no_secret_shown(&project, &secrets);

    // A restarted streamer finds its record of reported hours on its volume.
    project.run(&["restart", "-t", "2", "streamer"]).unwrap();
    let indexed = |events: &[Event]| -> Vec<usize> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::InputIndexed {
                    already_confirmed, ..
                } => Some(*already_confirmed),
                _ => None,
            })
            .collect()
    };
    wait_for_events(&streamer, "the restarted streamer's index", |events| {
        indexed(events).len() == 2
    });
    assert_eq!(
        indexed(&events(&streamer))[1],
        24,
        "hours the restarted streamer skips"
    );

    let started = Instant::now();
    project.down().unwrap();
    assert_eq!(
        project.leftovers().unwrap(),
        Vec::<String>::new(),
        "left after down -v"
    );
    note!("stack down in {:.1} s", started.elapsed().as_secs_f64());
}

/// Waits for a child up to `timeout`; kills it (it is ours) and panics past that.
fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {timeout:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn replay_compose_kills_and_restarts_a_container_and_checks_the_guarantee() {
    if !docker_ready() {
        return;
    }
    let _one = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    images();
    // Replay picks its own ports; this project only names what it must leave behind (and
    // takes it down if replay itself cannot).
    let project = project("replay", image_env());
    let started = Instant::now();
    let child = Command::new(weathervane_harness::weathervane_binary().unwrap())
        .args(["replay", "--compose", "--project", project.name()])
        .arg("--compose-file")
        .arg(repo().join("docker-compose.yml"))
        .arg(repo().join("exps/kill_streamer.csv"))
        .current_dir(repo())
        .envs(image_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("verdict       PASS"),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("kill    streamer"), "{stdout}");
    assert_eq!(
        project.leftovers().unwrap(),
        Vec::<String>::new(),
        "left after replay"
    );
    note!(
        "replay --compose in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
