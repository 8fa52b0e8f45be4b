//! CSV files in over HTTP and through the inbox, with real servers and a real tus client
//! (`tuspy`, driven by `tests/support/tus_upload.py`): an upload interrupted by its client
//! and by a SIGKILLed streamer resumes from the offset the server reports and streams
//! exactly its rows and reports; a chunk with a wrong checksum is refused (460) without
//! moving the offset; a terminated upload streams nothing; two uploads at once and a file
//! dropped into the inbox meanwhile all stream exactly; an inbox file streams exactly
//! across a SIGKILLed streamer and one with a bad header goes to `failed/`; a later file
//! with rows in hours already reported has them rewritten exactly; a full disk (a 256 KiB tmpfs,
//! where the test may mount one) is a 507 that leaves the offset and the staged file as
//! they were.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weathervane_e2e::{CsvRow, Stack, assert_stored_exactly, read_csv};
use weathervane_harness::{ManagedProcess, Role, free_port};

const TIMEOUT: Duration = Duration::from_secs(180);
const CHUNK: u64 = 16 * 1024;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tus_upload.py")
}

/// Runs the tus client; returns the upload's URL and the offset it reached.
fn tus(endpoint: &str, file: &Path, args: &[&str]) -> (String, u64) {
    let output = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg(script())
            .arg(endpoint)
            .arg(file)
            .args(["--chunk-size", &CHUNK.to_string()])
            .args(args)
            .output()
            .expect("python3 runs (scripts/test installs tuspy)")
    });
    assert!(
        output.status.success(),
        "tus client failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value =
        serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    (
        json["url"].as_str().unwrap().to_owned(),
        json["offset"].as_u64().unwrap(),
    )
}

/// A streamer with an inbox and an upload server, not started.
fn streamer(stack: &Stack, inbox: &Path, port: u16) -> ManagedProcess {
    stack
        .role(Role::Streamer)
        .unwrap()
        .args(["--hour-interval", "0", "--inbox-quiet", "1"])
        .arg("--inbox")
        .arg(inbox)
        .args(["--upload-addr", &format!("127.0.0.1:{port}")])
        .arg("--state-file")
        .arg(stack.dir().join("streamer-state"))
        .arg("--rejects")
        .arg(stack.dir().join("rejects.csv"))
}

