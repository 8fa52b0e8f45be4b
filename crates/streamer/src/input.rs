//! The streamer's view of its input: an index from hour to where that hour's rows are in
//! the files and how they are cut into batches, built in one pass, so any one batch can be
//! read (to stream it, or again for a resend) without holding an hour in memory, and each
//! hour's generation known without reading it. Rejected rows go to the rejects file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use xxhash_rust::xxh3::xxh3_64;

use weathervane_core::generation::GenerationDigest;
use weathervane_core::row::{CsvError, CsvSource, ReadOptions, RowError, RowLocation};
use weathervane_core::{Generation, HourKey, WeatherRow};

use crate::batches;

/// Rows that could not be used, written as CSV `file,line,reason`. The file is appended
/// to and survives restarts; a reject already in it (the same file, line and reason, from
/// an earlier run or an hour read again) is not written twice.
pub struct Rejects {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
    /// Every reject in the file: what it held at start, and what this run wrote.
    written: HashSet<(String, u64, String)>,
    count: u64,
}

impl Rejects {
    /// Reads the rejects already in `path`, if any; the file is created on the first
    /// new reject only.
    pub fn new(path: PathBuf) -> Self {
        let written = read_rejects(&path);
        Self {
            path,
            writer: None,
            written,
            count: 0,
        }
    }

    /// Rows rejected in this run (whether or not an earlier run already wrote them).
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&mut self, error: &RowError) {
        self.count += 1;
        let key = (
            error.path.display().to_string(),
            error.line,
            error.reason.clone(),
        );
        if !self.written.insert(key.clone()) {
            return;
        }
        tracing::warn!(file = %key.0, line = error.line, reason = %error.reason, "Row rejected.");
        if self.writer.is_none() {
            self.writer = self.open();
        }
        if let Some(writer) = &mut self.writer {
            let line = error.line.to_string();
            let written = writer.write_record([&key.0, &line, &key.2]);
            if let Err(e) = written.and_then(|()| Ok(writer.flush()?)) {
                tracing::error!(path = %self.path.display(), error = %e, "Cannot write the rejects file.");
            }
        }
    }

    /// Opens the file for appending, with a header if it is new and a newline first if a
    /// kill cut its last line short.
    fn open(&self) -> Option<csv::Writer<std::fs::File>> {
        let opened = (|| -> std::io::Result<csv::Writer<std::fs::File>> {
            let existing = std::fs::read(&self.path).unwrap_or_default();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if existing.last().is_some_and(|b| *b != b'\n') {
                file.write_all(b"\n")?;
            }
            let mut writer = csv::Writer::from_writer(file);
            if existing.is_empty() {
                writer.write_record(["file", "line", "reason"])?;
            }
            Ok(writer)
        })();
        opened
            .map_err(|e| tracing::error!(path = %self.path.display(), error = %e, "Cannot write the rejects file; rejects are only logged."))
            .ok()
    }
}

/// The `(file, line, reason)` records of an existing rejects file (none if it is absent
/// or unreadable; a torn last line is simply not matched).
fn read_rejects(path: &Path) -> HashSet<(String, u64, String)> {
    let Ok(mut reader) = csv::ReaderBuilder::new().flexible(true).from_path(path) else {
        return HashSet::new();
    };
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|record| {
            let line = record.get(1)?.parse().ok()?;
            Some((record.get(0)?.to_owned(), line, record.get(2)?.to_owned()))
        })
        .collect()
}

/// How much of each end of a file its fingerprint covers.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// What a file was when it was indexed: enough to tell cheaply (one `stat` and 128 KiB
/// read) that it changed since, so the index's row locations are not trusted any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    len: u64,
    modified: Option<SystemTime>,
    /// Device and inode: a file replaced by another (renamed over it) is a change.
    #[cfg(unix)]
    inode: (u64, u64),
    /// xxh3 of the first and the last [`FINGERPRINT_BYTES`] (an edit that keeps the
    /// length and lands within the modification time's resolution).
    fingerprint: u64,
}

