//! The replica's reports in memory ([`ReportStore`]): the pure rules, no I/O. Keyed by
//! hour, each hour holding the reports of one generation (the content they were computed
//! from). An update of another generation replaces the hour (the processor publishes in
//! the order it stores, and the catch-up compares with InfluxDB's `hour_generations`, the
//! authority, so a stale one is corrected within one catch-up); the same generation again
//! is a duplicate and changes nothing. So duplicate and out-of-order updates are
//! harmless.
//!
//! Bounded by a budget ([`StoreArgs`]): at most `--store-days` distinct dates and
//! `--store-bytes` estimated bytes. Past either, the oldest dates go whole, and an update
//! older than every date held when the store is full is not kept; such hours are answered
//! from InfluxDB as before the herd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use weathervane_core::payload::HourReports;
use weathervane_core::{Generation, HourKey};

/// The memory budget and the catch-up rhythm.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Days of reports (the newest dates with reports) each replica holds in memory and
    /// answers without InfluxDB; older dates are asked of InfluxDB. 0 holds nothing.
    #[arg(long = "store-days", env = "API_STORE_DAYS", default_value_t = 31)]
    pub days: usize,
    /// Most bytes of reports held in memory (estimated: about 760 bytes per state and
    /// hour, so under 1 MiB per day of the full 50-state input); past it the oldest dates
    /// go.
    #[arg(long = "store-bytes", env = "API_STORE_BYTES", default_value_t = 256 << 20)]
    pub bytes: usize,
    /// Seconds between two catch-ups: the replica compares InfluxDB's list of reported
    /// hours (one small query) with what it holds and loads what it lacks. It also
    /// catches up on every (re)subscription to Redis.
    #[arg(long = "catch-up-interval", env = "API_CATCH_UP_INTERVAL", default_value_t = 2.0, value_parser = positive_seconds)]
    pub catch_up_interval: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            days: 31,
            bytes: 256 << 20,
            catch_up_interval: 2.0,
        }
    }
}

/// What an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new hour.
    Added,
    /// An hour held with another generation.
    Replaced,
    /// The hour is held with this generation already.
    Duplicate,
    /// Outside the budget (older than every date held in a full store, or alone larger
    /// than the byte budget): answered from InfluxDB.
    NotKept,
}

impl Applied {
    /// The `outcome` label of `report_updates_total`.
    pub fn label(self) -> &'static str {
        match self {
            Applied::Added | Applied::Replaced => "applied",
            Applied::Duplicate => "duplicate",
            Applied::NotKept => "not_kept",
        }
    }
}

#[derive(Debug)]
pub struct ReportStore {
    hours: BTreeMap<HourKey, (Arc<HourReports>, usize)>,
    bytes: usize,
    days: usize,
    max_bytes: usize,
}

impl ReportStore {
    pub fn new(args: &StoreArgs) -> Self {
        Self {
            hours: BTreeMap::new(),
            bytes: 0,
            days: args.days,
            max_bytes: args.bytes,
        }
    }

    pub fn apply(&mut self, reports: HourReports) -> Applied {
        let hour = reports.hour;
        if let Some((held, _)) = self.hours.get(&hour)
            && held.generation == reports.generation
        {
            return Applied::Duplicate;
        }
        if !self.keeps(hour.date()) {
            return Applied::NotKept;
        }
        let size = estimated_bytes(&reports);
        let replaced = match self.hours.insert(hour, (Arc::new(reports), size)) {
            Some((_, old)) => {
                self.bytes -= old;
                true
            }
            None => false,
        };
        self.bytes += size;
        self.evict();
        match (self.hours.contains_key(&hour), replaced) {
            (false, _) => Applied::NotKept,
            (true, true) => Applied::Replaced,
            (true, false) => Applied::Added,
        }
    }

    /// Whether an hour of `date` would be kept: a date held, room for another date, or a
    /// date newer than the oldest held (which then goes).
    fn keeps(&self, date: NaiveDate) -> bool {
        if self.days == 0 {
            return false;
        }
        let dates = self.dates();
        dates.contains(&date)
            || dates.len() < self.days
            || dates.first().is_some_and(|oldest| date > *oldest)
    }

