//! The hourly read-back comparison (`bench::readback`), run on its own: ignored by
//! default (it is a measurement, not a check). Full scale, 5 rounds:
//! `WV_READBACK_STATIONS=43800 cargo test --release -p weathervane-lab --test readback -- --ignored --nocapture`.
//! `WV_READBACK_ONLY=csv,msgpack` keeps only those variants beside the current query.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of several minutes; run it by name"]
async fn readback_variants() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let only: Option<Vec<String>> = std::env::var("WV_READBACK_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let work = tempfile::tempdir().unwrap();
    let result = weathervane_lab::bench::readback_phase(
        work.path(),
        var("WV_READBACK_STATIONS", 43_800) as u32,
        5000,
        var("WV_READBACK_WRITERS", 2),
        var("WV_READBACK_ROUNDS", 5),
        only.as_deref(),
    )
    .await
    .unwrap();
    println!("{}", result.markdown());
}
