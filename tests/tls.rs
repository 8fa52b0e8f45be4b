//! TLS end to end: the whole pipeline over `rediss://` (a real redis-server with its TLS
//! listener, asking for client certificates) and `https://` (a real influxd with
//! https-enabled), with certificates this test makes; and a CA that does not match, or a
//! missing client certificate, failing fast with a clear error instead of being retried
//! as an outage.

use std::path::Path;
use std::time::Duration;

use weathervane_e2e::{
    Expected, Stack, TestCertificates, assert_averages_served, assert_stored_exactly,
};
use weathervane_harness::{LocalStack, ManagedProcess, Role};

/// A certificate failure must end a role well within this: no retry loop.
const FAIL_FAST: Duration = Duration::from_secs(20);

/// A stack whose Redis asks for client certificates and whose InfluxDB serves https, with
/// every role given the test CA and the client certificate.
fn tls_stack(certificates: &TestCertificates, roles: &[Role]) -> Stack {
    let builder = LocalStack::builder()
        .redis_tls(certificates.server(true))
        .influx_tls(certificates.server(false))
        .env("RUST_LOG", "info")
        .env("REDIS_CA_FILE", &certificates.ca)
        .env("REDIS_CLIENT_CERT", &certificates.client_certificate)
        .env("REDIS_CLIENT_KEY", &certificates.client_key)
        .env("INFLUXDB_CA_FILE", &certificates.ca);
    let builder = roles
        .iter()
        .fold(builder, |builder, role| builder.role(*role));
    Stack::with_ca(builder.start().unwrap(), &certificates.ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_stores_and_reports_exactly_over_rediss_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = TestCertificates::generate(dir.path());
    let stack = tls_stack(&certificates, &[Role::Ingester, Role::Processor, Role::Api]);
    assert!(stack.redis.url().starts_with("rediss://"));
    assert!(stack.influx.url().starts_with("https://"));
    let input = stack.generate(60, 1, 5);
    stack.stream_once(&input, &["--hour-interval", "0", "--once"]);
    let rows = weathervane_e2e::read_csv(&input);
    assert_stored_exactly(&stack, &rows).await;

    // The API reads the reports over https too.
    let expected = Expected::from_rows(&rows);
    assert_averages_served(stack.api_addr(), &expected, "2023-09-19T07", 3).await;
}

/// Starts `process`, and asserts it exits non-zero within [`FAIL_FAST`] with a log that
/// names the certificate check and `setting`.
fn assert_fails_fast(stack: &Stack, mut process: ManagedProcess, setting: &str) {
    process.start().unwrap();
    let status = process.wait_timeout(FAIL_FAST).unwrap();
    let log = stack.log(&process);
    assert!(
        status.is_some_and(|s| !s.success()),
        "still running or exit 0 after {FAIL_FAST:?}: {status:?}\n{log}"
    );
    assert!(
        log.contains("certificate check") && log.contains(setting),
        "the error does not say what failed and what to check:\n{log}"
    );
    // Ended, not retried: a message published meanwhile may have failed once, but
    // nothing waited for the certificate to change.
    assert!(
        !log.contains("recovered"),
        "a certificate failure was treated as an outage:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_fails_at_once_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = TestCertificates::generate(dir.path());
    let stack = tls_stack(&certificates, &[]);
    let other_ca: &Path = &certificates.other_ca;

    // Redis's certificate is not signed by the CA the ingester trusts.
    let ingester = stack
        .role(Role::Ingester)
        .unwrap()
        .env("REDIS_CA_FILE", other_ca);
    assert_fails_fast(&stack, ingester, "REDIS_CA_FILE");

    // Redis asks for a client certificate and the streamer has none (an empty variable
    // counts as unset).
    let input = stack.generate(5, 1, 1);
    let streamer = ManagedProcess::weathervane("streamer-without-certificate", stack.dir())
        .unwrap()
        .args(["streamer", "--once", "--rejects"])
        .arg(stack.dir().join("rejects.csv"))
        .arg("--input")
        .arg(&input)
        .env("REDIS_URL", stack.redis.url())
        .env("REDIS_CA_FILE", &certificates.ca)
        // Not the fixed default port: tests run side by side.
        .env("WEATHERVANE_ADMIN_ADDR", "127.0.0.1:0");
    assert_fails_fast(&stack, streamer, "certificate");

    // InfluxDB's certificate is not signed by the CA the processor trusts.
    let processor = stack
        .role(Role::Processor)
        .unwrap()
        .env("INFLUXDB_CA_FILE", other_ca);
    assert_fails_fast(&stack, processor, "INFLUXDB_CA_FILE");
}
