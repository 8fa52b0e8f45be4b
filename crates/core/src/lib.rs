//! What every WeatherVane role shares, and nothing role-specific: the row schema and CSV
//! reading ([`row`], its record length cap in [`record_cap`]), hours ([`hour`]) and their content generations ([`generation`]),
//! channel names ([`channel`]), message payloads ([`payload`]), configuration ([`config`]), bounded FIFO buffers with their flush
//! backoff ([`buffer`], [`backoff`]), the Redis and InfluxDB clients ([`bus`],
//! [`influx`]), the report math ([`report`]), the pipeline's milestones as typed events
//! ([`event`]), process plumbing ([`shutdown`], [`supervise`], [`telemetry`]) and what
//! an operator watches: health ([`health`]), metrics ([`metrics`]) and the admin server
//! that serves both ([`admin`], on a [`listen`] address).
//!
//! The roles (streamer, ingester, processor, api) live in crates of their own and depend on
//! this one; this crate depends on none of them.

pub mod admin;
pub mod backoff;
pub mod buffer;
pub mod bus;
pub mod channel;
pub mod config;
pub mod cors;
pub mod event;
pub mod generation;
pub mod health;
pub mod hour;
pub mod influx;
pub mod listen;
pub mod metrics;
pub mod payload;
pub mod progress;
pub mod record_cap;
pub mod report;
pub mod row;
pub mod schema;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod tls;

pub use generation::Generation;
pub use hour::HourKey;
pub use row::WeatherRow;
