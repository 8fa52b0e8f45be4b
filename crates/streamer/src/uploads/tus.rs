//! The tus 1.0 protocol's rules, pure: header parsing (`Upload-Length`, `Upload-Offset`,
//! `Upload-Metadata`, `Upload-Checksum`, `Tus-Resumable`), what a PATCH may append, and
//! each refusal's status code ([`TusError`]). The server (the `uploads` module) only
//! moves bytes and calls these.

use std::collections::BTreeMap;

use base64::Engine as _;
use sha1::Digest as _;

/// The protocol version served (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";
/// The extensions served (`Tus-Extension`).
pub const EXTENSIONS: &str = "creation,termination,checksum";
/// The checksum algorithms taken (`Tus-Checksum-Algorithm`).
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The content type of a PATCH body.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// Why a request is refused, each with its status (tus 1.0 and tusd's choices).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TusError {
    #[error("Tus-Resumable {0:?} is not supported: this server speaks tus 1.0.0")]
    Version(String),
    #[error("header {header} is missing")]
    Missing { header: &'static str },
    #[error("header {header} {value:?} is not valid: {why}")]
    Invalid {
        header: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "Upload-Offset {given} is not the upload's offset {offset}: ask with HEAD and resume from there"
    )]
    OffsetMismatch { given: u64, offset: u64 },
    #[error("Content-Type must be application/offset+octet-stream")]
    ContentType,
    #[error("the chunk goes past Upload-Length {length} (offset {offset}, at least {chunk} bytes)")]
    PastLength {
        length: u64,
        offset: u64,
        chunk: u64,
    },
    #[error(
        "Upload-Length {length} is over the largest upload taken, {max} bytes (--max-upload-bytes)"
    )]
    TooLarge { length: u64, max: u64 },
    #[error(
        "the chunk's {algorithm} checksum does not match: the chunk was not stored, the offset is still {offset}"
    )]
    ChecksumMismatch {
        algorithm: &'static str,
        offset: u64,
    },
}

impl TusError {
    pub fn status(&self) -> u16 {
        match self {
            TusError::Version(_) => 412,
            TusError::Missing { .. } | TusError::Invalid { .. } => 400,
            TusError::OffsetMismatch { .. } => 409,
            TusError::ContentType => 415,
            TusError::PastLength { .. } | TusError::TooLarge { .. } => 413,
            TusError::ChecksumMismatch { .. } => 460,
        }
    }
}

/// `Tus-Resumable` must be given and be 1.0.0 (on every request but OPTIONS).
pub fn check_version(value: Option<&str>) -> Result<(), TusError> {
    match value {
        Some(VERSION) => Ok(()),
        Some(other) => Err(TusError::Version(other.to_owned())),
        // tusd answers a missing version as an unsupported one.
        None => Err(TusError::Version(String::new())),
    }
}

/// A non-negative integer header (`Upload-Length`, `Upload-Offset`): digits only.
pub fn parse_size(header: &'static str, value: Option<&str>) -> Result<u64, TusError> {
    let value = value.ok_or(TusError::Missing { header })?;
    let invalid = |why| TusError::Invalid {
        header,
        value: value.chars().take(40).collect(),
        why,
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("not a non-negative integer"));
    }
    value.parse().map_err(|_| invalid("too large"))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent);
/// keys are unique, ASCII without spaces or commas.
pub fn parse_metadata(value: &str) -> Result<BTreeMap<String, String>, TusError> {
    let invalid = |why| TusError::Invalid {
        header: "Upload-Metadata",
        value: value.chars().take(80).collect(),
        why,
    };
    let mut pairs = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().ok_or_else(|| invalid("empty key"))?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("a key is not printable ASCII"));
        }
        let decoded = match parts.next() {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| invalid("a value is not base64"))?,
            None => Vec::new(),
        };
        if parts.next().is_some() {
            return Err(invalid("a pair has more than a key and a value"));
        }
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("a value is not UTF-8"))?;
        if pairs.insert(key.to_owned(), decoded).is_some() {
            return Err(invalid("a key is given twice"));
        }
    }
    Ok(pairs)
}

/// A checksum algorithm of the checksum extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

pub fn parse_checksum(value: &str) -> Result<Checksum, TusError> {
    let invalid = |why| TusError::Invalid {
        header: "Upload-Checksum",
        value: value.chars().take(80).collect(),
        why,
    };
    let (name, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid("not `<algorithm> <base64 digest>`"))?;
    let algorithm = match name {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        _ => return Err(invalid("unsupported algorithm (sha1, sha256 are)")),
    };
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("the digest is not base64"))?;
    Ok(Checksum { algorithm, digest })
}

