//! The inbox (`--inbox DIR`): a directory the streamer watches for `*.csv` files. A file
//! is taken once it is complete (renamed in, or unchanged for the quiet period: see
//! [`Quiet`]), moved to `DIR/processing/` under an arrival number (`000007-name.csv`, so
//! the input's order, and with it each hour's generation, is the same after a restart),
//! checked (header, delimiter), added to the input and streamed like any input file, then
//! moved to `DIR/done/` once every hour it has rows in is confirmed, or to `DIR/failed/`
//! when it cannot be read, with `<file>.report.json` beside it ([`FileReport`]).
//!
//! Files in `done/` stay part of the input: an hour holds the rows of every file that has
//! rows in it, so a later file's rows for an hour already streamed change that hour's
//! generation and it is streamed again with all of them (the rewrite flow). A restarted
//! streamer takes `processing/` and `done/` back into its input in arrival order.
//!
//! The rules (quiet period, arrival names) are pure and unit-tested; [`watch`] only looks
//! at the directory once a second and moves files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use weathervane_core::health::Check;
use weathervane_core::metrics::{self, Counter};
use weathervane_core::row::{CsvSource, ReadOptions};
use weathervane_core::shutdown::sleep_or_cancel;

use crate::{ROLE, StreamerState, in_span_blocking};

/// How often the inbox is looked at.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, clap::Args)]
pub struct InboxArgs {
    /// Directory watched for CSV files to stream (`*.csv`; write elsewhere and rename in,
    /// or the file is taken once unchanged for `--inbox-quiet` seconds). Streamed files go
    /// to `DIR/done/`, unreadable ones to `DIR/failed/`, each with a `.report.json`.
    #[arg(long, env = "WEATHERVANE_INBOX")]
    pub inbox: Option<PathBuf>,
    /// Seconds an inbox file's size and modification time must stay unchanged (or its
    /// modification time be old) before it is taken.
    #[arg(long, env = "WEATHERVANE_INBOX_QUIET", default_value_t = 2.0)]
    pub inbox_quiet: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("inbox {path}: cannot create or read it: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--inbox-quiet {0} must be a finite number of seconds, not negative")]
    Quiet(f64),
}

/// Where a file is on its way through the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// In the inbox, not taken yet (still being written, or waiting for the next look).
    Queued,
    /// In `processing/`: indexed and being streamed.
    Streaming,
    /// Every hour it has rows in is confirmed; in `done/`.
    Done,
    /// Could not be read (bad header, unreadable); in `failed/`.
    Failed,
}

/// What became of one inbox file: written beside it as `<file>.report.json` when it is
/// done or failed, and shown (live) by the upload server's `GET /uploads/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// The name it arrived with.
    pub name: String,
    /// Where it is now.
    pub file: PathBuf,
    pub state: FileState,
    /// Rows indexed to be streamed.
    pub rows_read: u64,
    /// Rows rejected (in the rejects file).
    pub rows_rejected: u64,
    /// Hours it has rows in.
    pub hours: u64,
    /// Of those, hours streamed (published, or confirmed).
    pub hours_streamed: u64,
    /// Of those, hours reported and confirmed with its rows.
    pub hours_reported: u64,
    pub rejects_file: PathBuf,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// A file's size and modification time at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub len: u64,
    pub modified: SystemTime,
}

/// The quiet-period rule: a file is complete when its modification time is at least
/// `period` old (a file renamed in after it was written), or when its size and
/// modification time have not changed for `period` of watching (whatever its clock says).
#[derive(Debug)]
pub struct Quiet {
    period: Duration,
    /// Each file's last observation and since when it has been that.
    seen: HashMap<String, (Observation, Instant)>,
}

