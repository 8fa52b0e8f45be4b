//! What the input says the reports must be, and the check of the API's answers against
//! them; shared by replay and bench.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weathervane_core::HourKey;
use weathervane_core::report::{self, HourReport};
use weathervane_core::row::{CsvSource, Metric};

/// Hours of the input in order, with their reports as the input gives them.
pub fn expected_reports(data: &Path) -> anyhow::Result<Vec<HourReport>> {
    let mut rows: std::collections::BTreeMap<HourKey, Vec<(String, String, [f64; 4])>> =
        Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut source = CsvSource::open(data)?;
    while let Some(result) = source.next_row() {
        let Ok((_, row)) = result else { continue };
        if seen.insert((row.zip_code.clone(), row.time)) {
            let metrics = Metric::ALL.map(|m| row.metric(m));
            rows.entry(row.hour())
                .or_default()
                .push((row.state, row.zip_code, metrics));
        }
    }
    Ok(rows
        .iter()
        .map(|(hour, rows)| {
            report::compute(
                *hour,
                rows.iter().map(|(s, z, m)| (s.as_str(), z.as_str(), *m)),
            )
        })
        .collect())
}

pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Value)> {
    let client = http_client()?;
    let response = client.get(format!("http://{addr}{path}")).send().await?;
    Ok((
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    ))
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    weathervane_core::tls::install_provider();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// `/avg`, `/extremes` and `/state_extremes` for a few hours and states, against the
/// reports computed from the input.
pub async fn check_api(addr: &str, reports: &[HourReport]) -> anyhow::Result<usize> {
    let mut checked = 0;
    let picks = [0, reports.len() / 2, reports.len().saturating_sub(1)];
    for report in picks.iter().filter_map(|i| reports.get(*i)) {
        let (date, hour) = (report.hour.date(), report.hour.hour());
        for average in report.averages.iter().take(2) {
            let (status, body) = get(
                addr,
                &format!("/avg?state={}&hour={hour}&date={date}", average.state),
            )
            .await?;
            anyhow::ensure!(
                status == 200,
                "/avg {} {}: {status} {body}",
                average.state,
                report.hour
            );
            anyhow::ensure!(
                body["count"].as_u64() == Some(average.count),
                "/avg {} {}: count {body}",
                average.state,
                report.hour
            );
            anyhow::ensure!(
                body["avg_temp_c"]
                    .as_f64()
                    .is_some_and(|t| (t - average.means[0]).abs() < 1e-9),
                "/avg {} {}: {body}",
                average.state,
                report.hour
            );
            let (status, body) = get(
                addr,
                &format!("/extremes?state={}&hour={hour}&date={date}", average.state),
            )
            .await?;
            let max = &report.zip_extremes[&average.state][0].max;
            anyhow::ensure!(
                status == 200
                    && body["max"]["temp_c"]["zip_code"].as_str() == Some(max.holder.as_str()),
                "/extremes {}: {status} {body}",
                report.hour
            );
            checked += 2;
        }
        let (status, body) = get(addr, &format!("/state_extremes?hour={hour}&date={date}")).await?;
        let min = &report.state_extremes[0].min;
        anyhow::ensure!(
            status == 200 && body["min"]["temp_c"]["state"].as_str() == Some(min.holder.as_str()),
            "/state_extremes {}: {status} {body}",
            report.hour
        );
        checked += 1;
    }
    Ok(checked)
}
