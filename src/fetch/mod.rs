//! The download engine: one download per digest however many clients ask (single flight),
//! sources tried in order (upstream, then each standby mirror), bytes streamed to every waiting
//! client while the download runs, and nothing stored or served as complete before it matches
//! its digest.

mod announce;
pub mod authz;
mod blob;
pub mod download;
pub mod evict;
pub(crate) mod failures;
pub(crate) mod gate;
pub mod limit;
pub mod manifest;
pub mod pieces;
pub mod sources;
pub(crate) mod swarm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::NodeMetrics;
use crate::oci::{Credentials, Digest, RegistryClient, RegistryHost, RepoName};
use crate::store::Store;

pub use authz::{Authorizer, ObjectKind};
pub use download::{Download, Phase, Progress};
pub use limit::Meter;
pub use manifest::{Manifest, ManifestRequest};
pub use sources::Registries;

/// Which blob, from where, on whose behalf.
#[derive(Debug, Clone)]
pub struct BlobRequest {
    /// The registry the client asked for.
    pub registry: RegistryHost,
    /// The repository it asked in.
    pub repo: RepoName,
    /// The blob.
    pub digest: Digest,
    /// The client's credentials, if it sent any.
    pub credentials: Option<Credentials>,
    /// For a file (any HTTP URL) rather than a registry blob: where its bytes come from. The
    /// registry and repository are then placeholders.
    pub file: Option<Arc<FileOrigin>>,
    /// The requester's meter: the download this request starts (not one it joins) counts its
    /// bytes by source there, also takes from its limit, and ends when it is stopped.
    pub meter: Option<Arc<Meter>>,
}

/// Where a file's bytes come from: its URL, then standby origins, with the client's headers
/// (which may carry secrets: never logged).
#[derive(Clone)]
pub struct FileOrigin {
    /// The URL, then each standby origin's URL for it.
    pub urls: Vec<(crate::metrics::Source, reqwest::Url)>,
    /// Headers for the origin (authorization, cookies).
    pub headers: http::HeaderMap,
}

impl std::fmt::Debug for FileOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self
            .urls
            .iter()
            .map(|(_, u)| u.host_str().unwrap_or("?"))
            .collect();
        write!(f, "FileOrigin({hosts:?}, {} headers)", self.headers.len())
    }
}

/// One source of a blob's bytes.
pub(crate) enum Hop {
    /// A registry (upstream or standby mirror).
    Registry(crate::oci::Endpoint),
    /// A file origin (or a standby one).
    File(reqwest::Url),
}

impl Hop {
    /// The host, for logs and errors (never the path or query: they may carry secrets).
    pub(crate) fn host(&self) -> String {
        match self {
            Hop::Registry(e) => e.base.host_str(),
            Hop::File(u) => u.host_str(),
        }
        .unwrap_or("?")
        .to_owned()
    }
}

/// A blob as the mirror can serve it.
pub enum Blob {
    /// Complete in the store.
    Stored {
        /// Its size.
        size: u64,
    },
    /// Being downloaded; `leader` is true when this request started the download (and so was
    /// itself authorized by the upstream).
    Downloading {
        /// The shared download.
        download: Arc<Download>,
        /// Whether this request started it.
        leader: bool,
    },
}

/// The engine. Share it behind an `Arc`.
pub struct Fetcher {
    store: Arc<Store>,
    client: Arc<RegistryClient>,
    registries: Arc<Registries>,
    metrics: NodeMetrics,
    authorizer: Authorizer,
    inflight: Mutex<HashMap<Digest, Arc<Download>>>,
    /// The swarm, once started (the swarm needs the engine to answer peers, so it comes second).
    p2p: OnceLock<crate::p2p::P2p>,
    /// Bounds concurrent piece uploads to peers.
    uploads: Arc<Semaphore>,
    /// The number of permits `uploads` was made with.
    upload_slots: usize,
    /// Bad pieces received per peer, over all downloads.
    peer_faults: Mutex<HashMap<libp2p::PeerId, u32>>,
    /// `--download-limit`: all bytes this node downloads (upstream and peers).
    download_limit: Option<Arc<limit::TokenBucket>>,
    /// `--upload-limit`: piece bytes this node sends to peers.
    upload_limit: Option<Arc<limit::TokenBucket>>,
    /// `--max-disk`: the store's quota in bytes.
    max_disk: Option<u64>,
    /// Clients reading each stored blob now (not evicted meanwhile).
    readers: evict::Readers,
    /// Blobs kept from eviction.
    pins: Mutex<std::collections::HashSet<Digest>>,
    /// `--piece-size` for blobs this node cuts into pieces first.
    piece_size: Option<u32>,
    /// `--stall-timeout`: how long a peer download may receive nothing.
    stall: std::time::Duration,
    /// The node's file service, once made (it answers peers' file lookups).
    files: OnceLock<std::sync::Weak<crate::files::Files>>,
}

