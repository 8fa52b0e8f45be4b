//! Tests against real `redis-server`, `influxd`, `prometheus` and `sh` processes. They own only what
//! they start; every process is checked to be gone (reaped, not a zombie) at the end.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use crate::server::{http, redact_literals, redis_ping};
use crate::{
    HarnessError, InfluxServer, Login, ManagedProcess, RedisAcl, RedisServer, ServerTls,
    weathervane_binary,
};

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(10);

/// We reap our children, so their /proc entry must be gone rather than a zombie's.
fn assert_gone(pid: u32) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} outlived its owner"
    );
}

fn assert_pong(port: u16) {
    let reply = redis_ping(port, None, SHORT).expect("PING");
    assert!(reply.starts_with("+PONG"), "unexpected reply {reply:?}");
}

#[test]
fn redis_pause_kill_and_start_again_are_real() {
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_pong(port);

    redis.pause().unwrap();
    let error = redis_ping(port, None, SHORT).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    redis.resume().unwrap();
    assert_pong(port);

    let first_pid = redis.pid().unwrap();
    redis.kill();
    assert_gone(first_pid);
    assert_eq!(redis.pid(), None);
    assert_eq!(
        redis_ping(port, None, SHORT).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert!(matches!(
        redis.pause(),
        Err(HarnessError::NotRunning { .. })
    ));

    redis.start_again().unwrap();
    assert_eq!(redis.port(), port);
    assert_pong(port);
    assert!(matches!(
        redis.start_again(),
        Err(HarnessError::AlreadyRunning { .. })
    ));

    let pid = redis.pid().unwrap();
    drop(redis);
    assert_gone(pid);
}

#[test]
fn redis_stop_is_graceful_and_drop_kills_a_paused_server() {
    let mut redis = RedisServer::start().unwrap();
    let status = redis.stop().expect("was running");
    assert!(
        status.success(),
        "redis-server exited with {status} on SIGTERM"
    );
    assert_eq!(redis.stop(), None);

    redis.start_again().unwrap();
    redis.pause().unwrap();
    let pid = redis.pid().unwrap();
    drop(redis);
    assert_gone(pid);
}

#[test]
fn redis_with_an_acl_file_is_ready_once_the_probe_user_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    // Quotes the inline protocol would choke on: the probe must send AUTH as an array.
    let password = r#"p'"w"#;
    std::fs::write(
        &file,
        format!("user default off\nuser probe on >{password} -@all +ping\n"),
    )
    .unwrap();
    let acl = RedisAcl {
        file,
        probe: Login::new("probe", password),
    };
    let mut redis = RedisServer::start_with_acl(None, Some(&acl)).unwrap();
    let port = redis.port();
    let anonymous = redis_ping(port, None, SHORT).unwrap();
    assert!(anonymous.starts_with("-NOAUTH"), "{anonymous:?}");
    let wrong = redis_ping(port, Some(&Login::new("probe", "nope")), SHORT).unwrap();
    assert!(wrong.starts_with("-WRONGPASS"), "{wrong:?}");
    let reply = redis_ping(port, Some(&acl.probe), SHORT).unwrap();
    assert!(reply.starts_with("+PONG"), "{reply:?}");

    // The restart reads the file again and waits for the same login.
    redis.kill();
    redis.start_again().unwrap();
    let reply = redis_ping(port, Some(&acl.probe), SHORT).unwrap();
    assert!(reply.starts_with("+PONG"), "{reply:?}");
}