impl Quiet {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            seen: HashMap::new(),
        }
    }

    /// Whether `name`, observed as `now_seen` at `now` (`wall` on the file system's
    /// clock), is complete. A file found complete is forgotten.
    pub fn ready(
        &mut self,
        name: &str,
        now_seen: Observation,
        now: Instant,
        wall: SystemTime,
    ) -> bool {
        let old = wall
            .duration_since(now_seen.modified)
            .is_ok_and(|age| age >= self.period);
        let since = match self.seen.get(name) {
            Some((seen, since)) if *seen == now_seen => *since,
            _ => now,
        };
        let ready = old || now.duration_since(since) >= self.period;
        if ready {
            self.seen.remove(name);
        } else {
            self.seen.insert(name.to_owned(), (now_seen, since));
        }
        ready
    }

    /// Forgets files that are gone.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.seen.retain(|name, _| present(name));
    }

    pub fn is_watching(&self, name: &str) -> bool {
        self.seen.contains_key(name)
    }
}

/// `name` under arrival number `number`: `000007-name.csv`.
pub fn arrival_name(number: u64, name: &str) -> String {
    format!("{number:06}-{name}")
}

/// The arrival number and original name of an arrival name.
pub fn parse_arrival(name: &str) -> Option<(u64, &str)> {
    let (digits, rest) = name.split_once('-')?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

/// Whether the inbox takes a file of this name: `*.csv` (any case), not hidden.
pub fn is_candidate(name: &str) -> bool {
    !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".csv")
}

/// Where a file's report goes: beside it, `<file>.report.json`.
fn report_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".report.json");
    file.with_file_name(name)
}

/// What the inbox tracks of the files it took.
enum Tracked {
    /// In `processing/` at this path; its report so far.
    Streaming(FileReport),
    /// Done or failed.
    Finished(FileReport),
}

struct InboxState {
    quiet: Quiet,
    next_number: u64,
    /// By the name each file arrived with.
    files: BTreeMap<String, Tracked>,
}

/// The inbox directory and what it has taken.
pub struct Inbox {
    dir: PathBuf,
    processing: PathBuf,
    done: PathBuf,
    failed: PathBuf,
    read: ReadOptions,
    rejects_file: PathBuf,
    state: Mutex<InboxState>,
    done_files: Counter,
    failed_files: Counter,
}