async fn wait_for_server(endpoint: &str) {
    let client = weathervane_e2e::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = client
            .request(reqwest::Method::OPTIONS, endpoint)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answered.is_ok_and(|r| r.status() == 204) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upload server never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// HEAD: the offset the server has.
async fn offset(url: &str) -> u64 {
    let response = weathervane_e2e::http_client()
        .head(url)
        .header("Tus-Resumable", "1.0.0")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "HEAD {url}");
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn progress(url: &str) -> (u16, serde_json::Value) {
    let response = weathervane_e2e::http_client()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Waits until the upload's progress says `done`; returns it.
async fn wait_done(url: &str) -> serde_json::Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = progress(url).await;
        assert_eq!(status, 200, "{body}");
        match body["state"].as_str() {
            Some("done") => return body,
            Some("failed") => panic!("upload failed: {body}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not done in time: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `dir/done` holds `count` reports.
fn wait_reports(inbox: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reports: Vec<serde_json::Value> = std::fs::read_dir(inbox.join("done"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".report.json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        if reports.len() >= count {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} files done",
            reports.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_after_its_client_and_the_streamer_die_and_streams_exactly() {
    let stack = Stack::start();
    let input = stack.generate(20, 2, 31);
    let size = std::fs::metadata(&input).unwrap().len();
    assert!(size > 6 * CHUNK, "several chunks: {size} bytes");
    let inbox = stack.dir().join("inbox");
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/uploads");
    let mut streamer = streamer(&stack, &inbox, port);
    streamer.start().unwrap();
    wait_for_server(&endpoint).await;

    // The client sends three chunks and exits.
    let (url, reached) = tus(&endpoint, &input, &["--chunks", "3", "--checksum"]);
    assert_eq!(reached, 3 * CHUNK);
    assert_eq!(offset(&url).await, 3 * CHUNK);
    let (_, body) = progress(&url).await;
    assert_eq!(body["state"], "uploading", "{body}");
    assert_eq!(body["bytes_received"], 3 * CHUNK);

    // Resumed from the server's offset, two more; then the streamer is SIGKILLed, having
    // (as if mid-chunk) written bytes it never acknowledged.
    let (_, reached) = tus(&endpoint, &input, &["--url", &url, "--chunks", "2"]);
    assert_eq!(reached, 5 * CHUNK);
    streamer.kill();
    let id = url.rsplit('/').next().unwrap();
    let part = inbox.join(".uploads").join(format!("{id}.part"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"junk never acknowledged"))
        .unwrap();
    streamer.start().unwrap();
    wait_for_server(&endpoint).await;
    assert_eq!(
        offset(&url).await,
        5 * CHUNK,
        "the committed offset survives"
    );

    // A corrupted chunk: its checksum is the real chunk's, its bytes are not.
    let mut chunk =
        std::fs::read(&input).unwrap()[(5 * CHUNK) as usize..(6 * CHUNK) as usize].to_vec();
    let real = {
        use base64::Engine as _;
        use sha1::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&chunk))
    };
    chunk[100] ^= 0x20;
    let refused = weathervane_e2e::http_client()
        .patch(&url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", (5 * CHUNK).to_string())
        .header("Upload-Checksum", format!("sha1 {real}"))
        .body(chunk)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 460);
    assert_eq!(
        offset(&url).await,
        5 * CHUNK,
        "a refused chunk does not move the offset"
    );
    // A PATCH at a stale offset is a conflict.
    let stale = weathervane_e2e::http_client()
        .patch(&url)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body("x")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);

    // The rest, with checksums.
    let (_, reached) = tus(&endpoint, &input, &["--url", &url, "--checksum"]);
    assert_eq!(reached, size);
    let done = wait_done(&url).await;
    let rows = read_csv(&input);
    assert_eq!(done["rows_read"], rows.len() as u64, "{done}");
    assert_eq!(done["rows_rejected"], 0);
    assert_eq!(done["hours"], 48);
    assert_eq!(done["hours_reported"], 48);
    assert_stored_exactly(&stack, &rows).await;
    let reports = tokio::task::block_in_place(|| wait_reports(&inbox, 1));
    assert_eq!(reports[0]["rows_read"], rows.len() as u64);
    streamer.kill();
}

/// `input`'s rows, for the expected union of several files.
fn rows_of(files: &[&Path]) -> Vec<CsvRow> {
    files.iter().flat_map(|f| read_csv(f)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_and_an_inbox_file_stream_exactly_and_a_terminated_upload_not_at_all() {
    let stack = Stack::start();
    let generate = |days: u32, seed: u64, start: &str| {
        let out = stack.dir().join(format!("in-{seed}.csv"));
        let status = Command::new(weathervane_harness::weathervane_binary().unwrap())
            .args(["gen", "--stations", "15", "--days", &days.to_string()])
            .args(["--seed", &seed.to_string(), "--start", start, "--out"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        out
    };
    // Different days, so no row of one is a duplicate of another's.
    let a = generate(1, 41, "2023-09-19");
    let b = generate(1, 42, "2023-09-20");
    let dropped = generate(1, 43, "2023-09-21");
    let cancelled = generate(2, 44, "2023-09-22");
    let inbox = stack.dir().join("inbox");
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/uploads");
    let mut streamer = streamer(&stack, &inbox, port);
    streamer.start().unwrap();
    wait_for_server(&endpoint).await;

    // Terminated mid-upload: gone (410), and nothing of it is streamed.
    let (cancel_url, _) = tus(&endpoint, &cancelled, &["--chunks", "2"]);
    let deleted = weathervane_e2e::http_client()
        .delete(&cancel_url)
        .header("Tus-Resumable", "1.0.0")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let head = weathervane_e2e::http_client()
        .head(&cancel_url)
        .header("Tus-Resumable", "1.0.0")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 410);

    // Two uploads at once, and a file renamed into the inbox meanwhile.
    let spawn = |file: &Path| {
        Command::new("python3")
            .arg(script())
            .arg(&endpoint)
            .arg(file)
            .args(["--chunk-size", &CHUNK.to_string(), "--checksum"])
            .output()
    };
    let (first, second) = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let one = scope.spawn(|| spawn(&a));
            let two = scope.spawn(|| spawn(&b));
            let staged = stack.dir().join("staged.csv");
            std::fs::copy(&dropped, &staged).unwrap();
            std::fs::rename(&staged, inbox.join("dropped.csv")).unwrap();
            (one.join().unwrap().unwrap(), two.join().unwrap().unwrap())
        })
    });
    let url_of = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
        json["url"].as_str().unwrap().to_owned()
    };
    for url in [url_of(first), url_of(second)] {
        let done = wait_done(&url).await;
        assert_eq!(done["hours_reported"], 24, "{done}");
    }
    let reports = tokio::task::block_in_place(|| wait_reports(&inbox, 3));
    assert!(
        reports
            .iter()
            .any(|r| r["name"] == "dropped.csv" && r["hours_reported"] == 24),
        "{reports:?}"
    );
    assert_stored_exactly(&stack, &rows_of(&[&a, &b, &dropped])).await;
    let ready: serde_json::Value = weathervane_e2e::http_client()
        .get(format!("{}/readyz", stack.admin_url(Role::Streamer)))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["inbox"]["ok"], true, "{ready}");
    assert!(
        std::fs::read_dir(inbox.join(".uploads"))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(cancel_url.rsplit('/').next().unwrap())),
        "the terminated upload's files are gone"
    );
    streamer.kill();
}

