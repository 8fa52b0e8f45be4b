//! The CSV form of the report answers: which format a request asked for (`format=csv` or
//! `json`, else `Accept: text/csv`), and each answer as rows under a header, written with
//! the `csv` crate (so a field with a comma or quote is quoted). The column order is
//! documented in the README and in each endpoint's OpenAPI description.

use axum::http::{HeaderMap, header};
use weathervane_core::row::Metric;

use crate::AppError;
use crate::answer::{AverageAnswer, ExtremesAnswer, HourOrDay, Sides, StateExtremesAnswer};
use crate::params::RawParams;

pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// What an answer is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// `format=csv|json` if given (anything else is a 400 naming it), else CSV when the
    /// `Accept` header names `text/csv`, else JSON.
    pub fn asked(params: &RawParams, headers: &HeaderMap) -> Result<Self, AppError> {
        if let Some(value) = params.get("format") {
            return match value.to_ascii_lowercase().as_str() {
                "csv" => Ok(Format::Csv),
                "json" => Ok(Format::Json),
                _ => Err(AppError::BadRequest(format!(
                    "format {value:?} is not csv or json"
                ))),
            };
        }
        let accepts_csv = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| {
                item.split(';')
                    .next()
                    .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/csv"))
            });
        Ok(if accepts_csv {
            Format::Csv
        } else {
            Format::Json
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON_CONTENT_TYPE,
            Format::Csv => CSV_CONTENT_TYPE,
        }
    }

    /// Short name, for cache keys.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// An answer as CSV rows.
pub trait Table {
    /// The column names, in order.
    const HEADER: &'static [&'static str];
    /// Appends this answer's rows (each as many cells as `HEADER`).
    fn rows(&self, out: &mut Vec<Vec<String>>);
}

/// The header row and every row of `answer`, as CSV text.
pub fn to_csv<T: Table>(answer: &T) -> Vec<u8> {
    let mut rows = Vec::new();
    answer.rows(&mut rows);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(T::HEADER)
        .expect("writing to memory cannot fail");
    for row in rows {
        debug_assert_eq!(row.len(), T::HEADER.len());
        writer
            .write_record(&row)
            .expect("writing to memory cannot fail");
    }
    writer.into_inner().expect("writing to memory cannot fail")
}

impl<T: Table + utoipa::ToSchema> Table for HourOrDay<T> {
    const HEADER: &'static [&'static str] = T::HEADER;

    fn rows(&self, out: &mut Vec<Vec<String>>) {
        match self {
            HourOrDay::Hour(answer) => answer.rows(out),
            HourOrDay::Day(answers) => answers.iter().for_each(|a| a.rows(out)),
        }
    }
}

impl Table for AverageAnswer {
    const HEADER: &'static [&'static str] = &[
        "state",
        "date",
        "hour",
        "avg_temp_c",
        "avg_pressure_mb",
        "avg_humidity",
        "avg_precip_mm",
        "count",
    ];

    fn rows(&self, out: &mut Vec<Vec<String>>) {
        let mut row = vec![
            self.state.clone(),
            self.when.date.clone(),
            self.when.hour.clone(),
        ];
        row.extend(self.fields.means().map(|mean| mean.to_string()));
        row.push(self.fields.count.to_string());
        out.push(row);
    }
}

/// One row per metric (in the documented order) of a side pair: the metric, then the max
/// holder and value, then the min holder and value.
fn side_rows<H>(
    prefix: &[String],
    sides: &Sides<H>,
    holder: impl Fn(&H) -> (&str, f64),
    out: &mut Vec<Vec<String>>,
) where
    H: serde::Serialize,
{
    for metric in Metric::ALL.map(|m| m.name()) {
        let (Some(max), Some(min)) = (sides.max.get(metric), sides.min.get(metric)) else {
            continue;
        };
        let ((max_holder, max_value), (min_holder, min_value)) = (holder(max), holder(min));
        let mut row = prefix.to_vec();
        row.extend([
            metric.to_owned(),
            max_holder.to_owned(),
            max_value.to_string(),
            min_holder.to_owned(),
            min_value.to_string(),
        ]);
        out.push(row);
    }
}