impl Inbox {
    /// Creates the inbox and its folders if missing, and takes back what a previous run
    /// left in `processing/`, `done/` and `failed/`.
    pub fn open(
        dir: &Path,
        args: &InboxArgs,
        read: ReadOptions,
        rejects_file: PathBuf,
    ) -> Result<Self, InboxError> {
        if !(args.inbox_quiet.is_finite() && args.inbox_quiet >= 0.0) {
            return Err(InboxError::Quiet(args.inbox_quiet));
        }
        let dir_error = |path: &Path| {
            let path = path.to_owned();
            move |source| InboxError::Dir { path, source }
        };
        let (processing, done, failed) =
            (dir.join("processing"), dir.join("done"), dir.join("failed"));
        for path in [dir, &processing, &done, &failed] {
            std::fs::create_dir_all(path).map_err(dir_error(path))?;
        }
        let mut files = BTreeMap::new();
        let mut next_number = 1;
        for (folder, state) in [
            (&done, FileState::Done),
            (&failed, FileState::Failed),
            (&processing, FileState::Streaming),
        ] {
            for (number, name, path) in arrivals(folder).map_err(dir_error(folder))? {
                next_number = next_number.max(number + 1);
                let report = std::fs::read(report_path(&path))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<FileReport>(&bytes).ok())
                    .unwrap_or_else(|| {
                        FileReport::new(name.clone(), path.clone(), state, &rejects_file)
                    });
                let tracked = match state {
                    FileState::Streaming => Tracked::Streaming(FileReport {
                        state,
                        file: path,
                        ..report
                    }),
                    _ => Tracked::Finished(report),
                };
                files.insert(name, tracked);
            }
        }
        let counter =
            |outcome| metrics::counter(ROLE, "inbox_files_total", &[("outcome", outcome)]);
        Ok(Self {
            dir: dir.to_owned(),
            processing,
            done,
            failed,
            read,
            rejects_file,
            state: Mutex::new(InboxState {
                quiet: Quiet::new(Duration::from_secs_f64(args.inbox_quiet)),
                next_number,
                files,
            }),
            done_files: counter("done"),
            failed_files: counter("failed"),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a file taken into `processing/` ends once streamed: the name its rejects
    /// carry from the start.
    pub fn final_path(&self, path: &Path) -> PathBuf {
        self.done.join(path.file_name().unwrap_or_default())
    }

    /// The files a (re)started streamer streams after `--input`: `done/`'s and
    /// `processing/`'s, in arrival order.
    pub fn files_to_stream(&self) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for folder in [&self.done, &self.processing] {
            all.extend(arrivals(folder).unwrap_or_default());
        }
        all.sort_by_key(|(number, _, _)| *number);
        all.into_iter().map(|(_, _, path)| path).collect()
    }

    /// Where the file that arrived as `name` is on its way (`None` if the inbox never saw
    /// it).
    pub fn status(&self, name: &str) -> Option<FileReport> {
        let state = self.state.lock().unwrap();
        match state.files.get(name) {
            Some(Tracked::Streaming(report) | Tracked::Finished(report)) => Some(report.clone()),
            None if state.quiet.is_watching(name) || self.dir.join(name).is_file() => {
                Some(FileReport::new(
                    name.into(),
                    self.dir.join(name),
                    FileState::Queued,
                    &self.rejects_file,
                ))
            }
            None => None,
        }
    }

    /// Looks at the inbox once: takes the files that are complete. `Err` if the inbox
    /// cannot be read (its readiness check says why).
    fn take_complete(&self, files: &crate::InputFiles) -> Result<(), String> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|error| format!("cannot read the inbox {}: {error}", self.dir.display()))?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut present = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if !metadata.is_file() || !is_candidate(&name) {
                continue;
            }
            present.push(name.clone());
            let seen = Observation {
                len: metadata.len(),
                modified: metadata.modified().unwrap_or(wall),
            };
            let ready = self
                .state
                .lock()
                .unwrap()
                .quiet
                .ready(&name, seen, now, wall);
            if ready {
                self.take(&name, files);
            }
        }
        self.state
            .lock()
            .unwrap()
            .quiet
            .retain(|name| present.iter().any(|p| p == name));
        Ok(())
    }

    /// Moves `name` to `processing/`, checks it, and adds it to the input (or moves it on
    /// to `failed/`).
    fn take(&self, name: &str, files: &crate::InputFiles) {
        let number = {
            let mut state = self.state.lock().unwrap();
            state.next_number += 1;
            state.next_number - 1
        };
        let arrival = arrival_name(number, name);
        let path = self.processing.join(&arrival);
        if let Err(error) = std::fs::rename(self.dir.join(name), &path) {
            tracing::warn!(file = %self.dir.join(name).display(), %error, "Cannot move an inbox file to processing/; trying again.");
            return;
        }
        let mut report = FileReport::new(
            name.into(),
            path.clone(),
            FileState::Streaming,
            &self.rejects_file,
        );
        match CsvSource::open_with(&path, &self.read) {
            Ok(_) => {
                tracing::info!(file = %path.display(), "Inbox file taken; streaming it.");
                files.push_named(path.clone(), self.final_path(&path));
                self.state
                    .lock()
                    .unwrap()
                    .files
                    .insert(name.into(), Tracked::Streaming(report));
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "Inbox file cannot be streamed; moved to failed/.");
                report.error = Some(error.to_string());
                self.finish(name, report, &self.failed, |from, to| {
                    std::fs::rename(from, to)
                });
            }
        }
    }

    /// Moves a file to `folder` (done or failed) with `move_file`, writes its report
    /// beside it, and remembers it.
    fn finish(
        &self,
        name: &str,
        mut report: FileReport,
        folder: &Path,
        move_file: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
    ) {
        let to = folder.join(report.file.file_name().unwrap_or_default());
        if let Err(error) = move_file(&report.file, &to) {
            tracing::error!(file = %report.file.display(), to = %to.display(), %error, "Cannot move the inbox file; trying again.");
            return;
        }
        let failed = folder == self.failed;
        report.file = to;
        report.state = if failed {
            FileState::Failed
        } else {
            FileState::Done
        };
        let json = serde_json::to_vec_pretty(&report).expect("a report serializes");
        if let Err(error) = write_synced(&report_path(&report.file), &json) {
            tracing::error!(file = %report.file.display(), %error, "Cannot write the inbox file's report.");
        }
        if failed {
            self.failed_files.increment(1);
        } else {
            self.done_files.increment(1);
            tracing::info!(file = %report.file.display(), rows = report.rows_read, rejected = report.rows_rejected, hours = report.hours, "Inbox file streamed and reported; moved to done/.");
        }
        self.state
            .lock()
            .unwrap()
            .files
            .insert(name.into(), Tracked::Finished(report));
    }

    /// Updates each streaming file's progress from the streamer's state, and moves those
    /// whose every hour is confirmed to `done/`.
    fn follow(&self, streamer: &StreamerState) {
        let streaming: Vec<(String, FileReport)> = {
            let state = self.state.lock().unwrap();
            state
                .files
                .iter()
                .filter_map(|(name, tracked)| match tracked {
                    Tracked::Streaming(report) => Some((name.clone(), report.clone())),
                    Tracked::Finished(_) => None,
                })
                .collect()
        };
        let index = streamer.index();
        for (name, mut report) in streaming {
            let Some(stats) = index.file_stats(&report.file) else {
                continue; // not indexed yet
            };
            let (mut streamed, mut reported) = (0, 0);
            {
                let confirmed = streamer.confirmed.lock().unwrap();
                let pending = streamer.pending.lock().unwrap();
                for hour in &stats.hours {
                    let Some(generation) = index.generation(*hour) else {
                        continue;
                    };
                    if confirmed.is_confirmed(*hour, generation) {
                        reported += 1;
                        streamed += 1;
                    } else if pending.holds(*hour, generation) {
                        streamed += 1;
                    }
                }
            }
            report.rows_read = stats.rows;
            report.rows_rejected = stats.rejected;
            report.hours = stats.hours.len() as u64;
            report.hours_streamed = streamed;
            report.hours_reported = reported;
            if reported == report.hours {
                let done = self.done.clone();
                self.finish(&name, report, &done, |from, to| {
                    streamer.files.rename(from, to)
                });
            } else {
                self.state
                    .lock()
                    .unwrap()
                    .files
                    .insert(name, Tracked::Streaming(report));
            }
        }
    }
}

