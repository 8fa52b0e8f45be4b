//! Test support for the end-to-end tests: what the database should hold, computed
//! straight from the CSV with the `csv` crate and plain arithmetic (none of WeatherVane's
//! own parsing or report code), and small helpers to ask InfluxDB and the API.

use std::collections::BTreeMap;
use std::path::Path;

/// The four report metrics.
pub const METRICS: [&str; 4] = ["temp_c", "pressure_mb", "humidity", "precip_mm"];

/// One input row as text cells by column name.
pub type CsvRow = BTreeMap<String, String>;

pub fn read_csv(path: &Path) -> Vec<CsvRow> {
    let mut reader = csv::Reader::from_path(path).expect("readable CSV");
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    reader.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(str::to_owned)).collect()).collect()
}

/// `YYYY-MM-DD HH:MM` → `YYYY-MM-DDTHH` (the hour key) and the RFC 3339 time InfluxDB shows.
pub fn hour_of(time: &str) -> String {
    format!("{}T{}", &time[..10], &time[11..13])
}

#[derive(Clone, Debug, PartialEq)]
pub struct Extreme {
    pub holder: String,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct StateHour {
    pub count: u64,
    pub means: [f64; 4],
    /// Per metric: (max, min), ties to the smallest zip code.
    pub extremes: Vec<(Extreme, Extreme)>,
}

#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// hour → state → figures
    pub hours: BTreeMap<String, BTreeMap<String, StateHour>>,
}

/// Picks the max and min of `(holder, value)` pairs, ties to the smallest holder.
pub fn extremes_of(mut pairs: Vec<(String, f64)>) -> (Extreme, Extreme) {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut max = pairs[0].clone();
    let mut min = pairs[0].clone();
    for (holder, value) in pairs {
        if value > max.1 {
            max = (holder.clone(), value);
        }
        if value < min.1 {
            min = (holder, value);
        }
    }
    (Extreme { holder: max.0, value: max.1 }, Extreme { holder: min.0, value: min.1 })
}

impl Expected {
    pub fn from_rows(rows: &[CsvRow]) -> Self {
        let mut grouped: BTreeMap<String, BTreeMap<String, Vec<&CsvRow>>> = BTreeMap::new();
        for row in rows {
            grouped.entry(hour_of(&row["time"])).or_default().entry(row["state"].clone()).or_default().push(row);
        }
        let hours = grouped
            .into_iter()
            .map(|(hour, states)| {
                let figures = states
                    .into_iter()
                    .map(|(state, rows)| {
                        let value = |row: &CsvRow, metric: &str| row[metric].parse::<f64>().unwrap();
                        let count = rows.len() as u64;
                        let means = METRICS.map(|m| rows.iter().map(|r| value(r, m)).sum::<f64>() / count as f64);
                        let extremes = METRICS
                            .iter()
                            .map(|m| extremes_of(rows.iter().map(|r| (r["zip_code"].clone(), value(r, m))).collect()))
                            .collect();
                        (state, StateHour { count, means, extremes })
                    })
                    .collect();
                (hour, figures)
            })
            .collect();
        Self { hours }
    }

    /// Per metric: the states with the highest and lowest average in `hour`.
    pub fn state_extremes(&self, hour: &str) -> Vec<(Extreme, Extreme)> {
        let states = &self.hours[hour];
        (0..4).map(|i| extremes_of(states.iter().map(|(s, f)| (s.clone(), f.means[i])).collect())).collect()
    }
}

/// `a` and `b` equal up to float rounding in a sum of a few hundred values.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Runs one InfluxQL statement; returns the rows of every series as column → value maps.
pub async fn influx_query(url: &str, db: &str, statement: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/query"))
        .query(&[("db", db), ("q", statement)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for series in body["results"][0]["series"].as_array().into_iter().flatten() {
        let columns: Vec<String> = series["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        for values in series["values"].as_array().unwrap() {
            rows.push(columns.iter().cloned().zip(values.as_array().unwrap().iter().cloned()).collect());
        }
    }
    rows
}

/// GET on the API: status and JSON body.
pub async fn api_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_break_ties_by_the_smallest_holder() {
        let (max, min) = extremes_of(vec![("b".into(), 2.0), ("a".into(), 2.0), ("c".into(), 1.0), ("d".into(), 1.0)]);
        assert_eq!((max.holder.as_str(), min.holder.as_str()), ("a", "c"));
    }
}
