//! Command-line and environment configuration shared by the roles. Every role flattens
//! the groups it needs into its own `Config`; the names are the same everywhere,
//! containers included.

use std::fmt;
use std::str::FromStr;

/// Where Redis is.
#[derive(Clone, Debug, clap::Args)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379 (redis://:password@host:port/db for auth).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
}

/// Where InfluxDB is and how to authenticate.
#[derive(Clone, Debug, clap::Args)]
pub struct InfluxArgs {
    /// InfluxDB base URL (its v1 HTTP API: /ping, /write, /query).
    #[arg(
        id = "influxdb_url",
        long = "influxdb-url",
        env = "INFLUXDB_URL",
        default_value = "http://127.0.0.1:8086"
    )]
    pub url: String,
    /// Database; created if missing.
    #[arg(long = "influxdb-db", env = "INFLUXDB_DB", default_value = "weather")]
    pub db: String,
    /// User name (InfluxDB 1.x authentication).
    #[arg(long = "influxdb-user", env = "INFLUXDB_USER")]
    pub user: Option<String>,
    /// Password (InfluxDB 1.x authentication).
    #[arg(
        long = "influxdb-password",
        env = "INFLUXDB_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,
    /// Token, sent as `Authorization: Token ...` (2.x and 3.x v1-compatibility endpoints).
    #[arg(
        long = "influxdb-token",
        env = "INFLUXDB_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Secret>,
}

/// Caps of a role's in-memory buffers. At a cap the source is pushed back, never dropped.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct BufferArgs {
    /// Most rows a role keeps buffered in memory before it pushes back on its source.
    #[arg(long, env = "WEATHERVANE_BUFFER_ROWS", default_value_t = 200_000)]
    pub buffer_rows: usize,
}

/// A credential: printed as `***` by `Debug` and `Display`, so it never reaches a log.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
