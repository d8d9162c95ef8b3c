//! Parsing of `/v2/…` paths and `Range` headers into typed requests. Pure functions: every
//! malformed input becomes a [`RegistryError`] the client can read, never a panic.
//!
//! A request without `?ns=` may name its registry in the path, as Podman and CRI-O do when a
//! `registries.conf` mirror `location` carries a path (`NODE/ghcr.io` makes
//! `/v2/ghcr.io/org/app/…`): a first component that is a host ([`path_registry`]) is the
//! registry and the rest the repository. Docker Hub namespaces never look like hosts, so
//! Docker's own ns-less requests keep meaning the default registry.

use crate::oci::{Digest, ErrorCode, Reference, RegistryError, RegistryHost, RepoName};

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

/// A parsed `/v2/…` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Request {
    /// The registry the path names in its first component, when the caller allowed that.
    pub registry: Option<RegistryHost>,
    /// What is asked for.
    pub route: V2Route,
}

/// Parses the part of the path after `/v2/`. With `registry_in_path` (a request without
/// `?ns=`), a name whose first component is a registry host ([`path_registry`]) names that
/// registry, and the rest of it is the repository.
///
/// # Errors
/// `NAME_INVALID` (also for a registry host with no repository after it), `DIGEST_INVALID` or
/// `NAME_UNKNOWN` (for paths that are no registry route).
pub fn parse_v2(rest: &str, registry_in_path: bool) -> Result<V2Request, RegistryError> {
    let mut registry = None;
    let mut repo = |name: &str| {
        let (host, name) = if registry_in_path {
            split_registry(name)?
        } else {
            (None, name)
        };
        registry = host;
        name.parse::<RepoName>()
            .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))
    };
    let route = parse_route(rest, &mut repo)?;
    Ok(V2Request { registry, route })
}

/// The registry host a path's first component names, or `None` for a repository component.
/// A host has a `.` or a `:`, or is `localhost` (the rule Docker uses to tell a registry from
/// a Docker Hub namespace, which can hold neither). `HOST_PORT` stands for `HOST:PORT`,
/// since an image reference (and so a `registries.conf` mirror location) cannot hold a second
/// colon: `127.0.0.1_5000` is `127.0.0.1:5000`.
///
/// # Errors
/// `NAME_INVALID` for a component that looks like a host but is not a valid one.
pub fn path_registry(component: &str) -> Result<Option<RegistryHost>, RegistryError> {
    let decoded = match component.rsplit_once('_') {
        Some((host, port))
            if !component.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{host}:{port}")
        }
        _ => component.to_owned(),
    };
    let host = decoded
        .rsplit_once(':')
        .map_or(decoded.as_str(), |(h, _)| h);
    if !(decoded.contains('.') || component.contains(':') || host == "localhost") {
        return Ok(None);
    }
    decoded.parse::<RegistryHost>().map(Some).map_err(|e| {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!("{e} in the repository path"),
        )
    })
}

/// Splits a registry host off the front of `name`, when its first component is one.
fn split_registry(name: &str) -> Result<(Option<RegistryHost>, &str), RegistryError> {
    let (first, rest) = name.split_once('/').unwrap_or((name, ""));
    match path_registry(first)? {
        None => Ok((None, name)),
        Some(_) if rest.is_empty() => Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!("registry host {first:?} with no repository after it"),
        )),
        Some(host) => Ok((Some(host), rest)),
    }
}