/// A running digest of a chunk, for its checksum.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// A PATCH at `given` may append only at the upload's `offset`.
pub fn check_offset(offset: u64, given: u64) -> Result<(), TusError> {
    if given == offset {
        Ok(())
    } else {
        Err(TusError::OffsetMismatch { given, offset })
    }
}

/// After `received` more bytes of a chunk at `offset`, the upload must still fit its
/// `length`.
pub fn check_room(length: u64, offset: u64, received: u64) -> Result<(), TusError> {
    if offset
        .checked_add(received)
        .is_some_and(|end| end <= length)
    {
        Ok(())
    } else {
        Err(TusError::PastLength {
            length,
            offset,
            chunk: received,
        })
    }
}

/// A file name from the client's `filename` metadata safe to put in the inbox: only
/// letters, digits, `.`, `_` and `-` (others become `_`), no leading dot, at most 100
/// characters, ending in `.csv`.
pub fn safe_file_name(given: Option<&str>) -> String {
    let mut name: String = given
        .unwrap_or("upload.csv")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    name = name.trim_start_matches('.').to_owned();
    if name.is_empty() {
        name = "upload".into();
    }
    if !name.to_ascii_lowercase().ends_with(".csv") {
        name.push_str(".csv");
    }
    name
}

/// Compares a presented bearer token with the configured one in time independent of
/// where they differ.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut differ = presented.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        differ |= (presented.get(i).copied().unwrap_or(0) ^ byte) as usize;
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_digits_only_and_a_missing_or_bad_one_is_a_400() {
        assert_eq!(parse_size("Upload-Length", Some("0")), Ok(0));
        assert_eq!(parse_size("Upload-Length", Some("1048576")), Ok(1048576));
        for bad in ["", "-1", "+5", "1.5", " 5", "99999999999999999999999"] {
            let error = parse_size("Upload-Offset", Some(bad)).unwrap_err();
            assert_eq!(error.status(), 400, "{bad:?}");
        }
        let missing = parse_size("Upload-Length", None).unwrap_err();
        assert_eq!(missing.to_string(), "header Upload-Length is missing");
    }

    #[test]
    fn metadata_pairs_decode_and_malformed_ones_are_refused() {
        let pairs = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(pairs["filename"], "world_domination_plan.pdf");
        assert_eq!(pairs["is_confidential"], "");
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a Yg==").is_err(), "a key twice");
        assert!(parse_metadata("a YQ== Yg==").is_err());
    }

    #[test]
    fn checksums_parse_verify_and_a_mismatch_is_460() {
        let sha1 = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(sha1.algorithm, Algorithm::Sha1);
        let mut hasher = Hasher::new(Algorithm::Sha1);
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), sha1.digest, "sha1 of `hello world`");
        let sha256 = parse_checksum("sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=").unwrap();
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(b"hello world");
        assert_eq!(hasher.finish(), sha256.digest);
        assert_eq!(parse_checksum("md5 AAAA").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha1").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha1 ***").unwrap_err().status(), 400);
        let mismatch = TusError::ChecksumMismatch {
            algorithm: "sha1",
            offset: 10,
        };
        assert_eq!(mismatch.status(), 460);
    }

    #[test]
    fn a_patch_appends_only_at_the_offset_and_within_the_length() {
        assert!(check_offset(100, 100).is_ok());
        let error = check_offset(100, 50).unwrap_err();
        assert_eq!(error.status(), 409);
        assert!(error.to_string().contains("HEAD"), "{error}");
        assert!(check_room(100, 50, 50).is_ok());
        assert_eq!(check_room(100, 50, 51).unwrap_err().status(), 413);
        assert!(check_room(u64::MAX, u64::MAX, 1).is_err(), "no overflow");
    }

    #[test]
    fn only_tus_1_0_0_is_spoken() {
        assert!(check_version(Some("1.0.0")).is_ok());
        assert_eq!(check_version(Some("0.2.2")).unwrap_err().status(), 412);
        assert_eq!(check_version(None).unwrap_err().status(), 412);
    }

    #[test]
    fn file_names_from_clients_are_made_safe() {
        assert_eq!(safe_file_name(Some("day 1.csv")), "day_1.csv");
        assert_eq!(safe_file_name(Some("../../etc/passwd")), "passwd.csv");
        assert_eq!(safe_file_name(Some("..csv")), "csv.csv");
        assert_eq!(safe_file_name(Some(".hidden.CSV")), "hidden.CSV");
        assert_eq!(safe_file_name(None), "upload.csv");
        assert_eq!(safe_file_name(Some("a\\b\\c.csv")), "c.csv");
        assert!(safe_file_name(Some(&"x".repeat(500))).len() <= 104);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret-and-more", b"secret"));
        assert!(!token_matches(b"", b"secret"));
    }
}
