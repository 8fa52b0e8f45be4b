//! Two deployments on one Redis: each with its own channel namespace and deployment id,
//! its own InfluxDB and its own input, streaming at the same time. Each InfluxDB holds
//! exactly its own input: neither deployment stores, requests or confirms the other's.

use std::time::Duration;

use weathervane_e2e::{Stack, assert_stored_exactly, read_csv};
use weathervane_harness::{LocalStack, Role};

const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_sharing_a_redis_each_store_exactly_their_own_input() {
    let site_a = Stack::start();
    // Site B's roles use site A's Redis (its own redis-server stays idle).
    let site_b = Stack::with(
        LocalStack::builder()
            .env("RUST_LOG", "info")
            .env("REDIS_URL", site_a.redis.url())
            .env("WEATHERVANE_NAMESPACE", "site_b")
            .env("WEATHERVANE_DEPLOYMENT", "site-b")
            .role(Role::Ingester)
            .role(Role::Processor)
            .start()
            .unwrap(),
    );
    let input_a = site_a.generate(40, 1, 101);
    let input_b = site_b.generate(30, 1, 202);
    let args = ["--hour-interval", "0", "--batch-size", "25", "--once"];
    let mut streamer_a = site_a.streamer(&input_a, &args);
    let mut streamer_b = site_b.streamer(&input_b, &args);
    streamer_a.start().unwrap();
    streamer_b.start().unwrap();
    for (site, streamer) in [(&site_a, &mut streamer_a), (&site_b, &mut streamer_b)] {
        let status = tokio::task::block_in_place(|| streamer.wait_timeout(TIMEOUT).unwrap());
        assert!(
            status.is_some_and(|s| s.success()),
            "a streamer did not finish: {status:?}\n{}",
            site.log(streamer)
        );
    }
    assert_stored_exactly(&site_a, &read_csv(&input_a)).await;
    assert_stored_exactly(&site_b, &read_csv(&input_b)).await;
}
