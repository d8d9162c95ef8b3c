//! Manifests: by digest from the store or the chain (verified, then stored); by tag always from
//! the chain, with the last known mapping served only when every source is unreachable.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, header};

use super::failures::{Failures, Verdict, content_length, judge};
use super::{Fetcher, ObjectKind};
use crate::metrics::Source;
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{
    Credentials, Digest, ErrorCode, MediaType, Reference, RegistryError, RegistryHost, RepoName,
    UpstreamRequest,
};
use crate::store::TagRecord;

/// A manifest request as the mirror received it.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    /// The registry.
    pub registry: RegistryHost,
    /// The repository.
    pub repo: RepoName,
    /// Tag or digest.
    pub reference: Reference,
    /// The client's `Accept` headers, passed through.
    pub accept: Vec<HeaderValue>,
    /// The client's credentials.
    pub credentials: Option<Credentials>,
    /// Whether the client only wants the headers.
    pub head: bool,
}

/// A manifest ready to serve.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
    /// Its size in bytes.
    pub size: u64,
    /// The exact bytes; `None` for a `HEAD` answered from the upstream's headers.
    pub body: Option<Bytes>,
    /// Served from the last known tag mapping because no source was reachable.
    pub stale: bool,
    /// Where it came from.
    pub source: Source,
}

impl Fetcher {
    /// A stored manifest by digest (the caller checks authorization).
    pub fn stored_manifest(&self, digest: &Digest) -> Option<Manifest> {
        let (body, media_type) = self.store.manifest(digest)?;
        Some(Manifest {
            digest: digest.clone(),
            media_type,
            size: body.len() as u64,
            body: Some(body),
            stale: false,
            source: Source::Cache,
        })
    }

    /// Fetches a manifest through the source chain, verifies and stores it. For a tag whose
    /// sources are all unreachable, answers from the last known mapping (counted in metrics).
    ///
    /// # Errors
    /// The upstream's authorization or not-found answer, or the chain's failure.
    pub async fn fetch_manifest(&self, req: &ManifestRequest) -> Result<Manifest, RegistryError> {
        let mut failures = Failures::default();
        let method = if req.head && matches!(req.reference, Reference::Tag(_)) {
            Method::HEAD
        } else {
            Method::GET
        };
        let up = UpstreamRequest {
            method: method.clone(),
            repo: &req.repo,
            path: format!("{}/manifests/{}", req.repo, req.reference),
            accept: &req.accept,
            range_from: None,
            client: req.credentials.as_ref(),
        };
        for (source, endpoint) in self.registries.chain(&req.registry) {
            let host = endpoint.base.host_str().unwrap_or("?").to_owned();
            let resp = match self.client.send(&endpoint, &up).await {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.upstream("manifest", "error");
                    failures.unreachable(source, &e);
                    continue;
                }
            };
            self.metrics.upstream("manifest", resp.status().as_str());
            match judge(source, &resp, ErrorCode::ManifestUnknown) {
                Verdict::Use => {}
                Verdict::Final(e) => return Err(e),
                Verdict::Next => {
                    failures.status(source, &host, resp.status());
                    continue;
                }
            }
            let result = if method == Method::HEAD {
                head_answer(&resp)
            } else {
                read_manifest(resp, &req.reference).await
            };
            match result {
                Ok(mut m) => {
                    m.source = source;
                    self.remember(req, &m);
                    return Ok(m);
                }
                // The upstream's HEAD lacked the digest: ask again with a GET.
                Err(None) if method == Method::HEAD => {
                    let get = ManifestRequest {
                        head: false,
                        ..req.clone()
                    };
                    return Box::pin(self.fetch_manifest(&get)).await;
                }
                Err(reason) => {
                    let reason = reason.unwrap_or_else(|| "unusable answer".into());
                    self.metrics
                        .blob_verify_failures
                        .with_label_values(&[source.label()])
                        .inc();
                    tracing::warn!(%host, repo = %req.repo, reference = %req.reference, %reason, "bad manifest from source");
                    failures.bad_content(source, &host, reason);
                }
            }
        }
        if let Reference::Tag(tag) = &req.reference
            && let Some(rec) = self.store.tag(&req.registry, &req.repo, tag)
            && rec
                .media_type
                .accepted_by(req.accept.iter().filter_map(|v| v.to_str().ok()))
            && let Some(mut m) = self.stored_manifest(&rec.digest)
        {
            self.metrics.stale_manifests_served.inc();
            tracing::warn!(repo = %req.repo, %tag, digest = %rec.digest, "every source unreachable; serving the last known tag");
            m.stale = true;
            return Ok(m);
        }
        Err(failures.into_error())
    }

    /// Stores what a source returned and grants the client read access to it.
    fn remember(&self, req: &ManifestRequest, m: &Manifest) {
        if let Some(body) = &m.body
            && let Err(e) = self.store.put_manifest(&m.digest, body, &m.media_type)
        {
            tracing::warn!(error = %e, digest = %m.digest, "could not store manifest");
        }
        if let Reference::Tag(tag) = &req.reference {
            let rec = TagRecord {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
            };
            if let Err(e) = self.store.put_tag(&req.registry, &req.repo, tag, &rec) {
                tracing::warn!(error = %e, "could not record tag");
            }
        }
        self.authorizer.grant(
            &req.registry,
            &req.repo,
            ObjectKind::Manifest,
            &m.digest,
            req.credentials.as_ref(),
        );
    }
}

/// A manifest described by the upstream's `HEAD` headers; `Err(None)` when they lack the digest.
fn head_answer(resp: &reqwest::Response) -> Result<Manifest, Option<String>> {
    let h = resp.headers();
    let digest: Digest = h
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or(None)?;
    let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let media_type = match ct {
        Some(ct) => MediaType::of_manifest(Some(ct), b"").map_err(|e| Some(e.to_string()))?,
        None => return Err(None),
    };
    let size = content_length(resp).ok_or(None)?;
    if size > MAX_MANIFEST_BYTES as u64 {
        return Err(Some(format!("manifest of {size} bytes is over the limit")));
    }
    Ok(Manifest {
        digest,
        media_type,
        size,
        body: None,
        stale: false,
        source: Source::Upstream,
    })
}

/// Reads, bounds and verifies a manifest body.
async fn read_manifest(
    mut resp: reqwest::Response,
    reference: &Reference,
) -> Result<Manifest, Option<String>> {
    let too_big = || Some(format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"));
    if content_length(&resp).is_some_and(|n| n > MAX_MANIFEST_BYTES as u64) {
        return Err(too_big());
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let announced: Option<Digest> = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_MANIFEST_BYTES {
                    return Err(too_big());
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => return Err(Some(format!("body cut short: {}", e.without_url()))),
        }
    }
    let body = buf.freeze();
    let digest = match reference {
        Reference::Digest(d) => {
            if !d.matches(&body) {
                return Err(Some(format!(
                    "content hashes to {}, not {d}",
                    Digest::sha256_of(&body)
                )));
            }
            d.clone()
        }
        Reference::Tag(_) => match &announced {
            Some(a) if !a.matches(&body) => {
                return Err(Some(format!(
                    "content does not match its Docker-Content-Digest {a}"
                )));
            }
            Some(a) => a.clone(),
            None => Digest::sha256_of(&body),
        },
    };
    let media_type =
        MediaType::of_manifest(content_type.as_deref(), &body).map_err(|e| Some(e.to_string()))?;
    Ok(Manifest {
        digest,
        media_type,
        size: body.len() as u64,
        body: Some(body),
        stale: false,
        source: Source::Upstream,
    })
}
