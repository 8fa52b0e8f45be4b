//! The processor's report jobs: which notices become jobs (a malformed notice is set
//! aside; a notice for an hour already queued or being computed is not queued twice) and
//! when an hour may be queued again (its job finished, reported or failed). Pure state, no
//! I/O, so every rule is unit-tested.

use std::collections::HashSet;

use weathervane_core::channel::{Channel, Deployment};
use weathervane_core::payload::{self, HourStored};
use weathervane_core::{Generation, HourKey};

/// A stored hour waiting for its reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportJob {
    pub hour: HourKey,
    /// The rows the ingester stored, which the read-back must find.
    pub rows: u64,
    /// Rows InfluxDB refused for good; the confirmation passes the count on.
    pub refused: u64,
    /// The content those rows are; the confirmation names it.
    pub generation: Generation,
}

/// What to do about a message on a subscribed channel.
#[derive(Debug, PartialEq, Eq)]
pub enum NoticeVerdict {
    /// Queue this job.
    Queue(ReportJob),
    /// The hour is queued or being computed already: nothing to do.
    AlreadyQueued,
    /// Not a processor notice: nothing to do.
    NotANotice,
    /// Set aside, with why.
    Malformed(String),
}

/// The hours queued or being computed.
#[derive(Debug, Default)]
pub struct ReportJobs {
    /// Whose notices these are: another deployment's are malformed here.
    deployment: Deployment,
    active: HashSet<HourKey>,
}

impl ReportJobs {
    pub fn new(deployment: Deployment) -> Self {
        Self {
            deployment,
            active: HashSet::new(),
        }
    }

    /// A message arrived on `channel`.
    pub fn on_message(&mut self, channel: &str, payload: &[u8]) -> NoticeVerdict {
        let hour = match Channel::parse(channel, &self.deployment.namespace) {
            Ok(Channel::Stored { hour }) => hour,
            Ok(_) => return NoticeVerdict::NotANotice,
            Err(error) => return NoticeVerdict::Malformed(error.to_string()),
        };
        let stored = match payload::decode::<HourStored>(channel, payload, &self.deployment.id) {
            Ok(stored) => stored,
            Err(error) => return NoticeVerdict::Malformed(error.to_string()),
        };
        if self.active.insert(hour) {
            NoticeVerdict::Queue(ReportJob {
                hour,
                rows: stored.rows,
                refused: stored.refused,
                generation: stored.generation,
            })
        } else {
            NoticeVerdict::AlreadyQueued
        }
    }

    /// The job for `hour` finished (reported, or failed for good): a later notice queues
    /// it again.
    pub fn finished(&mut self, hour: HourKey) {
        self.active.remove(&hour);
    }
}

#[cfg(test)]
mod tests {
    use weathervane_core::payload::encode;

    use super::*;

    const CHANNEL: &str = "weather_channel:processor:2023-09-19T05";

    fn stored(rows: u64) -> Vec<u8> {
        encode(
            &Default::default(),
            &HourStored {
                rows,
                refused: 0,
                generation: Generation::from_bits(7),
            },
        )
    }

    fn job(rows: u64) -> ReportJob {
        ReportJob {
            hour: "2023-09-19T05".parse().unwrap(),
            rows,
            refused: 0,
            generation: Generation::from_bits(7),
        }
    }

    #[test]
    fn a_notice_queues_its_hour_once_until_the_job_finishes() {
        let mut jobs = ReportJobs::default();
        assert_eq!(
            jobs.on_message(CHANNEL, &stored(7)),
            NoticeVerdict::Queue(job(7))
        );
        assert_eq!(
            jobs.on_message(CHANNEL, &stored(7)),
            NoticeVerdict::AlreadyQueued
        );
        jobs.finished(job(7).hour);
        assert_eq!(
            jobs.on_message(CHANNEL, &stored(8)),
            NoticeVerdict::Queue(job(8)),
            "queued again, with the new row count"
        );
    }

    #[test]
    fn hours_are_independent() {
        let mut jobs = ReportJobs::default();
        jobs.on_message(CHANNEL, &stored(7));
        let other = "weather_channel:processor:2023-09-19T06";
        assert!(matches!(
            jobs.on_message(other, &stored(7)),
            NoticeVerdict::Queue(_)
        ));
    }

    #[test]
    fn malformed_notices_are_set_aside_and_queue_nothing() {
        let mut jobs = ReportJobs::default();
        assert!(matches!(
            jobs.on_message(CHANNEL, b"not json"),
            NoticeVerdict::Malformed(_)
        ));
        assert!(matches!(
            jobs.on_message("weather_channel:processor:yesterday", &stored(7)),
            NoticeVerdict::Malformed(_)
        ));
        assert_eq!(
            jobs.on_message(CHANNEL, &stored(7)),
            NoticeVerdict::Queue(job(7)),
            "a malformed notice did not mark the hour queued"
        );
        assert_eq!(
            jobs.on_message("weather_channel:announce:2023-09-19T05", b"{}"),
            NoticeVerdict::NotANotice
        );
    }
}
