//! How the answer of one source is judged, and the error a client gets once every source of the
//! chain has failed.

use http::{StatusCode, header};

use crate::metrics::Source;
use crate::oci::{ErrorCode, RegistryError, TransportError};

/// What a source's HTTP answer means for the chain.
pub(crate) enum Verdict {
    /// Use this response.
    Use,
    /// The answer stands for the whole chain (the client may not read this, or the upstream
    /// says it does not exist); do not ask the next source.
    Final(RegistryError),
    /// This source failed; ask the next one.
    Next,
}

/// Judges an upstream status. `missing` is the code for a 404 (`BLOB_UNKNOWN`,
/// `MANIFEST_UNKNOWN`).
pub(crate) fn judge(source: Source, resp: &reqwest::Response, missing: ErrorCode) -> Verdict {
    let status = resp.status();
    match status {
        s if s.is_success() => Verdict::Use,
        StatusCode::UNAUTHORIZED => Verdict::Final(
            RegistryError::new(ErrorCode::Unauthorized, "authentication required")
                .with_challenge(resp.headers().get(header::WWW_AUTHENTICATE).cloned()),
        ),
        StatusCode::FORBIDDEN => Verdict::Final(RegistryError::new(
            ErrorCode::Denied,
            "the upstream registry denied access",
        )),
        // The upstream is the authority on what exists; a standby mirror may just lag behind.
        StatusCode::NOT_FOUND if source == Source::Upstream => Verdict::Final(RegistryError::new(
            missing,
            "not found in the upstream registry",
        )),
        _ => Verdict::Next,
    }
}

/// The failures met along the chain, turned into one error at the end.
#[derive(Default)]
pub(crate) struct Failures {
    reasons: Vec<String>,
    bad_content: bool,
}

impl Failures {
    /// A source could not be reached.
    pub fn unreachable(&mut self, source: Source, e: &TransportError) {
        self.reasons.push(format!("{} {e}", source.label()));
    }

    /// A source answered with an unusable status.
    pub fn status(&mut self, source: Source, host: &str, status: StatusCode) {
        self.reasons
            .push(format!("{} {host} answered {status}", source.label()));
    }

    /// A source sent content that is not what was asked for.
    pub fn bad_content(&mut self, source: Source, host: &str, what: impl std::fmt::Display) {
        self.bad_content = true;
        self.reasons.push(format!(
            "{} {host} sent bad content: {what}",
            source.label()
        ));
    }

    /// The error for the client: 502 when a source sent bad content, else 503.
    pub fn into_error(self) -> RegistryError {
        let status = if self.bad_content {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let message = if self.reasons.is_empty() {
            "no source is configured".to_owned()
        } else {
            format!("no source could serve this: {}", self.reasons.join("; "))
        };
        RegistryError::new(ErrorCode::Unavailable, message).with_status(status)
    }
}

/// The `Content-Length` header as sent. (`reqwest::Response::content_length` reports the body's
/// size hint, which is 0 for every `HEAD` response.)
pub(crate) fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