    /// Drops the oldest dates while past the budget.
    fn evict(&mut self) {
        while !self.hours.is_empty()
            && (self.dates().len() > self.days || self.bytes > self.max_bytes)
        {
            let oldest = self.hours.keys().next().expect("not empty").date();
            let gone: Vec<HourKey> = self
                .hours
                .keys()
                .take_while(|hour| hour.date() == oldest)
                .copied()
                .collect();
            for hour in gone {
                if let Some((_, size)) = self.hours.remove(&hour) {
                    self.bytes -= size;
                }
            }
        }
    }

    fn dates(&self) -> BTreeSet<NaiveDate> {
        self.hours.keys().map(|hour| hour.date()).collect()
    }

    pub fn get(&self, hour: HourKey) -> Option<Arc<HourReports>> {
        self.hours.get(&hour).map(|(reports, _)| reports.clone())
    }

    /// The hours held of `date`, in order; empty if the date is not held.
    pub fn day(&self, date: NaiveDate) -> Vec<Arc<HourReports>> {
        self.hours
            .values()
            .map(|(reports, _)| reports)
            .filter(|reports| reports.hour.date() == date)
            .cloned()
            .collect()
    }

    /// The latest hour held at `hour_of_day` (0-23).
    pub fn latest_at(&self, hour_of_day: u32) -> Option<HourKey> {
        self.hours
            .keys()
            .rev()
            .find(|hour| hour.hour() == hour_of_day)
            .copied()
    }

    /// Of the reported hours (`reported`: InfluxDB's `hour_generations`), those the budget
    /// would hold (the newest `days` dates) that are missing here or held with another
    /// generation: what a catch-up loads.
    pub fn wanted(&self, reported: &BTreeMap<HourKey, Generation>) -> Vec<HourKey> {
        let dates: BTreeSet<NaiveDate> = reported.keys().map(|hour| hour.date()).collect();
        let Some(&oldest) = dates.iter().rev().take(self.days).next_back() else {
            return Vec::new();
        };
        reported
            .range(HourKey::from_date_hour(oldest, 0).expect("hour 0 exists")..)
            .filter(|(hour, generation)| {
                self.hours
                    .get(hour)
                    .is_none_or(|(held, _)| held.generation != **generation)
            })
            .map(|(hour, _)| *hour)
            .collect()
    }

