//! Asking the roles' admin servers from a test: `/readyz` and `/livez` as status and JSON,
//! `/metrics` as text, one sample read out of that text, `promtool check metrics` on it,
//! and waiting until a role's readiness is what a test expects.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every admin call gives up after this: a role that does not answer fails the test.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// GET `url`: status and body text.
pub async fn admin_get(url: &str) -> (u16, String) {
    let response = crate::http_client()
        .get(url)
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// `/readyz` of the admin server at `admin` (`http://host:port`): status and JSON.
pub async fn readyz(admin: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_get(&format!("{admin}/readyz")).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|error| {
        panic!("{admin}/readyz answered {status} with non-JSON {body:?}: {error}")
    });
    (status, json)
}

/// Polls `/readyz` until `wanted` holds of its status and body, for up to `timeout`;
/// panics with the last answer if it never does. A refused connection (a role still
/// starting) is polled again.
pub async fn wait_readyz(
    admin: &str,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let answer = crate::http_client()
            .get(format!("{admin}/readyz"))
            .timeout(ADMIN_TIMEOUT)
            .send()
            .await;
        let last = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                if wanted(status, &body) {
                    return body;
                }
                format!("{status}: {body}")
            }
            Err(error) => format!("no answer: {error}"),
        };
        assert!(
            started.elapsed() < timeout,
            "{admin}/readyz never became {what} within {timeout:?}; last answer {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/metrics` of the admin server at `admin`, as text; asserts the status and type.
pub async fn scrape(admin: &str) -> String {
    let response = crate::http_client()
        .get(format!("{admin}/metrics"))
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {admin}/metrics: {error}"));
    assert_eq!(response.status().as_u16(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}` in exposition `text` (labels as written
/// between the braces, in any order), or `None` if there is no such sample.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: Vec<(&str, &str)> = label_text
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            let same = found.len() == labels.len() && labels.iter().all(|l| found.contains(l));
            same.then(|| value.parse().ok()).flatten()
        })
}

/// [`sample`], which must be there.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{text}"))
}

/// Runs `promtool check metrics` on `text` and panics with what it reports, if anything
/// (it exits non-zero on a lint problem and prints it).
pub fn promtool_check(role: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {role}'s /metrics ({}): {said}",
        output.status
    );
}