impl FileIdentity {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let metadata = file.metadata()?;
        let len = metadata.len();
        let mut ends = Vec::with_capacity(2 * FINGERPRINT_BYTES as usize);
        (&mut file).take(FINGERPRINT_BYTES).read_to_end(&mut ends)?;
        if len > FINGERPRINT_BYTES {
            file.seek(SeekFrom::Start(
                FINGERPRINT_BYTES.max(len - FINGERPRINT_BYTES),
            ))?;
            file.take(FINGERPRINT_BYTES).read_to_end(&mut ends)?;
        }
        Ok(Self {
            len,
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
            fingerprint: xxh3_64(&ends),
        })
    }

    /// What differs in `now` from `self`, in words; `None` if nothing does.
    pub fn changes(&self, now: &Self) -> Option<String> {
        let mut changes = Vec::new();
        #[cfg(unix)]
        if self.inode != now.inode {
            changes.push("replaced by another file".to_owned());
        }
        if self.len != now.len {
            changes.push(format!("length {} -> {} bytes", self.len, now.len));
        }
        if self.modified != now.modified {
            changes.push("modification time".to_owned());
        }
        if self.fingerprint != now.fingerprint {
            changes.push("content at its start or end".to_owned());
        }
        (!changes.is_empty()).then(|| changes.join(", "))
    }
}

/// An input file that changed since it was indexed.
#[derive(Debug)]
pub struct Changed {
    pub path: PathBuf,
    /// What changed, in words.
    pub what: String,
}

/// The input files, in order: those given with `--input`, then the inbox's as they
/// arrive (appended only, so a file's position never changes). Every index snapshot
/// shares it: the inbox moves a streamed file from `processing/` to `done/` through
/// [`InputFiles::rename`], under the write lock, so no batch is being read from the old
/// path meanwhile (a rename keeps the file's identity: inode, length, time, content).
#[derive(Debug, Default)]
pub struct InputFiles {
    paths: RwLock<Vec<PathBuf>>,
    /// The name a file's rejects carry when it is not its path (by its current path): an
    /// inbox file's is the path it ends at in `done/`, so its rejects are recorded once,
    /// not again under each folder it passes through.
    names: RwLock<std::collections::HashMap<PathBuf, PathBuf>>,
}

impl InputFiles {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths: RwLock::new(paths),
            names: RwLock::default(),
        }
    }

    pub fn snapshot(&self) -> Vec<PathBuf> {
        self.paths.read().unwrap().clone()
    }

    /// Adds a file at the end, its rejects named `name`: the next index includes it.
    pub fn push_named(&self, path: PathBuf, name: PathBuf) {
        self.names.write().unwrap().insert(path.clone(), name);
        self.paths.write().unwrap().push(path);
    }

    /// The name the rejects of the file now at `path` carry.
    pub fn name_of(&self, path: &Path) -> PathBuf {
        let names = self.names.read().unwrap();
        names.get(path).cloned().unwrap_or_else(|| path.to_owned())
    }

    /// Renames `from` to `to` on disk and in the list, with no batch being read meanwhile.
    pub fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut paths = self.paths.write().unwrap();
        std::fs::rename(from, to)?;
        for path in paths.iter_mut().filter(|path| path.as_path() == from) {
            *path = to.to_owned();
        }
        let mut names = self.names.write().unwrap();
        if let Some(name) = names.remove(from) {
            names.insert(to.to_owned(), name);
        }
        Ok(())
    }
}

/// What one input file gave the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Rows indexed (to be streamed).
    pub rows: u64,
    /// Rows rejected (bad, or a second row for a station and time).
    pub rejected: u64,
    /// The hours it has rows in.
    pub hours: std::collections::BTreeSet<HourKey>,
}

/// One hour of the index: where its rows are, how they are cut into batches, and its
/// generation.
struct IndexedHour {
    /// (file index, location) of each row to stream, in file order.
    locations: Vec<(usize, RowLocation)>,
    /// Each batch: a range of `locations`.
    batches: Vec<Range<u32>>,
    /// The digest of the hour's rows in that order and of the batch size: what the rows
    /// read back must digest to.
    generation: Generation,
}