/// Unmounts the small file system when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_507_and_the_offset_and_staged_file_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .output();
    if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
        // Mounting needs root (CI and the test machines run as root).
        eprintln!("cannot mount a small tmpfs here; skipped: {mounted:?}");
        return;
    }
    let _unmount = Mounted(small.clone());
    let inbox = small.join("inbox");
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/uploads");
    // No Redis is needed to take uploads: the streamer retries it meanwhile.
    let mut streamer = ManagedProcess::weathervane("streamer", dir.path())
        .unwrap()
        .args(["streamer", "--redis-url", "redis://127.0.0.1:1"])
        .args([
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port().unwrap()),
        ])
        .arg("--inbox")
        .arg(&inbox)
        .args(["--upload-addr", &format!("127.0.0.1:{port}")]);
    streamer.start().unwrap();
    wait_for_server(&endpoint).await;
    let client = weathervane_e2e::http_client();
    let created = client
        .post(&endpoint)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (4 << 20).to_string())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let url = format!(
        "http://127.0.0.1:{port}{}",
        created.headers()["location"].to_str().unwrap()
    );
    let patch = |offset: u64, bytes: usize| {
        client
            .patch(&url)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(vec![b'x'; bytes])
            .timeout(Duration::from_secs(10))
            .send()
    };
    let first = patch(0, 16 * 1024).await.unwrap();
    assert_eq!(first.status(), 204);
    let full = patch(16 * 1024, 1 << 20).await.unwrap();
    assert_eq!(full.status(), 507);
    let body: serde_json::Value = full.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no space left"),
        "{body}"
    );
    assert_eq!(offset(&url).await, 16 * 1024, "the offset did not move");
    let id = url.rsplit('/').next().unwrap();
    let staged = std::fs::metadata(inbox.join(".uploads").join(format!("{id}.part"))).unwrap();
    assert_eq!(
        staged.len(),
        16 * 1024,
        "the refused chunk was cut off again"
    );
    // Room again for a small chunk: the upload goes on.
    let next = patch(16 * 1024, 8 * 1024).await.unwrap();
    assert_eq!(next.status(), 204);
    assert_eq!(offset(&url).await, 24 * 1024);
    streamer.kill();
}

