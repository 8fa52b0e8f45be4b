//! How an hour's rows are cut into batches: at most `--batch-size` rows each, fewer where
//! rows are large so a batch stays under [`payload::BATCH_BYTES_TARGET`], more where the
//! hour would otherwise have over [`payload::MAX_BATCHES_PER_HOUR`] batches. Worked out
//! from each row's size when the input is indexed, so any one batch can later be read
//! from the input alone: for streaming an hour batch by batch, and for a resend.

use std::ops::Range;

use weathervane_core::WeatherRow;
use weathervane_core::payload;

/// The batches of an hour whose rows (in streaming order) have the given
/// [`encoded_size`]s: consecutive ranges of row positions.
pub fn plan(sizes: &[u32], batch_size: u32) -> Vec<Range<u32>> {
    let batch_size = (batch_size as usize)
        .max(sizes.len().div_ceil(payload::MAX_BATCHES_PER_HOUR as usize))
        .min(payload::MAX_ROWS_PER_BATCH);
    bounds(sizes, batch_size, payload::BATCH_BYTES_TARGET)
}

/// Consecutive ranges of rows, each of at most `batch_size` rows and, unless it is a
/// single row, at most `max_bytes`.
fn bounds(sizes: &[u32], batch_size: usize, max_bytes: usize) -> Vec<Range<u32>> {
    let mut bounds = Vec::with_capacity(sizes.len().div_ceil(batch_size));
    let (mut start, mut bytes) = (0, 0);
    for (index, size) in sizes.iter().enumerate() {
        let size = *size as usize;
        if index > start && (index - start == batch_size || bytes + size > max_bytes) {
            bounds.push(start as u32..index as u32);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        bounds.push(start as u32..sizes.len() as u32);
    }
    bounds
}

/// An estimate of a row's JSON size, on the high side: twice its strings (escaping
/// rarely adds more; the margin between the target and the hard limit covers worse)
/// plus 1,200 bytes for the field names and 32 numbers.
pub fn encoded_size(row: &WeatherRow) -> u32 {
    let strings = row.name.len() + row.wind_dir.len() + row.zip_code.len() + row.state.len();
    // Strings are capped far below this by the row rules; saturate rather than wrap.
    u32::try_from(2 * strings + 1200).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use weathervane_core::channel::DeploymentId;
    use weathervane_core::row::{self, Metric, NUMERIC_COLUMNS};
    use weathervane_core::{Generation, HourKey, payload::BatchEnvelope};

    use super::*;

    fn lengths(plan: &[Range<u32>]) -> Vec<u32> {
        plan.iter().map(|r| r.end - r.start).collect()
    }

    #[test]
    fn rows_are_cut_in_order_into_batches_of_the_batch_size() {
        let plan = plan(&[1200; 1001], 500);
        assert_eq!(plan, [0..500, 500..1000, 1000..1001]);
        assert!(super::plan(&[], 500).is_empty());
    }

    #[test]
    fn large_rows_make_smaller_batches_that_stay_under_the_target() {
        // 300 rows of 40 KB: 500 of them would be 12 MB.
        let size = 40_000;
        let plan = plan(&[size; 300], 500);
        let per_batch = payload::BATCH_BYTES_TARGET / size as usize;
        assert!(lengths(&plan).iter().all(|n| *n as usize <= per_batch));
        assert_eq!(plan.len(), 300_usize.div_ceil(per_batch));
        assert_eq!(plan.last().unwrap().end, 300, "every row in a batch");
        // A single row over the target still gets a batch of its own.
        assert_eq!(super::plan(&[10, u32::MAX, 10], 500), [0..1, 1..2, 2..3]);
    }

    /// Cuts 300 rows, every third with a `name` of `big`, into batches, encodes them, and
    /// returns the largest payload after checking every row is in one batch, in order.
    fn largest_payload(big: &str) -> usize {
        let hour: HourKey = "2023-09-19T05".parse().unwrap();
        let mut values = [None; NUMERIC_COLUMNS.len()];
        Metric::ALL
            .iter()
            .for_each(|m| values[m.index()] = Some(1.0));
        let rows: Vec<WeatherRow> = (0..300)
            .map(|i| WeatherRow {
                zip_code: format!("{i:05}"),
                state: "CA".into(),
                name: if i % 3 == 0 { big.into() } else { "n".into() },
                time: hour.start_secs(),
                wind_dir: big.into(),
                values,
            })
            .collect();
        let sizes: Vec<u32> = rows.iter().map(encoded_size).collect();
        let plan = plan(&sizes, 500);
        assert!(plan.len() > 1, "300 rows this large do not fit one batch");
        let (mut zips, mut largest) = (Vec::new(), 0);
        for (batch, range) in plan.iter().enumerate() {
            let rows = &rows[range.start as usize..range.end as usize];
            let (batches, generation) = (plan.len() as u32, Generation::from_bits(7));
            let id = DeploymentId::default();
            let body =
                BatchEnvelope::encode_rows(&id, hour, batch as u32, batches, generation, rows);
            largest = largest.max(body.len());
            let decoded = BatchEnvelope::decode_for("c", batch as u32, hour, &body, &id).unwrap();
            assert_eq!(decoded.batches, batches);
            zips.extend(decoded.rows.into_iter().map(|r| r.zip_code));
        }
        let expected: Vec<String> = (0..300).map(|i| format!("{i:05}")).collect();
        assert_eq!(zips, expected, "every row once, in order");
        largest
    }

    #[test]
    fn batches_of_large_rows_encode_under_the_target() {
        let largest = largest_payload(&"n".repeat(60_000));
        assert!(largest <= payload::BATCH_BYTES_TARGET, "{largest} bytes");
    }

    #[test]
    fn batches_of_rows_that_escape_worst_still_fit_a_payload() {
        // A control character is 6 bytes in JSON, three times the estimate's 2: the margin
        // between the target and the hard limit is what covers it.
        let longest = "\u{1}".repeat(row::MAX_STRING_FIELD_BYTES);
        let largest = largest_payload(&longest);
        assert!(largest <= payload::MAX_PAYLOAD_BYTES, "{largest} bytes");
    }

    #[test]
    fn an_hour_never_has_more_batches_than_a_payload_may_announce() {
        let rows = payload::MAX_BATCHES_PER_HOUR as usize * 3 + 1;
        let plan = plan(&vec![1200; rows], 1);
        assert!(plan.len() <= payload::MAX_BATCHES_PER_HOUR as usize);
        assert_eq!(
            lengths(&plan).iter().map(|n| *n as usize).sum::<usize>(),
            rows
        );
    }
}