    /// Hours held.
    pub fn len(&self) -> usize {
        self.hours.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The heap an hour's reports take, estimated from their shape: the structs and every
/// string's bytes (with its allocation's header), plus the map entry.
pub fn estimated_bytes(reports: &HourReports) -> usize {
    use std::mem::size_of;
    use weathervane_core::payload::StateReports;
    use weathervane_core::schema::{StateExtremeFields, ZipExtremeFields};
    const STRING_OVERHEAD: usize = 16;
    let text = |s: &String| s.capacity() + STRING_OVERHEAD;
    let states: usize = reports
        .states
        .iter()
        .map(|state| {
            size_of::<StateReports>()
                + text(&state.state)
                + state
                    .extremes
                    .iter()
                    .map(|e| {
                        size_of::<ZipExtremeFields>()
                            + text(&e.metric)
                            + text(&e.max_zip_code)
                            + text(&e.min_zip_code)
                    })
                    .sum::<usize>()
        })
        .sum();
    let extremes: usize = reports
        .state_extremes
        .iter()
        .map(|e| {
            size_of::<StateExtremeFields>()
                + text(&e.metric)
                + text(&e.max_state)
                + text(&e.min_state)
        })
        .sum();
    size_of::<HourReports>() + 64 + states + extremes
}

#[cfg(test)]
mod tests {
    use weathervane_core::report;

    use super::*;

    fn reports(hour: &str, generation: u64) -> HourReports {
        let hour: HourKey = hour.parse().unwrap();
        let rows = [
            ("CA", "90001", [20.0, 1010.0, 40.0, 0.0]),
            ("NY", "10001", [15.0, 1020.0, 80.0, 1.0]),
        ];
        let report = report::compute(hour, rows.iter().map(|(s, z, v)| (*s, *z, *v)));
        HourReports::from_report(&report, Generation::from_bits(generation))
    }

    fn store(days: usize, bytes: usize) -> ReportStore {
        ReportStore::new(&StoreArgs {
            days,
            bytes,
            catch_up_interval: 1.0,
        })
    }

    #[test]
    fn a_new_generation_replaces_and_duplicates_change_nothing() {
        let mut store = store(2, 1 << 20);
        assert_eq!(store.apply(reports("2023-09-19T05", 1)), Applied::Added);
        let bytes = store.bytes();
        assert!(bytes > 0);
        assert_eq!(store.apply(reports("2023-09-19T05", 1)), Applied::Duplicate);
        assert_eq!(store.bytes(), bytes);
        assert_eq!(store.apply(reports("2023-09-19T05", 2)), Applied::Replaced);
        assert_eq!(store.bytes(), bytes, "same shape, same size");
        let held = store.get("2023-09-19T05".parse().unwrap()).unwrap();
        assert_eq!(held.generation, Generation::from_bits(2));
        assert_eq!(store.len(), 1);
        // Out of order: an earlier hour arriving later is simply added.
        assert_eq!(store.apply(reports("2023-09-19T04", 1)), Applied::Added);
        assert_eq!(store.latest_at(4).unwrap().to_string(), "2023-09-19T04");
        assert_eq!(store.day("2023-09-19".parse().unwrap()).len(), 2);
        assert!(store.day("2023-09-20".parse().unwrap()).is_empty());
    }

    #[test]
    fn the_oldest_days_go_past_the_budget_and_older_updates_are_not_kept() {
        let mut store = store(2, 1 << 20);
        for hour in ["2023-09-18T01", "2023-09-18T02", "2023-09-19T01"] {
            assert_eq!(store.apply(reports(hour, 1)), Applied::Added);
        }
        assert_eq!(store.apply(reports("2023-09-20T01", 1)), Applied::Added);
        assert_eq!(store.len(), 2, "2023-09-18 went whole");
        assert!(store.get("2023-09-18T01".parse().unwrap()).is_none());
        assert_eq!(store.apply(reports("2023-09-17T01", 1)), Applied::NotKept);
        assert_eq!(store.len(), 2);
        let one = estimated_bytes(&reports("2023-09-19T01", 1));
        assert_eq!(store.bytes(), 2 * one);

        // By bytes: room for two hours.
        let mut store = super::tests::store(10, 2 * one);
        for hour in ["2023-09-18T01", "2023-09-19T01", "2023-09-20T01"] {
            assert_eq!(store.apply(reports(hour, 1)), Applied::Added);
        }
        assert_eq!(store.len(), 2);
        assert!(store.bytes() <= 2 * one);
        assert_eq!(store.latest_at(1).unwrap().to_string(), "2023-09-20T01");
        // Nothing held at all.
        let mut none = super::tests::store(0, 1 << 20);
        assert_eq!(none.apply(reports("2023-09-18T01", 1)), Applied::NotKept);
        let mut tiny = super::tests::store(1, 10);
        assert_eq!(tiny.apply(reports("2023-09-18T01", 1)), Applied::NotKept);
        assert_eq!(tiny.bytes(), 0);
    }

    #[test]
    fn a_catch_up_wants_the_budgets_hours_missing_or_of_another_generation() {
        let mut store = store(2, 1 << 20);
        store.apply(reports("2023-09-19T01", 1));
        store.apply(reports("2023-09-20T01", 1));
        let reported: BTreeMap<HourKey, Generation> = [
            ("2023-09-18T01", 1),
            ("2023-09-19T01", 1),
            ("2023-09-19T02", 1),
            ("2023-09-20T01", 2),
        ]
        .into_iter()
        .map(|(hour, generation)| (hour.parse().unwrap(), Generation::from_bits(generation)))
        .collect();
        let wanted: Vec<String> = store
            .wanted(&reported)
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(
            wanted,
            ["2023-09-19T02", "2023-09-20T01"],
            "not the day past the budget"
        );
        assert!(store.wanted(&BTreeMap::new()).is_empty());
        assert!(super::tests::store(0, 1).wanted(&reported).is_empty());
    }

    #[test]
    fn the_catch_up_interval_must_be_positive() {
        assert!(positive_seconds("0.5").is_ok());
        for bad in ["0", "-1", "x", "inf"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
    }
}