/// An hour as indexed: how many rows and batches it has, and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourPlan {
    pub rows: u64,
    pub batches: u32,
    pub generation: Generation,
}

/// Where each hour's rows are, and each hour's batches and generation.
pub struct InputIndex {
    files: Arc<InputFiles>,
    /// How many of `files` this index covers (the first ones); more means a new file.
    count: usize,
    /// What each of those files gave.
    stats: Vec<FileStats>,
    /// Each file's identity, taken just before it was read: any change made while or
    /// after it was indexed shows.
    identities: Vec<FileIdentity>,
    /// How the files are read (`--max-abs-value`, `--time-column`).
    read: ReadOptions,
    hours: BTreeMap<HourKey, IndexedHour>,
}

/// The stations (zip code and time) already seen: a second row for one would overwrite
/// the first in InfluxDB, so it is rejected.
#[derive(Default)]
struct Stations(HashSet<(String, i64)>);

impl Stations {
    /// Whether `row` is the first for its station and time (and is now seen).
    fn first(&mut self, row: &WeatherRow) -> bool {
        self.0.insert((row.zip_code.clone(), row.time))
    }
}

/// An hour while the input is being indexed.
struct HourBeingIndexed {
    locations: Vec<(usize, RowLocation)>,
    /// Each row's [`batches::encoded_size`], for cutting the hour into batches.
    sizes: Vec<u32>,
    digest: GenerationDigest,
}

impl InputIndex {
    /// Reads every file once. A file that cannot be opened or has a bad header is an
    /// error; a bad row, or a second row for a station and time, is recorded in `rejects`
    /// and skipped. Each hour is cut into batches of `batch_size` rows (see
    /// [`batches::plan`]), and its generation computed for them.
    #[cfg(test)]
    pub fn build(
        paths: &[PathBuf],
        read: &ReadOptions,
        batch_size: u32,
        rejects: &mut Rejects,
    ) -> Result<Self, CsvError> {
        let files = Arc::new(InputFiles::new(paths.to_vec()));
        Self::build_files(files, read, batch_size, rejects)
    }

    /// [`Self::build`] over the files in `files` now.
    pub fn build_files(
        files: Arc<InputFiles>,
        read: &ReadOptions,
        batch_size: u32,
        rejects: &mut Rejects,
    ) -> Result<Self, CsvError> {
        let paths = files.snapshot();
        let mut stats = vec![FileStats::default(); paths.len()];
        let mut hours: BTreeMap<HourKey, HourBeingIndexed> = BTreeMap::new();
        let mut stations = Stations::default();
        let mut identities = Vec::with_capacity(paths.len());
        for (file, path) in paths.iter().enumerate() {
            identities.push(FileIdentity::of(path).map_err(|source| CsvError::Open {
                path: path.clone(),
                source,
            })?);
            let mut source = CsvSource::open_with(path, read)?;
            let name = files.name_of(path);
            while let Some(result) = source.next_row() {
                let (location, row) = match result {
                    Ok(read) => read,
                    Err(mut error) => {
                        stats[file].rejected += 1;
                        error.path = name.clone();
                        rejects.record(&error);
                        continue;
                    }
                };
                if !stations.first(&row) {
                    stats[file].rejected += 1;
                    rejects.record(&RowError {
                        path: name.clone(),
                        line: location.position.line(),
                        reason: format!(
                            "duplicate: zip_code {} already has a row at {}",
                            row.zip_code,
                            row.time_utc()
                        ),
                    });
                    continue;
                }
                let hour = hours.entry(row.hour()).or_insert_with(|| HourBeingIndexed {
                    locations: Vec::new(),
                    sizes: Vec::new(),
                    digest: GenerationDigest::new(batch_size),
                });
                stats[file].rows += 1;
                stats[file].hours.insert(row.hour());
                hour.locations.push((file, location));
                hour.sizes.push(batches::encoded_size(&row));
                hour.digest.add(&row);
            }
        }
        let hours = hours
            .into_iter()
            .map(|(key, hour)| {
                let indexed = IndexedHour {
                    batches: batches::plan(&hour.sizes, batch_size),
                    generation: hour.digest.finish(),
                    locations: hour.locations,
                };
                (key, indexed)
            })
            .collect();
        Ok(Self {
            files,
            count: paths.len(),
            stats,
            identities,
            read: *read,
            hours,
        })
    }

