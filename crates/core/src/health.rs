//! Whether a role is alive and ready, as a pure state type ([`Checks`]) fed by the
//! role's own loops, and the shared handle they feed it through ([`Health`], [`Check`]).
//!
//! Rules: a role is *live* while its watchdog has beaten within [`STALL_AFTER`] (its
//! runtime still runs tasks: not wedged); it is *ready* when it is live and every one of
//! its checks (the Redis subscription, InfluxDB answering `/ping`) last reported success.
//! A check never reported yet is not ready ("not checked yet"). Reading the state never
//! waits on a dependency: the loops update it, the admin routes only read it.
//!
//! A check is named after its target (`redis`, `influxdb`), and a failing one is an
//! outage of that target: the handle keeps `weathervane_<role>_outage{target}` (0/1) and
//! `weathervane_<role>_outage_seconds_total{target}` in step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{self, Counter, Gauge};

/// The api's check that it has loaded from InfluxDB the reports its memory budget holds
/// (warm-up). Not a target: it has no outage gauge.
pub const WARMED: &str = "warmed";

/// A watchdog that has not beaten for this long means the role is wedged.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// The last report of one check.
#[derive(Clone, Debug)]
struct CheckState {
    /// `None` until the first report.
    ok: Option<bool>,
    detail: Option<String>,
    /// Up to when the current outage's seconds have been counted.
    counted_to: Instant,
    /// Seconds of outage counted so far.
    outage_seconds: f64,
}

/// One check as `/readyz` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A role's readiness as `/readyz` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, CheckReport>,
}

/// The pure rules: checks, the watchdog's last beat, and outage time.
#[derive(Clone, Debug)]
pub struct Checks {
    checks: BTreeMap<&'static str, CheckState>,
    /// Checks shown in `/readyz` (and counted as outages) that do not make the role
    /// unready: the api answers from memory while InfluxDB or Redis is down.
    informational: Vec<&'static str>,
    last_beat: Instant,
}

/// A target's outage after an update: the seconds it has been down in all, and whether
/// it is down now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutageChange {
    pub seconds: f64,
    pub down: bool,
}

