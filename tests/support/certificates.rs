//! Certificates for the TLS tests, made fresh by each test with rcgen: a private CA, a
//! server certificate for 127.0.0.1 and localhost signed by it, a client certificate
//! signed by it, and a second CA that signed none of them (the "wrong CA").

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use weathervane_harness::ServerTls;

/// PEM files in a directory the caller owns.
#[derive(Clone, Debug)]
pub struct TestCertificates {
    pub ca: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail the check.
    pub other_ca: PathBuf,
}

impl TestCertificates {
    pub fn generate(dir: &Path) -> Self {
        let ca = certificate_authority("WeatherVane test CA");
        let other = certificate_authority("Some other CA");
        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let certificate = params.signed_by(&key, &ca).unwrap();
            (certificate.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_pem, client_key) = leaf("weathervane", ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_certificate: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_certificate: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.pem()),
        }
    }

    /// The server side, for the harness's servers.
    pub fn server(&self, require_client_certificate: bool) -> ServerTls {
        ServerTls {
            certificate: self.server_certificate.clone(),
            key: self.server_key.clone(),
            ca: self.ca.clone(),
            require_client_certificate,
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}
