//! The streamer's progress bars on a terminal (hidden elsewhere: see
//! `weathervane_core::progress`): the input's hours and rows streamed so far. An hour
//! counts once its batches and announcement are queued for Redis; hours the state file
//! records as confirmed, or still pending with their current content, count as streamed
//! from the start, and an edit of the input recounts.

use weathervane_core::progress::{self, ProgressBar};

/// The two bars, hours and rows.
pub(crate) struct StreamProgress {
    hours: ProgressBar,
    rows: ProgressBar,
}

impl StreamProgress {
    pub(crate) fn new() -> Self {
        Self {
            hours: progress::bar("hours", 0, "hours streamed"),
            rows: progress::bar("rows", 0, "rows streamed"),
        }
    }

    /// After the input is indexed (again): each hour's rows, and whether it is yet to be
    /// streamed.
    pub(crate) fn indexed(&self, hours: impl IntoIterator<Item = (u64, bool)>) {
        let (mut all, mut done) = ((0, 0), (0, 0));
        for (rows, to_stream) in hours {
            all = (all.0 + 1, all.1 + rows);
            if !to_stream {
                done = (done.0 + 1, done.1 + rows);
            }
        }
        for (bar, len, position) in [(&self.hours, all.0, done.0), (&self.rows, all.1, done.1)] {
            bar.set_length(len);
            bar.set_position(position);
        }
    }

    /// An hour of `rows` rows is queued.
    pub(crate) fn queued(&self, rows: u64) {
        self.hours.inc(1);
        self.rows.inc(rows);
    }

    #[cfg(test)]
    fn positions(&self) -> ((u64, Option<u64>), (u64, Option<u64>)) {
        (
            (self.hours.position(), self.hours.length()),
            (self.rows.position(), self.rows.length()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_not_to_stream_count_as_done_and_a_reindex_recounts() {
        let progress = StreamProgress::new();
        progress.indexed([(10, false), (20, true), (30, true)]);
        assert_eq!(progress.positions(), ((1, Some(3)), (10, Some(60))));
        progress.queued(20);
        assert_eq!(progress.positions(), ((2, Some(3)), (30, Some(60))));
        progress.indexed([(10, false), (20, false), (5, true)]);
        assert_eq!(progress.positions(), ((2, Some(3)), (30, Some(35))));
    }
}
