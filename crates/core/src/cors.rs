//! Browser origins allowed to call a server (CORS), parsed from flags and environment
//! lists: off (the default, no CORS header at all), `*`, or a checked list of
//! `scheme://host[:port]`. Shared by the api (reads) and the streamer's upload server
//! (tus writes); each builds its own layer from it, with its own methods and headers.

use axum::http::HeaderValue;

/// The origins a browser may call a server from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers (the default).
    #[default]
    Off,
    /// `*`: any origin.
    Any,
    /// These origins, exactly (`https://example.org`, scheme and host, port if not the default).
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// From the origins given (each may be a comma-separated list): none is off, `*`
    /// is any origin, else each must be `scheme://host[:port]`.
    pub fn from_list(values: &[String]) -> Result<Self, String> {
        let items: Vec<&str> = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(CorsOrigins::Off);
        }
        if items.contains(&"*") {
            if items.len() > 1 {
                return Err(format!(
                    "CORS origins {items:?}: \"*\" already allows every origin; give it alone"
                ));
            }
            return Ok(CorsOrigins::Any);
        }
        items
            .iter()
            .map(|item| origin(item))
            .collect::<Result<_, _>>()
            .map(CorsOrigins::List)
    }
}

/// One item of an origins flag, checked when the flags are read (a clap `value_parser`):
/// the item, trimmed, if [`CorsOrigins::from_list`] takes it.
pub fn parse_item(value: &str) -> Result<String, String> {
    CorsOrigins::from_list(&[value.to_owned()]).map(|_| value.trim().to_owned())
}

/// `scheme://host[:port]` with no path, as a browser sends it in `Origin`.
fn origin(item: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "CORS origin {item:?} is not an origin such as https://example.org or http://localhost:3000 (scheme and host, no path), nor *"
        )
    };
    let (scheme, rest) = item.split_once("://").ok_or_else(bad)?;
    let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']');
    if !matches!(scheme, "http" | "https") || rest.is_empty() || !rest.chars().all(host_ok) {
        return Err(bad());
    }
    HeaderValue::from_str(item).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(values: &[&str]) -> Result<CorsOrigins, String> {
        CorsOrigins::from_list(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn origins_are_off_any_or_a_checked_list() {
        assert_eq!(list(&[]).unwrap(), CorsOrigins::Off);
        assert_eq!(list(&[""]).unwrap(), CorsOrigins::Off);
        assert_eq!(list(&["*"]).unwrap(), CorsOrigins::Any);
        assert_eq!(
            list(&[
                "https://a.example, http://localhost:3000",
                "http://[::1]:8080"
            ])
            .unwrap(),
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://localhost:3000"),
                HeaderValue::from_static("http://[::1]:8080"),
            ])
        );
        for bad in [
            "example.org",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
        ] {
            let error = list(&[bad]).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
        assert!(
            list(&["*", "https://a.example"])
                .unwrap_err()
                .contains("alone")
        );
    }
}
