//! The distribution-spec error envelope: `{"errors":[{"code","message","detail"}]}` with the
//! HTTP status each code implies. Every error a registry client receives from shoal is one of
//! these, so `docker`, `ctr` and `skopeo` print something a person can act on.

use http::{HeaderValue, StatusCode};
use serde::Serialize;

/// Error codes of the OCI distribution spec, plus the two that distribution itself uses for
/// server-side trouble (`UNAVAILABLE`, `UNKNOWN`) and one for unsatisfiable ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The blob is not known to the registry.
    BlobUnknown,
    /// The digest in the request does not parse or the content does not match it.
    DigestInvalid,
    /// The manifest is malformed, too large or of an unknown media type.
    ManifestInvalid,
    /// The manifest is not known to the registry.
    ManifestUnknown,
    /// The repository name is invalid.
    NameInvalid,
    /// The repository is not known to the registry.
    NameUnknown,
    /// The content's size does not match what was announced.
    SizeInvalid,
    /// Authentication is required.
    Unauthorized,
    /// Access is denied to the authenticated client.
    Denied,
    /// The operation is not supported (shoal is a pull-only mirror).
    Unsupported,
    /// Too many requests.
    Toomanyrequests,
    /// The requested range cannot be served.
    RangeInvalid,
    /// Every source failed; a retry may succeed.
    Unavailable,
    /// An internal failure of this node.
    Unknown,
}

impl ErrorCode {
    /// The HTTP status distribution uses for this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::DigestInvalid
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Toomanyrequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error as a registry client sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RegistryError {
    /// The spec's code.
    pub code: ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// The HTTP status; usually `code.status()`, but upstream failures answer 502/503.
    pub status: StatusCode,
    /// An upstream challenge to pass back so the client can authenticate.
    pub www_authenticate: Option<HeaderValue>,
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
            status: code.status(),
            www_authenticate: None,
        }
    }

    /// The same error answered with another HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same error carrying an upstream `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: Option<HeaderValue>) -> Self {
        self.www_authenticate = challenge;
        self
    }

    /// The JSON body of the envelope.
    pub fn envelope(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Entry<'a> {
            code: ErrorCode,
            message: &'a str,
        }
        serde_json::json!({ "errors": [Entry { code: self.code, message: &self.message }] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(
            e.envelope().to_string(),
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
        );
        let v = RegistryError::new(ErrorCode::Toomanyrequests, "x").envelope();
        assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    }
}
