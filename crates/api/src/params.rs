//! Query-string parameters, validated by hand so that every rejection names the parameter
//! and says what was expected, and nothing unvalidated reaches InfluxQL.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use weathervane_core::row::{FIRST_YEAR, LAST_YEAR};

use crate::AppError;

/// The raw query string; parsing it never fails, validation happens per parameter.
pub type RawParams = HashMap<String, String>;

/// The parameters by name; a name given twice (`hour=5&hour=6`) is refused, since which
/// one was meant cannot be known.
pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<RawParams, AppError> {
    let mut params = RawParams::with_capacity(pairs.len());
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(AppError::BadRequest(format!(
                "parameter {name:?} is given more than once; give it once"
            )));
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// Two letters, returned in upper case.
pub fn state(params: &RawParams) -> Result<String, AppError> {
    let value = required(params, "state")?;
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(value.to_ascii_uppercase())
    } else {
        Err(AppError::BadRequest(format!(
            "state {value:?} is not a two-letter state code such as CA"
        )))
    }
}

/// `HH`, 0-23, with or without a leading zero.
pub fn hour(params: &RawParams) -> Result<u32, AppError> {
    let value = required(params, "hour")?;
    let hour = (1..=2)
        .contains(&value.len())
        .then(|| value.parse::<u32>().ok())
        .flatten()
        .filter(|h| *h < 24);
    hour.ok_or_else(|| {
        AppError::BadRequest(format!("hour {value:?} is not an hour 0-23 such as 05"))
    })
}

/// `YYYY-MM-DD`, or `None` when absent (meaning: the latest date with reports).
pub fn date(params: &RawParams) -> Result<Option<NaiveDate>, AppError> {
    params
        .get("date")
        .map(|value| {
            let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .filter(|_| value.len() == 10)
                .ok_or_else(|| {
                    AppError::BadRequest(format!("date {value:?} is not a date YYYY-MM-DD"))
                })?;
            if (FIRST_YEAR..=LAST_YEAR).contains(&date.year()) {
                Ok(date)
            } else {
                Err(AppError::BadRequest(format!(
                    "date {value:?} is outside {FIRST_YEAR}-{LAST_YEAR}, the years reports can have"
                )))
            }
        })
        .transpose()
}

/// What a report endpoint was asked for: one hour (`hour`, with `date` or not) or every
/// hour of a day (`date` without `hour`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    Hour(u32, Option<NaiveDate>),
    Day(NaiveDate),
}

/// `hour` (and `date`), or `date` alone for the whole day; neither is a 400.
pub fn hour_or_day(params: &RawParams) -> Result<Asked, AppError> {
    let date = date(params)?;
    match (params.contains_key("hour"), date) {
        (true, date) => Ok(Asked::Hour(hour(params)?, date)),
        (false, Some(date)) => Ok(Asked::Day(date)),
        (false, None) => Err(AppError::BadRequest(
            "missing parameter hour (or give date alone for every hour of that day)".into(),
        )),
    }
}

/// `hour` if given (0-23).
pub fn optional_hour(params: &RawParams) -> Result<Option<u32>, AppError> {
    params
        .contains_key("hour")
        .then(|| hour(params))
        .transpose()
}

fn required<'a>(params: &'a RawParams, name: &str) -> Result<&'a str, AppError> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| AppError::BadRequest(format!("missing parameter {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> RawParams {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn accepts_good_values() {
        assert_eq!(state(&params(&[("state", "ca")])).unwrap(), "CA");
        assert_eq!(hour(&params(&[("hour", "05")])).unwrap(), 5);
        assert_eq!(hour(&params(&[("hour", "5")])).unwrap(), 5);
        assert_eq!(hour(&params(&[("hour", "23")])).unwrap(), 23);
        assert_eq!(
            date(&params(&[("date", "2023-09-19")])).unwrap(),
            NaiveDate::from_ymd_opt(2023, 9, 19)
        );
        assert_eq!(date(&params(&[])).unwrap(), None);
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        for (name, value) in [
            ("state", "CA' OR '1'='1"),
            ("state", "C"),
            ("hour", "24"),
            ("hour", "ab"),
            ("hour", "005"),
            ("hour", "-1"),
            ("date", "2023-9-1"),
            ("date", "yesterday"),
        ] {
            let p = params(&[("state", "CA"), ("hour", "1"), (name, value)]);
            let error = state(&p)
                .and_then(|_| hour(&p))
                .and_then(|_| date(&p))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(name) && error.contains(value),
                "{name}={value}: {error}"
            );
        }
        assert_eq!(
            state(&params(&[])).unwrap_err().to_string(),
            "missing parameter state"
        );
    }

    #[test]
    fn a_parameter_given_twice_is_refused_naming_it() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let error = from_pairs(pairs(&[("state", "CA"), ("hour", "5"), ("hour", "6")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"hour\" is given more than once"),
            "{error}"
        );
        let ok = from_pairs(pairs(&[("state", "CA"), ("hour", "5")])).unwrap();
        assert_eq!(hour(&ok).unwrap(), 5);
    }

    #[test]
    fn an_hour_or_a_whole_day_is_asked() {
        let day = NaiveDate::from_ymd_opt(2023, 9, 19).unwrap();
        assert_eq!(
            hour_or_day(&params(&[("hour", "5")])).unwrap(),
            Asked::Hour(5, None)
        );
        assert_eq!(
            hour_or_day(&params(&[("hour", "5"), ("date", "2023-09-19")])).unwrap(),
            Asked::Hour(5, Some(day))
        );
        assert_eq!(
            hour_or_day(&params(&[("date", "2023-09-19")])).unwrap(),
            Asked::Day(day)
        );
        let error = hour_or_day(&params(&[])).unwrap_err().to_string();
        assert!(error.contains("missing parameter hour"), "{error}");
        let error = hour_or_day(&params(&[("date", "2023-09-19"), ("hour", "")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("hour \"\""),
            "an empty hour is no hour: {error}"
        );
        assert_eq!(optional_hour(&params(&[])).unwrap(), None);
        assert_eq!(optional_hour(&params(&[("hour", "07")])).unwrap(), Some(7));
        assert!(optional_hour(&params(&[("hour", "7pm")])).is_err());
    }
}
