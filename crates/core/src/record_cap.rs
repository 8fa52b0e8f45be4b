//! A cap on the length of one CSV record: [`RecordCap`] sits between an input file and
//! `csv::Reader`, scans the bytes it passes with the same `csv_core` parser the reader
//! runs, and fails the read once the record being read is longer than the cap, so an
//! enormous record never reaches memory whole. It then skips the rest of that record and
//! says where the next one starts, so the reader can seek there with true byte offsets
//! and line numbers.

use std::io::{self, Read, Seek, SeekFrom};

/// The error a read returns (as the payload of an [`io::Error`]) once the record being read
/// is longer than the cap; every read returns it until the reader is seeked.
#[derive(Debug, thiserror::Error)]
#[error("record is longer than {max} bytes")]
pub struct RecordTooLong {
    /// The byte offset where the oversized record starts.
    pub start: u64,
    pub max: u64,
}

/// Where an oversized record was, as [`RecordCap::skip_oversized`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The byte offset where the record starts (after the record before it ends).
    pub start: u64,
    /// The byte offset where the next record starts (the end of the input if none does).
    pub next: u64,
    /// How many `\n` the record holds, its terminator included: the next record starts that
    /// many lines after it.
    pub newlines: u64,
}

/// An oversized record: where it starts, and once the scan has passed it, where it ends
/// and how many newlines it holds.
#[derive(Clone, Copy, Debug)]
struct Oversized {
    start: u64,
    end: Option<(u64, u64)>,
}

/// How many bytes of output the scanner writes per call; they are thrown away.
const SCRATCH_BYTES: usize = 4 << 10;
/// How many bytes [`RecordCap::skip_oversized`] reads at a time.
const SKIP_CHUNK_BYTES: usize = 64 << 10;

/// Passes the bytes of `inner` through, failing with [`RecordTooLong`] once one CSV record
/// is longer than `max` bytes (counted from the end of the record before it, so blank lines
/// before it count too).
///
/// Record ends are found by a `csv_core` parser built with the same settings as the
/// `csv::Reader` reading from this one (the default ones, with `delimiter`): both parsers
/// see the same bytes from the same state, so they agree on where every record ends,
/// quoted newlines and CRLF included. Every seek must land on a record start, as
/// `csv::Reader::seek` requires too.
pub struct RecordCap<R> {
    inner: R,
    scanner: csv_core::Reader,
    max: u64,
    /// The offset in `inner` of the next byte to read; every byte before it has been scanned.
    offset: u64,
    /// Where the record being scanned starts, and the scanner's line count there.
    record_start: u64,
    record_start_line: u64,
    oversized: Option<Oversized>,
    /// The scanner's output, which only the `csv::Reader` needs.
    scratch: Box<[u8]>,
}

impl<R> RecordCap<R> {
    /// Wraps `inner`, positioned at its start (offset 0, where a record starts).
    pub fn new(inner: R, delimiter: u8, max: u64) -> Self {
        Self {
            inner,
            scanner: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            max,
            offset: 0,
            record_start: 0,
            record_start_line: 1,
            oversized: None,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    fn too_long(&self, start: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            RecordTooLong {
                start,
                max: self.max,
            },
        )
    }

    /// Runs `input` (the bytes at `self.offset`) through the scanner, stopping early at the
    /// end of an oversized record so that its end and newlines are exact.
    fn scan(&mut self, mut input: &[u8]) {
        // Room for many field ends per call; when full the scanner just returns early.
        let mut ends = [0usize; 64];
        while !input.is_empty() && self.oversized.is_none_or(|o| o.end.is_none()) {
            let (result, read, _, _) =
                self.scanner
                    .read_record(input, &mut self.scratch, &mut ends);
            input = &input[read..];
            self.offset += read as u64;
            if result == csv_core::ReadRecordResult::Record {
                self.record_ended();
            }
        }
        if self.oversized.is_none() && self.offset - self.record_start > self.max {
            self.oversized = Some(Oversized {
                start: self.record_start,
                end: None,
            });
        }
    }

    fn record_ended(&mut self) {
        let newlines = self.scanner.line() - self.record_start_line;
        if self.oversized.is_some() || self.offset - self.record_start > self.max {
            self.oversized = Some(Oversized {
                start: self.record_start,
                end: Some((self.offset, newlines)),
            });
        } else {
            self.record_start = self.offset;
            self.record_start_line = self.scanner.line();
        }
    }
}

impl<R: Read> RecordCap<R> {
    /// After a read failed with [`RecordTooLong`]: reads on (a chunk at a time, so memory
    /// does not grow with the record) to the end of the oversized record and says where it
    /// was and where the next record starts. The caller must then seek to `next` (reads fail
    /// until it does). `None` if no record was too long.
    pub fn skip_oversized(&mut self) -> io::Result<Option<Skipped>> {
        if self.oversized.is_none() {
            return Ok(None);
        }
        let mut chunk = vec![0; SKIP_CHUNK_BYTES];
        loop {
            let oversized = self
                .oversized
                .expect("checked above; only a seek clears it");
            if let Some((next, newlines)) = oversized.end {
                return Ok(Some(Skipped {
                    start: oversized.start,
                    next,
                    newlines,
                }));
            }
            let read = match self.inner.read(&mut chunk) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if read == 0 {
                // The input ends inside the record, so that is where the record ends.
                let newlines = self.scanner.line() - self.record_start_line;
                self.oversized = Some(Oversized {
                    end: Some((self.offset, newlines)),
                    ..oversized
                });
            } else {
                self.scan(&chunk[..read]);
            }
        }
    }
}

impl<R: Read> Read for RecordCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(oversized) = self.oversized {
            return Err(self.too_long(oversized.start));
        }
        let chunk_start = self.offset;
        let read = self.inner.read(buf)?;
        self.scan(&buf[..read]);
        match self.oversized {
            None => Ok(read),
            // The records before the oversized one in this chunk are passed on whole, so the
            // csv reader's next record is the oversized one when the next read fails.
            Some(oversized) if oversized.start > chunk_start => {
                Ok((oversized.start - chunk_start) as usize)
            }
            Some(oversized) => Err(self.too_long(oversized.start)),
        }
    }
}

