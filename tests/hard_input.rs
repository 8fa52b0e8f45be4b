//! Input a real user may have: typo years (0023, 1600, 2300, +10000), values that would
//! overflow a sum (two 1e308 rows in one state), a 512 KiB name, and a 2 MB and a 64 MB
//! record (over the 1 MiB record cap, so skipped without being read whole), among
//! good rows over several hours, streamed with `--once --max-pending-hours 1`. The
//! streamer must finish (exit 0) with every good hour stored and reported exactly, and
//! every bad row in the rejects file with its file, line and reason.

use std::io::Write;
use std::time::Duration;

use weathervane_e2e::{Stack, assert_stored_exactly, read_csv};

const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_rejected_with_file_line_and_reason_and_every_good_hour_is_reported() {
    let stack = Stack::start();
    let generated = stack.generate(30, 1, 23);
    let mut good = read_csv(&generated);
    // The bad rows are copies of a good row with one cell spoiled, appended after it.
    let text = std::fs::read_to_string(&generated).unwrap();
    let header = text.lines().next().unwrap().to_owned();
    let template = text.lines().nth(1).unwrap().to_owned();
    let columns: Vec<&str> = header.split(',').collect();
    let cell = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let with = |changes: &[(&str, &str)]| {
        let mut cells: Vec<String> = template.split(',').map(str::to_owned).collect();
        for (name, value) in changes {
            cells[cell(name)] = (*value).to_owned();
        }
        cells.join(",")
    };
    let time = |year: &str| format!("{year}-09-19 05:00");
    let (long_name, big_name, huge_name) = (
        "l".repeat(512 << 10),
        "n".repeat(2 << 20),
        "h".repeat(64 << 20),
    );
    let bad: Vec<(String, &str)> = vec![
        (
            with(&[("time", &time("0023")), ("zip_code", "90001")]),
            "year 23",
        ),
        (
            with(&[("time", &time("1600")), ("zip_code", "90002")]),
            "year 1600",
        ),
        (
            with(&[("time", &time("2300")), ("zip_code", "90003")]),
            "year 2300",
        ),
        (
            with(&[("time", "+10000-09-19T05:00:00Z"), ("zip_code", "90004")]),
            "time",
        ),
        (
            with(&[("temp_c", "1e308"), ("zip_code", "90005")]),
            "beyond",
        ),
        (
            with(&[("temp_c", "1e308"), ("zip_code", "90006")]),
            "beyond",
        ),
        (
            with(&[("name", &long_name), ("zip_code", "90007")]),
            "name is 524288 bytes",
        ),
        (
            with(&[("name", &big_name), ("zip_code", "90008")]),
            "record is longer than 1048576 bytes; skipped",
        ),
        (
            with(&[("name", &huge_name), ("zip_code", "90009")]),
            "record is longer than 1048576 bytes; skipped",
        ),
    ];
    let input = stack.dir().join("hard.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    write!(file, "{text}").unwrap();
    let first_bad_line = text.lines().count() + 1;
    for (row, _) in &bad {
        writeln!(file, "{row}").unwrap();
    }
    // A good row (a station of its own) after the skipped records: it must be found where
    // the index put it, so the offsets after them must be true.
    let after = with(&[("zip_code", "90010")]);
    writeln!(file, "{after}").unwrap();
    good.push(
        header
            .split(',')
            .map(str::to_owned)
            .zip(after.split(',').map(str::to_owned))
            .collect(),
    );
    file.into_inner().unwrap().sync_all().unwrap();
    drop(text);

    let mut streamer = stack.streamer(
        &input,
        &[
            "--hour-interval",
            "0",
            "--once",
            "--max-pending-hours",
            "1",
            "--announce-interval",
            "1",
        ],
    );
    streamer.start().unwrap();
    let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "the streamer did not finish: {status:?}"
    );
    assert_stored_exactly(&stack, &good).await;

    let rejects = csv::Reader::from_path(stack.dir().join("rejects.csv"))
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        rejects.len(),
        bad.len(),
        "one reject per bad row: {rejects:?}"
    );
    for (offset, (_, reason)) in bad.iter().enumerate() {
        let line = (first_bad_line + offset).to_string();
        let reject = rejects
            .iter()
            .find(|r| r[1] == line)
            .unwrap_or_else(|| panic!("no reject for line {line}"));
        assert_eq!(
            &reject[0],
            input.display().to_string(),
            "file of line {line}"
        );
        assert!(
            reject[2].contains(reason),
            "line {line}: {:?} does not say {reason:?}",
            &reject[2]
        );
    }
}