/// The reports in `inbox/<folder>`, by the name each file arrived with.
fn reports_in(inbox: &Path, folder: &str) -> Vec<serde_json::Value> {
    std::fs::read_dir(inbox.join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".report.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_file_streams_exactly_across_a_streamer_kill_and_a_bad_one_fails() {
    let stack = Stack::start();
    let input = stack.generate(20, 1, 51);
    let inbox = stack.dir().join("inbox");
    let port = free_port().unwrap();
    let mut streamer = streamer(&stack, &inbox, port)
        .args(["--batch-interval", "0.05"])
        .args(["--max-pending-hours", "1"]);
    streamer.start().unwrap();
    wait_for_server(&format!("http://127.0.0.1:{port}/uploads")).await;
    std::fs::write(stack.dir().join("bad.tmp"), "a;b;c\n1;2;3\n").unwrap();
    std::fs::rename(stack.dir().join("bad.tmp"), inbox.join("bad.csv")).unwrap();
    std::fs::copy(&input, stack.dir().join("good.tmp")).unwrap();
    std::fs::rename(stack.dir().join("good.tmp"), inbox.join("good.csv")).unwrap();

    // Killed while the file is being streamed (in processing/), then restarted.
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::read_dir(inbox.join("processing")).unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "never taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    streamer.kill();
    assert!(
        reports_in(&inbox, "done").is_empty(),
        "killed before the file was done"
    );
    streamer.start().unwrap();

    let done = tokio::task::block_in_place(|| wait_reports(&inbox, 1));
    assert_eq!(done[0]["name"], "good.csv");
    assert_eq!(done[0]["hours_reported"], 24, "{}", done[0]);
    assert_stored_exactly(&stack, &read_csv(&input)).await;
    let failed = reports_in(&inbox, "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["name"], "bad.csv");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("bad header"), "{error}");
    assert!(std::fs::read_dir(inbox.join("processing")).unwrap().count() == 0);
    streamer.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_file_with_rows_in_hours_already_reported_rewrites_them_exactly() {
    let stack = Stack::start();
    let first = stack.generate(12, 1, 61);
    let second = stack.generate(9, 1, 62);
    let inbox = stack.dir().join("inbox");
    let port = free_port().unwrap();
    let mut streamer = streamer(&stack, &inbox, port);
    streamer.start().unwrap();
    wait_for_server(&format!("http://127.0.0.1:{port}/uploads")).await;
    let drop_in = |file: &Path, name: &str| {
        let staged = stack.dir().join(format!("{name}.tmp"));
        std::fs::copy(file, &staged).unwrap();
        std::fs::rename(&staged, inbox.join(name)).unwrap();
    };
    drop_in(&first, "first.csv");
    tokio::task::block_in_place(|| wait_reports(&inbox, 1));
    assert_stored_exactly(&stack, &read_csv(&first)).await;

    // The same day again, other stations: every hour gets a new generation and is
    // rewritten with both files' rows (a station and time already there is a duplicate).
    drop_in(&second, "second.csv");
    let reports = tokio::task::block_in_place(|| wait_reports(&inbox, 2));
    let mut expected = read_csv(&first);
    let seen: std::collections::HashSet<(String, String)> = expected
        .iter()
        .map(|r| (r["zip_code"].clone(), r["time"].clone()))
        .collect();
    let extra: Vec<CsvRow> = read_csv(&second)
        .into_iter()
        .filter(|r| !seen.contains(&(r["zip_code"].clone(), r["time"].clone())))
        .collect();
    let duplicates = read_csv(&second).len() - extra.len();
    expected.extend(extra);
    let report = reports.iter().find(|r| r["name"] == "second.csv").unwrap();
    assert_eq!(report["rows_rejected"], duplicates as u64, "{report}");
    assert_eq!(report["hours_reported"], 24, "{report}");
    assert_stored_exactly(&stack, &expected).await;
    streamer.kill();
}
