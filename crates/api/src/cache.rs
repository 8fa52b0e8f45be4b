//! A small, time-bounded cache of report answers. Reports are final once stored (they
//! are computed only from complete hours), so an answer can be served again for a while
//! without asking InfluxDB; the time bound caps staleness if an hour is ever streamed
//! again with other data. The list of reported hours behind requests without `date` is
//! kept for a second only, so new hours show up at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use weathervane_core::HourKey;

/// Entries kept at most; past that the cache starts afresh (a day has about 2,400
/// distinct answers, so this holds weeks).
const CAPACITY: usize = 50_000;
const REPORTED_HOURS_TTL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ReportCache {
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, Bytes)>>,
    reported_hours: Mutex<Option<(Instant, BTreeSet<HourKey>)>>,
}

impl ReportCache {
    /// A `ttl` of zero turns caching off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Mutex::new(HashMap::new()),
            reported_hours: Mutex::new(None),
        }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let answers = self.answers.lock().unwrap();
        answers
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, body)| body.clone())
    }

    pub fn put(&self, key: String, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut answers = self.answers.lock().unwrap();
        if answers.len() >= CAPACITY {
            answers.clear();
        }
        answers.insert(key, (Instant::now(), body));
    }

    /// The latest reported hour at `hour_of_day` (0-23), if the list of reported hours is
    /// fresh: `Some(None)` when it is and no such hour is reported, `None` when it is not.
    pub fn latest_reported(&self, hour_of_day: u32) -> Option<Option<HourKey>> {
        let reported = self.reported_hours.lock().unwrap();
        let (at, hours) = reported.as_ref()?;
        if at.elapsed() >= REPORTED_HOURS_TTL.min(self.ttl) {
            return None;
        }
        Some(latest_at(hours, hour_of_day))
    }

    pub fn set_reported_hours(&self, hours: BTreeSet<HourKey>) {
        *self.reported_hours.lock().unwrap() = Some((Instant::now(), hours));
    }
}

/// The latest of `hours` at `hour_of_day`.
pub fn latest_at(hours: &BTreeSet<HourKey>, hour_of_day: u32) -> Option<HourKey> {
    hours
        .iter()
        .rev()
        .find(|h| h.hour() == hour_of_day)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_zero_ttl_caches_nothing() {
        let cache = ReportCache::new(Duration::from_millis(50));
        cache.put("a".into(), Bytes::from_static(b"1"));
        assert_eq!(cache.get("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(cache.get("b"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None);

        let off = ReportCache::new(Duration::ZERO);
        off.put("a".into(), Bytes::from_static(b"1"));
        assert_eq!(off.get("a"), None);
        off.set_reported_hours(BTreeSet::from(["2023-09-19T05".parse().unwrap()]));
        assert_eq!(off.latest_reported(5), None);
    }

    #[test]
    fn the_default_date_is_the_latest_one_with_that_hour() {
        let cache = ReportCache::new(Duration::from_secs(60));
        let hours: BTreeSet<HourKey> = [
            "2023-09-18T05",
            "2023-09-19T04",
            "2023-09-19T05",
            "2031-01-01T07",
        ]
        .map(|h| h.parse().unwrap())
        .into();
        cache.set_reported_hours(hours);
        let latest = |h| cache.latest_reported(h).unwrap().map(|k| k.to_string());
        assert_eq!(latest(5).as_deref(), Some("2023-09-19T05"));
        assert_eq!(latest(4).as_deref(), Some("2023-09-19T04"));
        assert_eq!(latest(7).as_deref(), Some("2031-01-01T07"));
        assert_eq!(latest(6), None, "no hour 06 reported at all");
    }
}
