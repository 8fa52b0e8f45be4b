//! End to end on a clean run: the four roles as separate processes on private Redis and
//! InfluxDB servers; results checked against values computed from the CSV.

use std::time::Duration;

use weathervane_e2e::{CsvRow, Expected, Stack, api_get, assert_stored_exactly, close, read_csv};
use weathervane_harness::Role;
use weathervane_harness::events::{Event, events_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_are_stored_and_reported_exactly_and_served() {
    let stack = Stack::start();
    let input = stack.generate(100, 2, 11);
    stack.stream_once(
        &input,
        &["--batch-size", "7", "--hour-interval", "0", "--once"],
    );
    let rows = read_csv(&input);
    assert_eq!(rows.len(), 100 * 2 * 24);
    assert_stored_exactly(&stack, &rows).await;

    let expected = Expected::from_rows(&rows);
    let addr = stack.api_addr();
    let (status, body) = api_get(addr, "/").await;
    assert_eq!(status, 200, "{body}");
    // Several states and hours on both days, hour 23 included; without a date the latest day.
    let states: Vec<&String> = expected.hours["2023-09-19T05"].keys().take(3).collect();
    for (date, hour) in [
        ("2023-09-19", "05"),
        ("2023-09-19", "23"),
        ("2023-09-20", "0"),
        ("2023-09-20", "17"),
    ] {
        let key = format!("{date}T{hour:0>2}");
        for state in &states {
            let Some(want) = expected.hours[&key].get(*state) else {
                continue;
            };
            let (status, body) =
                api_get(addr, &format!("/avg?state={state}&hour={hour}&date={date}")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["count"].as_u64(), Some(want.count));
            assert_eq!(
                (body["date"].as_str(), body["hour"].as_str()),
                (Some(date), Some(format!("{hour:0>2}").as_str()))
            );
            for (i, metric) in weathervane_e2e::METRICS.iter().enumerate() {
                assert!(
                    close(
                        body[format!("avg_{metric}")].as_f64().unwrap(),
                        want.means[i]
                    ),
                    "{state} {key} {metric}: {body}"
                );
            }
            let (status, body) = api_get(
                addr,
                &format!(
                    "/extremes?state={}&hour={hour}&date={date}",
                    state.to_lowercase()
                ),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            for (i, metric) in weathervane_e2e::METRICS.iter().enumerate() {
                let (max, min) = &want.extremes[i];
                assert_eq!(
                    body["max"][metric]["zip_code"].as_str(),
                    Some(max.holder.as_str()),
                    "{body}"
                );
                assert_eq!(body["max"][metric]["value"].as_f64(), Some(max.value));
                assert_eq!(
                    body["min"][metric]["zip_code"].as_str(),
                    Some(min.holder.as_str()),
                    "{body}"
                );
                assert_eq!(body["min"][metric]["value"].as_f64(), Some(min.value));
            }
        }
        let (status, body) =
            api_get(addr, &format!("/state_extremes?hour={hour}&date={date}")).await;
        assert_eq!(status, 200, "{body}");
        for (i, metric) in weathervane_e2e::METRICS.iter().enumerate() {
            let (max, min) = &expected.state_extremes(&key)[i];
            assert_eq!(
                body["max"][metric]["state"].as_str(),
                Some(max.holder.as_str()),
                "{key} {body}"
            );
            assert_eq!(
                body["min"][metric]["state"].as_str(),
                Some(min.holder.as_str()),
                "{key} {body}"
            );
        }
    }
    let state = states[0];
    let (status, body) = api_get(addr, &format!("/avg?state={state}&hour=05")).await;
    assert_eq!(
        (status, body["date"].as_str()),
        (200, Some("2023-09-20")),
        "no date means the latest day: {body}"
    );
    assert_eq!(
        body["count"].as_u64(),
        Some(expected.hours["2023-09-20T05"][state].count)
    );

    for bad in [
        "/avg?state=CA%27%20OR%20%271%27=%271&hour=05",
        "/avg?state=CA&hour=24",
        "/avg?state=CA&hour=ab",
        "/extremes?hour=05",
        "/state_extremes?hour=5&date=19-09-2023",
    ] {
        let (status, body) = api_get(addr, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    let (status, body) = api_get(addr, "/avg?state=ZZ&hour=05").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api_get(addr, "/state_extremes?hour=05&date=2020-01-01").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_and_bad_payloads_are_set_aside_and_nothing_else_is_lost() {
    let stack = Stack::start();
    let generated = stack.generate(12, 1, 5);
    let text = std::fs::read_to_string(&generated).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line numbers below are 1-based file lines (the header is line 1).
    let duplicate = lines[1].clone();
    lines[3] = lines[3].replacen(",2023-09-19 00:00,", ",2023-09-19 7pm,", 1);
    lines[10] = {
        let mut cells: Vec<&str> = lines[10].split(',').collect();
        cells[6] = "warm";
        cells.join(",")
    };
    lines.insert(20, "99999,ZZ,Broken".to_owned());
    lines.push(duplicate);
    let input = stack.dir().join("with-bad-rows.csv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let rows: Vec<CsvRow> = {
        let all = read_csv(&generated);
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| *i != 2 && *i != 9)
            .map(|(_, r)| r)
            .collect()
    };

    stack.stream_once(
        &input,
        &["--batch-size", "5", "--hour-interval", "0", "--once"],
    );
    assert_stored_exactly(&stack, &rows).await;
    let rejects = std::fs::read_to_string(stack.dir().join("rejects.csv")).unwrap();
    let reject_lines: Vec<&str> = rejects.lines().skip(1).collect();
    assert_eq!(reject_lines.len(), 4, "{rejects}");
    assert!(
        reject_lines
            .iter()
            .any(|l| l.contains(",4,") && l.contains("time")),
        "{rejects}"
    );
    assert!(
        reject_lines
            .iter()
            .any(|l| l.contains(",11,") && l.contains("temp_c \"\"warm\"\"")),
        "{rejects}"
    );
    assert!(reject_lines.iter().any(|l| l.contains(",21,")), "{rejects}");
    assert!(
        reject_lines
            .iter()
            .any(|l| l.contains(&format!(",{},", lines.len())) && l.contains("duplicate")),
        "{rejects}"
    );

    // Garbage on the channels: logged with the channel, counted, and the roles go on.
    let client = redis::Client::open(stack.redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for (channel, body) in [
        ("weather_channel:data:0:2023-09-19T05", "{not json"),
        ("weather_channel:data:x:2023-09-19T05", "{}"),
        ("weather_channel:processor:2023-09-19T05", "[]"),
    ] {
        let receivers: u32 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(body)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(receivers, 1, "{channel} has one subscriber");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stack = stack;
    assert!(
        stack.process(Role::Ingester).is_running() && stack.process(Role::Processor).is_running()
    );
    let rejected = |role: Role| -> Vec<(String, u64)> {
        events_of(&stack.log_path(role))
            .unwrap()
            .into_iter()
            .filter_map(|record| match record.event {
                Event::MessageRejected {
                    channel, rejected, ..
                } => Some((channel, rejected)),
                _ => None,
            })
            .collect()
    };
    let by_ingester = rejected(Role::Ingester);
    assert_eq!(
        by_ingester
            .iter()
            .map(|(channel, _)| channel.as_str())
            .collect::<Vec<_>>(),
        [
            "weather_channel:data:0:2023-09-19T05",
            "weather_channel:data:x:2023-09-19T05"
        ],
        "each bad message named with its channel"
    );
    assert_eq!(by_ingester.last().map(|(_, n)| *n), Some(2), "and counted");
    assert_eq!(
        rejected(Role::Processor),
        [("weather_channel:processor:2023-09-19T05".to_owned(), 1)]
    );
    assert_stored_exactly(&stack, &rows).await;
}
