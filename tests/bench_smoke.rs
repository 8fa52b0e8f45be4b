//! A small run of `weathervane bench`, so every phase of the benchmark keeps working; the
//! full-scale run is not part of the tests (see BENCHMARKS.md).

use std::process::Command;

#[test]
fn every_bench_phase_runs_and_the_pipeline_run_verifies() {
    let output = Command::new(weathervane_harness::weathervane_binary().unwrap())
        .args([
            "bench",
            "--stations",
            "120",
            "--hours",
            "2",
            "--outage",
            "1",
            "--scale",
            "1,2",
            "--scale-hours",
            "1",
            "--api-seconds",
            "1",
            "--connections",
            "8",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for section in [
        "### Throughput",
        "### Reports",
        "### API",
        "### Recovery",
        "### Memory",
        "### Scale",
    ] {
        assert!(stdout.contains(section), "{section} missing:\n{stdout}");
    }
    assert!(
        stdout.contains("2/2 hours correct, 240 of 240 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("| 2x (240) |"), "{stdout}");
}
