//! Access control end to end, against a real redis-server 7.0 and influxd 1.6.7: Redis
//! with the ACL file `deploy/redis/make-acl` writes from the shipped template, InfluxDB
//! with authentication on, and every role logged in as its own user (the api as
//! InfluxDB's read-only user and Redis's subscribe-only `api`). The pipeline stores and reports exactly without a single
//! refusal; then Redis refuses every PUBLISH and PSUBSCRIBE the ACL does not grant, to
//! nobody, to a user the file does not have and to each role, and InfluxDB refuses the
//! read-only user's writes and every non-admin's administration.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use redis::IntoConnectionInfo;
use weathervane_e2e::{
    Expected, Stack, api_get, assert_averages_served, assert_stored_exactly, http_client,
};
use weathervane_harness::{InfluxUsers, LocalStack, Login, RedisAcl, Role};

const TIMEOUT: Duration = Duration::from_secs(180);
/// One Redis or InfluxDB request of this test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const HOUR: &str = "2023-09-19T05";

/// The Redis users of the shipped template, with passwords a shell or a parser could
/// mangle (spaces, quotes, `$`, a backslash): each must arrive byte for byte.
fn redis_logins() -> [Login; 5] {
    [
        Login::new("streamer", r#"streamer pw 'a' "b" $HOME \n"#),
        Login::new("ingester", "ingester-$(id)-pw"),
        Login::new("processor", "processor`pw`;"),
        Login::new("healthcheck", "healthcheck pw"),
        Login::new("api", "api pw #1"),
    ]
}

/// The api's Redis user (the reports it subscribes to; export jobs: a stream, hashes and a
/// sorted set): the last of [`redis_logins`].
fn api_redis_login() -> Login {
    let [.., api] = redis_logins();
    api
}

fn influx_users() -> InfluxUsers {
    InfluxUsers {
        admin: Login::new("admin", "admin pw 'x'"),
        writer: Login::new("writer", r#"writer pw "y" \"#),
        reader: Login::new("reader", "reader pw"),
    }
}

/// A user that may do anything, which the test adds to the made file only to read the
/// ACL LOG; no role logs in as it.
fn test_admin() -> Login {
    Login::new("test-admin", "test-admin-pw")
}

/// Runs the shipped `make-acl` with POSIX `sh`: the streamer's password from a file (with
/// a trailing newline, which must be dropped as the roles drop it), the others' from
/// variables. Returns the ACL file (with [`test_admin`] appended) and the streamer's
/// password file.
fn make_acl(dir: &Path) -> (PathBuf, PathBuf) {
    let [streamer, ingester, processor, healthcheck, api] = redis_logins();
    let streamer_file = dir.join("streamer-password");
    std::fs::write(&streamer_file, format!("{}\n", streamer.password)).unwrap();
    let acl = dir.join("users.acl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/redis/make-acl");
    let output = Command::new("sh")
        .arg(&script)
        .arg(&acl)
        .env("STREAMER_PASSWORD_FILE", &streamer_file)
        .env("INGESTER_PASSWORD", &ingester.password)
        .env("PROCESSOR_PASSWORD", &processor.password)
        .env("HEALTHCHECK_PASSWORD", &healthcheck.password)
        .env("API_PASSWORD", &api.password)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "make-acl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made = std::fs::read_to_string(&acl).unwrap();
    for login in redis_logins().into_iter().chain([api_redis_login()]) {
        assert!(
            !made.contains(&login.password),
            "the ACL file holds {}'s password in clear",
            login.user
        );
    }
    let admin = test_admin();
    let with_admin = format!(
        "{made}user {} on >{} ~* &* +@all\n",
        admin.user, admin.password
    );
    std::fs::write(&acl, with_admin).unwrap();
    (acl, streamer_file)
}

/// A stack with the made ACL file and InfluxDB's users, the ingester, processor and api
/// each logged in as its own user.
fn access_stack(dir: &Path) -> (Stack, PathBuf) {
    let (acl, streamer_password_file) = make_acl(dir);
    let [_, ingester, processor, healthcheck, _] = redis_logins();
    let users = influx_users();
    let (writer, reader) = (users.writer.clone(), users.reader.clone());
    let writer_too = writer.clone();
    let dir_for_exports = dir.join("exports");
    let local = LocalStack::builder()
        .redis_acl(RedisAcl {
            file: acl,
            probe: healthcheck,
        })
        .influx_auth(users)
        .env("RUST_LOG", "info")
        .role_with(Role::Ingester, move |process| {
            process
                .env("REDIS_USER", &ingester.user)
                .env("REDIS_PASSWORD", &ingester.password)
                .env("INFLUXDB_USER", &writer.user)
                .env("INFLUXDB_PASSWORD", &writer.password)
        })
        .role_with(Role::Processor, move |process| {
            process
                .env("REDIS_USER", &processor.user)
                .env("REDIS_PASSWORD", &processor.password)
                .env("INFLUXDB_USER", &writer_too.user)
                .env("INFLUXDB_PASSWORD", &writer_too.password)
        })
        .role_with(Role::Api, move |process| {
            let api = api_redis_login();
            process
                .env("REDIS_USER", &api.user)
                .env("REDIS_PASSWORD", &api.password)
                .env("API_EXPORT_DIR", dir_for_exports)
                .env("INFLUXDB_USER", &reader.user)
                .env("INFLUXDB_PASSWORD", &reader.password)
        })
        .start()
        .unwrap();
    (Stack::with(local), streamer_password_file)
}

/// A Redis client for the stack's server, logged in as `login` (or not at all).
fn redis_client(stack: &Stack, login: Option<&Login>) -> redis::Client {
    let mut info = stack.redis.url().into_connection_info().unwrap();
    if let Some(login) = login {
        let settings = info
            .redis_settings()
            .clone()
            .set_username(&login.user)
            .set_password(&login.password);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).unwrap()
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(REQUEST_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {REQUEST_TIMEOUT:?}"))
}

/// One channel of each kind the roles publish results on, in the order the `allowed`
/// arrays below use: reported, processor, announce, data.
fn channels() -> [String; 5] {
    [
        format!("weather_channel:reported:{HOUR}"),
        format!("weather_channel:processor:{HOUR}"),
        format!("weather_channel:announce:{HOUR}"),
        format!("weather_channel:data:0:{HOUR}"),
        format!("weather_channel:reports:{HOUR}"),
    ]
}

/// Publishes on each of [`channels`] as `login` and asserts which Redis refuses: `allowed`
/// in the order of [`channels`]; a refusal must be `refusal` (NOPERM, NOAUTH).
async fn assert_publishes(stack: &Stack, login: Option<&Login>, allowed: [bool; 5], refusal: &str) {
    let who = login.map_or("nobody".to_owned(), |l| l.user.clone());
    let client = redis_client(stack, login);
    let mut connection = bounded("connect", client.get_multiplexed_async_connection())
        .await
        .unwrap_or_else(|e| panic!("{who} could not connect: {e}"));
    for (channel, allowed) in channels().iter().zip(allowed) {
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg("access test");
        let publish = command.query_async::<i64>(&mut connection);
        match (bounded("PUBLISH", publish).await, allowed) {
            (Ok(_), true) => {}
            (Err(error), false) => assert_eq!(
                error.code(),
                Some(refusal),
                "{who} on {channel}: refused, but not with {refusal}: {error}"
            ),
            (Ok(_), false) => panic!("{who} may publish on {channel}, which the ACL forbids"),
            (Err(error), true) => {
                panic!("{who} was refused {channel}, which the ACL grants: {error}")
            }
        }
    }
}

/// The six patterns the roles PSUBSCRIBE to, and a catch-all.
const PATTERNS: [&str; 7] = [
    "weather_channel:data:*",
    "weather_channel:request:*",
    "weather_channel:processor:*",
    "weather_channel:announce:*",
    "weather_channel:reported:*",
    "weather_channel:reports:*",
    "weather_channel:*",
];

/// PSUBSCRIBEs to each of [`PATTERNS`] as `login` and asserts Redis accepts exactly
/// `allowed` and refuses the others with NOPERM.
async fn assert_subscribes(stack: &Stack, login: &Login, allowed: &[&str]) {
    let client = redis_client(stack, Some(login));
    for pattern in PATTERNS {
        // A connection per pattern: a refusal must not hide behind an earlier success.
        let mut pubsub = bounded("connect", client.get_async_pubsub())
            .await
            .unwrap_or_else(|e| panic!("{} could not connect: {e}", login.user));
        let subscribed = bounded("PSUBSCRIBE", pubsub.psubscribe(pattern)).await;
        match (subscribed, allowed.contains(&pattern)) {
            (Ok(()), true) => {}
            (Err(error), false) => assert_eq!(
                error.code(),
                Some("NOPERM"),
                "{} on {pattern}: {error}",
                login.user
            ),
            (Ok(()), false) => panic!(
                "{} may PSUBSCRIBE {pattern}, which the ACL forbids",
                login.user
            ),
            (Err(error), true) => {
                panic!("{} was refused PSUBSCRIBE {pattern}: {error}", login.user)
            }
        }
    }
}

/// `ACL LOG` as [`test_admin`]: the refusals Redis recorded, as (user, reason, object).
async fn acl_log(stack: &Stack) -> Vec<(String, String, String)> {
    let admin = test_admin();
    let client = redis_client(stack, Some(&admin));
    let mut connection = bounded("connect", client.get_multiplexed_async_connection())
        .await
        .unwrap();
    let entries: Vec<HashMap<String, redis::Value>> = bounded(
        "ACL LOG",
        // Without a count Redis shows only the last 10; it keeps 128 (acllog-max-len).
        redis::cmd("ACL")
            .arg("LOG")
            .arg(128)
            .query_async(&mut connection),
    )
    .await
    .unwrap();
    let text = |entry: &HashMap<String, redis::Value>, key: &str| {
        redis::from_redis_value_ref::<String>(&entry[key]).unwrap()
    };
    entries
        .iter()
        .map(|entry| {
            (
                text(entry, "username"),
                text(entry, "reason"),
                text(entry, "object"),
            )
        })
        .collect()
}

/// Queues an export of the day's reports and waits for its file.
async fn assert_export_runs(addr: &str) {
    let created: serde_json::Value = http_client()
        .post(format!("http://{addr}/exports"))
        .json(&serde_json::json!({"what": "reports", "from": "2023-09-19", "to": "2023-09-19"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let started = std::time::Instant::now();
    loop {
        let (status, job) = api_get(addr, &format!("/exports/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "done" {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT && job["status"] != "failed",
            "{job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let file = http_client()
        .get(format!("http://{addr}/exports/{id}/file"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status().as_u16(), 200);
    assert!(file.text().await.unwrap().starts_with("kind,time,state"));
    // The list and a delete use the rest of the api user's commands.
    let (status, list) = api_get(addr, "/exports").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["id"].as_str(), Some(id));
    let deleted = http_client()
        .delete(format!("http://{addr}/exports/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_only_its_part_and_redis_and_influxdb_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stack, streamer_password_file) = access_stack(dir.path());
    let [streamer, ingester, processor, healthcheck, api] = redis_logins();

    // The pipeline, every role logged in as itself.
    let input = stack.generate(40, 1, 11);
    let mut run = stack
        .streamer(&input, &["--hour-interval", "0", "--once"])
        .env("REDIS_USER", &streamer.user)
        .env("REDIS_PASSWORD_FILE", &streamer_password_file);
    run.start().unwrap();
    // A missing grant stalls the pipeline rather than failing it (the roles retry), so the
    // ACL LOG and InfluxDB's refusals in the logs are watched meanwhile, to fail at once
    // naming the refusal.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = run.wait_timeout(Duration::from_secs(1)).unwrap() {
            break Some(status);
        }
        let refused = acl_log(&stack).await;
        assert!(refused.is_empty(), "the roles were refused: {refused:?}");
        for role in [Role::Ingester, Role::Processor, Role::Api] {
            let log = stack.role_log(role);
            let refusal = log.lines().find(|l| l.contains("refused our credentials"));
            assert!(
                refusal.is_none(),
                "InfluxDB refused the {role}: {refusal:?}"
            );
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "streamer did not finish: {status:?}\n{}",
        stack.log(&run)
    );
    let rows = weathervane_e2e::read_csv(&input);
    assert_stored_exactly(&stack, &rows).await;

    // The api answers with InfluxDB's read-only user.
    let expected = Expected::from_rows(&rows);
    assert_averages_served(stack.api_addr(), &expected, HOUR, 3).await;
    let (status, body) = api_get(stack.api_addr(), "/state_extremes?hour=05&date=2023-09-19").await;
    assert_eq!(status, 200, "{body}");
    // An export job runs through Redis as the api user (refusals show in the ACL LOG below).
    assert_export_runs(stack.api_addr()).await;

    // Not one command of the run was refused, not even one a client ignores the answer to.
    let refused = acl_log(&stack).await;
    assert!(refused.is_empty(), "the roles were refused: {refused:?}");
    // No password reached a log, and no role saw its credentials refused.
    let logs: Vec<String> = Role::ALL
        .iter()
        .map(|role| stack.role_log(*role))
        .chain([stack.log(&run)])
        .collect();
    let users = influx_users();
    let passwords = redis_logins()
        .into_iter()
        .chain([
            api_redis_login(),
            users.admin.clone(),
            users.writer.clone(),
            users.reader.clone(),
        ])
        .map(|login| login.password);
    for password in passwords {
        for log in &logs {
            assert!(!log.contains(&password), "a password is in a log:\n{log}");
        }
    }
    for log in &logs {
        for refusal in ["NOPERM", "NOAUTH", "WRONGPASS", "refused our credentials"] {
            assert!(!log.contains(refusal), "{refusal} in a role's log:\n{log}");
        }
    }

    // The roles stop, so the allowed publishes below reach no one.
    for role in [Role::Ingester, Role::Processor, Role::Api] {
        stack.process(role).stop();
    }

    // Publishing: reported, processor, announce, data, reports.
    assert_publishes(&stack, None, [false; 5], "NOAUTH").await;
    assert_publishes(
        &stack,
        Some(&streamer),
        [false, false, true, true, false],
        "NOPERM",
    )
    .await;
    assert_publishes(
        &stack,
        Some(&ingester),
        [false, true, false, false, false],
        "NOPERM",
    )
    .await;
    assert_publishes(
        &stack,
        Some(&processor),
        [true, false, false, false, true],
        "NOPERM",
    )
    .await;
    assert_publishes(&stack, Some(&healthcheck), [false; 5], "NOPERM").await;
    // The api only subscribes: it may publish nothing, not even the reports it hears.
    assert_publishes(&stack, Some(&api), [false; 5], "NOPERM").await;
    // Another role's password does not open a role either.
    let borrowed = Login::new("processor", &streamer.password);
    let connected = bounded(
        "connect",
        redis_client(&stack, Some(&borrowed)).get_multiplexed_async_connection(),
    )
    .await;
    assert!(
        connected.is_err(),
        "processor logged in with the streamer's password"
    );

    // Subscribing: each role hears only what it listens to, nobody everything.
    let [data, request, stored, announce, reported, reports, _] = PATTERNS;
    assert_subscribes(&stack, &streamer, &[request, reported]).await;
    assert_subscribes(&stack, &ingester, &[data, announce]).await;
    assert_subscribes(&stack, &processor, &[stored]).await;
    assert_subscribes(&stack, &healthcheck, &[]).await;
    assert_subscribes(&stack, &api, &[reports]).await;

    // Every refusal above was by the user it was for, on what it was refused.
    let logged: BTreeSet<(String, String)> = acl_log(&stack)
        .await
        .into_iter()
        .map(|(user, _, object)| (user, object))
        .collect();
    for (user, object) in [
        ("streamer", format!("weather_channel:reported:{HOUR}")),
        ("ingester", format!("weather_channel:data:0:{HOUR}")),
        ("processor", "weather_channel:*".to_owned()),
        ("healthcheck", "publish".to_owned()),
        ("api", "publish".to_owned()),
    ] {
        assert!(
            logged.contains(&(user.to_owned(), object.clone())),
            "no ACL LOG entry for {user} on {object}: {logged:?}"
        );
    }

    assert_influx_refuses(&stack).await;
}

/// The read-only user reads and can neither write nor delete; the writer reads, writes and
/// deletes but administers nothing; nobody gets in without credentials.
async fn assert_influx_refuses(stack: &Stack) {
    let users = influx_users();
    let http = http_client();
    let url = stack.influx.url();
    let query = |login: Option<&Login>, method: reqwest::Method, statement: &str| {
        let mut request = http
            .request(method, format!("{url}/query"))
            .query(&[("db", weathervane_e2e::DB), ("q", statement)]);
        if let Some(login) = login {
            request = request.basic_auth(&login.user, Some(&login.password));
        }
        request.send()
    };
    let write = |login: &Login| {
        http.post(format!("{url}/write"))
            .query(&[("db", weathervane_e2e::DB), ("precision", "s")])
            .basic_auth(&login.user, Some(&login.password))
            .body("access_test,state=ZZ value=1 1695099600")
            .send()
    };

    let (reader, writer) = (&users.reader, &users.writer);
    let read = bounded(
        "query",
        query(
            Some(reader),
            reqwest::Method::GET,
            "SELECT COUNT(temp_c) FROM weather_data",
        ),
    )
    .await
    .unwrap();
    assert_eq!(read.status(), 200);
    let body: serde_json::Value = read.json().await.unwrap();
    assert!(
        body["results"][0]["series"][0]["values"][0][1].as_u64() > Some(0),
        "the reader read nothing: {body}"
    );

    let refused = bounded("write", write(reader)).await.unwrap();
    assert_eq!(refused.status(), 403, "the reader may write");
    let refused = bounded(
        "delete",
        query(
            Some(reader),
            reqwest::Method::POST,
            "DELETE FROM weather_data WHERE state = 'ZZ'",
        ),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403, "the reader may delete");

    let written = bounded("write", write(writer)).await.unwrap();
    assert_eq!(written.status(), 204, "the writer may not write");
    let deleted = bounded(
        "delete",
        query(
            Some(writer),
            reqwest::Method::POST,
            "DELETE FROM access_test WHERE state = 'ZZ'",
        ),
    )
    .await
    .unwrap();
    assert_eq!(deleted.status(), 200, "the writer may not delete");
    for statement in [
        "CREATE DATABASE other",
        "DROP DATABASE weather",
        "CREATE USER intruder WITH PASSWORD 'x' WITH ALL PRIVILEGES",
        "GRANT ALL ON weather TO reader",
    ] {
        for login in [reader, writer] {
            let refused = bounded(
                "admin",
                query(Some(login), reqwest::Method::POST, statement),
            )
            .await
            .unwrap();
            assert_eq!(refused.status(), 403, "{} may run {statement}", login.user);
        }
    }

    let anonymous = bounded(
        "query",
        query(
            None,
            reqwest::Method::GET,
            "SELECT COUNT(temp_c) FROM weather_data",
        ),
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = Login::new(&reader.user, &writer.password);
    let refused = bounded(
        "query",
        query(
            Some(&wrong),
            reqwest::Method::GET,
            "SELECT COUNT(temp_c) FROM weather_data",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "the reader got in with the writer's password"
    );
}

/// Every form a secret could take in a log line: as it is, JSON-escaped (event lines),
/// and Debug-escaped.
fn leaks_of(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap();
    let debug = format!("{secret:?}");
    vec![
        secret.to_owned(),
        json.trim_matches('"').to_owned(),
        debug.trim_matches('"').to_owned(),
    ]
}

fn assert_no_secret(place: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        for form in leaks_of(secret) {
            assert!(
                !text.contains(&form),
                "a secret ({form:?}) is in {place}:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_help_or_the_process_list_through_outages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stack, streamer_password_file) = access_stack(dir.path());
    let [streamer, ..] = redis_logins();
    let users = influx_users();
    let secrets: Vec<String> = redis_logins()
        .into_iter()
        .chain([users.admin, users.writer, users.reader])
        .map(|login| login.password)
        .collect();

    // Hours keep coming while Redis, then InfluxDB, are killed and come back: every
    // reconnect, outage and recovery is logged.
    let input = stack.generate(60, 1, 23);
    let mut run = stack
        .streamer(
            &input,
            &["--hour-interval", "0.3", "--batch-size", "20", "--once"],
        )
        .env("REDIS_USER", &streamer.user)
        .env("REDIS_PASSWORD_FILE", &streamer_password_file);
    run.start().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut pids: Vec<u32> = Role::ALL
        .iter()
        .filter(|role| **role != Role::Streamer)
        .map(|role| stack.process(*role).pid().unwrap())
        .collect();
    pids.push(run.pid().unwrap());
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_no_secret(
            "a command line",
            &String::from_utf8_lossy(&cmdline),
            &secrets,
        );
    }
    stack.redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.redis.start_again().unwrap();
    stack.influx.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.influx.start_again().unwrap();
    let status = tokio::task::block_in_place(|| run.wait_timeout(TIMEOUT).unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "streamer did not finish: {status:?}\n{}",
        stack.log(&run)
    );
    assert_stored_exactly(&stack, &weathervane_e2e::read_csv(&input)).await;
    let ingester_log = stack.role_log(Role::Ingester);
    assert!(
        ingester_log.contains("\"event\":\"outage_began\""),
        "the run had no outage to log:\n{ingester_log}"
    );

    // Every file the run wrote: role logs, rejects, dead letters, state.
    for entry in std::fs::read_dir(stack.dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path != streamer_password_file {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert_no_secret(&path.display().to_string(), &text, &secrets);
        }
    }

    // --help with every secret set, as variables and in the URLs.
    let binary = weathervane_harness::weathervane_binary().unwrap();
    for role in ["streamer", "ingester", "processor", "api", "up"] {
        let help = Command::new(&binary)
            .args([role, "--help"])
            .env(
                "REDIS_URL",
                format!("redis://streamer:{}@127.0.0.1:1", secrets[0]),
            )
            .env("REDIS_PASSWORD", &secrets[1])
            .env(
                "INFLUXDB_URL",
                format!("http://admin:{}@127.0.0.1:1", secrets[4]),
            )
            .env("INFLUXDB_PASSWORD", &secrets[5])
            .env("INFLUXDB_TOKEN", &secrets[6])
            .output()
            .unwrap();
        assert!(help.status.success(), "{role} --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("REDIS_URL") || role == "api",
            "{role}: {text}"
        );
        assert_no_secret(&format!("{role} --help"), &text, &secrets);
    }
}
