//! The lab: the tools that check and measure the pipeline from outside, on private
//! servers. `verify` (does InfluxDB hold exactly the input and the right reports?),
//! `replay` (an outage scenario run for real) and `bench` (throughput, recovery, API,
//! memory, scale). Each `run` returns a typed outcome (`Verdict`, `ReplayVerdict`,
//! `BenchReport`) that renders today's text; printing and exit codes are the binary's.

pub mod bench;
mod expected;
pub mod replay;
pub mod verify;
