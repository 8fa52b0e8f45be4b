//! Command-line and environment configuration shared by the roles. Every role flattens
//! the groups it needs into its own `Config`; the names are the same everywhere,
//! containers included.
//!
//! Secrets (passwords, tokens) are never flags, which every local user can read in `ps`:
//! each comes from its environment variable or from the file its `*_FILE` flag or
//! variable names (the Docker secrets convention). They are held as [`Secret`], which
//! never prints, and URLs are shown only through [`redact_url`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::channel::{Deployment, DeploymentId, Namespace};
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} and {file_variable} are both set; set one")]
    SecretTwice {
        variable: &'static str,
        file_variable: &'static str,
    },
    #[error("{file_variable} {}: {source}", path.display())]
    SecretFile {
        file_variable: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file_variable} {} is empty", path.display())]
    EmptySecretFile {
        file_variable: &'static str,
        path: PathBuf,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Where Redis is and how to log in.
#[derive(Clone, Debug, clap::Args)]
pub struct RedisArgs {
    /// Redis URL: redis://host:port/db, or rediss://host:port/db for TLS. Put the password
    /// in REDIS_PASSWORD or REDIS_PASSWORD_FILE rather than in the URL.
    #[arg(
        id = "redis_url",
        value_name = "URL",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub url: String,
    /// Redis 6+ ACL user name (the password comes from REDIS_PASSWORD or
    /// REDIS_PASSWORD_FILE).
    #[arg(
        id = "redis_user",
        value_name = "USER",
        long = "redis-user",
        env = "REDIS_USER"
    )]
    pub user: Option<String>,
    /// File holding the Redis password (else the REDIS_PASSWORD variable, if set).
    #[arg(
        id = "redis_password_file",
        value_name = "FILE",
        long = "redis-password-file",
        env = "REDIS_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) to trust for rediss:// (default: the system's).
    #[arg(
        id = "redis_ca_file",
        value_name = "FILE",
        long = "redis-ca-file",
        env = "REDIS_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for rediss:// servers that ask for one (with
    /// --redis-client-key).
    #[arg(
        id = "redis_client_cert",
        value_name = "FILE",
        long = "redis-client-cert",
        env = "REDIS_CLIENT_CERT"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --redis-client-cert.
    #[arg(
        id = "redis_client_key",
        value_name = "FILE",
        long = "redis-client-key",
        env = "REDIS_CLIENT_KEY"
    )]
    pub client_key: Option<PathBuf>,
    /// Prefix of every channel name (`<namespace>:data:...`): deployments sharing one
    /// Redis each use their own.
    #[arg(
        id = "channel_namespace",
        value_name = "NAMESPACE",
        long = "channel-namespace",
        env = "WEATHERVANE_NAMESPACE",
        default_value = Namespace::DEFAULT
    )]
    pub namespace: Namespace,
    /// This deployment's id, carried in every message; a message with another is refused
    /// (and counted), even where namespaces or ACLs were set up wrong.
    #[arg(
        id = "deployment",
        value_name = "ID",
        long = "deployment",
        env = "WEATHERVANE_DEPLOYMENT",
        default_value = DeploymentId::DEFAULT
    )]
    pub deployment: DeploymentId,
}

impl RedisArgs {
    /// Plain `redis://` at `url`, no login, no TLS options: for tests and tools that start
    /// their own server.
    pub fn plain(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            namespace: Namespace::default(),
            deployment: DeploymentId::default(),
        }
    }

    /// The namespace and id this deployment's messages have.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            namespace: self.namespace.clone(),
            id: self.deployment.clone(),
        }
    }

    /// The password, from REDIS_PASSWORD or the password file.
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        secret(
            "REDIS_PASSWORD",
            "REDIS_PASSWORD_FILE",
            self.password_file.as_deref(),
        )
    }
}

