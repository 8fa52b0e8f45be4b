//! TLS for the connections WeatherVane makes (`rediss://` and `https://`), with rustls and
//! its ring provider: reading CA, certificate and key files (so a bad file fails at start,
//! naming it), and telling a certificate failure, which no retry can fix, from an outage.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} needs both a certificate and a key file; only the {given} is set")]
    HalfIdentity {
        what: &'static str,
        given: &'static str,
    },
}

/// Installs ring as the process's rustls crypto provider. Every TLS client built after
/// this uses it; calling it again does nothing.
pub fn install_provider() {
    // Err only means a provider is installed already (by an earlier call).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM text of `path` after checking it holds at least one certificate.
pub fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(file_error(
            what,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(pem)
}

/// The PEM text of `path` after checking it holds a private key.
pub fn read_private_key(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    // The parse error is about the file's shape, never its key material.
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(what, path, format!("holds no PEM private key ({e})")))?;
    Ok(pem)
}

/// A client certificate and its key, as PEM.
pub struct Identity {
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    /// The key is a secret: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate_bytes", &self.certificate.len())
            .field("key", &"***")
            .finish()
    }
}

/// The client certificate and key at these paths, or none if neither is given.
pub fn read_identity(
    what: &'static str,
    certificate: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Identity>, TlsError> {
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some(certificate), Some(key)) => Ok(Some(Identity {
            certificate: read_certificates(what, certificate)?,
            key: read_private_key(what, key)?,
        })),
        (Some(_), None) => Err(TlsError::HalfIdentity {
            what,
            given: "certificate",
        }),
        (None, Some(_)) => Err(TlsError::HalfIdentity { what, given: "key" }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(what, path, e.to_string()))
}

fn file_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    }
}

/// Whether `error`, or an error it wraps, is a failed certificate check on either side:
/// a server certificate this client does not trust (unknown CA, wrong name, expired), or
/// a server that refused our certificate or wanted one. Retrying cannot fix these.
///
/// The clients wrap rustls' error in their own and in `io::Error`, and not all of them
/// expose it as a `source`, so both the typed chain and each message are looked at; the
/// messages are rustls' own `Display` texts for these errors.
pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::AlertDescription as Alert;

    const TEXTS: [&str; 4] = [
        "invalid peer certificate",
        "peer sent no certificates",
        "received fatal alert: BadCertificate",
        "received fatal alert: UnknownCA",
    ];
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(rustls) = error.downcast_ref::<rustls::Error>() {
            return matches!(
                rustls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        Alert::BadCertificate
                            | Alert::UnknownCA
                            | Alert::CertificateRequired
                            | Alert::CertificateExpired
                            | Alert::CertificateUnknown
                            | Alert::UnsupportedCertificate
                    )
            );
        }
        let text = error.to_string();
        if TEXTS.iter().any(|t| text.contains(t)) || text.contains("CertificateRequired") {
            return true;
        }
        next = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_told_from_outages_through_wrappers() {
        let unknown_ca = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown_ca);
        assert!(is_certificate_error(&wrapped));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_certificate_error(&refused));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(is_certificate_error(&alert));
        let other = rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify);
        assert!(!is_certificate_error(&other));
    }

    #[test]
    fn bad_files_fail_naming_the_file_and_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let error = read_certificates("REDIS_CA_FILE", &path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("REDIS_CA_FILE") && error.contains("ca.pem") && error.contains("no PEM"),
            "{error}"
        );
        let missing = read_certificates("INFLUXDB_CA_FILE", &dir.path().join("gone.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("gone.pem"), "{missing}");
        let half = read_identity("REDIS_CLIENT_CERT", Some(&path), None)
            .unwrap_err()
            .to_string();
        assert!(half.contains("only the certificate"), "{half}");
    }
}
