//! `ReplayVerdict`: what one replay found (the steps fired and when, what InfluxDB holds,
//! what the API said, how long recovery took, buffer peaks) and whether the guarantee
//! held; its `Display` is the text `weathervane replay` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::schedule::Step;
use crate::verify::Verdict;

/// One fired step of the schedule.
#[derive(Clone, Debug)]
pub struct FiredStep {
    pub step: Step,
    /// Since streaming started.
    pub at: Duration,
    /// Where the pipeline was when it fired.
    pub phase: String,
}

/// What the API said while InfluxDB was down.
#[derive(Clone, Debug)]
pub struct OutageAnswer {
    pub asked: Instant,
    pub answered: Instant,
    /// None when no answer came.
    pub status: Option<u16>,
    pub summary: String,
}

/// The outcome of one replay.
#[derive(Debug)]
pub struct ReplayVerdict {
    pub scenario: String,
    /// What the scenario reproduces (its leading comments).
    pub description: String,
    pub fired: Vec<FiredStep>,
    /// What InfluxDB holds against the input: rows expected and stored, hours correct.
    pub stored: Verdict,
    pub outage_answers: Vec<OutageAnswer>,
    /// Every outage answer was a 503, or came only after InfluxDB was back.
    pub outage_answers_ok: bool,
    /// API answers checked against the input's reports, or why the check failed.
    pub api: Result<usize, String>,
    /// From the last action until every hour was reported; None if not within `timeout`.
    pub recovery: Option<Duration>,
    pub timeout: Duration,
    /// The largest backlog each buffer had when its target came back, in items.
    pub peaks: BTreeMap<String, usize>,
    /// The kept work directory (with `--keep`, or when the run failed).
    pub logs: Option<PathBuf>,
}

impl ReplayVerdict {
    pub fn passed(&self) -> bool {
        self.recovery.is_some()
            && self.stored.passed()
            && self.api.is_ok()
            && self.outage_answers_ok
    }
}

impl fmt::Display for ReplayVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario      {}", self.scenario)?;
        writeln!(f, "reproduces    {}", self.description)?;
        writeln!(
            f,
            "{:<4} {:<16} {:<7} {:<10} {:>8}  phase when fired",
            "step", "when", "action", "target", "fired"
        )?;
        for (index, fired) in self.fired.iter().enumerate() {
            writeln!(
                f,
                "{:<4} {:<16} {:<7} {:<10} {:>7.2}s  {}",
                index + 1,
                fired.step.when.to_string(),
                fired.step.action.name(),
                fired.step.target.name(),
                fired.at.as_secs_f64(),
                fired.phase
            )?;
        }
        for problem in self.stored.problems.iter().take(10) {
            writeln!(f, "problem       {problem}")?;
        }
        writeln!(
            f,
            "rows          {} expected, {} stored",
            self.stored.rows_expected, self.stored.rows_stored
        )?;
        writeln!(
            f,
            "hours         {}/{} with correct rows and reports",
            self.stored.hours_correct, self.stored.hours
        )?;
        for answer in &self.outage_answers {
            writeln!(f, "api (outage)  {}", answer.summary)?;
        }
        match &self.api {
            Ok(checked) => writeln!(f, "api           {checked} answers checked, all correct")?,
            Err(error) => writeln!(f, "api           FAILED: {error}")?,
        }
        match self.recovery {
            Some(recovery) => writeln!(
                f,
                "recovery      {:.2} s from the last action until every hour was reported",
                recovery.as_secs_f64()
            )?,
            None => writeln!(
                f,
                "recovery      NOT within {} s of the last action",
                self.timeout.as_secs()
            )?,
        }
        let peaks = if self.peaks.is_empty() {
            "nothing (no outage seen by a buffer)".to_owned()
        } else {
            self.peaks
                .iter()
                .map(|(buffer, peak)| format!("{buffer} {peak}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "peak buffered {peaks}")?;
        writeln!(
            f,
            "verdict       {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )?;
        if let Some(logs) = &self.logs {
            writeln!(f, "logs          {}", logs.display())?;
        }
        Ok(())
    }
}