impl<R: Seek> Seek for RecordCap<R> {
    /// Moves to a record start: the scan starts afresh there, as the csv reader's does.
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let offset = self.inner.seek(position)?;
        self.scanner.reset();
        self.offset = offset;
        self.record_start = offset;
        self.record_start_line = self.scanner.line();
        self.oversized = None;
        Ok(offset)
    }

    /// Answered without seeking, since a seek restarts the scan (`BufReader` asks this).
    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Reads all of `cap` as the csv reader would (through a small buffer), returning the
    /// bytes passed and the error that stopped it, if any.
    fn drain(cap: &mut RecordCap<Cursor<Vec<u8>>>) -> (Vec<u8>, Option<io::Error>) {
        let mut passed = Vec::new();
        let mut buf = [0; 16];
        loop {
            match cap.read(&mut buf) {
                Ok(0) => return (passed, None),
                Ok(read) => passed.extend_from_slice(&buf[..read]),
                Err(error) => return (passed, Some(error)),
            }
        }
    }

    #[test]
    fn records_under_the_cap_pass_through_unchanged() {
        let input = b"a,b\n\"x\ny\",1\r\nlast".to_vec();
        let mut cap = RecordCap::new(Cursor::new(input.clone()), b',', 9);
        let (passed, error) = drain(&mut cap);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(passed, input);
        assert_eq!(cap.skip_oversized().unwrap(), None);
    }

    #[test]
    fn an_oversized_record_fails_the_read_and_is_skipped_to_the_next_record() {
        // "ok\n" is 3 bytes; the quoted record is 28 bytes with two newlines in it and one
        // at its end; the next record starts at 31.
        let big = "\"0123456789\n,0123456789\n\",x\n";
        assert_eq!(big.len(), 28);
        let input = format!("ok\n{big}next\n");
        let mut cap = RecordCap::new(Cursor::new(input.into_bytes()), b',', 10);
        let (passed, error) = drain(&mut cap);
        assert_eq!(passed, b"ok\n", "only the record before it is passed on");
        let error = error.expect("the oversized record fails a read");
        let payload = error.get_ref().unwrap().downcast_ref::<RecordTooLong>();
        assert_eq!(payload.map(|p| (p.start, p.max)), Some((3, 10)));
        assert!(cap.read(&mut [0; 4]).is_err(), "reads fail until a seek");
        let skipped = cap.skip_oversized().unwrap().unwrap();
        assert_eq!(
            skipped,
            Skipped {
                start: 3,
                next: 31,
                newlines: 3
            }
        );
        cap.seek(SeekFrom::Start(skipped.next)).unwrap();
        assert_eq!(drain(&mut cap).0, b"next\n");
    }

    #[test]
    fn no_more_than_the_cap_of_a_record_is_passed_on() {
        let max = 100;
        let input = format!("ok\n{}\nnext\n", "h".repeat(1 << 20)).into_bytes();
        let mut cap = RecordCap::new(Cursor::new(input), b',', max);
        let (passed, error) = drain(&mut cap);
        assert!(error.is_some());
        assert!(
            passed.len() as u64 <= 3 + max,
            "{} bytes passed",
            passed.len()
        );
        let skipped = cap.skip_oversized().unwrap().unwrap();
        assert_eq!((skipped.start, skipped.next), (3, 3 + (1 << 20) + 1));
    }

    #[test]
    fn an_oversized_last_record_ends_at_the_end_of_the_input() {
        let mut cap = RecordCap::new(Cursor::new(b"ok\n0123456789012".to_vec()), b',', 10);
        assert!(drain(&mut cap).1.is_some());
        let skipped = cap.skip_oversized().unwrap().unwrap();
        assert_eq!((skipped.start, skipped.next, skipped.newlines), (3, 16, 0));
        // An unclosed quote runs to the end of the input, over its newline.
        let mut cap = RecordCap::new(Cursor::new(b"ok\n\"0123456789\n012".to_vec()), b',', 10);
        assert!(drain(&mut cap).1.is_some());
        let skipped = cap.skip_oversized().unwrap().unwrap();
        assert_eq!((skipped.start, skipped.next, skipped.newlines), (3, 18, 1));
    }

    #[test]
    fn the_delimiter_decides_where_a_quoted_field_starts() {
        // With ';' the quote opens the second field, so the record runs over both lines
        // (8 bytes); with ',' the quote is inside the field `a;"x` and each line is a record
        // of 5 and 3 bytes.
        let input = b"a;\"x\ny\"\n".to_vec();
        let mut semicolon = RecordCap::new(Cursor::new(input.clone()), b';', 5);
        assert!(drain(&mut semicolon).1.is_some());
        let skipped = semicolon.skip_oversized().unwrap().unwrap();
        assert_eq!((skipped.start, skipped.next, skipped.newlines), (0, 8, 2));
        let mut comma = RecordCap::new(Cursor::new(input.clone()), b',', 5);
        let (passed, error) = drain(&mut comma);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(passed, input);
    }
}