fn parse_route(
    rest: &str,
    repo: &mut impl FnMut(&str) -> Result<RepoName, RegistryError>,
) -> Result<V2Route, RegistryError> {
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

    fn route(rest: &str) -> V2Route {
        let req = parse_v2(rest, false).unwrap();
        assert_eq!(req.registry, None, "{rest}");
        req.route
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("library/nginx/manifests/latest"),
            V2Route::Manifest { .. }
        ));
        assert!(matches!(
            route(&format!("a/b/c/blobs/{D}")),
            V2Route::Blob { .. }
        ));
        // A repository may itself be called "manifests" or "blobs".
        match route(&format!("x/manifests/manifests/{D}")) {
            V2Route::Manifest { repo, .. } => assert_eq!(repo.as_str(), "x/manifests"),
            other => panic!("{other:?}"),
        }
        assert_eq!(route("x/blobs/uploads/"), V2Route::Upload);
        assert!(matches!(route("x/tags/list"), V2Route::TagsList { .. }));
        // With `?ns=`, a host-like first component is part of the repository name.
        match route("ghcr.io/org/app/manifests/v1") {
            V2Route::Manifest { repo, .. } => assert_eq!(repo.as_str(), "ghcr.io/org/app"),
            other => panic!("{other:?}"),
        }
        let code = |p: &str| parse_v2(p, false).unwrap_err().code;
        assert_eq!(code("UPPER/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("../etc/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("x/blobs/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(code("x/manifests/sha256:12"), ErrorCode::DigestInvalid);
        assert_eq!(code("x/manifests/bad/tag"), ErrorCode::NameInvalid);
        assert_eq!(code("x/manifests/.bad"), ErrorCode::NameInvalid);
        assert_eq!(code("x/whatever"), ErrorCode::NameUnknown);
        assert_eq!(
            code("127.0.0.1:5000/x/manifests/v1"),
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn registry_in_the_path_of_ns_less_requests() {
        let split = |rest: &str| {
            let req = parse_v2(rest, true).unwrap();
            let repo = match req.route {
                V2Route::Manifest { repo, .. }
                | V2Route::Blob { repo, .. }
                | V2Route::TagsList { repo } => repo,
                V2Route::Upload => panic!("{rest}"),
            };
            (req.registry.map(|h| h.to_string()), repo.to_string())
        };
        let some = |h: &str, r: &str| (Some(h.to_owned()), r.to_owned());
        // Docker's requests for Docker Hub: namespaces are never hosts.
        assert_eq!(
            split("library/app/manifests/v1"),
            (None, "library/app".to_owned())
        );
        assert_eq!(split(&format!("org/app/blobs/{D}")).0, None);
        assert_eq!(split("app/manifests/v1"), (None, "app".to_owned()));
        assert_eq!(
            split("ghcr.io/org/app/manifests/v1"),
            some("ghcr.io", "org/app")
        );
        assert_eq!(
            split("docker.io/library/app/manifests/v1"),
            some("docker.io", "library/app")
        );
        assert_eq!(
            split(&format!("127.0.0.1:5000/library/app/blobs/{D}")),
            some("127.0.0.1:5000", "library/app")
        );
        // HOST_PORT, the form a registries.conf mirror location can carry.
        assert_eq!(
            split("127.0.0.1_5000/library/app/manifests/v1"),
            some("127.0.0.1:5000", "library/app")
        );
        assert_eq!(
            split("localhost_5000/app/tags/list"),
            some("localhost:5000", "app")
        );
        assert_eq!(
            split("localhost/app/manifests/v1"),
            some("localhost", "app")
        );
        // Underscores and digits alone do not make a host.
        assert_eq!(
            split("my_app_2/x/manifests/v1"),
            (None, "my_app_2/x".to_owned())
        );

        let code = |p: &str| parse_v2(p, true).unwrap_err().code;
        for bad in [
            "ghcr.io/manifests/v1",
            "127.0.0.1:5000/manifests/v1",
            "localhost_5000/tags/list",
            &format!("quay.io/blobs/{D}"),
            "ghcr.io//app/manifests/v1",
            "bad..host/app/manifests/v1",
            "host:99999/app/manifests/v1",
            "ghcr.io/UPPER/manifests/v1",
        ] {
            assert_eq!(code(bad), ErrorCode::NameInvalid, "{bad}");
        }
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
            let _ = parse_v2(&s, false);
            let _ = parse_v2(&s, true);
        }

        #[test]
        fn ranges_stay_inside_the_body(v in "bytes=[0-9-]{0,12}", size in 0u64..10_000) {
            if let Ok(Some(r)) = parse_range(Some(&v), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}
