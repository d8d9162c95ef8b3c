//! Parsing of `/v2/…` paths and `Range` headers into typed requests. Pure functions: every
//! malformed input becomes a [`RegistryError`] the client can read, never a panic.

use crate::oci::{Digest, ErrorCode, Reference, RegistryError, RepoName};

/// What a `/v2/<rest>` path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Route {
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        /// The repository.
        repo: RepoName,
        /// Tag or digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// The repository.
        repo: RepoName,
        /// The blob.
        digest: Digest,
    },
    /// `/v2/<name>/tags/list`
    TagsList {
        /// The repository.
        repo: RepoName,
    },
    /// `/v2/<name>/blobs/uploads/…` (pushes: not supported by a mirror)
    Upload,
}

/// Parses the part of the path after `/v2/`.
///
/// # Errors
/// `NAME_INVALID`, `DIGEST_INVALID` or `NAME_UNKNOWN` (for paths that are no registry route).
pub fn parse_v2(rest: &str) -> Result<V2Route, RegistryError> {
    let repo = |name: &str| {
        name.parse::<RepoName>()
            .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(V2Route::TagsList { repo: repo(name)? });
    }
    if rest.contains("/blobs/uploads") {
        return Ok(V2Route::Upload);
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let repo = repo(name)?;
        let reference = reference.parse::<Reference>().map_err(|e| {
            let code = if reference.contains(':') {
                ErrorCode::DigestInvalid
            } else {
                ErrorCode::NameInvalid
            };
            RegistryError::new(code, format!("invalid reference: {e}"))
        })?;
        return Ok(V2Route::Manifest { repo, reference });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        let repo = repo(name)?;
        let digest = digest
            .parse::<Digest>()
            .map_err(|e| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))?;
        return Ok(V2Route::Blob { repo, digest });
    }
    Err(RegistryError::new(
        ErrorCode::NameUnknown,
        "not a registry API path",
    ))
}

/// A byte range to serve: `start..end`, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Interprets a `Range` header for a body of `size` bytes. `Ok(None)` means "send it all":
/// no header, another unit, or several ranges (which HTTP lets a server answer in full).
///
/// # Errors
/// `RANGE_INVALID` (416) for a malformed or unsatisfiable range.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<ByteRange>, RegistryError> {
    let Some(value) = value else { return Ok(None) };
    let invalid = || {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("invalid or unsatisfiable range {value:?} for {size} bytes"),
        )
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.trim().split_once('-').ok_or_else(invalid)?;
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    let range = if first.is_empty() {
        // Suffix: the last N bytes.
        let n = num(last).ok_or_else(invalid)?;
        if n == 0 || size == 0 {
            return Err(invalid());
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size,
        }
    } else {
        let start = num(first).ok_or_else(invalid)?;
        let end = if last.is_empty() {
            size
        } else {
            let last = num(last).ok_or_else(invalid)?;
            if last < start {
                return Err(invalid());
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(invalid());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes() {
        assert!(matches!(
            parse_v2("library/nginx/manifests/latest").unwrap(),
            V2Route::Manifest { .. }
        ));
        assert!(matches!(
            parse_v2(&format!("a/b/c/blobs/{D}")).unwrap(),
            V2Route::Blob { .. }
        ));
        // A repository may itself be called "manifests" or "blobs".
        match parse_v2(&format!("x/manifests/manifests/{D}")).unwrap() {
            V2Route::Manifest { repo, .. } => assert_eq!(repo.as_str(), "x/manifests"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_v2("x/blobs/uploads/").unwrap(), V2Route::Upload);
        assert!(matches!(
            parse_v2("x/tags/list").unwrap(),
            V2Route::TagsList { .. }
        ));
        let code = |p: &str| parse_v2(p).unwrap_err().code;
        assert_eq!(code("UPPER/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("../etc/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("x/blobs/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(code("x/manifests/sha256:12"), ErrorCode::DigestInvalid);
        assert_eq!(code("x/manifests/bad/tag"), ErrorCode::NameInvalid);
        assert_eq!(code("x/manifests/.bad"), ErrorCode::NameInvalid);
        assert_eq!(code("x/whatever"), ErrorCode::NameUnknown);
    }

    #[test]
    fn ranges() {
        let r = |v: &str, size| parse_range(Some(v), size);
        assert_eq!(
            r("bytes=0-9", 100).unwrap(),
            Some(ByteRange { start: 0, end: 10 })
        );
        assert_eq!(
            r("bytes=90-", 100).unwrap(),
            Some(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            r("bytes=-10", 100).unwrap(),
            Some(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            r("bytes=-1000", 100).unwrap(),
            Some(ByteRange { start: 0, end: 100 })
        );
        assert_eq!(
            r("bytes=50-1000", 100).unwrap(),
            Some(ByteRange {
                start: 50,
                end: 100
            })
        );
        assert_eq!(r("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(r("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range(None, 100).unwrap(), None);
        for bad in [
            "bytes=",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=100-",
            "bytes=-0",
            "bytes=--1",
            "bytes=1",
        ] {
            let e = r(bad, 100).unwrap_err();
            assert_eq!(e.code, ErrorCode::RangeInvalid, "{bad}");
            assert_eq!(e.status, http::StatusCode::RANGE_NOT_SATISFIABLE);
        }
    }

    proptest! {
        #[test]
        fn path_parser_never_panics(s in "\\PC{0,300}") {
            let _ = parse_v2(&s);
        }

        #[test]
        fn ranges_stay_inside_the_body(v in "bytes=[0-9-]{0,12}", size in 0u64..10_000) {
            if let Ok(Some(r)) = parse_range(Some(&v), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}
