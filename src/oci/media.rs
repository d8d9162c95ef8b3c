//! Manifest media types: which ones shoal stores and serves, and how to tell a manifest's type
//! when the upstream's `Content-Type` is missing or generic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 signed manifest (legacy, still served by some registries).
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema 1 manifest (legacy).
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Every manifest media type a mirror serves.
pub const MANIFEST_TYPES: [&str; 6] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_V2,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V1_SIGNED,
    DOCKER_MANIFEST_V1,
];

/// The largest manifest shoal accepts (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A manifest media type that shoal knows how to serve.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaType(String);

/// The media type is not one of the manifest types.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown manifest media type {0:?}")]
pub struct UnknownMediaType(pub String);

impl MediaType {
    /// The media type as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Works out a manifest's type from the upstream's `Content-Type` (parameters dropped) or,
    /// when that is absent or generic JSON, from the `mediaType` field of the body.
    ///
    /// # Errors
    /// When neither names a known manifest type.
    pub fn of_manifest(content_type: Option<&str>, body: &[u8]) -> Result<Self, UnknownMediaType> {
        let declared = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
        if let Some(ct) = declared {
            return ct.parse();
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(body)
            .map_err(|_| UnknownMediaType("(body is not a JSON manifest)".into()))?;
        match (probe.media_type, probe.schema_version) {
            (Some(mt), _) => mt.parse(),
            (None, Some(1)) => Ok(MediaType(DOCKER_MANIFEST_V1_SIGNED.into())),
            // An OCI manifest may omit mediaType; distribution treats it as an OCI manifest.
            (None, Some(2)) => Ok(MediaType(OCI_MANIFEST.into())),
            _ => Err(UnknownMediaType("(no mediaType in body)".into())),
        }
    }

    /// Whether a client that sent these `Accept` headers can take this type. No Accept header,
    /// or a wildcard, accepts everything (as distribution does).
    pub fn accepted_by<'a>(&self, accept: impl IntoIterator<Item = &'a str>) -> bool {
        let mut any = false;
        for value in accept {
            for item in value.split(',') {
                let mt = item.split(';').next().unwrap_or("").trim();
                if mt.is_empty() {
                    continue;
                }
                any = true;
                if mt == "*/*" || mt.eq_ignore_ascii_case(&self.0) {
                    return true;
                }
            }
        }
        !any
    }
}

impl FromStr for MediaType {
    type Err = UnknownMediaType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MANIFEST_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(s))
            .map(|t| MediaType((*t).to_owned()))
            .ok_or_else(|| UnknownMediaType(s.chars().take(100).collect()))
    }
}

impl TryFrom<String> for MediaType {
    type Error = UnknownMediaType;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MediaType> for String {
    fn from(m: MediaType) -> String {
        m.0
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_type_from_header_or_body() {
        let t = MediaType::of_manifest(Some("application/vnd.oci.image.index.v1+json"), b"{}");
        assert_eq!(t.unwrap().as_str(), OCI_INDEX);
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_V2}"}}"#);
        let t = MediaType::of_manifest(Some("application/json"), body.as_bytes());
        assert_eq!(t.unwrap().as_str(), DOCKER_MANIFEST_V2);
        assert_eq!(
            MediaType::of_manifest(None, br#"{"schemaVersion":2}"#)
                .unwrap()
                .as_str(),
            OCI_MANIFEST
        );
        assert!(MediaType::of_manifest(Some("text/html"), b"<html>").is_err());
        assert!(MediaType::of_manifest(None, b"not json").is_err());
        assert!(MediaType::of_manifest(None, br#"{"mediaType":"application/x-evil"}"#).is_err());
    }

    #[test]
    fn accept_negotiation() {
        let m: MediaType = OCI_INDEX.parse().unwrap();
        assert!(m.accepted_by([]));
        assert!(m.accepted_by(["*/*"]));
        assert!(m.accepted_by([
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json;q=0.9"
        ]));
        assert!(!m.accepted_by([DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST]));
    }
}
