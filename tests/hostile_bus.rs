//! Well-formed but hostile messages on the bus, published by a stranger while a real input
//! streams: announcements of u32::MAX, 0 and 10^7 batches, row counts no batches could
//! hold, a batch whose body is another hour's, a batch whose rows lie outside its hour, a
//! flood of 1,000 requests for one batch, a channel name with a newline and a report from
//! another deployment. Every role
//! stays up with bounded memory, nothing forges a log line, and the real input is stored
//! and reported exactly.

use std::time::Duration;

use weathervane_e2e::{Stack, assert_stored_exactly, read_csv};
use weathervane_harness::Role;
use weathervane_harness::events::Event;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Peak resident memory of a process, in MiB, from /proc.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

/// `body` as a message of this deployment (the default id) or of `deployment`.
fn from(deployment: &str, body: &str) -> String {
    format!(r#"{{"deployment":"{deployment}","body":{body}}}"#)
}

fn ours(body: &str) -> String {
    from("default", body)
}

/// A batch body for `hour` (as its envelope says) with one row at `time` (epoch seconds).
fn batch_body(hour: &str, time: i64) -> String {
    let mut values = vec!["null"; 32];
    // temp_c, pressure_mb, humidity, precip_mm in the numeric column order.
    for index in [2, 8, 13, 10] {
        values[index] = "1.0";
    }
    ours(&format!(
        r#"{{"hour":"{hour}","batch":0,"batches":1,"rows":[{{"zip_code":"99999","state":"ZZ","name":"stranger","time":{time},"wind_dir":"N","values":[{}]}}]}}"#,
        values.join(",")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_on_the_bus_crashes_a_role_or_changes_what_is_stored() {
    let mut stack = Stack::start();
    let input = stack.generate(40, 1, 31);
    let rows = read_csv(&input);
    let client = redis::Client::open(stack.redis.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let (h0, h1) = ("2023-09-19T00", "2023-09-19T01");
    let h1_time = 1_695_085_200; // 2023-09-19T01:00:00Z
    let hostile: Vec<(String, String)> = vec![
        (
            format!("weather_channel:announce:{h0}"),
            ours(r#"{"batches":4294967295,"rows":1}"#),
        ),
        (
            format!("weather_channel:announce:{h0}"),
            ours(r#"{"batches":0,"rows":0}"#),
        ),
        (
            format!("weather_channel:announce:{h1}"),
            ours(r#"{"batches":10000000,"rows":10000000}"#),
        ),
        (
            format!("weather_channel:announce:{h1}"),
            ours(r#"{"batches":3,"rows":2}"#),
        ),
        (
            format!("weather_channel:data:0:{h0}"),
            batch_body(h1, h1_time),
        ),
        (
            format!("weather_channel:data:0:{h0}"),
            batch_body(h0, h1_time),
        ),
        (
            format!("weather_channel:data:0:{h0}\nFORGED LOG LINE"),
            "{}".into(),
        ),
    ];
    // Another deployment's processor "reports" hour 0 with every row: refused.
    let foreign_report = (
        format!("weather_channel:reported:{h0}"),
        from("other-site", r#"{"rows":40,"refused":0,"states":1}"#),
    );
    let publish = |channel: String, body: String| {
        let mut connection = connection.clone();
        async move {
            let _: u32 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(body)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    };
    for (channel, body) in hostile.clone() {
        publish(channel, body).await;
    }

    // Counts what is published of the flooded batch (the streamer's publication and its
    // resends), until the run ends.
    let mut watch = client.get_async_pubsub().await.unwrap();
    watch
        .subscribe(format!("weather_channel:data:0:{h0}"))
        .await
        .unwrap();
    let watcher = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = watch.on_message();
        let mut copies = 0;
        while tokio::time::timeout(Duration::from_secs(15), messages.next())
            .await
            .is_ok_and(|m| m.is_some())
        {
            copies += 1;
        }
        copies
    });

    let mut streamer = stack.streamer(
        &input,
        &[
            "--hour-interval",
            "0",
            "--batch-size",
            "10",
            "--announce-interval",
            "1",
            "--once",
        ],
    );
    streamer.start().unwrap();
    // Subscribed (its /readyz says so) before the flood, which would otherwise be over
    // before a slow-starting streamer hears any of it.
    weathervane_e2e::admin::wait_readyz(
        &stack.admin_url(Role::Streamer),
        TIMEOUT,
        "ready",
        |status, _| status == 200,
    )
    .await;
    // While the real hours stream: the same again, and a flood of requests for one batch.
    for (channel, body) in hostile {
        publish(channel, body).await;
    }
    for i in 0..1000 {
        publish(format!("weather_channel:request:0:{h0}"), ours("null")).await;
        if i % 100 == 0 {
            let (channel, body) = foreign_report.clone();
            publish(channel, body).await;
        }
    }

    let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "the streamer did not finish: {status:?}"
    );
    assert_stored_exactly(&stack, &rows).await;

    for role in [Role::Ingester, Role::Processor] {
        let process = stack.process(role);
        assert!(process.is_running(), "{role} died");
        let peak = peak_rss_mib(process.pid().unwrap());
        assert!(peak < 256, "{role} peaked at {peak} MiB");
    }
    let foreign = stack
        .events(&streamer)
        .into_iter()
        .filter(|event| matches!(event, Event::MessageRejected { reason, .. } if reason.contains("from deployment \"other-site\"")))
        .count();
    assert!(
        foreign >= 1,
        "the foreign report was neither refused nor counted"
    );
    let ingester_log = stack.role_log(Role::Ingester);
    assert!(
        !ingester_log.lines().any(|l| l.starts_with("FORGED")),
        "a channel name forged a log line"
    );
    let copies = watcher.await.unwrap();
    // The streamer's own publication, its resends (at most one a second over the run) and
    // the stranger's four: far fewer than the thousand requests asked for.
    assert!(
        copies <= 30,
        "1,000 requests made {copies} copies of one batch"
    );
    drop(connection);
}