impl Table for ExtremesAnswer {
    const HEADER: &'static [&'static str] = &[
        "state",
        "date",
        "hour",
        "metric",
        "max_zip_code",
        "max_value",
        "min_zip_code",
        "min_value",
    ];

    fn rows(&self, out: &mut Vec<Vec<String>>) {
        let prefix = [
            self.state.clone(),
            self.when.date.clone(),
            self.when.hour.clone(),
        ];
        side_rows(
            &prefix,
            &self.sides,
            |h| (h.zip_code.as_str(), h.value),
            out,
        );
    }
}

impl Table for StateExtremesAnswer {
    const HEADER: &'static [&'static str] = &[
        "date",
        "hour",
        "metric",
        "max_state",
        "max_value",
        "min_state",
        "min_value",
    ];

    fn rows(&self, out: &mut Vec<Vec<String>>) {
        let prefix = [self.when.date.clone(), self.when.hour.clone()];
        side_rows(&prefix, &self.sides, |h| (h.state.as_str(), h.value), out);
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use weathervane_core::schema::{AverageFields, ZipExtremeFields};

    use super::*;
    use crate::answer::When;

    fn when(hour: &str) -> When {
        When {
            date: "2023-09-19".into(),
            hour: hour.into(),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> RawParams {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_format_comes_from_the_parameter_then_the_accept_header() {
        let mut csv = HeaderMap::new();
        csv.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;q=0.5, Text/CSV;q=0.9"),
        );
        let none = HeaderMap::new();
        assert_eq!(Format::asked(&params(&[]), &none).unwrap(), Format::Json);
        assert_eq!(Format::asked(&params(&[]), &csv).unwrap(), Format::Csv);
        assert_eq!(
            Format::asked(&params(&[("format", "json")]), &csv).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::asked(&params(&[("format", "CSV")]), &none).unwrap(),
            Format::Csv
        );
        let error = Format::asked(&params(&[("format", "xml")]), &none)
            .unwrap_err()
            .to_string();
        assert!(error.contains("format") && error.contains("xml"), "{error}");
    }

    #[test]
    fn a_day_of_averages_is_a_header_and_a_row_per_hour() {
        let answer = |hour: &str, temp: f64| AverageAnswer {
            state: "CA".into(),
            when: when(hour),
            fields: AverageFields {
                avg_temp_c: temp,
                avg_pressure_mb: 1012.5,
                avg_humidity: 61.0,
                avg_precip_mm: 0.0,
                count: 25,
            },
        };
        let day = HourOrDay::Day(vec![answer("00", 21.332000000000004), answer("01", -3.5)]);
        assert_eq!(
            String::from_utf8(to_csv(&day)).unwrap(),
            "state,date,hour,avg_temp_c,avg_pressure_mb,avg_humidity,avg_precip_mm,count\n\
             CA,2023-09-19,00,21.332000000000004,1012.5,61,0,25\n\
             CA,2023-09-19,01,-3.5,1012.5,61,0,25\n"
        );
    }

    #[test]
    fn extremes_are_a_row_per_metric_and_odd_holders_are_quoted() {
        let records = ["humidity", "temp_c", "precip_mm", "pressure_mb"]
            .map(|metric| ZipExtremeFields {
                metric: metric.into(),
                max_zip_code: "9,1\"2".into(),
                max_value: 2.5,
                min_zip_code: "02134".into(),
                min_value: 1.0,
            })
            .to_vec();
        let answer = ExtremesAnswer {
            state: "CA".into(),
            when: when("05"),
            sides: Sides::from_zip(records),
        };
        let text = String::from_utf8(to_csv(&answer)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "state,date,hour,metric,max_zip_code,max_value,min_zip_code,min_value"
        );
        assert_eq!(lines[1], "CA,2023-09-19,05,temp_c,\"9,1\"\"2\",2.5,02134,1");
        let metrics: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split(',').nth(3).unwrap())
            .collect();
        assert_eq!(metrics, ["temp_c", "pressure_mb", "humidity", "precip_mm"]);
    }
}
