//! Registry authentication: `WWW-Authenticate` challenges, credentials, and the bearer-token
//! flow of the distribution token spec.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderValue;
use sha2::{Digest as _, Sha256};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send username and password with every request.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: fetch a token from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to send to it.
        service: Option<String>,
        /// The `scope` the upstream asked for, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses the header value; `None` for schemes shoal does not speak.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// Splits `k="v", k2=v2` (values may be quoted and contain commas).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

/// Credentials to present to an upstream. Never printed: `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A username and password (from the client's Basic header or the node's config).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// A bearer token the client already obtained; forwarded as is.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// Reads a client's `Authorization` header; `None` when absent or not Basic/Bearer.
    pub fn from_header(value: &HeaderValue) -> Option<Credentials> {
        let s = value.to_str().ok()?.trim();
        let (scheme, rest) = s.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credentials::Bearer(rest.to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(B64.decode(rest).ok()?).ok()?;
        let (username, password) = decoded.split_once(':')?;
        Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The `Authorization` header value for these credentials.
    pub fn header(&self) -> HeaderValue {
        let s = match self {
            Credentials::Basic { username, password } => {
                format!("Basic {}", B64.encode(format!("{username}:{password}")))
            }
            Credentials::Bearer(t) => format!("Bearer {t}"),
        };
        let mut v = HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""));
        v.set_sensitive(true);
        v
    }

    /// A stable, non-reversible key for caches (a hash; the secret itself is never kept there).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        match self {
            Credentials::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Credentials::Bearer(t) => {
                h.update(b"bearer\0");
                h.update(t.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn credentials_round_trip_and_hide() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(Credentials::from_header(&c.header()), Some(c.clone()));
        assert!(!format!("{c:?}").contains("p:w"));
        assert_ne!(
            c.fingerprint(),
            Credentials::Bearer("p:w".into()).fingerprint()
        );
        assert_eq!(
            Credentials::from_header(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }
}
