//! Files: any HTTP(S) URL fetched through the node and shared through the swarm like a blob.
//!
//! A file is stored as the blob of its content's digest, so pieces, peers, seeds, limits and
//! the disk quota work as for layers.
//!
//! - **With a digest** (`digest=sha256:…`), the digest is the file's identity: held content is
//!   served at once, anything fetched is verified against it before it is complete, and
//!   peers of the zone take part exactly as for a registry blob (the zone's fetcher gets the
//!   URL in its fetch hint, unless the client's request carries headers for the origin, which
//!   never leave the node).
//! - **Without one**, every request asks the origin first (`HEAD`, with the client's headers):
//!   its answer is both the permission and the freshness check. The identity is the URL
//!   (normalized, without the query parameters configured as not changing the content, such as
//!   presigned URLs' signatures) plus the origin's validators (`ETag`, `Last-Modified`,
//!   length). A known identity is served from the store; a new one is fetched once (per node)
//!   and recorded. Without any validator the content cannot be recognized again, so it is
//!   fetched every time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use reqwest::Url;
use sha2::{Digest as _, Sha256};

use crate::fetch::failures::{Failures, Verdict, judge};
use crate::fetch::gate::{Gate, Gates};
use crate::fetch::{BlobRequest, Fetcher, FileOrigin};
use crate::metrics::Source;
use crate::oci::{Digest, ErrorCode, RegistryError};
use crate::p2p::FileAnswer;
use crate::store::FileRecord;

/// Query parameters left out of a file's identity by default: the signature parts of S3 and
/// Google Cloud Storage presigned URLs, which change with every signing but not the content.
pub const DEFAULT_IGNORED_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-Signature",
    "X-Goog-SignedHeaders",
];

/// How files are identified and where else they come from.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    /// Query parameters that do not change the content (compared case-insensitively).
    pub ignored_params: Vec<String>,
    /// Standby origins: a URL starting with the prefix is also tried with the prefix replaced.
    pub fallbacks: Vec<(String, String)>,
}

/// Request headers that are the node's business, not the origin's.
const NOT_FORWARDED: &[HeaderName] = &[
    header::HOST,
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::ACCEPT_ENCODING,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
];

/// The headers of a client's request that go to the origin (authorization, cookies, …).
pub fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let hop = NOT_FORWARDED.contains(name)
            || name.as_str().starts_with("proxy-")
            || name.as_str() == "keep-alive";
        if !hop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Checks a file URL: `http` or `https`, with a host, no credentials in it.
///
/// # Errors
/// `UNSUPPORTED` with the reason.
pub fn parse_url(raw: &str) -> Result<Url, RegistryError> {
    let bad = |m: String| RegistryError::new(ErrorCode::Unsupported, m);
    let url = Url::parse(raw).map_err(|e| bad(format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "unsupported scheme {:?}: only http and https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials in the URL are not accepted: send an Authorization header".into(),
        ));
    }
    Ok(url)
}

/// The URL as an identity: scheme, host, port, path, and the query parameters that matter,
/// sorted; no fragment.
pub fn normalized(url: &Url, ignored: &[String]) -> String {
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !ignored.iter().any(|i| i.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params.sort();
    let mut out = format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0),
        url.path()
    );
    if !params.is_empty() {
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push('?');
        out.push_str(&q.join("&"));
    }
    out
}

/// What an origin said of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// `Content-Length`.
    pub length: Option<u64>,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

impl Validators {
    fn of(resp: &reqwest::Response) -> Validators {
        let text = |h: header::HeaderName| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Validators {
            etag: text(header::ETAG),
            last_modified: text(header::LAST_MODIFIED),
            length: crate::fetch::failures::content_length(resp),
            content_type: text(header::CONTENT_TYPE),
        }
    }