/// Where InfluxDB is and how to authenticate.
#[derive(Clone, Debug, clap::Args)]
pub struct InfluxArgs {
    /// InfluxDB base URL (its v1 HTTP API: /ping, /write, /query).
    #[arg(
        id = "influxdb_url",
        value_name = "URL",
        long = "influxdb-url",
        env = "INFLUXDB_URL",
        default_value = "http://127.0.0.1:8086",
        hide_env_values = true
    )]
    pub url: String,
    /// Database (the ingester and processor create it if missing).
    #[arg(long = "influxdb-db", env = "INFLUXDB_DB", default_value = "weather")]
    pub db: String,
    /// User name (InfluxDB 1.x authentication, sent as HTTP Basic auth; the password
    /// comes from INFLUXDB_PASSWORD or INFLUXDB_PASSWORD_FILE).
    #[arg(
        id = "influxdb_user",
        value_name = "USER",
        long = "influxdb-user",
        env = "INFLUXDB_USER"
    )]
    pub user: Option<String>,
    /// File holding the InfluxDB password (else the INFLUXDB_PASSWORD variable, if set).
    #[arg(
        id = "influxdb_password_file",
        value_name = "FILE",
        long = "influxdb-password-file",
        env = "INFLUXDB_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// File holding a token, sent as `Authorization: Token ...` (for a 1.x-compatible server
    /// or proxy that takes one; else the INFLUXDB_TOKEN variable, if set).
    #[arg(
        id = "influxdb_token_file",
        value_name = "FILE",
        long = "influxdb-token-file",
        env = "INFLUXDB_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) to trust for https:// (default: the system's).
    #[arg(
        id = "influxdb_ca_file",
        value_name = "FILE",
        long = "influxdb-ca-file",
        env = "INFLUXDB_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,
}

impl InfluxArgs {
    /// `url` and database `db`, no login, no TLS options: for tests and tools that start
    /// their own server.
    pub fn plain(url: impl Into<String>, db: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            db: db.into(),
            user: None,
            password_file: None,
            token_file: None,
            ca_file: None,
        }
    }

    /// The password, from INFLUXDB_PASSWORD or the password file.
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        secret(
            "INFLUXDB_PASSWORD",
            "INFLUXDB_PASSWORD_FILE",
            self.password_file.as_deref(),
        )
    }

    /// The token, from INFLUXDB_TOKEN or the token file.
    pub fn token(&self) -> Result<Option<Secret>, ConfigError> {
        secret(
            "INFLUXDB_TOKEN",
            "INFLUXDB_TOKEN_FILE",
            self.token_file.as_deref(),
        )
    }
}

/// A secret from the environment variable `variable`, or from the file `file` (named by
/// `file_variable` or its flag), trailing newline removed; setting both is an error.
pub fn secret(
    variable: &'static str,
    file_variable: &'static str,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let from_env = std::env::var(variable).ok().filter(|v| !v.is_empty());
    match (from_env, file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice {
            variable,
            file_variable,
        }),
        (Some(value), None) => Ok(Some(Secret(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                file_variable,
                path: path.to_owned(),
                source,
            })?;
            let value = text.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(ConfigError::EmptySecretFile {
                    file_variable,
                    path: path.to_owned(),
                });
            }
            Ok(Some(Secret(value.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// `url` with any user name and password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Caps of a role's in-memory buffers. At a cap the source is pushed back, never dropped.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct BufferArgs {
    /// Most rows a role keeps buffered in memory before it pushes back on its source.
    #[arg(long, env = "WEATHERVANE_BUFFER_ROWS", default_value_t = 200_000)]
    pub buffer_rows: usize,
}

impl BufferArgs {
    /// `--buffer-rows`, raised to `floor` (said in the log, naming `why`) where a smaller
    /// buffer could not hold what must fit at once.
    pub fn rows_at_least(&self, floor: usize, why: &str) -> usize {
        if self.buffer_rows < floor {
            tracing::warn!(
                buffer_rows = self.buffer_rows,
                using = floor,
                "--buffer-rows is below {why}; using {floor}."
            );
        }
        self.buffer_rows.max(floor)
    }
}

/// A credential: printed as `***` by `Debug` and `Display`, so it never reaches a log.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
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
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("https://user:p%40ss@influx.example/?db=x"),
            "https://***@influx.example/?db=x"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("http://host/path@x"), "http://host/path@x");
        assert_eq!(redact_url("localhost:8086"), "localhost:8086");
    }

    #[test]
    fn a_secret_comes_from_its_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        // A variable name no test sets, so the file is the only source.
        let read = secret("WEATHERVANE_TEST_UNSET", "X_FILE", Some(&path)).unwrap();
        assert_eq!(read.unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let empty = secret("WEATHERVANE_TEST_UNSET", "X_FILE", Some(&path));
        assert!(matches!(empty, Err(ConfigError::EmptySecretFile { .. })));
        let missing = secret(
            "WEATHERVANE_TEST_UNSET",
            "X_FILE",
            Some(&dir.path().join("no")),
        );
        let message = missing.unwrap_err().to_string();
        assert!(
            message.starts_with("X_FILE ") && message.contains("/no"),
            "{message}"
        );
        assert!(
            secret("WEATHERVANE_TEST_UNSET", "X_FILE", None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn secrets_never_print() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }
}
