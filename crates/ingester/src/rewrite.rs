//! Rewriting an hour whose content changed: before the first row of an hour's generation
//! is written (in this run, by the writer that takes it), the hour's old rows go if InfluxDB holds another generation
//! of it, so rows removed from the input are removed from InfluxDB too and the processor
//! reads back exactly the new content. InfluxDB records the generation it holds in
//! `hour_generations`, written by the processor with the hour's reports; an hour with rows
//! but no record (a run cut short) is cleared as well, since its rows cannot be vouched
//! for. A fresh hour costs two small queries.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::sync::{RwLock, RwLockReadGuard};
use weathervane_core::influx::{InfluxClient, InfluxError};
use weathervane_core::{Generation, HourKey, schema};

/// Which generation of each hour this run has made InfluxDB ready for, and the gate that
/// keeps a deletion from running while rows are being written.
#[derive(Debug, Default)]
pub struct Rewrites {
    prepared: Mutex<HashMap<HourKey, Generation>>,
    /// Writes hold it shared; a deletion holds it alone, so no write of an older
    /// generation still in flight can land after the hour's rows were deleted.
    gate: RwLock<()>,
}

#[derive(Deserialize)]
struct GenerationRecord {
    generation: Generation,
}

#[derive(Deserialize)]
struct CountRecord {
    count: u64,
}

impl Rewrites {
    /// Makes InfluxDB ready for rows of `generation` of `hour` (once per hour and
    /// generation), unless `still_followed` says, once no write is in flight, that a newer
    /// generation has come meanwhile. An error means InfluxDB did not answer, and the
    /// caller retries.
    pub async fn prepare(
        &self,
        influx: &InfluxClient,
        hour: HourKey,
        generation: Generation,
        still_followed: impl Fn() -> bool,
    ) -> Result<(), InfluxError> {
        if self.is_current(hour, generation) {
            return Ok(());
        }
        let _alone = self.gate.write().await;
        if self.is_current(hour, generation) || !still_followed() {
            return Ok(());
        }
        clear_other_generation(influx, hour, generation).await?;
        self.prepared.lock().unwrap().insert(hour, generation);
        Ok(())
    }

    /// Held while rows are written.
    pub async fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Whether rows of `generation` of `hour` may be written now: it is prepared and no
    /// later generation has replaced it.
    pub fn is_current(&self, hour: HourKey, generation: Generation) -> bool {
        self.prepared.lock().unwrap().get(&hour) == Some(&generation)
    }
}

/// Deletes `hour`'s rows unless InfluxDB holds exactly `generation` of it, or nothing.
async fn clear_other_generation(
    influx: &InfluxClient,
    hour: HourKey,
    generation: Generation,
) -> Result<(), InfluxError> {
    let held: Vec<GenerationRecord> = influx
        .query_records(&schema::hour_generation_query(hour))
        .await?;
    if held.first().is_some_and(|r| r.generation == generation) {
        return Ok(());
    }
    let counted: Vec<CountRecord> = influx
        .query_records(&schema::hour_row_count_query(hour))
        .await?;
    let rows = counted.first().map_or(0, |r| r.count);
    if rows > 0 {
        tracing::info!(%hour, %generation, old_rows = rows, held = ?held.first().map(|r| r.generation.to_string()), "The hour's content changed; deleting its old rows before writing the new ones.");
        influx.execute(&schema::delete_hour_rows(hour)).await?;
    }
    Ok(())
}
