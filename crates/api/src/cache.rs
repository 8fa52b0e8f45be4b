//! A small, time-bounded cache of report answers. Reports are final once stored (they
//! are computed only from complete hours), so an answer can be served again for a while
//! without asking InfluxDB; the time bound caps staleness if an hour is ever streamed
//! again with other data. "No such report" answers are kept too, for at most
//! `MISSING_TTL` and in a map of their own, so that asking again and again for a report
//! that does not exist cannot put every request through to InfluxDB, and a flood of
//! distinct missing reports cannot push real answers out. The list of reported hours
//! behind requests without `date` is kept for a second only, so new hours show up at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use weathervane_core::HourKey;

/// Entries kept at most; past that the cache starts afresh (a day has about 2,400
/// distinct answers, so this holds weeks).
const CAPACITY: usize = 50_000;
/// Missing reports kept at most; past that that map starts afresh. Asking for one costs
/// the asker nothing, so this is smaller than `CAPACITY` (about 1 MiB at most).
const MISSING_CAPACITY: usize = 10_000;
/// How long "no such report" is believed (at most the cache's TTL): a report that is
/// being computed right now shows up this long after it is stored, at the latest.
pub const MISSING_TTL: Duration = Duration::from_secs(2);
const REPORTED_HOURS_TTL: Duration = Duration::from_secs(1);

/// What the cache knows under a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Cached {
    /// The JSON body of the answer.
    Answer(Bytes),
    /// There is no such report; the message says which.
    Missing(String),
}

#[derive(Debug)]
pub struct ReportCache {
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, Bytes)>>,
    missing: Mutex<HashMap<String, (Instant, String)>>,
    reported_hours: Mutex<Option<(Instant, BTreeSet<HourKey>)>>,
}

impl ReportCache {
    /// A `ttl` of zero turns caching off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            reported_hours: Mutex::new(None),
        }
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, body)| Cached::Answer(body.clone()));
        let answer = answer.or_else(|| {
            self.missing
                .lock()
                .unwrap()
                .get(key)
                .filter(|(at, _)| at.elapsed() < self.missing_ttl())
                .map(|(_, message)| Cached::Missing(message.clone()))
        });
        crate::metrics::count_cache(answer.is_some());
        answer
    }

    pub fn put(&self, key: String, body: Bytes) {
        if self.ttl.is_zero() {
            return;
        }
        self.missing.lock().unwrap().remove(&key);
        insert_bounded(&mut self.answers.lock().unwrap(), CAPACITY, key, body);
    }

    /// Remembers that there is no report under `key`, for `MISSING_TTL` at most.
    pub fn put_missing(&self, key: String, message: String) {
        if self.ttl.is_zero() {
            return;
        }
        self.answers.lock().unwrap().remove(&key);
        insert_bounded(
            &mut self.missing.lock().unwrap(),
            MISSING_CAPACITY,
            key,
            message,
        );
    }

    fn missing_ttl(&self) -> Duration {
        MISSING_TTL.min(self.ttl)
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

    /// Every reported hour, if the list is fresh.
    pub fn reported_hours(&self) -> Option<BTreeSet<HourKey>> {
        let reported = self.reported_hours.lock().unwrap();
        let (at, hours) = reported.as_ref()?;
        (at.elapsed() < REPORTED_HOURS_TTL.min(self.ttl)).then(|| hours.clone())
    }

    pub fn set_reported_hours(&self, hours: BTreeSet<HourKey>) {
        *self.reported_hours.lock().unwrap() = Some((Instant::now(), hours));
    }
}

/// Inserts into a map that starts afresh when full: simpler than an LRU, and a cache
/// that empties now and then only costs a few queries.
fn insert_bounded<V>(
    map: &mut HashMap<String, (Instant, V)>,
    capacity: usize,
    key: String,
    value: V,
) {
    if map.len() >= capacity && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, (Instant::now(), value));
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
        assert_eq!(
            cache.get("a"),
            Some(Cached::Answer(Bytes::from_static(b"1")))
        );
        assert_eq!(cache.get("b"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None);

        let off = ReportCache::new(Duration::ZERO);
        off.put("a".into(), Bytes::from_static(b"1"));
        off.put_missing("b".into(), "no b".into());
        assert_eq!(off.get("a"), None);
        assert_eq!(off.get("b"), None);
        off.set_reported_hours(BTreeSet::from(["2023-09-19T05".parse().unwrap()]));
        assert_eq!(off.latest_reported(5), None);
    }

    #[test]
    fn missing_reports_are_kept_briefly_and_apart_from_answers() {
        let cache = ReportCache::new(Duration::from_secs(60));
        assert!(MISSING_TTL < Duration::from_secs(60));
        cache.put("found".into(), Bytes::from_static(b"{}"));
        cache.put_missing("gone".into(), "no report for gone".into());
        assert_eq!(
            cache.get("gone"),
            Some(Cached::Missing("no report for gone".into()))
        );
        // A flood of distinct missing reports wraps their own map, not the answers'.
        for i in 0..=MISSING_CAPACITY {
            cache.put_missing(format!("flood {i}"), String::new());
        }
        assert!(cache.missing.lock().unwrap().len() <= MISSING_CAPACITY);
        assert_eq!(cache.get("gone"), None, "the missing map started afresh");
        assert_eq!(
            cache.get("found"),
            Some(Cached::Answer(Bytes::from_static(b"{}")))
        );
        // A report that turns up replaces its "missing" at once.
        cache.put_missing("late".into(), "no report for late".into());
        cache.put("late".into(), Bytes::from_static(b"[]"));
        assert_eq!(
            cache.get("late"),
            Some(Cached::Answer(Bytes::from_static(b"[]")))
        );

        // "Missing" expires after the shorter of the two TTLs.
        let short = ReportCache::new(Duration::from_millis(50));
        short.put_missing("gone".into(), "no".into());
        assert!(short.get("gone").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(short.get("gone"), None);
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
