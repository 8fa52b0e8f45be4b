//! Listen addresses as the operator gives them (`host:port`, `[IPv6]:port`, or a bare
//! port on 127.0.0.1): the API's `API_ADDR` and every role's admin address parse alike.

use std::net::SocketAddr;

/// Where a server listens, as given: a host (name or IP) and a port. A name is resolved
/// when binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not host:port, [IPv6]:port or a port (e.g. 127.0.0.1:9000, localhost:9000, 9000)"
            )
        };
        let port = |digits: &str| digits.parse::<u16>().map_err(|_| bad());
        let local = |port| ListenAddr {
            host: "127.0.0.1".into(),
            port,
        };
        if let Some(digits) = text.strip_prefix(':') {
            return Ok(local(port(digits)?));
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(local(port(text)?));
        }
        if let Ok(socket) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr {
                host: socket.ip().to_string(),
                port: socket.port(),
            });
        }
        let (host, digits) = text.rsplit_once(':').ok_or_else(bad)?;
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.');
        if host.is_empty() || !host.chars().all(name_ok) {
            return Err(bad());
        }
        Ok(ListenAddr {
            host: host.to_owned(),
            port: port(digits)?,
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ips_and_bare_ports_parse_and_junk_is_refused_with_the_forms() {
        let addr = |text: &str| text.parse::<ListenAddr>().map(|a| a.to_string());
        assert_eq!(addr("127.0.0.1:9101").unwrap(), "127.0.0.1:9101");
        assert_eq!(addr("0.0.0.0:9102").unwrap(), "0.0.0.0:9102");
        assert_eq!(addr(":9103").unwrap(), "127.0.0.1:9103");
        assert_eq!(addr("[::1]:9104").unwrap(), "[::1]:9104");
        assert!(addr("admin").unwrap_err().contains("host:port"));
    }
}