impl Checks {
    /// `names` are the checks the role has, none reported yet; the watchdog counts as
    /// having beaten at `now`.
    pub fn new(names: &[&'static str], now: Instant) -> Self {
        let state = CheckState {
            ok: None,
            detail: None,
            counted_to: now,
            outage_seconds: 0.0,
        };
        Self {
            checks: names.iter().map(|&name| (name, state.clone())).collect(),
            informational: Vec::new(),
            last_beat: now,
        }
    }

    /// These checks are shown but do not decide readiness.
    pub fn informational(mut self, names: &[&'static str]) -> Self {
        self.informational = names.to_vec();
        self
    }

    /// Records a check's outcome at `now` (`Err` with why it failed). A check that was
    /// failing had its target down since it was last counted: that time is added.
    pub fn report(
        &mut self,
        name: &'static str,
        outcome: Result<(), String>,
        now: Instant,
    ) -> OutageChange {
        let check = self.checks.entry(name).or_insert(CheckState {
            ok: None,
            detail: None,
            counted_to: now,
            outage_seconds: 0.0,
        });
        if check.ok == Some(false) {
            check.outage_seconds += now
                .saturating_duration_since(check.counted_to)
                .as_secs_f64();
        }
        check.counted_to = now;
        check.ok = Some(outcome.is_ok());
        check.detail = outcome.err();
        OutageChange {
            seconds: check.outage_seconds,
            down: check.ok == Some(false),
        }
    }

    /// Counts the outages still going on up to `now` (before metrics are rendered): each
    /// check's outage seconds in all.
    pub fn count_outages(&mut self, now: Instant) -> Vec<(&'static str, f64)> {
        self.checks
            .iter_mut()
            .map(|(&name, check)| {
                if check.ok == Some(false) {
                    check.outage_seconds += now
                        .saturating_duration_since(check.counted_to)
                        .as_secs_f64();
                }
                check.counted_to = now;
                (name, check.outage_seconds)
            })
            .collect()
    }

    pub fn beat(&mut self, now: Instant) {
        self.last_beat = self.last_beat.max(now);
    }

    /// `Err` says why the role is not live.
    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        let since = now.saturating_duration_since(self.last_beat);
        if since > STALL_AFTER {
            return Err(format!(
                "wedged: the watchdog has not run for {:.1} s",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }

    pub fn readiness(&self, now: Instant) -> Readiness {
        let mut checks: BTreeMap<&'static str, CheckReport> = self
            .checks
            .iter()
            .map(|(&name, check)| {
                let report = match check.ok {
                    None => CheckReport {
                        ok: false,
                        detail: Some("not checked yet".into()),
                    },
                    Some(ok) => CheckReport {
                        ok,
                        detail: check.detail.clone(),
                    },
                };
                (name, report)
            })
            .collect();
        let live = self.liveness(now);
        checks.insert(
            "live",
            CheckReport {
                ok: live.is_ok(),
                detail: live.err(),
            },
        );
        Readiness {
            ready: checks
                .iter()
                .all(|(name, check)| check.ok || self.informational.contains(name)),
            checks,
        }
    }
}

/// A role's health, shared by its loops (which report) and its admin routes (which read).
#[derive(Clone, Debug)]
pub struct Health {
    role: &'static str,
    inner: Arc<Mutex<Checks>>,
    /// Per target: the outage gauge and seconds counter.
    outages: Arc<BTreeMap<&'static str, (Gauge, Counter)>>,
}

impl Health {
    /// The health of `role`, whose checks are `targets` (`redis`, `influxdb`).
    pub fn new(role: &'static str, targets: &[&'static str]) -> Self {
        let outages = targets
            .iter()
            .filter(|&&target| target != WARMED)
            .map(|&target| {
                let labels = [("target", target)];
                let gauge = metrics::gauge(role, "outage", &labels);
                gauge.set(0.0);
                let counter = metrics::counter(role, "outage_seconds_total", &labels);
                counter.increment(0);
                (target, (gauge, counter))
            })
            .collect();
        Self {
            role,
            inner: Arc::new(Mutex::new(Checks::new(targets, Instant::now()))),
            outages: Arc::new(outages),
        }
    }

    /// `names` are shown in `/readyz` but do not make the role unready (see
    /// [`Checks::informational`]).
    pub fn informational(self, names: &[&'static str]) -> Self {
        {
            let mut checks = self.lock();
            let taken = std::mem::replace(&mut *checks, Checks::new(&[], Instant::now()));
            *checks = taken.informational(names);
        }
        self
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The handle a loop reports `target`'s state through.
    pub fn check(&self, target: &'static str) -> Check {
        Check {
            health: self.clone(),
            target,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Checks> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, target: &'static str, outcome: Result<(), String>) {
        let change = self.lock().report(target, outcome, Instant::now());
        if let Some((gauge, counter)) = self.outages.get(target) {
            gauge.set(if change.down { 1.0 } else { 0.0 });
            set_seconds(counter, change.seconds);
        }
    }

    /// The watchdog's beat: the role's runtime still runs its tasks.
    pub fn beat(&self) {
        self.lock().beat(Instant::now());
    }

    pub fn liveness(&self) -> Result<(), String> {
        self.lock().liveness(Instant::now())
    }

    pub fn readiness(&self) -> Readiness {
        self.lock().readiness(Instant::now())
    }

    /// Brings the outage counters up to now; called before metrics are rendered.
    pub fn count_outages(&self) {
        let counted = self.lock().count_outages(Instant::now());
        for (target, seconds) in counted {
            if let Some((_, counter)) = self.outages.get(target) {
                set_seconds(counter, seconds);
            }
        }
    }
}

/// Counters are integers in `metrics` 0.24: the exported value is the whole seconds of
/// the exact total the state keeps (so rounding never accumulates).
fn set_seconds(counter: &Counter, seconds: f64) {
    counter.absolute(seconds.floor() as u64);
}

/// One check of a role, as a loop reports it.
#[derive(Clone, Debug)]
pub struct Check {
    health: Health,
    target: &'static str,
}

impl Check {
    pub fn ok(&self) {
        self.health.report(self.target, Ok(()));
    }

    pub fn failed(&self, why: impl Into<String>) {
        self.health.report(self.target, Err(why.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passed_and_the_watchdog_beats() {
        let start = Instant::now();
        let mut checks = Checks::new(&["redis", "influxdb"], start);
        let readiness = checks.readiness(start);
        assert!(!readiness.ready);
        assert_eq!(
            readiness.checks["redis"].detail.as_deref(),
            Some("not checked yet")
        );
        checks.report("redis", Ok(()), start);
        assert!(!checks.readiness(start).ready, "influxdb not checked yet");
        checks.report("influxdb", Ok(()), start);
        assert!(checks.readiness(start).ready);
        assert!(checks.readiness(start).checks["live"].ok);

        let later = start + Duration::from_secs(1);
        checks.report(
            "influxdb",
            Err("no answer to /ping within 1 s".into()),
            later,
        );
        let readiness = checks.readiness(later);
        assert!(!readiness.ready);
        assert!(readiness.checks["redis"].ok);
        assert_eq!(
            readiness.checks["influxdb"],
            CheckReport {
                ok: false,
                detail: Some("no answer to /ping within 1 s".into())
            }
        );
        checks.report("influxdb", Ok(()), later);
        assert!(checks.readiness(later).ready);
    }

    #[test]
    fn informational_checks_are_shown_but_only_the_others_decide_readiness() {
        let start = Instant::now();
        let mut checks = Checks::new(&["influxdb", "redis", WARMED], start)
            .informational(&["influxdb", "redis"]);
        let readiness = checks.readiness(start);
        assert!(!readiness.ready, "not warmed up yet");
        assert_eq!(
            readiness.checks[WARMED].detail.as_deref(),
            Some("not checked yet")
        );
        checks.report(WARMED, Ok(()), start);
        checks.report("influxdb", Err("refused".into()), start);
        let readiness = checks.readiness(start);
        assert!(readiness.ready, "InfluxDB down does not make it unready");
        assert!(!readiness.checks["influxdb"].ok, "but it is shown");
        checks.report(WARMED, Err("not warmed up: InfluxDB down".into()), start);
        assert!(!checks.readiness(start).ready);
    }

    #[test]
    fn a_stalled_watchdog_is_not_live_nor_ready() {
        let start = Instant::now();
        let mut checks = Checks::new(&[], start);
        assert!(checks.readiness(start).ready, "no dependencies, beating");
        let stalled = start + STALL_AFTER + Duration::from_secs(1);
        let why = checks.liveness(stalled).unwrap_err();
        assert!(why.contains("wedged"), "{why}");
        assert!(!checks.readiness(stalled).ready);
        checks.beat(stalled);
        assert!(checks.liveness(stalled).is_ok());
    }

    #[test]
    fn outage_seconds_add_up_across_reports_and_renders_without_double_counting() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut checks = Checks::new(&["redis"], t0);
        assert_eq!(checks.report("redis", Ok(()), at(1)).seconds, 0.0);
        let change = checks.report("redis", Err("refused".into()), at(2));
        assert_eq!((change.seconds, change.down), (0.0, true));
        assert_eq!(checks.count_outages(at(5)), vec![("redis", 3.0)]);
        let change = checks.report("redis", Err("refused".into()), at(6));
        assert_eq!((change.seconds, change.down), (4.0, true));
        let change = checks.report("redis", Ok(()), at(10));
        assert_eq!((change.seconds, change.down), (8.0, false));
        assert_eq!(
            checks.count_outages(at(20)),
            vec![("redis", 8.0)],
            "up again"
        );
        checks.report("redis", Err("hung".into()), at(30));
        assert_eq!(checks.report("redis", Ok(()), at(32)).seconds, 10.0);
    }
}