    /// The identity of this content at `url`: `None` when the origin gave no validator, so
    /// that a change could not be told.
    pub fn identity(&self, url: &Url, ignored: &[String]) -> Option<String> {
        if self.etag.is_none() && self.last_modified.is_none() {
            return None;
        }
        let mut h = Sha256::new();
        for part in [
            normalized(url, ignored).as_str(),
            self.etag.as_deref().unwrap_or(""),
            self.last_modified.as_deref().unwrap_or(""),
            &self.length.map(|n| n.to_string()).unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        Some(hex::encode(h.finalize()))
    }
}

/// A file resolved to the blob that holds it.
pub struct Resolved {
    /// The blob request (digest and origin).
    pub blob: BlobRequest,
    /// The origin's `Content-Type`.
    pub content_type: Option<String>,
    /// The size, when the origin or the store told it.
    pub size: Option<u64>,
}

/// The node's file service.
pub struct Files {
    fetcher: Arc<Fetcher>,
    settings: FileSettings,
    /// One fetch per identity at a time on this node.
    flights: Gates<String>,
    /// Digests whose origin sent other content lately, so that a client retrying (to resume a
    /// transfer that was cut when the check failed) hears why at once.
    mismatched: Mutex<HashMap<Digest, std::time::Instant>>,
    /// Identities this node is fetching because a peer asked.
    for_peers: Mutex<std::collections::HashSet<String>>,
    /// Identities it failed to fetch for peers lately.
    failed_for_peers: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a digest mismatch is answered from memory.
const MISMATCH_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Headers that do not make a request private (they carry no credentials).
const PUBLIC_HEADERS: &[HeaderName] =
    &[header::ACCEPT, header::USER_AGENT, header::ACCEPT_LANGUAGE];

/// Whether forwarded headers may carry credentials (then the request is fetched by this node
/// only: they never go to peers).
pub fn private(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| !PUBLIC_HEADERS.contains(k))
}

impl Files {
    /// The service for this node.
    pub fn new(fetcher: Arc<Fetcher>, settings: FileSettings) -> Arc<Files> {
        let files = Arc::new(Files {
            fetcher,
            settings,
            flights: Mutex::default(),
            mismatched: Mutex::default(),
            for_peers: Mutex::default(),
            failed_for_peers: Mutex::default(),
        });
        files.fetcher.attach_files(Arc::downgrade(&files));
        files
    }