#[test]
fn influx_with_auth_has_its_admin_and_refuses_anyone_else() {
    // A password that must be escaped in InfluxQL, and passes only if it was.
    let admin = Login::new("root", r"a'b\c");
    let server = InfluxServer::start_with_auth(None, Some(&admin)).unwrap();
    let port = server.port();
    assert_eq!(server.admin(), Some(&admin));
    // /ping stays open (the probe), queries do not.
    assert_eq!(influx(port, "GET", "/ping", "").0, 204);
    let (status, body) = influx(port, "GET", "/query?q=SHOW+DATABASES", "");
    assert_eq!(status, 401, "{body}");
    server.admin_query(r#"CREATE DATABASE "x""#).unwrap();

    // A refused statement is an error that shows no string literal (passwords go there).
    let error = server
        .admin_query(r#"CREATE USER "root" WITH PASSWORD 'other-secret'"#)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("'***'") && !error.contains("other-secret"),
        "{error}"
    );
}

#[test]
fn influx_auth_over_https_is_refused_before_anything_starts() {
    let tls = ServerTls {
        certificate: "/nonexistent/cert.pem".into(),
        key: "/nonexistent/key.pem".into(),
        ca: "/nonexistent/ca.pem".into(),
        require_client_certificate: false,
    };
    let admin = Login::new("root", "pw");
    assert!(matches!(
        InfluxServer::start_with_auth(Some(&tls), Some(&admin)),
        Err(HarnessError::Unsupported(_))
    ));
}

#[test]
fn statements_are_shown_without_their_string_literals() {
    assert_eq!(
        redact_literals(r#"CREATE USER "a" WITH PASSWORD 'p\'w' WITH ALL PRIVILEGES"#),
        r#"CREATE USER "a" WITH PASSWORD '***' WITH ALL PRIVILEGES"#
    );
    assert_eq!(redact_literals("SHOW USERS"), "SHOW USERS");
    assert_eq!(
        redact_literals("x = 'a' OR y = 'b'"),
        "x = '***' OR y = '***'"
    );
    assert_eq!(redact_literals("cut 'off"), "cut '***'");
}

fn influx(port: u16, method: &str, target: &str, body: &str) -> (u16, String) {
    http(port, method, target, body, LONG).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

#[test]
fn influx_data_survives_kill_and_start_again() {
    let mut influx_server = InfluxServer::start().unwrap();
    let port = influx_server.port();
    assert_eq!(influx(port, "GET", "/ping", "").0, 204);
    assert_eq!(
        influx(port, "POST", "/query?q=CREATE+DATABASE+x", "").0,
        200
    );
    let (status, body) = influx(
        port,
        "POST",
        "/write?db=x",
        "wx,station=s1 temp=21.5 1700000000000000000",
    );
    assert_eq!(status, 204, "{body}");

    let first_pid = influx_server.pid().unwrap();
    influx_server.kill();
    assert_gone(first_pid);
    let error = http(port, "GET", "/ping", "", SHORT).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);

    influx_server.start_again().unwrap();
    let (status, body) = influx(port, "POST", "/query?db=x&q=SELECT+temp+FROM+wx", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"["2023-11-14T22:13:20Z",21.5]"#),
        "point lost across kill: {body}"
    );

    let pid = influx_server.pid().unwrap();
    drop(influx_server);
    assert_gone(pid);
}

#[test]
fn two_influx_servers_run_side_by_side() {
    let starts = [0, 1].map(|_| std::thread::spawn(InfluxServer::start));
    let servers = starts.map(|start| start.join().unwrap().unwrap());
    assert_ne!(servers[0].port(), servers[1].port());
    assert_ne!(servers[0].url(), servers[1].url());
    for server in &servers {
        assert_eq!(influx(server.port(), "GET", "/ping", "").0, 204);
    }
    let pids = servers.each_ref().map(|server| server.pid().unwrap());
    drop(servers);
    pids.into_iter().for_each(assert_gone);
}

#[test]
fn managed_process_logs_both_streams_and_reports_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut echo = ManagedProcess::new("echo", "sh", dir.path())
        .args(["-c", "echo out; echo err >&2; echo \"$GREETING\"; exit 3"])
        .env("GREETING", "hi");
    assert!(matches!(
        echo.wait_timeout(SHORT),
        Err(HarnessError::NotRunning { .. })
    ));
    echo.start().unwrap();
    let status = echo
        .wait_timeout(LONG)
        .unwrap()
        .expect("sh exits by itself");
    assert_eq!(status.code(), Some(3));
    assert!(!echo.is_running());
    assert_eq!(echo.pid(), None);
    assert_eq!(
        std::fs::read_to_string(echo.log_path()).unwrap(),
        "out\nerr\nhi\n"
    );
}

#[test]
fn managed_process_stop_sends_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut sleeper = ManagedProcess::new("sleeper", "sleep", dir.path()).arg("30");
    sleeper.start().unwrap();
    assert!(matches!(
        sleeper.start(),
        Err(HarnessError::AlreadyRunning { .. })
    ));
    assert_eq!(
        sleeper.wait_timeout(Duration::from_millis(50)).unwrap(),
        None
    );
    sleeper.pause().unwrap();
    // Paused, so the SIGTERM only lands because stop also sends SIGCONT.
    let status = sleeper.stop().expect("was running");
    assert_eq!(status.signal(), Some(15));
    assert_eq!(sleeper.exit_status(), Some(status));
}

#[test]
fn spawn_errors_name_the_program_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing = ManagedProcess::new("ghost", "/nonexistent/ghost", dir.path());
    let message = missing.start().unwrap_err().to_string();
    assert!(
        message.contains("/nonexistent/ghost") && message.contains("ghost.log"),
        "{message}"
    );
}

#[test]
fn weathervane_binary_is_found_or_explained() {
    match weathervane_binary() {
        Ok(path) => assert!(
            path.ends_with("weathervane") && path.is_file(),
            "{}",
            path.display()
        ),
        Err(error) => assert!(
            error.to_string().contains("cargo build --bin weathervane"),
            "{error}"
        ),
    }
}

#[test]
fn prometheus_answers_queries_names_a_bad_one_and_is_gone_on_drop() {
    let prometheus = crate::PrometheusServer::start(&[]).unwrap();
    let pid = prometheus.pid().unwrap();
    let answer = prometheus.query("vector(42)").unwrap();
    assert!(answer.contains("\"42\""), "{answer}");
    let refused = prometheus.query("up{").unwrap_err();
    assert!(refused.to_string().contains("up{"), "{refused}");
    drop(prometheus);
    assert_gone(pid);
}
