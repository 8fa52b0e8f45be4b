//! Readiness with real dependencies going away: each role's `/readyz` is 503 naming the
//! failing check while the Redis or InfluxDB it needs is killed or hung (SIGSTOP), stays
//! 200 when only a dependency it does not use is down, and is 200 again once the
//! dependency is back; `/livez` stays 200 throughout (the roles are not wedged). The api
//! shows its Redis and InfluxDB checks failing but stays ready: warmed up, it answers
//! what it holds from memory. Under `weathervane up`, one `/readyz` names the roles that
//! are not ready.

use std::time::Duration;

use weathervane_e2e::Stack;
use weathervane_e2e::admin::{admin_get, readyz, scrape, value, wait_readyz};
use weathervane_harness::{LocalStack, ManagedProcess, Role};

/// Longer than a reconnect backoff, the 1 s InfluxDB probe and a 2 s Redis PING timeout.
const SETTLE: Duration = Duration::from_secs(20);

/// Which of a role's checks a dependency is.
fn uses(role: Role, target: &str) -> bool {
    match target {
        "redis" => true,
        "influxdb" => role != Role::Streamer,
        _ => unreachable!("{target}"),
    }
}

/// Whether a dependency's outage makes the role unready: not the api's, which answers
/// from memory meanwhile (its check shows the outage).
fn gates(role: Role, target: &str) -> bool {
    uses(role, target) && role != Role::Api
}

async fn all_ready(stack: &Stack) {
    for role in Role::ALL {
        wait_readyz(&stack.admin_url(role), SETTLE, "ready", |status, body| {
            status == 200 && body["ready"] == true
        })
        .await;
        let metrics = scrape(&stack.admin_url(role)).await;
        let outage = format!("weathervane_{}_outage", role.name());
        for target in ["redis", "influxdb"].into_iter().filter(|t| uses(role, t)) {
            assert_eq!(
                value(&metrics, &outage, &[("target", target)]),
                0.0,
                "{role}"
            );
        }
    }
}

/// While `target` is down: every role using it is 503 with that check failing (and a
/// detail saying why), every other role stays ready, and every role is live.
async fn only_its_users_are_not_ready(stack: &Stack, target: &str) {
    for role in Role::ALL {
        let admin = stack.admin_url(role);
        if uses(role, target) {
            let gating = gates(role, target);
            let body = wait_readyz(&admin, SETTLE, "showing the outage", |status, body| {
                status == if gating { 503 } else { 200 } && body["checks"][target]["ok"] == false
            })
            .await;
            assert_eq!(body["ready"], !gating, "{role}: {body}");
            assert_eq!(body["role"], role.name(), "{body}");
            assert!(
                body["checks"][target]["detail"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{role}: the failing check says why: {body}"
            );
            // The same state as a metric: the target's outage gauge is 1.
            let metrics = scrape(&admin).await;
            let outage = format!("weathervane_{}_outage", role.name());
            assert_eq!(
                value(&metrics, &outage, &[("target", target)]),
                1.0,
                "{role}"
            );
        }
    }
    for role in Role::ALL.into_iter().filter(|role| !gates(*role, target)) {
        let (status, body) = readyz(&stack.admin_url(role)).await;
        assert_eq!(status, 200, "{role} does not use {target}: {body}");
    }
    for role in Role::ALL {
        let (status, body) = admin_get(&format!("{}/livez", stack.admin_url(role))).await;
        assert_eq!(
            status, 200,
            "{role} is alive while {target} is down: {body}"
        );
    }
}

/// The stack with its four roles; the streamer is the second value (dropping it kills it).
fn stack_with_every_role() -> (Stack, ManagedProcess) {
    let local = LocalStack::builder()
        .env("RUST_LOG", "info")
        .role(Role::Ingester)
        .role(Role::Processor)
        .role(Role::Api)
        .start()
        .unwrap();
    let stack = Stack::with(local);
    let input = stack.generate(5, 1, 1);
    // Stays after streaming (no --once), so it has a subscription to lose.
    let mut streamer = stack.streamer(&input, &["--hour-interval", "0"]);
    streamer.start().unwrap();
    (stack, streamer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_not_ready_while_redis_is_killed_and_ready_once_it_is_back() {
    let (mut stack, _streamer) = stack_with_every_role();
    all_ready(&stack).await;
    stack.redis.kill();
    only_its_users_are_not_ready(&stack, "redis").await;
    stack.redis.start_again().unwrap();
    all_ready(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_not_ready_while_influxdb_is_hung_or_killed_and_ready_once_it_is_back() {
    let (mut stack, _streamer) = stack_with_every_role();
    all_ready(&stack).await;
    let paused = std::time::Instant::now();
    stack.influx.pause().unwrap();
    only_its_users_are_not_ready(&stack, "influxdb").await;
    // Down for at least 2 s after every role noticed: each counts at least 2 outage
    // seconds, and no more than the pause lasted in all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.influx.resume().unwrap();
    all_ready(&stack).await;
    let paused_for = paused.elapsed().as_secs_f64();
    for role in Role::ALL.into_iter().filter(|role| uses(*role, "influxdb")) {
        let metrics = scrape(&stack.admin_url(role)).await;
        let seconds = value(
            &metrics,
            &format!("weathervane_{}_outage_seconds_total", role.name()),
            &[("target", "influxdb")],
        );
        assert!(
            (2.0..=paused_for).contains(&seconds),
            "{role}: {seconds} outage seconds for a pause of {paused_for:.1} s"
        );
    }
    stack.influx.kill();
    only_its_users_are_not_ready(&stack, "influxdb").await;
    stack.influx.start_again().unwrap();
    all_ready(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_up_one_readyz_names_the_roles_that_are_not_ready() {
    let mut stack = Stack::with(LocalStack::builder().start().unwrap());
    let input = stack.generate(5, 1, 2);
    let admin_addr = format!("127.0.0.1:{}", weathervane_harness::free_port().unwrap());
    let admin = format!("http://{admin_addr}");
    let mut up = ManagedProcess::weathervane("up", stack.dir())
        .unwrap()
        .args(["up", "--input"])
        .arg(&input)
        .arg("--rejects")
        .arg(stack.dir().join("rejects.csv"))
        .args(["--admin-addr", &admin_addr])
        .env("REDIS_URL", stack.redis.url())
        .env("INFLUXDB_URL", stack.influx.url())
        .env(
            "API_ADDR",
            format!("127.0.0.1:{}", weathervane_harness::free_port().unwrap()),
        );
    up.start().unwrap();
    let body = wait_readyz(&admin, SETTLE, "ready", |status, body| {
        status == 200 && body["ready"] == true
    })
    .await;
    for role in Role::ALL {
        assert_eq!(body["roles"][role.name()]["ready"], true, "{body}");
    }

    stack.redis.kill();
    let body = wait_readyz(&admin, SETTLE, "not ready", |status, body| {
        status == 503 && body["not_ready"].as_array().is_some_and(|r| r.len() == 3)
    })
    .await;
    let not_ready: Vec<&str> = body["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|role| role.as_str().unwrap())
        .collect();
    assert_eq!(not_ready, ["ingester", "processor", "streamer"], "{body}");
    assert_eq!(body["roles"]["api"]["ready"], true, "{body}");
    assert_eq!(
        body["roles"]["ingester"]["checks"]["redis"]["ok"], false,
        "{body}"
    );

    stack.redis.start_again().unwrap();
    wait_readyz(&admin, SETTLE, "ready", |status, _| status == 200).await;
    assert!(up.is_running(), "{}", stack.log(&up));
    up.stop();
}