    /// The first input file that is not what it was when indexed, if any: then the
    /// index's row locations may point anywhere. A file that cannot be opened (it
    /// vanished) is an error.
    /// A file added since (the inbox's) is a change too.
    pub fn changed(&self) -> Result<Option<Changed>, CsvError> {
        let paths = self.files.paths.read().unwrap();
        for (path, then) in paths.iter().zip(&self.identities) {
            let now = FileIdentity::of(path).map_err(|source| CsvError::Open {
                path: path.clone(),
                source,
            })?;
            if let Some(what) = then.changes(&now) {
                return Ok(Some(Changed {
                    path: path.clone(),
                    what,
                }));
            }
        }
        Ok(paths.get(self.count).map(|path| Changed {
            path: path.clone(),
            what: "a new input file".into(),
        }))
    }

    /// What the file now at `path` gave this index (`None` if it is not in it).
    pub fn file_stats(&self, path: &Path) -> Option<&FileStats> {
        let paths = self.files.paths.read().unwrap();
        let position = paths[..self.count.min(paths.len())]
            .iter()
            .position(|p| p == path)?;
        self.stats.get(position)
    }

    /// How many files this index covers.
    pub fn file_count(&self) -> usize {
        self.count
    }

    pub fn hours(&self) -> impl Iterator<Item = HourKey> + '_ {
        self.hours.keys().copied()
    }

    /// The hours in `range`, in time order.
    pub fn hours_in(
        &self,
        range: impl std::ops::RangeBounds<HourKey>,
    ) -> impl Iterator<Item = HourKey> + '_ {
        self.hours.range(range).map(|(hour, _)| *hour)
    }

    /// The generation of `hour` as indexed (`None` if the input has no rows in it).
    pub fn generation(&self, hour: HourKey) -> Option<Generation> {
        self.hours.get(&hour).map(|indexed| indexed.generation)
    }

    /// `hour` as indexed (`None` if the input has no rows in it).
    pub fn plan(&self, hour: HourKey) -> Option<HourPlan> {
        self.hours.get(&hour).map(|indexed| HourPlan {
            rows: indexed.locations.len() as u64,
            batches: indexed.batches.len() as u32,
            generation: indexed.generation,
        })
    }

    pub fn row_count(&self) -> usize {
        self.hours.values().map(|h| h.locations.len()).sum()
    }

    /// The rows of `batch` of `hour`, read from the input (empty if there is no such
    /// batch). A row that no longer reads as it did (the file changed) is an error.
    pub fn read_batch(&self, hour: HourKey, batch: u32) -> Result<Vec<WeatherRow>, CsvError> {
        let Some(indexed) = self.hours.get(&hour) else {
            return Ok(Vec::new());
        };
        let Some(range) = indexed.batches.get(batch as usize) else {
            return Ok(Vec::new());
        };
        let locations = &indexed.locations[range.start as usize..range.end as usize];
        // Held while reading, so the inbox does not rename a file from under it.
        let paths = self.files.paths.read().unwrap();
        let mut sources: Vec<Option<CsvSource>> = paths.iter().map(|_| None).collect();
        let mut rows = Vec::with_capacity(locations.len());
        for (file, location) in locations {
            let source = match &mut sources[*file] {
                Some(source) => source,
                slot => slot.insert(CsvSource::open_with(&paths[*file], &self.read)?),
            };
            rows.push(source.read_at(location)?);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const HEADER: &str = "zip_code,state,time,temp_c,pressure_mb,humidity,precip_mm";

    #[test]
    fn the_rejects_file_is_appended_across_restarts_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.csv");
        let reject = |line: u64, reason: &str| RowError {
            path: PathBuf::from("in.csv"),
            line,
            reason: reason.into(),
        };
        let mut first = Rejects::new(path.clone());
        first.record(&reject(3, "temp_c \"hot\" is not a number"));
        first.record(&reject(3, "temp_c \"hot\" is not a number"));
        first.record(&reject(5, "duplicate, with \"quotes\", and commas"));
        drop(first);
        // A kill cut the last line short.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"in.csv,9,torn")
            .unwrap();
        let mut second = Rejects::new(path.clone());
        second.record(&reject(5, "duplicate, with \"quotes\", and commas"));
        second.record(&reject(7, "state \"X\" is not two uppercase letters"));
        assert_eq!(second.count(), 2, "this run's rejects");
        let lines: Vec<(String, String)> = csv::Reader::from_path(&path)
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[1].to_owned(), r[2].to_owned())
            })
            .collect();
        let numbers: Vec<&str> = lines.iter().map(|(line, _)| line.as_str()).collect();
        assert_eq!(numbers, ["3", "5", "9", "7"], "{lines:?}");
        assert_eq!(lines[1].1, "duplicate, with \"quotes\", and commas");
    }

    #[test]
    fn a_file_changed_after_indexing_is_detected_and_an_untouched_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let row = |zip: u32, temp: &str| format!("{zip:05},CA,2023-09-19 05:00,{temp},1000,50,0");
        let write = |name: &str, rows: &[String]| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
            path
        };
        // Large enough that its middle is in neither fingerprinted end.
        let big: Vec<String> = (0..8000).map(|zip| row(zip, "10.5")).collect();
        let a = write("a.csv", &big);
        let b = write("b.csv", &[row(1, "1.5"), row(2, "2.5")]);
        let paths = [a.clone(), b.clone()];
        let mut rejects = Rejects::new(dir.path().join("rejects.csv"));
        let max = &ReadOptions::default();
        let index = InputIndex::build(&paths, max, 500, &mut rejects).unwrap();
        assert!(index.changed().unwrap().is_none(), "untouched");
        let _ = std::fs::read(&a).unwrap();
        assert!(index.changed().unwrap().is_none(), "read is not a change");

        // One value of the small file, same length, its modification time put back: the
        // fingerprint tells.
        let modified = std::fs::metadata(&b).unwrap().modified().unwrap();
        write("b.csv", &[row(1, "1.5"), row(2, "2.6")]);
        File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let changed = index.changed().unwrap().expect("an edited value");
        assert_eq!(changed.path, b);
        assert_eq!(changed.what, "content at its start or end");

        // One value in the middle of the big file, same length: the modification time tells.
        let index = InputIndex::build(&paths, max, 500, &mut rejects).unwrap();
        let modified = std::fs::metadata(&a).unwrap().modified().unwrap();
        let mut edited = big.clone();
        edited[4000] = row(4000, "10.6");
        write("a.csv", &edited);
        // Later, whatever the file system's resolution.
        File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(modified + std::time::Duration::from_secs(2))
            .unwrap();
        let changed = index.changed().unwrap().expect("an edit in the middle");
        assert_eq!(
            (changed.path, changed.what),
            (a.clone(), "modification time".into())
        );

        // A row added: the length tells too.
        let index = InputIndex::build(&paths, max, 500, &mut rejects).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(row(3, "3.5").as_bytes())
            .unwrap();
        let changed = index.changed().unwrap().expect("a row added");
        assert_eq!(changed.path, b);
        assert!(changed.what.contains("length"), "{}", changed.what);

        // A vanished file is an error.
        let index = InputIndex::build(&paths, max, 500, &mut rejects).unwrap();
        assert!(index.changed().unwrap().is_none());
        std::fs::remove_file(&a).unwrap();
        assert!(matches!(index.changed(), Err(CsvError::Open { path, .. }) if path == a));
    }

    #[test]
    fn a_file_added_or_renamed_shows_as_a_change_and_each_file_has_its_stats() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: &[&str]| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
            path
        };
        let a = write(
            "a.csv",
            &["1,CA,2023-09-19 05:00,1,1000,50,0", "2,CA,bad,1,1000,50,0"],
        );
        let files = Arc::new(InputFiles::new(vec![a.clone()]));
        let mut rejects = Rejects::new(dir.path().join("rejects.csv"));
        let read = &ReadOptions::default();
        let index = InputIndex::build_files(files.clone(), read, 500, &mut rejects).unwrap();
        let stats = index.file_stats(&a).unwrap();
        assert_eq!((stats.rows, stats.rejected, stats.hours.len()), (1, 1, 1));
        let b = write(
            "b.csv",
            &[
                "1,CA,2023-09-19 05:00,1,1000,50,0",
                "3,CA,2023-09-19 06:00,1,1000,50,0",
            ],
        );
        files.push_named(b.clone(), dir.path().join("done-b.csv"));
        let change = index.changed().unwrap().expect("a new file");
        assert_eq!(
            (change.path, change.what.as_str()),
            (b.clone(), "a new input file")
        );
        assert!(index.file_stats(&b).is_none(), "not in this index");
        let index = InputIndex::build_files(files.clone(), read, 500, &mut rejects).unwrap();
        let stats = index.file_stats(&b).unwrap().clone();
        assert_eq!(
            (stats.rows, stats.rejected),
            (1, 1),
            "its duplicate of a.csv's row"
        );
        let text = std::fs::read_to_string(rejects.path()).unwrap();
        assert!(
            text.contains("done-b.csv,2,duplicate"),
            "named as asked: {text}"
        );
        assert_eq!(
            stats
                .hours
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>(),
            ["2023-09-19T06"]
        );
        // Moved (to done/): same file, not a change, found at its new path.
        let moved = dir.path().join("moved.csv");
        files.rename(&b, &moved).unwrap();
        assert!(index.changed().unwrap().is_none());
        assert_eq!(index.file_stats(&moved), Some(&stats));
        let index = InputIndex::build_files(files.clone(), read, 500, &mut rejects).unwrap();
        assert_eq!(index.file_stats(&moved), Some(&stats));
        let again = std::fs::read_to_string(rejects.path()).unwrap();
        assert_eq!(
            again, text,
            "indexed again after the move: no reject written twice"
        );
        let five = "2023-09-19T05".parse().unwrap();
        assert_eq!(index.read_batch(five, 0).unwrap().len(), 1);
    }

    #[test]
    fn groups_rows_by_hour_across_files_in_any_order_and_rejects_bad_and_duplicate_rows() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: &[&str]| {
            let path = dir.path().join(name);
            let mut file = std::fs::File::create(&path).unwrap();
            for line in lines {
                writeln!(file, "{line}").unwrap();
            }
            path
        };
        let a = write(
            "a.csv",
            &[
                HEADER,
                "1,CA,2023-09-19 06:00,1,1000,50,0",
                "2,CA,2023-09-19 05:00,2,1000,50,0",
                "3,CA,bad,2,1000,50,0",
            ],
        );
        let b = write(
            "b.csv",
            &[
                "state,zip_code,time,temp_c,pressure_mb,humidity,precip_mm",
                "NY,4,2023-09-19 05:00,3,1000,50,0",
                "CA,2,2023-09-19 05:00,9,1000,50,0",
            ],
        );
        let mut rejects = Rejects::new(dir.path().join("rejects.csv"));
        let index = InputIndex::build(&[a, b], &ReadOptions::default(), 500, &mut rejects).unwrap();
        assert_eq!(rejects.count(), 2, "the bad row and the duplicate");
        assert_eq!(index.row_count(), 3);
        let hours: Vec<String> = index.hours().map(|h| h.to_string()).collect();
        assert_eq!(hours, ["2023-09-19T05", "2023-09-19T06"]);
        let five = index
            .read_batch("2023-09-19T05".parse().unwrap(), 0)
            .unwrap();
        let zips: Vec<&str> = five.iter().map(|r| r.zip_code.as_str()).collect();
        assert_eq!(zips, ["2", "4"], "the second row for zip 2 is a duplicate");
        let text = std::fs::read_to_string(rejects.path()).unwrap();
        assert!(
            text.contains("a.csv,4,") && text.contains("b.csv,3,duplicate"),
            "{text}"
        );
    }
}
