//! The upstream registry client: one shared HTTP client (rustls, connection pool, redirects
//! followed with credentials dropped across hosts) that attaches the right credentials to each
//! request and runs the token flow when the upstream asks for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode, header};
use reqwest::Url;
use serde::Deserialize;

use super::auth::{Challenge, Credentials};
use super::name::RepoName;

/// One place requests for a registry can go: the upstream itself or a standby mirror.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Base URL; `/v2/…` is appended to its path.
    pub base: Url,
    /// Credentials configured for this endpoint, used when the client sends none.
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/v2/{path}"));
        url
    }
}

/// A request to an upstream registry.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// GET or HEAD.
    pub method: Method,
    /// The repository, for the token scope.
    pub repo: &'a RepoName,
    /// The path after `/v2/`, e.g. `library/nginx/blobs/sha256:…`.
    pub path: String,
    /// `Accept` values to pass through (manifests).
    pub accept: &'a [HeaderValue],
    /// Resume a body from this offset (`Range: bytes=N-`).
    pub range_from: Option<u64>,
    /// The client's own credentials, which win over configured ones.
    pub client: Option<&'a Credentials>,
}

/// A transport failure: the upstream could not be asked at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {host}: {source}")]
pub struct TransportError {
    /// The upstream host (no path, no query: those may carry secrets).
    pub host: String,
    /// The underlying error.
    #[source]
    pub source: reqwest::Error,
}

/// Tokens are cached per endpoint, scope and credentials (a hash of them, never the secret).
#[derive(Hash, PartialEq, Eq)]
struct TokenKey {
    endpoint: String,
    scope: String,
    credentials: String,
}

/// How long the client waits for a connection and between two reads of a body.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Longest pause between two reads; a stalled upstream fails after this.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
        }
    }
}

/// Installs rustls' ring crypto provider for this process, which every TLS client of shoal
/// (reqwest, kube) needs; several clients may be built in one process (tests), and only the
/// first install counts.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The shared upstream client. Cheap to share behind an `Arc`.
pub struct RegistryClient {
    http: reqwest::Client,
    tokens: Mutex<HashMap<TokenKey, (HeaderValue, Instant)>>,
}

impl RegistryClient {
    /// Builds the client.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeouts: Timeouts) -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(RegistryClient {
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a registry answers at all (`GET /v2/`, any HTTP status) within `timeout`.
    pub async fn answers(&self, base: &reqwest::Url, timeout: Duration) -> bool {
        let Ok(url) = base.join("v2/") else {
            return false;
        };
        self.http.get(url).timeout(timeout).send().await.is_ok()
    }

