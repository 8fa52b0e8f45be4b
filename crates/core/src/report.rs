//! The report math, independent of where the numbers come from: per hour, each state's
//! averages and row count, each state's zip-code extremes per metric, and the states with
//! the highest and lowest average per metric. Ties go to the smallest zip code or state.

use std::collections::BTreeMap;

use crate::HourKey;
use crate::row::Metric;
use crate::schema::{self, StateExtremeFields, ZipExtremeFields};

/// The four metrics of one row, in [`Metric::ALL`] order.
pub type MetricValues = [f64; 4];

#[derive(Clone, Debug, PartialEq)]
pub struct StateAverage {
    pub state: String,
    pub count: u64,
    pub means: MetricValues,
}

/// The holder (zip code or state) of an extreme value.
#[derive(Clone, Debug, PartialEq)]
pub struct Extreme {
    pub holder: String,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExtremePair {
    pub max: Extreme,
    pub min: Extreme,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HourReport {
    pub hour: HourKey,
    /// Sorted by state.
    pub averages: Vec<StateAverage>,
    /// Per state, per metric (in [`Metric::ALL`] order): which zip codes hold the extremes.
    pub zip_extremes: BTreeMap<String, [ExtremePair; 4]>,
    /// Per metric: which states hold the highest and lowest average. Empty if no rows.
    pub state_extremes: Vec<ExtremePair>,
}

impl HourReport {
    pub fn rows(&self) -> u64 {
        self.averages.iter().map(|a| a.count).sum()
    }

    /// Whether every figure is a finite number. Rows are bounded (see
    /// [`crate::row::HARD_MAX_ABS_VALUE`]) so sums cannot overflow; a report that is not
    /// finite anyway must never be written.
    pub fn is_finite(&self) -> bool {
        let pairs = self
            .zip_extremes
            .values()
            .flatten()
            .chain(&self.state_extremes);
        self.averages
            .iter()
            .all(|a| a.means.iter().all(|m| m.is_finite()))
            && pairs
                .into_iter()
                .all(|p| p.max.value.is_finite() && p.min.value.is_finite())
    }
}

/// Folds a candidate into an extreme pair: strictly greater (or smaller) wins, and on a
/// tie the smaller holder wins.
fn fold(pair: &mut Option<ExtremePair>, holder: &str, value: f64) {
    let candidate = || Extreme {
        holder: holder.to_owned(),
        value,
    };
    let beats = |value: f64, holder: &str, best: &Extreme, better: std::cmp::Ordering| {
        value.total_cmp(&best.value) == better
            || (value == best.value && holder < best.holder.as_str())
    };
    match pair {
        None => {
            *pair = Some(ExtremePair {
                max: candidate(),
                min: candidate(),
            })
        }
        Some(pair) => {
            if beats(value, holder, &pair.max, std::cmp::Ordering::Greater) {
                pair.max = candidate();
            }
            if beats(value, holder, &pair.min, std::cmp::Ordering::Less) {
                pair.min = candidate();
            }
        }
    }
}

#[derive(Default)]
struct StateAccumulator {
    count: u64,
    sums: MetricValues,
    extremes: [Option<ExtremePair>; 4],
}

/// Computes the report of `hour` from its rows, given as `(state, zip_code, values)`.
pub fn compute<'a>(
    hour: HourKey,
    rows: impl IntoIterator<Item = (&'a str, &'a str, MetricValues)>,
) -> HourReport {
    let mut states: BTreeMap<&str, StateAccumulator> = BTreeMap::new();
    for (state, zip, values) in rows {
        let acc = states.entry(state).or_default();
        acc.count += 1;
        for (i, value) in values.into_iter().enumerate() {
            acc.sums[i] += value;
            fold(&mut acc.extremes[i], zip, value);
        }
    }
    let averages: Vec<StateAverage> = states
        .iter()
        .map(|(state, acc)| StateAverage {
            state: (*state).to_owned(),
            count: acc.count,
            means: acc.sums.map(|sum| sum / acc.count as f64),
        })
        .collect();
    let zip_extremes = states
        .into_iter()
        .map(|(state, acc)| {
            (
                state.to_owned(),
                acc.extremes
                    .map(|e| e.expect("a state in the map has rows")),
            )
        })
        .collect();
    let mut state_extremes: [Option<ExtremePair>; 4] = Default::default();
    for average in &averages {
        for (i, mean) in average.means.iter().enumerate() {
            fold(&mut state_extremes[i], &average.state, *mean);
        }
    }
    HourReport {
        hour,
        averages,
        zip_extremes,
        state_extremes: state_extremes.into_iter().flatten().collect(),
    }
}

/// The report as line protocol for the three report measurements, timestamped at the
/// start of the hour, so writing it again overwrites it.
pub fn encode(report: &HourReport) -> Vec<u8> {
    let time = report.hour.start_secs();
    let mut lines = Vec::new();
    for average in &report.averages {
        lines = schema::encode_average(lines, &average.state, &average.into(), time);
    }
    for (state, pairs) in &report.zip_extremes {
        for (metric, pair) in Metric::ALL.iter().zip(pairs) {
            let fields = ZipExtremeFields::new(*metric, pair);
            lines = schema::encode_zip_extreme(lines, state, &fields, time);
        }
    }
    for (metric, pair) in Metric::ALL.iter().zip(&report.state_extremes) {
        let fields = StateExtremeFields::new(*metric, pair);
        lines = schema::encode_state_extreme(lines, &fields, time);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> HourKey {
        "2023-09-19T23".parse().unwrap()
    }

    #[test]
    fn averages_counts_and_extremes_with_ties_to_the_smallest_holder() {
        let rows = [
            ("CA", "90002", [10.0, 1000.0, 50.0, 0.0]),
            ("CA", "90001", [20.0, 1000.0, 40.0, 0.5]),
            ("CA", "90003", [20.0, 990.0, 40.0, 0.0]),
            ("NY", "10001", [5.0, 1020.0, 90.0, 2.0]),
        ];
        let report = compute(hour(), rows);
        assert_eq!(report.rows(), 4);
        let ca = &report.averages[0];
        assert_eq!((ca.state.as_str(), ca.count), ("CA", 3));
        assert!((ca.means[0] - 50.0 / 3.0).abs() < 1e-12);
        assert!((ca.means[1] - 2990.0 / 3.0).abs() < 1e-12);
        let ca_extremes = &report.zip_extremes["CA"];
        // temp_c: 90001 and 90003 tie at 20.0 → 90001; min 10.0 → 90002.
        assert_eq!(
            ca_extremes[0].max,
            Extreme {
                holder: "90001".into(),
                value: 20.0
            }
        );
        assert_eq!(
            ca_extremes[0].min,
            Extreme {
                holder: "90002".into(),
                value: 10.0
            }
        );
        // pressure: 90001 and 90002 tie at the max → 90001.
        assert_eq!(ca_extremes[1].max.holder, "90001");
        assert_eq!(ca_extremes[1].min.holder, "90003");
        // precip: 90002 and 90003 tie at the min → 90002.
        assert_eq!(ca_extremes[3].min.holder, "90002");
        // state extremes from the averages.
        assert_eq!(report.state_extremes[0].max.holder, "CA");
        assert_eq!(report.state_extremes[0].min.holder, "NY");
        assert_eq!(
            report.state_extremes[2].max,
            Extreme {
                holder: "NY".into(),
                value: 90.0
            }
        );
    }

    #[test]
    fn states_tied_on_an_average_go_to_the_smaller_code() {
        let report = compute(hour(), [("WA", "1", [1.0; 4]), ("AK", "2", [1.0; 4])]);
        assert!(
            report
                .state_extremes
                .iter()
                .all(|p| p.max.holder == "AK" && p.min.holder == "AK")
        );
    }

    #[test]
    fn encodes_one_point_per_state_per_state_metric_and_per_metric() {
        let report = compute(
            hour(),
            [
                ("CA", "90001", [1.0, 2.0, 3.0, 4.0]),
                ("NY", "10001", [1.5, 2.0, 3.0, 4.0]),
            ],
        );
        let text = String::from_utf8(encode(&report)).unwrap();
        let count = |m: &str| text.lines().filter(|l| l.starts_with(m)).count();
        assert_eq!(
            (
                count("weather_averages,"),
                count("zip_code_extremes,"),
                count("state_extremes,")
            ),
            (2, 8, 4)
        );
        assert!(text.contains("weather_averages,state=CA avg_temp_c=1,avg_pressure_mb=2,avg_humidity=3,avg_precip_mm=4,count=1i 1695164400"));
        assert!(text.contains("zip_code_extremes,metric=temp_c,state=NY max_zip_code=\"10001\""));
        assert!(text.contains("state_extremes,metric=temp_c max_state=\"NY\",max_value=1.5,min_state=\"CA\",min_value=1 "));
    }

    #[test]
    fn no_rows_no_report() {
        let report = compute(hour(), []);
        assert!(report.averages.is_empty() && report.state_extremes.is_empty());
        assert!(encode(&report).is_empty());
    }
}
