//! The explorable API and the dashboard against a real stack: a generated CSV streamed
//! through the four roles, one hour left with raw rows and no report (as if being
//! processed). `/openapi.json` is checked to be OpenAPI 3 and to describe every route the
//! API serves, every real answer is validated against its schema, and the discovery,
//! day-series and CSV answers are compared with values computed from the CSV. Then
//! headless Chromium loads `/dashboard`; the values it drew (read from the DOM) are
//! compared with the same expectations, and screenshots are saved under
//! `target/test-artifacts/`. Last, the dashboard's upload box sends a generated CSV to a
//! streamer's upload server on another origin (tus through the page's own script, CORS
//! allowing the api's origin), and InfluxDB then holds exactly that file's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use weathervane_e2e::{CsvRow, Expected, METRICS, Stack, close, http_client, read_csv};

/// The hour left pending: its rows are written to InfluxDB directly, never reported.
const PENDING_HOUR: &str = "2023-09-19T23";
/// Its start, in seconds since 1970.
const PENDING_EPOCH: i64 = 1_695_081_600 + 23 * 3600;

/// A stack holding `days` generated days, every hour reported except `PENDING_HOUR`,
/// whose rows are stored raw only. Returns the stack, the reported rows and the pending
/// hour's row count.
async fn stack_with_data(stations: u32, days: u32) -> (Stack, Vec<CsvRow>, u64) {
    let stack = Stack::start();
    let generated = stack.generate(stations, days, 13);
    let all = read_csv(&generated);
    assert!(all[0]["time"].starts_with("2023-09-19"), "{:?}", all[0]);
    let (pending, reported): (Vec<CsvRow>, Vec<CsvRow>) = all
        .into_iter()
        .partition(|row| weathervane_e2e::hour_of(&row["time"]) == PENDING_HOUR);
    assert!(!pending.is_empty());
    let input = stack.dir().join("reported.csv");
    let mut writer = csv::Writer::from_path(&input).unwrap();
    let header: Vec<&String> = reported[0].keys().collect();
    writer.write_record(&header).unwrap();
    for row in &reported {
        writer.write_record(row.values()).unwrap();
    }
    writer.flush().unwrap();
    stack.stream_once(&input, &["--hour-interval", "0", "--once"]);

    // The pending hour's rows, as the ingester would have stored them before the
    // processor got to them.
    let lines: String = pending
        .iter()
        .map(|row| {
            let fields: Vec<String> = METRICS
                .iter()
                .map(|m| format!("{m}={}", row[*m].parse::<f64>().unwrap()))
                .collect();
            format!(
                "weather_data,state={},zip_code={} {} {PENDING_EPOCH}\n",
                row["state"],
                row["zip_code"],
                fields.join(",")
            )
        })
        .collect();
    let response = http_client()
        .post(format!(
            "{}/write?db={}&precision=s",
            stack.influx.url(),
            weathervane_e2e::DB
        ))
        .body(lines)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        204,
        "{:?}",
        response.text().await
    );
    (stack, reported, pending.len() as u64)
}

async fn get_text(addr: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut request = http_client()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, content_type, text) = get_text(addr, path, None).await;
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