    /// Sends `req` to `endpoint`, authenticating as the client (or with the endpoint's configured
    /// credentials when the client sent none). A `Bearer` challenge is answered with the token
    /// flow and the request retried once; an upstream 401 that survives that is returned as is,
    /// so its challenge can be passed back to the client.
    ///
    /// # Errors
    /// Only transport failures; every HTTP status comes back as a response.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: &UpstreamRequest<'_>,
    ) -> Result<reqwest::Response, TransportError> {
        let creds = req.client.or(endpoint.credentials.as_ref());
        let scope = format!("repository:{}:pull", req.repo);
        let url = endpoint.url(&req.path);
        let host = url.host_str().unwrap_or("?").to_owned();
        // Without the URL: after a redirect it may be a presigned link that must not be logged.
        let transport = |source: reqwest::Error| TransportError {
            host: host.clone(),
            source: source.without_url(),
        };

        let token_key = TokenKey {
            endpoint: endpoint.base.to_string(),
            scope: scope.clone(),
            credentials: creds.map(Credentials::fingerprint).unwrap_or_default(),
        };
        // A cached token first; else Basic credentials straight away (saves a round trip with
        // Basic registries; a Bearer registry answers 401 and the token flow follows).
        let first_auth = match creds {
            Some(c @ Credentials::Bearer(_)) => Some(c.header()),
            _ => self
                .cached_token(&token_key)
                .or_else(|| creds.map(Credentials::header)),
        };
        let resp = self
            .request(&url, req, first_auth.clone())
            .await
            .map_err(transport)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        let retry_auth = match (challenge, creds) {
            (_, Some(Credentials::Bearer(_))) | (None, _) => return Ok(resp),
            (Some(Challenge::Basic), Some(c @ Credentials::Basic { .. })) => c.header(),
            (Some(Challenge::Basic), None) => return Ok(resp),
            (Some(Challenge::Bearer { realm, service, .. }), c) => match self
                .fetch_token(&realm, service.as_deref(), &scope, c)
                .await
            {
                Some((token, ttl)) => {
                    let mut tokens = self.tokens.lock().unwrap();
                    tokens.retain(|_, (_, expiry)| *expiry > Instant::now());
                    tokens.insert(token_key, (token.clone(), Instant::now() + ttl));
                    token
                }
                None => return Ok(resp),
            },
        };
        if Some(&retry_auth) == first_auth.as_ref() {
            return Ok(resp);
        }
        self.request(&url, req, Some(retry_auth))
            .await
            .map_err(transport)
    }

    async fn request(
        &self,
        url: &Url,
        req: &UpstreamRequest<'_>,
        auth: Option<HeaderValue>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut builder = self.http.request(req.method.clone(), url.clone());
        for accept in req.accept {
            builder = builder.header(header::ACCEPT, accept.clone());
        }
        if let Some(from) = req.range_from.filter(|n| *n > 0) {
            builder = builder.header(header::RANGE, format!("bytes={from}-"));
        }
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder.send().await
    }

    /// A plain request for a file: `url` with the client's `headers` (and `Range: bytes=N-`).
    /// Redirects are followed; `Authorization` and `Cookie` are not carried to another host.
    ///
    /// # Errors
    /// Only transport failures; every HTTP status comes back as a response.
    pub async fn fetch_url(
        &self,
        method: Method,
        url: &Url,
        headers: &http::HeaderMap,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, TransportError> {
        let mut builder = self
            .http
            .request(method, url.clone())
            .headers(headers.clone())
            // The bytes as stored: what the digest and piece hashes are taken over.
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(from) = range_from.filter(|n| *n > 0) {
            builder = builder.header(header::RANGE, format!("bytes={from}-"));
        }
        builder.send().await.map_err(|source| TransportError {
            host: url.host_str().unwrap_or("?").to_owned(),
            source: source.without_url(),
        })
    }

    /// A still-valid token obtained earlier for this endpoint, scope and credentials.
    fn cached_token(&self, key: &TokenKey) -> Option<HeaderValue> {
        let tokens = self.tokens.lock().unwrap();
        tokens
            .get(key)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(token, _)| token.clone())
    }

    /// Runs the token flow: `GET realm?service=…&scope=…`, with Basic credentials if any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Option<(HeaderValue, Duration)> {
        let mut url = Url::parse(realm).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut builder = self.http.get(url);
        if let Some(c @ Credentials::Basic { .. }) = creds {
            builder = builder.header(header::AUTHORIZATION, c.header());
        }
        let resp = builder.send().await.ok()?;
        if !resp.status().is_success() {
            tracing::debug!(status = %resp.status(), "token service refused");
            return None;
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = resp.json_limited().await?;
        let token = body.token.or(body.access_token)?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        // Refresh a little before the token expires; the spec's default lifetime is 60 s.
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(60).max(60).saturating_sub(10));
        Some((value, ttl))
    }
}

/// Reads a small JSON body with a size cap.
trait JsonLimited {
    async fn json_limited<T: serde::de::DeserializeOwned>(self) -> Option<T>;
}

impl JsonLimited for reqwest::Response {
    async fn json_limited<T: serde::de::DeserializeOwned>(mut self) -> Option<T> {
        const LIMIT: usize = 1024 * 1024;
        let mut buf = Vec::new();
        while let Some(chunk) = self.chunk().await.ok()? {
            if buf.len() + chunk.len() > LIMIT {
                return None;
            }
            buf.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&buf).ok()
    }
}
