//! Names that appear in registry requests: repository names, tags, references (tag or digest)
//! and registry hosts, each validated by the grammar of the OCI distribution spec so that the
//! rest of shoal (and the file system under the store) only ever sees well-formed values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::digest::{Digest, DigestError};

/// Why a name, tag, reference or host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A repository name outside the distribution-spec grammar.
    #[error("invalid repository name {0:?}")]
    Repository(String),
    /// A tag outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}`.
    #[error("invalid tag {0:?}")]
    Tag(String),
    /// A registry host that is not `host[:port]`.
    #[error("invalid registry host {0:?}")]
    Host(String),
    /// A digest reference that does not parse.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A repository name such as `library/nginx`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", then an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 255 || !s.split('/').all(valid_component) {
            return Err(NameError::Repository(short(s)));
        }
        Ok(RepoName(s.to_owned()))
    }
}

/// A tag such as `latest` or `1.25-alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag(short(s)))
        }
    }
}

/// What follows `/manifests/` in a request: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag, resolved against the upstream on every request.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A registry host as containerd names it in `?ns=`: `docker.io`, `ghcr.io`,
/// `registry.example.com:5000`, `127.0.0.1:5000`, `[::1]:5000`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost(String);

impl RegistryHost {
    /// The host as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RegistryHost {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Host(short(s));
        if s.is_empty() || s.len() > 255 {
            return Err(bad());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
            if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return Err(bad());
            }
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(bad)?),
            };
            (None, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (Some(h), Some(p)),
                None => (Some(s), None),
            }
        };
        if let Some(h) = host {
            let labels_ok = h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if !labels_ok {
                return Err(bad());
            }
        }
        if let Some(p) = port
            && (p.is_empty() || p.len() > 5 || p.parse::<u16>().is_err())
        {
            return Err(bad());
        }
        Ok(RegistryHost(s.to_ascii_lowercase()))
    }
}

macro_rules! string_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
string_newtype_impls!(RepoName, Tag, RegistryHost);

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// An image reference as `docker pull` and `ctr images pull` take it: `nginx`,
/// `library/nginx:1.27`, `ghcr.io/org/app@sha256:…`, `registry.local:5000/team/app:v2`.
/// Normalized the way Docker does: no registry means `docker.io`, a one-part name on
/// `docker.io` lives under `library/`, no tag means `latest`; with both a tag and a digest the
/// digest is the reference.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry.
    pub registry: RegistryHost,
    /// The repository.
    pub repo: RepoName,
    /// The tag or digest.
    pub reference: Reference,
}

impl FromStr for ImageRef {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let name_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[name_start..].rsplit_once(':') {
            Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(t.parse::<Tag>()?)),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.parse::<RegistryHost>()?, path.to_owned())
            }
            _ => ("docker.io".parse::<RegistryHost>()?, name.to_owned()),
        };
        let path = if registry.as_str() == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => Reference::Tag(t),
            (None, None) => Reference::Tag("latest".parse()?),
        };
        Ok(ImageRef {
            registry,
            repo: path.parse()?,
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.reference {
            Reference::Tag(_) => ':',
            Reference::Digest(_) => '@',
        };
        write!(f, "{}/{}{sep}{}", self.registry, self.repo, self.reference)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_normalize_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        for (input, want) in [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("team/app:v2", "docker.io/team/app:v2"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("ghcr.io/org/app:1", "ghcr.io/org/app:1"),
            ("localhost/app", "localhost/app:latest"),
            ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
            ("registry.local:5000/app", "registry.local:5000/app:latest"),
        ] {
            assert_eq!(
                input.parse::<ImageRef>().unwrap().to_string(),
                want,
                "{input}"
            );
        }
        let r: ImageRef = format!("ghcr.io/org/app:1@{d}").parse().unwrap();
        assert_eq!(r.reference, Reference::Digest(d.parse().unwrap()));
        assert_eq!(r.to_string(), format!("ghcr.io/org/app@{d}"));
        for bad in [
            "",
            "UPPER/case",
            "app:bad tag",
            "app@sha256:short",
            "host:99999/app",
            "a//b",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn repository_names() {
        for good in [
            "library/nginx",
            "a",
            "a/b/c",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0abc/x9",
        ] {
            assert!(good.parse::<RepoName>().is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "Library/nginx",
            "/nginx",
            "nginx/",
            "a//b",
            "a/../b",
            "..",
            "a___b",
            "a.-b",
            "-a",
            "a_",
            "a b",
            "a%2fb",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn tags_and_references() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.1-2".parse::<Tag>().is_ok());
        assert!(".x".parse::<Tag>().is_err());
        assert!("a".repeat(129).parse::<Tag>().is_err());
        assert!("x/y".parse::<Tag>().is_err());
        assert!(matches!(
            "v1".parse::<Reference>().unwrap(),
            Reference::Tag(_)
        ));
        assert!("sha256:abc".parse::<Reference>().is_err());
    }

    #[test]
    fn registry_hosts() {
        for good in [
            "docker.io",
            "127.0.0.1:5000",
            "Registry.Example.com:443",
            "[::1]:5000",
            "[::1]",
            "localhost",
        ] {
            assert!(good.parse::<RegistryHost>().is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "host:",
            "host:99999",
            "host:abc",
            "-a.com",
            "[::1",
            "[zz]:1",
            "a b",
        ] {
            assert!(bad.parse::<RegistryHost>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "Docker.IO".parse::<RegistryHost>().unwrap().as_str(),
            "docker.io"
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic_and_never_yield_path_escapes(s in "\\PC{0,300}") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert!(!n.as_str().split('/').any(|c| c == ".." || c == "." || c.is_empty()));
            }
            if let Ok(h) = s.parse::<RegistryHost>() {
                prop_assert!(!h.as_str().contains('/') && !h.as_str().contains(".."));
            }
            if let Ok(t) = s.parse::<Tag>() {
                prop_assert!(!t.as_str().contains('/') && !t.as_str().starts_with('.'));
            }
            let _ = s.parse::<Reference>();
        }
    }
}