/// Concurrent piece uploads a node serves; further requests are answered `BUSY`.
const UPLOAD_SLOTS: usize = 16;

impl Fetcher {
    /// Wires the engine.
    pub fn new(
        store: Arc<Store>,
        client: Arc<RegistryClient>,
        registries: Arc<Registries>,
        metrics: NodeMetrics,
    ) -> Arc<Self> {
        let authorizer = Authorizer::new(client.clone(), registries.clone(), metrics.clone());
        Arc::new(Fetcher {
            store,
            client,
            registries,
            metrics,
            authorizer,
            inflight: Mutex::new(HashMap::new()),
            p2p: OnceLock::new(),
            uploads: Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            upload_slots: UPLOAD_SLOTS,
            peer_faults: Mutex::new(HashMap::new()),
            download_limit: None,
            upload_limit: None,
            max_disk: None,
            readers: Default::default(),
            pins: Default::default(),
            piece_size: None,
            stall: std::time::Duration::from_secs(10),
            files: OnceLock::new(),
        })
    }

    /// Sets `--piece-size` and `--stall-timeout` (call before sharing the engine).
    ///
    /// # Panics
    /// If the engine is already shared.
    pub fn with_swarm(
        mut self: Arc<Self>,
        piece_size: Option<u32>,
        stall: std::time::Duration,
    ) -> Arc<Self> {
        let inner =
            Arc::get_mut(&mut self).expect("swarm settings are set before the engine is shared");
        inner.piece_size = piece_size;
        inner.stall = stall;
        self
    }

    /// The piece size for a blob of `size` bytes that this node cuts into pieces.
    pub(crate) fn piece_size_for(&self, size: u64) -> u32 {
        crate::store::partial::piece_size_for(size, self.piece_size)
    }

    /// The same engine with bandwidth limits (call before sharing it).
    ///
    /// # Panics
    /// If the engine is already shared.
    pub fn with_limits(
        mut this: Arc<Self>,
        download: Option<limit::ByteRate>,
        upload: Option<limit::ByteRate>,
        max_disk: Option<limit::ByteSize>,
    ) -> Arc<Self> {
        let inner = Arc::get_mut(&mut this).expect("limits are set before the engine is shared");
        inner.download_limit = download.map(|r| Arc::new(limit::TokenBucket::new(r)));
        inner.upload_limit = upload.map(|r| Arc::new(limit::TokenBucket::new(r)));
        if let Some(rate) = upload {
            // Slots waiting on a slow upload budget would outlast the requester's patience:
            // keep about four seconds of traffic in flight.
            let pieces =
                rate.bytes_per_sec() * 4 / u64::from(crate::store::partial::MIN_DEFAULT_PIECE_SIZE);
            inner.upload_slots = (pieces as usize).clamp(2, UPLOAD_SLOTS);
            inner.uploads = Arc::new(Semaphore::new(inner.upload_slots));
        }
        inner.max_disk = max_disk.map(|s| s.0);
        this
    }

    /// Waits for the download limit, and the meter's own if there is one, to allow `bytes`
    /// more.
    pub(crate) async fn download_budget(&self, meter: Option<&Meter>, bytes: u64) {
        if let Some(b) = &self.download_limit {
            b.take(bytes).await;
        }
        if let Some(m) = meter {
            m.take(bytes).await;
        }
    }

    /// Waits for the upload limit to allow `bytes` more.
    pub(crate) async fn upload_budget(&self, bytes: u64) {
        if let Some(b) = &self.upload_limit {
            b.take(bytes).await;
        }
    }

