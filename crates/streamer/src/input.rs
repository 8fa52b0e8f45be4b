//! The streamer's view of its input: an index from hour to where that hour's rows are in
//! the files, built in one pass, so an hour can be read (and read again for a resend)
//! without holding the whole input in memory. Rejected rows go to the rejects file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use weathervane_core::row::{CsvError, CsvSource, RowError, RowLocation};
use weathervane_core::{HourKey, WeatherRow};

/// Rows that could not be used, written as CSV `file,line,reason`.
pub struct Rejects {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
    count: u64,
}

impl Rejects {
    /// The file is created on the first reject only.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            writer: None,
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&mut self, error: &RowError) {
        tracing::warn!(file = %error.path.display(), line = error.line, reason = %error.reason, "Row rejected.");
        self.count += 1;
        if self.writer.is_none() {
            match csv::Writer::from_path(&self.path) {
                Ok(mut writer) => {
                    let _ = writer.write_record(["file", "line", "reason"]);
                    self.writer = Some(writer);
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "Cannot write the rejects file; rejects are only logged.")
                }
            }
        }
        if let Some(writer) = &mut self.writer {
            let line = error.line.to_string();
            let written =
                writer.write_record([&error.path.display().to_string(), &line, &error.reason]);
            if let Err(e) = written.and_then(|()| Ok(writer.flush()?)) {
                tracing::error!(path = %self.path.display(), error = %e, "Cannot write the rejects file.");
            }
        }
    }
}

/// Where each hour's rows are: (file index, location) in file order.
pub struct InputIndex {
    paths: Vec<PathBuf>,
    /// The largest magnitude a value may have (`--max-abs-value`).
    max_abs_value: f64,
    hours: BTreeMap<HourKey, Vec<(usize, RowLocation)>>,
}

impl InputIndex {
    /// Reads every file once. A file that cannot be opened or has a bad header is an
    /// error; a bad row is recorded in `rejects` and skipped.
    pub fn build(
        paths: &[PathBuf],
        max_abs_value: f64,
        rejects: &mut Rejects,
    ) -> Result<Self, CsvError> {
        let mut hours: BTreeMap<HourKey, Vec<(usize, RowLocation)>> = BTreeMap::new();
        for (file, path) in paths.iter().enumerate() {
            let mut source = CsvSource::open(path)?.with_max_abs_value(max_abs_value);
            while let Some(result) = source.next_row() {
                match result {
                    Ok((location, row)) => {
                        hours.entry(row.hour()).or_default().push((file, location))
                    }
                    Err(error) => rejects.record(&error),
                }
            }
        }
        Ok(Self {
            paths: paths.to_vec(),
            max_abs_value,
            hours,
        })
    }

    pub fn hours(&self) -> impl Iterator<Item = HourKey> + '_ {
        self.hours.keys().copied()
    }

    pub fn row_count(&self) -> usize {
        self.hours.values().map(Vec::len).sum()
    }

    /// The rows of `hour` in input order, without a second row for a station (zip code)
    /// already seen in that hour: such a row would overwrite the first in InfluxDB, so it
    /// is rejected instead.
    pub fn read_hour(
        &self,
        hour: HourKey,
        rejects: &mut Rejects,
    ) -> Result<Vec<WeatherRow>, CsvError> {
        let Some(locations) = self.hours.get(&hour) else {
            return Ok(Vec::new());
        };
        let mut sources: Vec<Option<CsvSource>> = self.paths.iter().map(|_| None).collect();
        let mut seen = HashSet::with_capacity(locations.len());
        let mut rows = Vec::with_capacity(locations.len());
        for (file, location) in locations {
            let source = match &mut sources[*file] {
                Some(source) => source,
                slot => slot.insert(
                    CsvSource::open(&self.paths[*file])?.with_max_abs_value(self.max_abs_value),
                ),
            };
            let row = source.read_at(location)?;
            if seen.insert((row.zip_code.clone(), row.time)) {
                rows.push(row);
            } else {
                rejects.record(&RowError {
                    path: self.paths[*file].clone(),
                    line: location.position.line(),
                    reason: format!(
                        "duplicate: zip_code {} already has a row at {}",
                        row.zip_code,
                        row.time_utc()
                    ),
                });
            }
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
        let index = InputIndex::build(
            &[a, b],
            weathervane_core::row::DEFAULT_MAX_ABS_VALUE,
            &mut rejects,
        )
        .unwrap();
        assert_eq!(rejects.count(), 1);
        assert_eq!(index.row_count(), 4);
        let hours: Vec<String> = index.hours().map(|h| h.to_string()).collect();
        assert_eq!(hours, ["2023-09-19T05", "2023-09-19T06"]);
        let five = index
            .read_hour("2023-09-19T05".parse().unwrap(), &mut rejects)
            .unwrap();
        let zips: Vec<&str> = five.iter().map(|r| r.zip_code.as_str()).collect();
        assert_eq!(zips, ["2", "4"], "the second row for zip 2 is a duplicate");
        assert_eq!(rejects.count(), 2);
        let text = std::fs::read_to_string(rejects.path()).unwrap();
        assert!(
            text.contains("a.csv,4,") && text.contains("b.csv,3,duplicate"),
            "{text}"
        );
    }
}