// ---- a small JSON Schema check (the subset utoipa writes) ---------------------------

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").unwrap();
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{reference} is not in the document");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Where `value` breaks `schema`: types, required fields, properties, items, allOf and
/// oneOf; `None` when it fits.
fn violation(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    let schema = resolve(doc, schema);
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            if let Some(problem) = violation(doc, part, value, at) {
                return Some(problem);
            }
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let fits = one
            .iter()
            .filter(|part| violation(doc, part, value, at).is_none())
            .count();
        if fits != 1 {
            return Some(format!("{at}: fits {fits} of the oneOf schemas, not 1"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !fits {
            return Some(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(required) = schema["required"].as_array() {
        for name in required.iter().filter_map(Value::as_str) {
            if value.get(name).is_none() {
                return Some(format!("{at}: required field {name} is missing"));
            }
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object())
    {
        for (name, property) in properties {
            if let Some(field) = object.get(name)
                && let Some(problem) = violation(doc, property, field, &format!("{at}.{name}"))
            {
                return Some(problem);
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            if let Some(problem) = violation(doc, items, item, &format!("{at}[{i}]")) {
                return Some(problem);
            }
        }
    }
    None
}

/// Asserts the answer of `path` (status `status`) fits the document's schema for it.
async fn assert_fits(doc: &Value, addr: &str, route: &str, path: &str, status: u16) {
    let (got, body) = get_json(addr, path).await;
    assert_eq!(got, status, "{path}: {body}");
    let schema = &doc["paths"][route]["get"]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"];
    assert!(schema.is_object(), "{route} documents no JSON {status}");
    if let Some(problem) = violation(doc, schema, &body, path) {
        panic!("{problem}\nbody: {body}");
    }
}

/// Every route the API serves (its router, `crates/api/src/openapi.rs`), with a request
/// that succeeds.
const ROUTES: [(&str, &str); 16] = [
    ("/", "/"),
    ("/avg", "/avg?state={state}&hour=05&date=2023-09-19"),
    (
        "/extremes",
        "/extremes?state={state}&hour=05&date=2023-09-19",
    ),
    ("/state_extremes", "/state_extremes?hour=05&date=2023-09-19"),
    ("/dates", "/dates"),
    ("/hours", "/hours?date=2023-09-19"),
    ("/states", "/states?date=2023-09-19&hour=05"),
    ("/status", "/status?date=2023-09-19"),
    ("/openapi.json", "/openapi.json"),
    ("/docs", "/docs"),
    ("/dashboard", "/dashboard"),
    ("/dashboard/app.js", "/dashboard/app.js"),
    ("/dashboard/style.css", "/dashboard/style.css"),
    ("/dashboard/exports.js", "/dashboard/exports.js"),
    ("/dashboard/uploads.js", "/dashboard/uploads.js"),
    ("/dashboard/config.json", "/dashboard/config.json"),
];

/// The export job routes, which need a job (tests/exports.rs runs them).
const EXPORT_ROUTES: [&str; 3] = ["/exports", "/exports/{id}", "/exports/{id}/file"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_the_answers_match_the_csv() {
    let (stack, rows, pending_rows) = stack_with_data(60, 2).await;
    let expected = Expected::from_rows(&rows);
    let addr = stack.api_addr();
    let state = expected.hours["2023-09-19T05"]
        .keys()
        .next()
        .unwrap()
        .clone();

    // The document: OpenAPI 3, every route with its parameters.
    let (status, doc) = get_json(addr, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let served: BTreeSet<&str> = ROUTES
        .iter()
        .map(|(route, _)| *route)
        .chain(EXPORT_ROUTES)
        .collect();
    assert_eq!(documented, served, "documented routes vs served routes");
    for (route, path) in ROUTES {
        let path = path.replace("{state}", &state);
        let (status, _, _) = get_text(addr, &path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(doc["paths"][route]["get"].is_object(), "{route}");
    }
    let params = |route: &str| -> BTreeSet<String> {
        doc["paths"][route]["get"]["parameters"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(params("/avg"), names(&["state", "hour", "date", "format"]));
    assert_eq!(
        params("/extremes"),
        names(&["state", "hour", "date", "format"])
    );
    assert_eq!(
        params("/state_extremes"),
        names(&["hour", "date", "format"])
    );
    assert_eq!(params("/hours"), names(&["date"]));
    assert_eq!(params("/states"), names(&["date", "hour"]));
    assert_eq!(params("/status"), names(&["date"]));
    assert_eq!(params("/dates"), names(&[]));

    // Every JSON answer, success and error, fits its schema.
    for (route, path, status) in [
        (
            "/avg",
            format!("/avg?state={state}&hour=05&date=2023-09-19"),
            200,
        ),
        ("/avg", format!("/avg?state={state}&date=2023-09-20"), 200),
        ("/avg", format!("/avg?state={state}&hour=5"), 200),
        ("/avg", "/avg?state=CA&hour=99".to_owned(), 400),
        (
            "/avg",
            "/avg?state=ZZ&hour=1&date=2023-09-19".to_owned(),
            404,
        ),
        (
            "/extremes",
            format!("/extremes?state={state}&hour=05&date=2023-09-19"),
            200,
        ),
        (
            "/extremes",
            format!("/extremes?state={state}&date=2023-09-19"),
            200,
        ),
        ("/extremes", "/extremes?hour=1".to_owned(), 400),
        (
            "/state_extremes",
            "/state_extremes?hour=23&date=2023-09-20".to_owned(),
            200,
        ),
        (
            "/state_extremes",
            "/state_extremes?date=2023-09-19".to_owned(),
            200,
        ),
        (
            "/state_extremes",
            "/state_extremes?date=2023-09-19&hour=23".to_owned(),
            404,
        ),
        ("/dates", "/dates".to_owned(), 200),
        ("/dates", "/dates?day=1".to_owned(), 400),
        ("/hours", "/hours".to_owned(), 200),
        ("/hours", "/hours?date=2023-09-19".to_owned(), 200),
        ("/hours", "/hours?date=2020-01-01".to_owned(), 404),
        ("/states", "/states?date=2023-09-19".to_owned(), 200),
        ("/states", "/states?hour=24".to_owned(), 400),
        ("/status", "/status?date=2023-09-19".to_owned(), 200),
        ("/status", "/status".to_owned(), 200),
        ("/status", "/status?date=2023-02-30".to_owned(), 400),
    ] {
        assert_fits(&doc, addr, route, &path, status).await;
    }

    // Discovery, against the CSV.
    let hours_of = |date: &str| -> Vec<String> {
        expected
            .hours
            .keys()
            .filter(|h| h.starts_with(date))
            .map(|h| h[11..13].to_owned())
            .collect()
    };
    let (_, body) = get_json(addr, "/dates").await;
    assert_eq!(
        body["dates"],
        serde_json::json!(["2023-09-19", "2023-09-20"])
    );
    let (_, body) = get_json(addr, "/hours?date=2023-09-19").await;
    assert_eq!(body["hours"], serde_json::json!(hours_of("2023-09-19")));
    assert_eq!(hours_of("2023-09-19").len(), 23, "hour 23 is pending");
    let (_, body) = get_json(addr, "/hours").await;
    assert_eq!(
        (
            body["date"].as_str(),
            body["hours"].as_array().unwrap().len()
        ),
        (Some("2023-09-20"), 24),
        "no date: the latest"
    );
    for (path, want) in [
        (
            "/states?date=2023-09-19&hour=05",
            expected.hours["2023-09-19T05"]
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>(),
        ),
        (
            "/states?date=2023-09-20",
            expected
                .hours
                .iter()
                .filter(|(h, _)| h.starts_with("2023-09-20"))
                .flat_map(|(_, states)| states.keys().cloned())
                .collect(),
        ),
    ] {
        let (_, body) = get_json(addr, path).await;
        let got: BTreeSet<String> = body["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, want, "{path}");
    }
    let (_, body) = get_json(addr, "/status?date=2023-09-19").await;
    assert_eq!(
        body["hours_reported"],
        serde_json::json!(hours_of("2023-09-19"))
    );
    assert_eq!(body["pending"], serde_json::json!(["23"]));
    assert_eq!(
        body["last_report"],
        serde_json::json!({"date": "2023-09-20", "hour": "23"})
    );
    let stored: BTreeMap<String, u64> = body["hours_stored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["hour"].as_str().unwrap().to_owned(),
                h["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| r["time"].starts_with("2023-09-19")) {
        *want.entry(row["time"][11..13].to_owned()).or_default() += 1;
    }
    want.insert("23".into(), pending_rows);
    assert_eq!(stored, want);

    // A day's series: every reported hour, each equal to its one-hour answer.
    for date in ["2023-09-19", "2023-09-20"] {
        let (_, day) = get_json(addr, &format!("/avg?state={state}&date={date}")).await;
        let day = day.as_array().unwrap();
        let hours: Vec<String> = expected
            .hours
            .iter()
            .filter(|(h, states)| h.starts_with(date) && states.contains_key(&state))
            .map(|(h, _)| h[11..13].to_owned())
            .collect();
        let got: Vec<&str> = day.iter().map(|a| a["hour"].as_str().unwrap()).collect();
        assert_eq!(got, hours, "{state} {date}");
        for answer in day {
            let hh = answer["hour"].as_str().unwrap();
            let want = &expected.hours[&format!("{date}T{hh}")][&state];
            assert_eq!(answer["count"].as_u64(), Some(want.count));
            for (i, metric) in METRICS.iter().enumerate() {
                let served = answer[format!("avg_{metric}")].as_f64().unwrap();
                assert!(
                    close(served, want.means[i]),
                    "{date}T{hh} {metric}: {answer}"
                );
            }
            let (_, _, one) = get_text(
                addr,
                &format!("/avg?state={state}&hour={hh}&date={date}"),
                None,
            )
            .await;
            let one: Value = serde_json::from_str(&one).unwrap();
            assert_eq!(*answer, one, "the day's element is the hour's answer");
        }
        let (_, day) = get_json(
            addr,
            &format!("/extremes?state={}&date={date}", state.to_lowercase()),
        )
        .await;
        for answer in day.as_array().unwrap() {
            let want =
                &expected.hours[&format!("{date}T{}", answer["hour"].as_str().unwrap())][&state];
            for (i, metric) in METRICS.iter().enumerate() {
                let (max, min) = &want.extremes[i];
                assert_eq!(
                    answer["max"][metric]["zip_code"].as_str(),
                    Some(max.holder.as_str())
                );
                assert_eq!(answer["max"][metric]["value"].as_f64(), Some(max.value));
                assert_eq!(
                    answer["min"][metric]["zip_code"].as_str(),
                    Some(min.holder.as_str())
                );
                assert_eq!(answer["min"][metric]["value"].as_f64(), Some(min.value));
            }
        }
        let (_, day) = get_json(addr, &format!("/state_extremes?date={date}")).await;
        let day = day.as_array().unwrap();
        assert_eq!(day.len(), hours_of(date).len());
        for answer in day {
            let key = format!("{date}T{}", answer["hour"].as_str().unwrap());
            for (i, metric) in METRICS.iter().enumerate() {
                let (max, min) = &expected.state_extremes(&key)[i];
                assert_eq!(
                    answer["max"][metric]["state"].as_str(),
                    Some(max.holder.as_str()),
                    "{key}"
                );
                assert_eq!(
                    answer["min"][metric]["state"].as_str(),
                    Some(min.holder.as_str()),
                    "{key}"
                );
            }
        }
    }

    // The documented one-hour answer, byte for byte in its key order.
    let (_, _, text) = get_text(
        addr,
        &format!("/avg?state={state}&hour=5&date=2023-09-19"),
        None,
    )
    .await;
    assert!(
        text.starts_with(&format!(
            "{{\"state\":\"{state}\",\"date\":\"2023-09-19\",\"hour\":\"05\",\"avg_temp_c\":"
        )),
        "{text}"
    );

    // CSV, by parameter and by Accept header, against the CSV input.
    let parse = |text: &str| -> (Vec<String>, Vec<Vec<String>>) {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let records = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, records)
    };
    let (status, content_type, text) = get_text(
        addr,
        &format!("/avg?state={state}&date=2023-09-20&format=csv"),
        None,
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let (header, records) = parse(&text);
    assert_eq!(
        header,
        [
            "state",
            "date",
            "hour",
            "avg_temp_c",
            "avg_pressure_mb",
            "avg_humidity",
            "avg_precip_mm",
            "count"
        ]
    );
    assert_eq!(records.len(), 24);
    for record in &records {
        let want = &expected.hours[&format!("{}T{}", record[1], record[2])][&state];
        assert_eq!(record[0], state);
        for (i, mean) in want.means.iter().enumerate() {
            assert!(close(record[3 + i].parse().unwrap(), *mean), "{record:?}");
        }
        assert_eq!(record[7].parse::<u64>().unwrap(), want.count);
    }
    let (status, content_type, text) = get_text(
        addr,
        &format!("/extremes?state={state}&hour=7&date=2023-09-19"),
        Some("text/csv"),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/csv; charset=utf-8")
    );
    let (header, records) = parse(&text);
    assert_eq!(
        header,
        [
            "state",
            "date",
            "hour",
            "metric",
            "max_zip_code",
            "max_value",
            "min_zip_code",
            "min_value"
        ]
    );
    let want = &expected.hours["2023-09-19T07"][&state];
    let metrics: Vec<&str> = records.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(metrics, METRICS);
    for (record, (max, min)) in records.iter().zip(&want.extremes) {
        assert_eq!(record[4], max.holder);
        assert_eq!(record[5].parse::<f64>().unwrap(), max.value);
        assert_eq!(record[6], min.holder);
        assert_eq!(record[7].parse::<f64>().unwrap(), min.value);
    }
    let (_, _, text) = get_text(addr, "/state_extremes?date=2023-09-19&format=csv", None).await;
    let (header, records) = parse(&text);
    assert_eq!(
        header,
        [
            "date",
            "hour",
            "metric",
            "max_state",
            "max_value",
            "min_state",
            "min_value"
        ]
    );
    assert_eq!(records.len(), 23 * 4);
    for record in &records {
        let i = METRICS.iter().position(|m| *m == record[2]).unwrap();
        let (max, min) = &expected.state_extremes(&format!("{}T{}", record[0], record[1]))[i];
        assert_eq!(
            (&record[3], &record[5]),
            (&max.holder, &min.holder),
            "{record:?}"
        );
        assert!(close(record[4].parse().unwrap(), max.value));
        assert!(close(record[6].parse().unwrap(), min.value));
    }
    // Errors stay JSON whatever the format asked.
    let (status, content_type, text) = get_text(addr, "/avg?state=CA&format=csv", None).await;
    assert_eq!(status, 400);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(text.contains("hour"), "{text}");
}

// ---- the dashboard in Chromium ------------------------------------------------------

/// Chromium's binary, or `None` (then the test is skipped, except under CI, where it
/// fails).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, and CI is set: the dashboard test must run (scripts/test installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed; the dashboard test did not run");
    }
    found
}

/// Runs headless Chromium with `args` on `url` (in a process group of its own, killed
/// whole afterwards, by its id) and returns what it printed.
fn run_chromium(binary: &Path, profile: &Path, args: &[String], url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The browser's helpers (zygote, renderer, GPU) share its process group.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.wait();
    assert!(
        status.is_some(),
        "chromium did not finish {url} within 120 s"
    );
    reader.join().unwrap()
}

/// The attributes of every element `<tag ...>` in `html`, in order.
fn elements(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let end = after.find('>').unwrap();
        found.push(attributes(&after[..end]));
        rest = &after[end..];
    }
    found
}

fn attributes(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_owned();
        let value_start = &rest[eq + 2..];
        let end = value_start.find('"').unwrap();
        let value = value_start[..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        map.insert(name, value);
        rest = value_start[end + 1..].trim_start();
    }
    map
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_reports_in_chromium() {
    let Some(browser) = chromium() else {
        return;
    };
    let (stack, rows, _) = stack_with_data(120, 1).await;
    let expected = Expected::from_rows(&rows);
    let (date, hour, state) = ("2023-09-19", "05", "CA");
    assert!(expected.hours["2023-09-19T05"].contains_key(state));
    let url = format!(
        "http://{}/dashboard?date={date}&hour={hour}&state={state}",
        stack.api_addr()
    );
    let profile = stack.dir().join("chromium-profile");

    let dom = tokio::task::spawn_blocking({
        let (browser, profile, url) = (browser.clone(), profile.clone(), url.clone());
        move || run_chromium(&browser, &profile, &["--dump-dom".into()], &url)
    })
    .await
    .unwrap();
    let body = elements(&dom, "body");
    assert_eq!(
        body[0].get("data-ready").map(String::as_str),
        Some("true"),
        "the page finished drawing; DOM:\n{}",
        &dom[..dom.len().min(4000)]
    );

    // The export form and its job list are on the page.
    assert!(dom.contains("id=\"export-form\""), "no export form");
    assert!(dom.contains("id=\"export-jobs\""), "no export job list");

    // The charts: one figure per metric; one line per state, every hour's mean.
    let figures: Vec<&str> = dom.split("<figure ").skip(1).collect();
    assert_eq!(figures.len(), 4);
    let states_reported: BTreeSet<&String> =
        expected.hours.values().flat_map(|s| s.keys()).collect();
    for (figure, metric) in figures.iter().zip(METRICS) {
        let figure = format!("<figure {figure}");
        assert_eq!(elements(&figure, "figure")[0]["data-metric"], metric);
        let metric_index = METRICS.iter().position(|m| *m == metric).unwrap();
        let paths = elements(&figure, "path");
        let drawn: BTreeSet<&String> = paths.iter().map(|p| &p["data-state"]).collect();
        assert_eq!(drawn, states_reported, "{metric}: a line per state");
        for path in &paths {
            let state_drawn = &path["data-state"];
            let hours: Vec<&str> = path["data-hours"].split(',').collect();
            let values: Vec<f64> = path["data-values"]
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect();
            let want: Vec<(String, f64)> = expected
                .hours
                .iter()
                .filter_map(|(h, states)| {
                    states
                        .get(state_drawn)
                        .map(|s| (h[11..13].to_owned(), s.means[metric_index]))
                })
                .collect();
            assert_eq!(
                hours,
                want.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
                "{metric} {state_drawn}"
            );
            for (got, (h, mean)) in values.iter().zip(&want) {
                assert!(
                    close(*got, *mean),
                    "{metric} {state_drawn} {h}: drew {got}, want {mean}"
                );
            }
        }
        let points = elements(&figure, "circle");
        assert_eq!(
            points.len(),
            want_hours(&expected, state),
            "{metric}: a point per hour of {state}"
        );
        for point in points {
            assert_eq!(point["data-state"], state);
            let want = &expected.hours[&format!("{date}T{}", point["data-hour"])][state];
            let got: f64 = point["data-value"].parse().unwrap();
            assert!(close(got, want.means[metric_index]), "{metric} {point:?}");
        }
    }

    // The extremes tables of the chosen hour.
    let key = format!("{date}T{hour}");
    let tables: Vec<&str> = dom.split("<table ").skip(1).collect();
    assert_eq!(tables.len(), 2);
    for (table, holders) in tables.iter().zip([
        expected.state_extremes(&key),
        expected.hours[&key][state].extremes.clone(),
    ]) {
        let cells = elements(table, "td");
        assert_eq!(cells.len(), 8, "two cells per metric");
        for (i, pair) in cells.chunks(2).enumerate() {
            let (max, min) = &holders[i];
            assert_eq!(
                (pair[0]["data-side"].as_str(), pair[1]["data-side"].as_str()),
                ("max", "min")
            );
            assert_eq!(pair[0]["data-holder"], max.holder, "{}", METRICS[i]);
            assert_eq!(pair[1]["data-holder"], min.holder, "{}", METRICS[i]);
            assert!(close(pair[0]["data-value"].parse().unwrap(), max.value));
            assert!(close(pair[1]["data-value"].parse().unwrap(), min.value));
        }
    }

    // The pipeline: 23 hours reported, hour 23 pending, the last report.
    let by_id = |id: &str| {
        elements(&dom, "dd")
            .into_iter()
            .find(|attrs| attrs.get("id").map(String::as_str) == Some(id))
            .unwrap()
    };
    assert_eq!(by_id("reported-count")["data-value"], "23");
    assert_eq!(by_id("pending")["data-value"], "23");
    assert_eq!(by_id("last-report")["data-value"], "2023-09-19T22");
    let cells: Vec<(String, String)> = elements(&dom, "span")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-hour"))
        .map(|attrs| (attrs["data-hour"].clone(), attrs["data-state"].clone()))
        .collect();
    assert_eq!(cells.len(), 24);
    for (h, cell) in &cells {
        let want = if h == "23" { "pending" } else { "reported" };
        assert_eq!(cell, want, "hour {h}");
    }

    // The explorer page lists every route of the document, drawn from /openapi.json.
    let docs = tokio::task::spawn_blocking({
        let (browser, profile) = (browser.clone(), profile.clone());
        let url = format!("http://{}/docs", stack.api_addr());
        move || run_chromium(&browser, &profile, &["--dump-dom".into()], &url)
    })
    .await
    .unwrap();
    assert_eq!(
        elements(&docs, "body")[0]
            .get("data-ready")
            .map(String::as_str),
        Some("true")
    );
    let listed: BTreeSet<String> = elements(&docs, "details")
        .into_iter()
        .filter_map(|attrs| attrs.get("data-path").cloned())
        .collect();
    let routes: BTreeSet<String> = ROUTES
        .iter()
        .map(|(route, _)| route.to_string())
        .chain(EXPORT_ROUTES.map(String::from))
        .collect();
    assert_eq!(listed, routes, "/docs lists every route");

    // Screenshots for people: the first screen and the whole page, desktop and phone.
    let dir = artifacts_dir();
    for (name, size) in [
        ("desktop", "1280,800"),
        ("desktop-full", "1280,1250"),
        ("phone", "390,844"),
        ("phone-full", "390,2300"),
    ] {
        let path = dir.join(format!("dashboard-{name}.png"));
        let _ = std::fs::remove_file(&path);
        let args = vec![
            format!("--window-size={size}"),
            format!("--screenshot={}", path.display()),
        ];
        let (browser, profile, url) = (browser.clone(), profile.clone(), url.clone());
        tokio::task::spawn_blocking(move || run_chromium(&browser, &profile, &args, &url))
            .await
            .unwrap();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", path.display());
    }
}

fn want_hours(expected: &Expected, state: &str) -> usize {
    expected
        .hours
        .values()
        .filter(|states| states.contains_key(state))
        .count()
}

/// Serves `body` (a CSV) to every GET on 127.0.0.1 at the port returned, with
/// `Access-Control-Allow-Origin: *` so the dashboard's page may fetch it. A thread of the
/// test process; it ends with the test.
fn serve_file(body: Vec<u8>) -> u16 {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

/// The attributes of the element with `id` in `html`.
fn element_with_id(html: &str, tag: &str, id: &str) -> BTreeMap<String, String> {
    elements(html, tag)
        .into_iter()
        .find(|attrs| attrs.get("id").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no <{tag} id={id:?}> in the page"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_uploads_a_csv_with_tus_and_it_is_stored_exactly() {
    use weathervane_harness::{LocalStack, Role, free_port};
    let Some(browser) = chromium() else {
        return;
    };
    let upload_port = free_port().unwrap();
    let upload_base = format!("http://127.0.0.1:{upload_port}");
    let stack = weathervane_e2e::Stack::with(
        LocalStack::builder()
            .env("RUST_LOG", "info")
            .env("API_UPLOAD_URL", &upload_base)
            .env("API_DASHBOARD_TEST_HOOKS", "true")
            .role(Role::Ingester)
            .role(Role::Processor)
            .role(Role::Api)
            .start()
            .unwrap(),
    );
    let origin = format!("http://{}", stack.api_addr());
    let inbox = stack.dir().join("inbox");
    let mut streamer = stack
        .role(Role::Streamer)
        .unwrap()
        .args(["--hour-interval", "0", "--inbox-quiet", "1"])
        .arg("--inbox")
        .arg(&inbox)
        .args(["--upload-addr", &format!("127.0.0.1:{upload_port}")])
        .args(["--upload-cors-origin", &origin])
        .arg("--state-file")
        .arg(stack.dir().join("streamer-state"))
        .arg("--rejects")
        .arg(stack.dir().join("rejects.csv"));
    streamer.start().unwrap();

    let input = stack.generate(10, 1, 41);
    let rows = read_csv(&input);
    let bytes = std::fs::read(&input).unwrap();
    let chunk = 8192;
    assert!(
        bytes.len() > 3 * chunk,
        "several chunks: {} bytes",
        bytes.len()
    );
    let file_port = serve_file(bytes.clone());

    // Wait for the upload server (an OPTIONS answers 204 once it listens).
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .request(reqwest::Method::OPTIONS, format!("{upload_base}/uploads"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 204)
    {
        assert!(
            Instant::now() < deadline,
            "the upload server never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The page uploads the file through its own tus client, in chunks.
    let profile = stack.dir().join("chromium-profile");
    let url = format!(
        "{origin}/dashboard?upload_chunk={chunk}&upload_from=http://127.0.0.1:{file_port}/station-logs.csv"
    );
    let html = tokio::task::spawn_blocking({
        let (browser, profile, url) = (browser.clone(), profile.clone(), url.clone());
        move || run_chromium(&browser, &profile, &["--dump-dom".into()], &url)
    })
    .await
    .unwrap();
    let uploads = element_with_id(&html, "section", "uploads");
    assert!(!uploads.contains_key("hidden"), "the upload box is shown");
    assert_eq!(
        uploads.get("data-state").map(String::as_str),
        Some("uploaded"),
        "{uploads:?}"
    );
    assert_eq!(uploads["data-offset"], bytes.len().to_string());
    let upload_url = uploads["data-url"].clone();
    assert!(
        upload_url.starts_with(&format!("{upload_base}/uploads/")),
        "{upload_url}"
    );

    // The server holds the same bytes and streams them; every hour gets its report.
    let deadline = Instant::now() + Duration::from_secs(180);
    let progress = loop {
        let body: Value = client
            .get(&upload_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(body["state"], "failed", "{body}");
        if body["state"] == "done" && body["hours_reported"] == body["hours"] {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the upload was not reported in time: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(progress["bytes_received"], bytes.len() as u64);
    assert_eq!(progress["file_name"], "station-logs.csv");
    assert_eq!(progress["rows_read"], rows.len() as u64, "{progress}");
    assert_eq!(progress["rows_rejected"], 0, "{progress}");
    let hours: BTreeSet<String> = rows
        .iter()
        .map(|row| weathervane_e2e::hour_of(&row["time"]))
        .collect();
    assert_eq!(progress["hours"], hours.len() as u64, "{progress}");
    weathervane_e2e::assert_stored_exactly(&stack, &rows).await;

    // A reload shows the last upload's way through the pipeline, as the server tells it.
    let html = tokio::task::spawn_blocking({
        let (browser, profile) = (browser.clone(), profile.clone());
        let url = format!("{origin}/dashboard");
        move || run_chromium(&browser, &profile, &["--dump-dom".into()], &url)
    })
    .await
    .unwrap();
    let facts = element_with_id(&html, "dl", "upload-facts");
    assert_eq!(facts["data-rows-read"], rows.len().to_string(), "{facts:?}");
    assert_eq!(facts["data-rows-rejected"], "0");
    assert_eq!(facts["data-hours-reported"], hours.len().to_string());

    let path = artifacts_dir().join("dashboard-upload.png");
    let _ = std::fs::remove_file(&path);
    let args = vec![
        "--window-size=1280,1700".to_string(),
        format!("--screenshot={}", path.display()),
    ];
    let url = format!("{origin}/dashboard");
    tokio::task::spawn_blocking(move || run_chromium(&browser, &profile, &args, &url))
        .await
        .unwrap();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{} is {size} bytes", path.display());
    drop(streamer);
}