    /// A peer's question: what is the file of identity `id`? Unknown, and with its URL, it is
    /// fetched here (for the zone: this node is its fetcher) and answered pending meanwhile.
    pub fn lookup(self: &Arc<Self>, id: &str, url: Option<String>) -> Option<FileAnswer> {
        if let Some(r) = self.fetcher.store().file_record(id)
            && self.fetcher.store().blob_size(&r.digest) == Some(r.size)
        {
            return Some(FileAnswer {
                digest: r.digest.to_string(),
                size: r.size,
                content_type: r.content_type.unwrap_or_default(),
                pending: false,
            });
        }
        let url = parse_url(&url?).ok()?;
        // Failed lately: the asker fetches it itself rather than wait on a retry loop.
        if self
            .failed_for_peers
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|at| at.elapsed() < MISMATCH_MEMORY)
        {
            return None;
        }
        let fresh = self.for_peers.lock().unwrap().insert(id.to_owned());
        if fresh {
            let this = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                // Asked as the zone's fetcher: never passed on (two nodes that disagree on the
                // fetcher must not wait on each other).
                let result = this.resolve_with(&url, None, HeaderMap::new(), false).await;
                if let Err(e) = &result {
                    tracing::warn!(host = url.host_str().unwrap_or("?"), error = %e.message, "file fetch for peers failed");
                    let mut failed = this.failed_for_peers.lock().unwrap();
                    failed.retain(|_, at| at.elapsed() < MISMATCH_MEMORY);
                    failed.insert(id.clone(), std::time::Instant::now());
                } else if this.fetcher.store().file_record(&id).is_none() {
                    // Its own identity of the file differs (another origin replica, other
                    // settings): the asker must not wait for a record that will not come.
                    let mut failed = this.failed_for_peers.lock().unwrap();
                    failed.insert(id.clone(), std::time::Instant::now());
                }
                // Answers come from the record from now on (or, failed, the next ask retries).
                this.for_peers.lock().unwrap().remove(&id);
            });
        }
        Some(FileAnswer {
            pending: true,
            ..Default::default()
        })
    }

    /// Asks the zone's fetcher for identity `id` what the file is, waiting while it fetches
    /// it; then takes the content from peers by its digest. `None` when this node should fetch
    /// it itself (it is the fetcher, the fetcher failed, or there is no swarm).
    async fn ask_zone(&self, id: &str, url: &Url, origin: &FileOrigin) -> Option<FileRecord> {
        let p2p = self.fetcher.p2p()?;
        let key = format!("sha256:{id}").parse::<Digest>().ok()?;
        let known = p2p.known_peers().await;
        let fetcher = crate::fetch::swarm::choose_fetcher(p2p, &known, &key, &Default::default());
        if fetcher == p2p.peer_id() {
            return None;
        }
        // Long enough for a large file to arrive at the fetcher; then this node fetches it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
        let answer = loop {
            match p2p.file_lookup(fetcher, id, url.as_str()).await {
                Ok(a) if a.pending && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await
                }
                Ok(a) if a.pending => return None,
                Ok(a) => break a,
                Err(e) => {
                    tracing::info!(%fetcher, error = %e, "the zone's fetcher of a file failed; fetching it here");
                    return None;
                }
            }
        };
        let digest: Digest = answer.digest.parse().ok()?;
        // Registry content is not handed out as a file on a peer's word.
        if self.fetcher.store().blob_size(&digest).is_some()
            && !self.fetcher.store().is_file(&digest)
        {
            return None;
        }
        self.fetcher.store().mark_file(&digest).ok()?;
        let req = Self::blob_request(digest.clone(), origin.clone());
        match self.fetcher.blob(&req).ok()? {
            crate::fetch::Blob::Stored { .. } => {}
            crate::fetch::Blob::Downloading { download, .. } => download.finished().await.ok()?,
        }
        let size = self.fetcher.store().blob_size(&digest)?;
        (size == answer.size).then(|| FileRecord {
            digest,
            size,
            content_type: (!answer.content_type.is_empty()).then_some(answer.content_type),
        })
    }

    /// Takes `digest` as file content: refused when the node holds (or is fetching) it as a
    /// registry blob only, which clients must read through the registry API, where the
    /// upstream authorizes them.
    fn claim(&self, digest: &Digest) -> Result<(), RegistryError> {
        let store = self.fetcher.store();
        let registry_only = !store.is_file(digest)
            && (store.blob_size(digest).is_some() || self.fetcher.peek_blob(digest).is_some());
        if registry_only {
            return Err(RegistryError::new(
                ErrorCode::Denied,
                format!("{digest} is held as registry content: read it through the registry API"),
            ));
        }
        store.mark_file(digest).map_err(store_error)
    }

    /// `DIGEST_INVALID` if the origin sent other content for `digest` lately.
    pub fn mismatch(&self, digest: &Digest) -> Option<RegistryError> {
        if self.fetcher.store().blob_size(digest).is_some() {
            return None;
        }
        let mut m = self.mismatched.lock().unwrap();
        m.retain(|_, at| at.elapsed() < MISMATCH_MEMORY);
        m.contains_key(digest).then(|| {
            RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("the origin's content does not match {digest}"),
            )
            .with_status(StatusCode::BAD_GATEWAY)
        })
    }

    /// Watches a file download: if the origin's content fails the digest, remember it.
    pub fn watch(self: &Arc<Self>, download: Arc<crate::fetch::Download>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            // Only content that hashed to something else (not a cut or failed transfer).
            if let Err(e) = download.finished().await
                && e.status == StatusCode::BAD_GATEWAY
                && e.message.contains("content hashes to")
                && let Some(this) = this.upgrade()
            {
                this.mismatched
                    .lock()
                    .unwrap()
                    .insert(download.digest.clone(), std::time::Instant::now());
            }
        });
    }

    /// The URL and its standby origins, with the client's headers.
    pub fn origin(&self, url: &Url, headers: HeaderMap) -> FileOrigin {
        let mut urls = vec![(Source::Upstream, url.clone())];
        for (prefix, replacement) in &self.settings.fallbacks {
            if let Some(rest) = url.as_str().strip_prefix(prefix.as_str())
                && let Ok(u) = Url::parse(&format!("{replacement}{rest}"))
            {
                urls.push((Source::Fallback, u));
            }
        }
        FileOrigin { urls, headers }
    }

    fn blob_request(digest: Digest, origin: FileOrigin) -> BlobRequest {
        BlobRequest {
            registry: "files.invalid".parse().expect("valid host"),
            repo: "files".parse().expect("valid name"),
            digest,
            credentials: None,
            file: Some(Arc::new(origin)),
            meter: None,
        }
    }

    /// Asks the origin chain about the file (`HEAD`).
    async fn head(&self, req: &BlobRequest) -> Result<Validators, RegistryError> {
        self.fetcher
            .head_chain(req, "file_head", |resp| Ok(Validators::of(resp)))
            .await
    }

    /// Finds (or fetches) the blob that holds the file at `url`.
    ///
    /// # Errors
    /// The origin's refusal (401, 403, 404 pass through), an unreachable origin (unless the
    /// file's digest is given and held), a body shorter than announced, or a full disk.
    pub async fn resolve(
        &self,
        url: &Url,
        digest: Option<Digest>,
        headers: HeaderMap,
    ) -> Result<Resolved, RegistryError> {
        self.resolve_with(url, digest, headers, true).await
    }

    async fn resolve_with(
        &self,
        url: &Url,
        digest: Option<Digest>,
        headers: HeaderMap,
        ask_peers: bool,
    ) -> Result<Resolved, RegistryError> {
        let origin = self.origin(url, headers);
        if let Some(digest) = digest {
            let req = Self::blob_request(digest, origin);
            let head = self.head(&req).await;
            return match head {
                Ok(v) => {
                    self.claim(&req.digest)?;
                    Ok(Resolved {
                        blob: req,
                        content_type: v.content_type,
                        size: v.length,
                    })
                }
                // A file held under that digest: the origin is not needed to serve it.
                Err(e)
                    if e.status.is_server_error() && self.fetcher.store().is_file(&req.digest) =>
                {
                    if let Some(size) = self.fetcher.store().blob_size(&req.digest) {
                        Ok(Resolved {
                            blob: req,
                            content_type: None,
                            size: Some(size),
                        })
                    } else {
                        Err(e)
                    }
                }
                Err(e) => Err(e),
            };
        }
        let placeholder = Self::blob_request(Digest::sha256_of(b""), origin);
        let v = self.head(&placeholder).await?;
        let id = v.identity(url, &self.settings.ignored_params);
        let origin = placeholder.file.clone().expect("a file request");
        let known = |id: &str| {
            self.fetcher
                .store()
                .file_record(id)
                .filter(|r| self.fetcher.store().blob_size(&r.digest) == Some(r.size))
        };
        if let Some(record) = id.as_deref().and_then(known) {
            return Ok(Resolved {
                blob: Self::blob_request(record.digest, (*origin).clone()),
                content_type: record.content_type.or(v.content_type),
                size: Some(record.size),
            });
        }
        let flight = id.clone().unwrap_or_else(|| normalized(url, &[]));
        let gate = Gate::enter(&self.flights, flight);
        let result = async {
            let _turn = gate.turn().await;
            // Fetched by the request before this one?
            if let Some(record) = id.as_deref().and_then(known) {
                return Ok(record);
            }
            // The zone fetches a file once: ask its fetcher first (unless the request carries
            // credentials, which stay here).
            let shared = match &id {
                Some(id) if ask_peers && !private(&origin.headers) => {
                    self.ask_zone(id, url, &origin).await
                }
                _ => None,
            };
            let record = match shared {
                Some(r) => r,
                None => self.fetch_unnamed(&placeholder, &v).await?,
            };
            if let Some(id) = &id
                && let Err(e) = self.fetcher.store().put_file_record(id, &record)
            {
                tracing::warn!(error = %e, "cannot record a file's identity");
            }
            Ok(record)
        }
        .await;
        drop(gate);
        let record = result?;
        Ok(Resolved {
            blob: Self::blob_request(record.digest, (*origin).clone()),
            content_type: record.content_type,
            size: Some(record.size),
        })
    }

    /// Fetches a file of known digest into the store (a preheat order, a manager's task) and
    /// records it under the URL's identity too, so that later requests without the digest find
    /// it. A download it starts goes on `meter` (see [`BlobRequest::meter`]). Returns its size.
    ///
    /// # Errors
    /// As [`Files::resolve`], or the download's failure.
    pub async fn fetch_known(
        &self,
        url: &Url,
        digest: Digest,
        meter: Option<Arc<crate::fetch::Meter>>,
    ) -> Result<u64, RegistryError> {
        let origin = self.origin(url, HeaderMap::new());
        let mut req = Self::blob_request(digest.clone(), origin);
        req.meter = meter;
        let v = self.head(&req).await?;
        self.claim(&digest)?;
        match self.fetcher.blob(&req)? {
            crate::fetch::Blob::Stored { .. } => {}
            crate::fetch::Blob::Downloading { download, .. } => download.finished().await?,
        }
        let size = self.fetcher.store().blob_size(&digest).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("{digest} is not in the store"),
            )
        })?;
        if let Some(id) = v.identity(url, &self.settings.ignored_params)
            && v.length.is_none_or(|n| n == size)
        {
            let record = FileRecord {
                digest,
                size,
                content_type: v.content_type,
            };
            if let Err(e) = self.fetcher.store().put_file_record(&id, &record) {
                tracing::warn!(error = %e, "cannot record a file's identity");
            }
        }
        Ok(size)
    }

    /// Fetches a file by its URL alone (a manager's task without a digest): found by the URL's
    /// identity like a request without a digest, then held in the store. The download it starts
    /// once the digest is known goes on `meter`; a first fetch of unknown content does not.
    /// Returns its digest and size.
    ///
    /// # Errors
    /// As [`Files::resolve`], or the download's failure.
    pub async fn fetch_by_url(
        &self,
        url: &Url,
        meter: Option<Arc<crate::fetch::Meter>>,
    ) -> Result<(Digest, u64), RegistryError> {
        let mut resolved = self.resolve(url, None, HeaderMap::new()).await?;
        resolved.blob.meter = meter;
        match self.fetcher.blob(&resolved.blob)? {
            crate::fetch::Blob::Stored { .. } => {}
            crate::fetch::Blob::Downloading { download, .. } => download.finished().await?,
        }
        let digest = resolved.blob.digest;
        let size = self.fetcher.store().blob_size(&digest).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("{digest} is not in the store"),
            )
        })?;
        Ok((digest, size))
    }

    /// Fetches a file whose digest is not known into the store, under the digest of what
    /// arrived; a body shorter (or longer) than announced is an error and leaves nothing.
    async fn fetch_unnamed(
        &self,
        req: &BlobRequest,
        v: &Validators,
    ) -> Result<FileRecord, RegistryError> {
        let store = self.fetcher.store().clone();
        let mut failures = Failures::default();
        for (source, hop) in self.fetcher.hops(req) {
            let host = hop.host();
            let mut resp = match self.fetcher.send_hop(req, &hop, Method::GET, None).await {
                Ok(r) => r,
                Err(e) => {
                    failures.unreachable(source, &e);
                    continue;
                }
            };
            self.fetcher
                .metrics()
                .upstream("file", resp.status().as_str());
            match judge(source, &resp, ErrorCode::BlobUnknown) {
                Verdict::Use => {}
                Verdict::Final(e) => return Err(e),
                Verdict::Next => {
                    failures.status(source, &host, resp.status());
                    continue;
                }
            }
            if resp.status() != StatusCode::OK {
                failures.bad_content(source, &host, format!("status {}", resp.status()));
                continue;
            }
            let announced = crate::fetch::failures::content_length(&resp);
            let content_type = Validators::of(&resp)
                .content_type
                .or(v.content_type.clone());
            let mut writer = store.unnamed_writer().map_err(store_error)?;
            let mut cut = false;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        self.fetcher.download_budget(None, chunk.len() as u64).await;
                        tokio::task::block_in_place(|| writer.write(&chunk))
                            .map_err(store_error)?;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            let written = writer.written();
            if cut || announced.is_some_and(|n| n != written) {
                tracing::warn!(%host, written, ?announced, "file body cut short or too long");
                failures.bad_content(
                    source,
                    &host,
                    format!(
                        "body of {written} bytes{}",
                        announced
                            .map(|n| format!(", {n} announced"))
                            .unwrap_or_default()
                    ),
                );
                continue;
            }
            let digest = writer.adopt(|d| store.blob_path(d));
            store.mark_file(&digest).map_err(store_error)?;
            let size = tokio::task::spawn_blocking(move || writer.commit())
                .await
                .expect("commit does not panic")
                .map_err(store_error)?;
            self.fetcher.metrics().upstream("file_stored", "ok");
            if let Some(p2p) = self.fetcher.p2p() {
                p2p.provide(&digest).await;
            }
            return Ok(FileRecord {
                digest,
                size,
                content_type,
            });
        }
        Err(failures.into_error())
    }
}

