//! How rows and reports are laid out in InfluxDB: measurement, tag and field names, and
//! the line-protocol encoding of a raw row. An hour is a timestamp, never a tag; a zip
//! code in a report is a field, so the series count stays bounded.

use influxdb_line_protocol::LineProtocolBuilder;

use crate::row::{NUMERIC_COLUMNS, WeatherRow};

/// Every input row; tags `state` and `zip_code`, every numeric column a float field.
pub const WEATHER_DATA: &str = "weather_data";
/// Per hour and state: `avg_<metric>` fields and `count`.
pub const WEATHER_AVERAGES: &str = "weather_averages";
/// Per hour, state and metric (tag `metric`): `max_zip_code`, `max_value`,
/// `min_zip_code`, `min_value`.
pub const ZIP_CODE_EXTREMES: &str = "zip_code_extremes";
/// Per hour and metric (tag `metric`): `max_state`, `max_value`, `min_state`, `min_value`.
pub const STATE_EXTREMES: &str = "state_extremes";

/// Appends one row to `lines` as a `weather_data` point (second precision).
pub fn encode_row(lines: Vec<u8>, row: &WeatherRow) -> Vec<u8> {
    let point = LineProtocolBuilder::new_with(lines)
        .measurement(WEATHER_DATA)
        .tag("state", &row.state)
        .tag("zip_code", &row.zip_code);
    // `name` and `wind_dir` are string fields; an empty string is still a value, and the
    // first field written makes the line valid whatever else is missing.
    let mut point = point
        .field("name", row.name.as_str())
        .field("wind_dir", row.wind_dir.as_str());
    for (column, value) in NUMERIC_COLUMNS.iter().zip(&row.values) {
        if let Some(value) = value {
            point = point.field(column, *value);
        }
    }
    point.timestamp(row.time).close_line().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_becomes_one_point_with_float_fields_and_escaped_tags() {
        let mut values = [None; NUMERIC_COLUMNS.len()];
        values[2] = Some(49.0);
        values[3] = Some(120.2);
        let row = WeatherRow {
            zip_code: "02134".into(),
            state: "MA".into(),
            name: "Allston \"North\", MA".into(),
            time: 1_695_099_600,
            wind_dir: "SSW".into(),
            values,
        };
        let line = String::from_utf8(encode_row(Vec::new(), &row)).unwrap();
        assert_eq!(
            line,
            "weather_data,state=MA,zip_code=02134 name=\"Allston \\\"North\\\", MA\",wind_dir=\"SSW\",temp_c=49,temp_f=120.2 1695099600\n"
        );
    }
}