impl FileReport {
    fn new(name: String, file: PathBuf, state: FileState, rejects_file: &Path) -> Self {
        Self {
            name,
            file,
            state,
            rows_read: 0,
            rows_rejected: 0,
            hours: 0,
            hours_streamed: 0,
            hours_reported: 0,
            rejects_file: rejects_file.to_owned(),
            error: None,
        }
    }
}

/// The `*.csv` files of `folder` with an arrival number: (number, original name, path).
fn arrivals(folder: &Path) -> std::io::Result<Vec<(u64, String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_candidate(&name) {
            continue;
        }
        if let Some((number, original)) = parse_arrival(&name) {
            found.push((number, original.to_owned(), entry.path()));
        }
    }
    found.sort_by_key(|(number, _, _)| *number);
    Ok(found)
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed over it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Looks at the inbox every second: takes complete files, follows those being streamed,
/// moves those done; reports whether the inbox can be read as the `inbox` readiness
/// check. Blocking file work runs off the async threads.
pub async fn watch(
    inbox: Arc<Inbox>,
    streamer: Arc<StreamerState>,
    check: Check,
    shutdown: CancellationToken,
) {
    while sleep_or_cancel(POLL, &shutdown).await {
        let (inbox, streamer) = (inbox.clone(), streamer.clone());
        let looked = in_span_blocking(move || {
            let looked = inbox.take_complete(&streamer.files);
            inbox.follow(&streamer);
            looked
        })
        .await
        .expect("watching the inbox does not panic");
        match looked {
            Ok(()) => check.ok(),
            Err(why) => {
                tracing::warn!(%why, "Inbox unreadable; trying again.");
                check.failed(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_taken_when_old_or_unchanged_for_the_quiet_period() {
        let period = Duration::from_secs(2);
        let mut quiet = Quiet::new(period);
        let start = Instant::now();
        let wall = SystemTime::now();
        let fresh = Observation {
            len: 10,
            modified: wall,
        };
        assert!(!quiet.ready("a.csv", fresh, start, wall), "just written");
        let after = |s| start + Duration::from_secs(s);
        let wall_after = |s| wall + Duration::from_secs(s);
        assert!(!quiet.ready("a.csv", fresh, after(1), wall_after(1)));
        let grown = Observation { len: 20, ..fresh };
        assert!(
            !quiet.ready("a.csv", grown, after(2), wall_after(1)),
            "grew: watching starts again (even with the clock stuck)"
        );
        assert!(!quiet.ready("a.csv", grown, after(3), wall_after(1)));
        assert!(
            quiet.ready("a.csv", grown, after(4), wall_after(1)),
            "unchanged for 2 s of watching"
        );
        assert!(!quiet.is_watching("a.csv"), "forgotten once taken");

        // Renamed in, written long ago: taken at the first look.
        let old = Observation {
            len: 5,
            modified: wall - Duration::from_secs(60),
        };
        assert!(quiet.ready("b.csv", old, start, wall));
        // A modification time in the future (another clock) is not "old".
        let future = Observation {
            len: 5,
            modified: wall + Duration::from_secs(3600),
        };
        assert!(!quiet.ready("c.csv", future, start, wall));
        assert!(quiet.ready("c.csv", future, after(2), wall));
        quiet.ready("d.csv", fresh, start, wall);
        quiet.retain(|name| name != "d.csv");
        assert!(!quiet.is_watching("d.csv"));
    }

    #[test]
    fn arrival_names_round_trip_and_candidates_are_visible_csv_files() {
        assert_eq!(arrival_name(7, "x-1.csv"), "000007-x-1.csv");
        assert_eq!(parse_arrival("000007-x-1.csv"), Some((7, "x-1.csv")));
        assert_eq!(parse_arrival("1234567-a.csv"), Some((1234567, "a.csv")));
        assert_eq!(parse_arrival("7-a.csv"), None);
        assert_eq!(parse_arrival("000007-"), None);
        assert_eq!(parse_arrival("abcdef-a.csv"), None);
        assert!(is_candidate("Stations.CSV"));
        assert!(!is_candidate(".part.csv"));
        assert!(!is_candidate("notes.txt"));
        assert!(!is_candidate("x.csv.report.json"));
    }

    #[test]
    fn open_takes_back_what_a_previous_run_left_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let args = InboxArgs {
            inbox: Some(inbox.clone()),
            inbox_quiet: 2.0,
        };
        let read = ReadOptions::default();
        let first = Inbox::open(&inbox, &args, read, "rejects.csv".into()).unwrap();
        assert!(first.files_to_stream().is_empty());
        std::fs::write(inbox.join("done/000002-b.csv"), "x").unwrap();
        std::fs::write(inbox.join("processing/000003-c.csv"), "x").unwrap();
        std::fs::write(inbox.join("done/000001-a.csv"), "x").unwrap();
        std::fs::write(inbox.join("failed/000004-d.csv"), "x").unwrap();
        let again = Inbox::open(&inbox, &args, read, "rejects.csv".into()).unwrap();
        let names: Vec<String> = again
            .files_to_stream()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["000001-a.csv", "000002-b.csv", "000003-c.csv"]);
        assert_eq!(again.status("c.csv").unwrap().state, FileState::Streaming);
        assert_eq!(again.status("d.csv").unwrap().state, FileState::Failed);
        assert_eq!(again.state.lock().unwrap().next_number, 5);
        std::fs::write(inbox.join("e.csv"), "x").unwrap();
        assert_eq!(again.status("e.csv").unwrap().state, FileState::Queued);
        assert!(again.status("f.csv").is_none());
    }
}
