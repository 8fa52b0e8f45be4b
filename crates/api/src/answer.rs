//! The JSON bodies of the report endpoints, as types built from the schema's report
//! records (`weathervane_core::schema`), so a field is spelled once: `/avg` is the
//! `weather_averages` fields with the state and hour, `/extremes` and `/state_extremes`
//! regroup the extremes records by side and metric.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weathervane_core::HourKey;
use weathervane_core::row::Metric;
use weathervane_core::schema::{AverageFields, StateExtremeFields, ZipExtremeFields};

/// The date and two-digit hour every answer carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct When {
    /// The UTC date, `YYYY-MM-DD`.
    #[schema(example = "2023-09-19")]
    pub date: String,
    /// The UTC hour, two digits `00`-`23`.
    #[schema(example = "05")]
    pub hour: String,
}

impl From<HourKey> for When {
    fn from(hour: HourKey) -> Self {
        Self {
            date: hour.date().to_string(),
            hour: format!("{:02}", hour.hour()),
        }
    }
}

/// `/avg` of one hour: a state's means and row count.
#[derive(Debug, Serialize, ToSchema)]
pub struct AverageAnswer {
    #[schema(example = "CA")]
    pub state: String,
    #[serde(flatten)]
    pub when: When,
    #[serde(flatten)]
    pub fields: AverageFields,
}

/// The zip code that holds an extreme.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZipHolder {
    pub zip_code: String,
    pub value: f64,
}

/// The state that holds an extreme.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateHolder {
    pub state: String,
    pub value: f64,
}

/// `{"max": {metric: holder}, "min": {metric: holder}}`, metrics in the documented order
/// (temp_c, pressure_mb, humidity, precip_mm).
#[derive(Debug, Serialize)]
pub struct Sides<H: Serialize> {
    #[serde(serialize_with = "in_metric_order")]
    pub max: BTreeMap<String, H>,
    #[serde(serialize_with = "in_metric_order")]
    pub min: BTreeMap<String, H>,
}

/// A metric map in [`Metric::ALL`] order rather than the map's alphabetical one.
fn in_metric_order<H: Serialize, S: serde::Serializer>(
    by_metric: &BTreeMap<String, H>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;

    let mut map = serializer.serialize_map(Some(by_metric.len()))?;
    let known = Metric::ALL.map(|m| m.name());
    for name in known {
        if let Some(holder) = by_metric.get(name) {
            map.serialize_entry(name, holder)?;
        }
    }
    for (name, holder) in by_metric
        .iter()
        .filter(|(n, _)| !known.contains(&n.as_str()))
    {
        map.serialize_entry(name, holder)?;
    }
    map.end()
}

/// `/extremes` of one hour: per side and metric, the zip code of the state that holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtremesAnswer {
    #[schema(example = "CA")]
    pub state: String,
    #[serde(flatten)]
    pub when: When,
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::ZipSides)]
    pub sides: Sides<ZipHolder>,
}

/// `/state_extremes` of one hour: per side and metric, the state whose average holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateExtremesAnswer {
    #[serde(flatten)]
    pub when: When,
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::StateSides)]
    pub sides: Sides<StateHolder>,
}

/// One hour's answer, or a day's: an array of hour answers in hour order (when `hour` is
/// left out and `date` given).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HourOrDay<T: ToSchema> {
    Hour(T),
    Day(Vec<T>),
}

/// A report record read back with its time (epoch seconds), for a day's series.
#[derive(Debug, Deserialize)]
pub struct Timed<T> {
    pub time: i64,
    #[serde(flatten)]
    pub record: T,
}

impl<T> Timed<T> {
    /// The hour of the record; `None` for a time InfluxDB cannot have written.
    pub fn hour(&self) -> Option<HourKey> {
        chrono::DateTime::from_timestamp(self.time, 0).map(HourKey::containing)
    }
}

impl Sides<ZipHolder> {
    pub fn from_zip(records: Vec<ZipExtremeFields>) -> Self {
        let mut sides = Self::empty();
        for record in records {
            sides.max.insert(
                record.metric.clone(),
                ZipHolder {
                    zip_code: record.max_zip_code,
                    value: record.max_value,
                },
            );
            sides.min.insert(
                record.metric,
                ZipHolder {
                    zip_code: record.min_zip_code,
                    value: record.min_value,
                },
            );
        }
        sides
    }
}

impl Sides<StateHolder> {
    pub fn from_states(records: Vec<StateExtremeFields>) -> Self {
        let mut sides = Self::empty();
        for record in records {
            sides.max.insert(
                record.metric.clone(),
                StateHolder {
                    state: record.max_state,
                    value: record.max_value,
                },
            );
            sides.min.insert(
                record.metric,
                StateHolder {
                    state: record.min_state,
                    value: record.min_value,
                },
            );
        }
        sides
    }
}

impl<H: Serialize> Sides<H> {
    fn empty() -> Self {
        Self {
            max: BTreeMap::new(),
            min: BTreeMap::new(),
        }
    }

    /// Whether every metric has its extremes (a partly written report is no report).
    pub fn is_complete(&self) -> bool {
        self.max.len() == weathervane_core::row::Metric::ALL.len()
            && weathervane_core::row::Metric::ALL
                .iter()
                .all(|m| self.max.contains_key(m.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_average_answer_has_the_documented_fields() {
        let answer = AverageAnswer {
            state: "CA".into(),
            when: "2023-09-19T05".parse::<HourKey>().unwrap().into(),
            fields: AverageFields {
                avg_temp_c: 17.4,
                avg_pressure_mb: 1012.6,
                avg_humidity: 71.2,
                avg_precip_mm: 0.01,
                count: 31,
            },
        };
        // Byte for byte: the keys in the documented order, the values at full precision.
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"state":"CA","date":"2023-09-19","hour":"05","avg_temp_c":17.4,"avg_pressure_mb":1012.6,"avg_humidity":71.2,"avg_precip_mm":0.01,"count":31}"#
        );
    }

    #[test]
    fn extremes_are_grouped_by_side_and_metric() {
        let records = ["temp_c", "pressure_mb", "humidity", "precip_mm"]
            .map(|metric| ZipExtremeFields {
                metric: metric.into(),
                max_zip_code: "90001".into(),
                max_value: 2.0,
                min_zip_code: "90002".into(),
                min_value: 1.0,
            })
            .to_vec();
        let sides = Sides::from_zip(records[..3].to_vec());
        assert!(!sides.is_complete(), "a metric is missing");
        let sides = Sides::from_zip(records);
        assert!(sides.is_complete());
        let body = serde_json::to_value(&sides).unwrap();
        assert_eq!(
            body["max"]["temp_c"],
            serde_json::json!({"zip_code":"90001","value":2.0})
        );
        assert_eq!(body["min"]["precip_mm"]["zip_code"], "90002");
        let text = serde_json::to_string(&sides).unwrap();
        let at = |metric: &str| text.find(&format!("\"{metric}\"")).unwrap();
        assert!(
            at("temp_c") < at("pressure_mb")
                && at("pressure_mb") < at("humidity")
                && at("humidity") < at("precip_mm"),
            "metrics in the documented order: {text}"
        );
    }
}