    /// Connects the engine to the swarm: from now on blobs are looked for among peers first.
    pub fn attach_p2p(&self, p2p: crate::p2p::P2p) {
        let _ = self.p2p.set(p2p);
    }

    /// Connects the file service (for peers' file lookups).
    pub(crate) fn attach_files(&self, files: std::sync::Weak<crate::files::Files>) {
        let _ = self.files.set(files);
    }

    /// The file service, if attached and alive.
    pub(crate) fn files(&self) -> Option<Arc<crate::files::Files>> {
        self.files.get()?.upgrade()
    }

    /// The swarm, if attached.
    pub fn p2p(&self) -> Option<&crate::p2p::P2p> {
        self.p2p.get()
    }

    /// The sources of a blob, in the order they are tried.
    pub(crate) fn hops(&self, req: &BlobRequest) -> Vec<(crate::metrics::Source, Hop)> {
        match &req.file {
            Some(f) => f
                .urls
                .iter()
                .map(|(s, u)| (*s, Hop::File(u.clone())))
                .collect(),
            None => self
                .registries
                .chain(&req.registry)
                .into_iter()
                .map(|(s, e)| (s, Hop::Registry(e)))
                .collect(),
        }
    }

    /// Sends `method` for the blob to one source, resuming from `range_from`.
    pub(crate) async fn send_hop(
        &self,
        req: &BlobRequest,
        hop: &Hop,
        method: http::Method,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, crate::oci::TransportError> {
        match hop {
            Hop::Registry(endpoint) => {
                let up = crate::oci::UpstreamRequest {
                    method,
                    repo: &req.repo,
                    path: format!("{}/blobs/{}", req.repo, req.digest),
                    accept: &[],
                    range_from,
                    client: req.credentials.as_ref(),
                };
                self.client.send(endpoint, &up).await
            }
            Hop::File(url) => {
                let headers = req
                    .file
                    .as_ref()
                    .map(|f| f.headers.clone())
                    .unwrap_or_default();
                self.client
                    .fetch_url(method, url, &headers, range_from)
                    .await
            }
        }
    }

    /// Whether the node can serve what it does not hold: the store's temporary directory
    /// takes a file, and some source is reachable ([`Fetcher::any_source_reachable`]). The
    /// error says what is wrong.
    ///
    /// # Errors
    /// The reason the node is not ready.
    pub async fn readiness(&self) -> Result<(), String> {
        let probe = self.store.root().join("tmp").join(".ready");
        if let Err(e) = tokio::fs::write(&probe, b"").await {
            return Err(format!("store not writable: {e}"));
        }
        let _ = tokio::fs::remove_file(&probe).await;
        if !self.any_source_reachable().await {
            return Err(
                "no source reachable: no peer of the zone, and no upstream or standby mirror answers"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether some source can serve: a peer of the zone is connected, or a configured
    /// upstream or standby mirror answers (`GET /v2/`, any status, within 2 s).
    pub async fn any_source_reachable(&self) -> bool {
        if let Some(p2p) = self.p2p.get()
            && !p2p.zone_peers().await.is_empty()
        {
            return true;
        }
        let probes = self
            .registries
            .endpoints()
            .into_iter()
            .map(|url| async move {
                self.client
                    .answers(&url, std::time::Duration::from_secs(2))
                    .await
            });
        futures_util::future::join_all(probes)
            .await
            .into_iter()
            .any(|ok| ok)
    }

    /// The downloads running now, with their progress.
    pub fn downloads(&self) -> Vec<(Digest, download::Progress)> {
        self.inflight
            .lock()
            .unwrap()
            .iter()
            .map(|(d, dl)| (d.clone(), dl.progress()))
            .collect()
    }

    /// Piece uploads running now.
    pub(crate) fn uploads_in_progress(&self) -> usize {
        self.upload_slots
            .saturating_sub(self.uploads.available_permits())
    }

    /// An upload slot, or `None` when all are taken (the peer should ask elsewhere).
    pub(crate) async fn upload_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.uploads.clone().try_acquire_owned().ok()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// The authorization cache for content the node holds.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// The registry table.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Blob downloads running now.
    pub fn downloads_in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}