fn store_error(e: crate::store::StoreError) -> RegistryError {
    RegistryError::new(ErrorCode::Unknown, format!("the store failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ignores_signatures_and_follows_validators() {
        let ignored: Vec<String> = DEFAULT_IGNORED_PARAMS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Url::parse("http://Files.example/x/a.tgz?v=2&X-Amz-Signature=aaa&X-Amz-Date=1")
            .unwrap();
        let b = Url::parse("http://files.example:80/x/a.tgz?X-Amz-Signature=bbb&v=2#frag").unwrap();
        assert_eq!(normalized(&a, &ignored), normalized(&b, &ignored));
        assert_eq!(
            normalized(&a, &ignored),
            "http://files.example:80/x/a.tgz?v=2"
        );
        let c = Url::parse("http://files.example/x/a.tgz?v=3").unwrap();
        assert_ne!(normalized(&a, &ignored), normalized(&c, &ignored));

        let v = Validators {
            etag: Some("\"1\"".into()),
            length: Some(10),
            ..Default::default()
        };
        assert_eq!(v.identity(&a, &ignored), v.identity(&b, &ignored));
        let changed = Validators {
            etag: Some("\"2\"".into()),
            ..v.clone()
        };
        assert_ne!(v.identity(&a, &ignored), changed.identity(&a, &ignored));
        assert_eq!(Validators::default().identity(&a, &ignored), None);
    }

    #[test]
    fn urls_are_checked_and_secrets_stay_out_of_forwarding_rules() {
        assert!(parse_url("http://h/x").is_ok());
        for bad in [
            "ftp://h/x",
            "file:///etc/passwd",
            "http://u:p@h/x",
            "nonsense",
            "http://",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unsupported, "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        h.insert(header::COOKIE, "a=b".parse().unwrap());
        h.insert(header::RANGE, "bytes=1-".parse().unwrap());
        h.insert(header::HOST, "node".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        let f = forwarded(&h);
        assert!(f.contains_key(header::AUTHORIZATION) && f.contains_key(header::COOKIE));
        assert_eq!(f.len(), 2);
    }
}
