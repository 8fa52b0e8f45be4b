//! A small run of the benchmark (`weathervane_lab::bench::run`), so every phase keeps
//! working; the full-scale run is not part of the tests (see BENCHMARKS.md).

use weathervane_lab::bench::{self, BenchArgs};

#[test]
fn every_bench_phase_runs_and_the_pipeline_run_verifies() {
    let args = BenchArgs {
        stations: 120,
        hours: 2,
        outage: 1,
        scale: vec![1, 2],
        scale_hours: 1,
        api_seconds: 1,
        connections: 8,
        ceiling_writers: vec![1, 2, 3],
        write_rows: 5000,
        out: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(bench::run(args))
        .unwrap_or_else(|error| panic!("bench failed: {error:#}"));
    let verdict = &report.pipeline.verdict;
    assert!(verdict.passed(), "{verdict}");
    assert_eq!(
        (verdict.hours_correct, verdict.hours, verdict.rows_stored),
        (2, 2, 240),
        "{verdict}"
    );
    assert_eq!(report.pipeline.rows, 240);
    let scaled: Vec<(u32, u64)> = report.scale.iter().map(|(f, run)| (*f, run.rows)).collect();
    assert_eq!(scaled, [(1, 120), (2, 240)]);
    assert!(report.api.checked > 0);
    for load in [
        &report.herd.one,
        &report.herd.three,
        &report.herd.one_influx_down,
    ] {
        assert!(load.rps > 0.0, "{load:?}");
    }

    let markdown = report.markdown();
    for section in [
        "### Throughput",
        "### Reports",
        "### API",
        "### The api herd",
        "### Recovery",
        "### Memory",
        "### Scale",
    ] {
        assert!(markdown.contains(section), "{section} missing:\n{markdown}");
    }
    assert!(
        markdown.contains("2/2 hours correct, 240 of 240 rows"),
        "{markdown}"
    );
    assert!(markdown.contains("| 2x (240) |"), "{markdown}");
}
