//! A small, time-bounded cache of report answers. Reports are final once stored (they
//! are computed only from complete hours), so an answer can be served again for a while
//! without asking InfluxDB; the time bound caps staleness if an hour is ever streamed
//! again with other data. The "latest date" behind requests without `date` is kept for a
//! second only, so new days show up at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::NaiveDate;

/// Entries kept at most; past that the cache starts afresh (a day has about 2,400
/// distinct answers, so this holds weeks).
const CAPACITY: usize = 50_000;
const LATEST_DATE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ReportCache {
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, Bytes)>>,
    latest_date: Mutex<Option<(Instant, NaiveDate)>>,
}

impl ReportCache {
    /// A `ttl` of zero turns caching off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Mutex::new(HashMap::new()),
            latest_date: Mutex::new(None),
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

    pub fn latest_date(&self) -> Option<NaiveDate> {
        self.latest_date
            .lock()
            .unwrap()
            .filter(|(at, _)| at.elapsed() < LATEST_DATE_TTL.min(self.ttl))
            .map(|(_, date)| date)
    }

    pub fn set_latest_date(&self, date: NaiveDate) {
        *self.latest_date.lock().unwrap() = Some((Instant::now(), date));
    }
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
        off.set_latest_date(NaiveDate::from_ymd_opt(2023, 9, 19).unwrap());
        assert_eq!(off.latest_date(), None);
    }

    #[test]
    fn the_latest_date_is_kept_briefly() {
        let cache = ReportCache::new(Duration::from_secs(60));
        let date = NaiveDate::from_ymd_opt(2023, 9, 19).unwrap();
        cache.set_latest_date(date);
        assert_eq!(cache.latest_date(), Some(date));
    }
}
