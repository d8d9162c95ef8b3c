//! Blob downloads: starting or joining one, the task that runs it through the source chain, and
//! `HEAD` for blobs the node does not hold.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Method, StatusCode, header};

use super::download::{Download, Phase, PieceView};
use super::failures::{Failures, Verdict, content_length, judge};
use super::{Blob, BlobRequest, Fetcher, ObjectKind};
use crate::oci::{ErrorCode, Hasher, RegistryError};
use crate::store::partial::{PieceHasher, PieceMap};
use crate::store::{BlobWriter, StoreError};

fn store_error(e: StoreError) -> RegistryError {
    tracing::error!(error = %e, "store failure");
    RegistryError::new(
        ErrorCode::Unknown,
        format!("the node could not store the blob: {e}"),
    )
}

impl Fetcher {
    /// The blob if the node holds it or is downloading it, for a client that will wait for it
    /// (a stopped task's download goes on for that client); never starts a download.
    pub fn held_blob(&self, digest: &crate::oci::Digest) -> Option<Blob> {
        let blob = self.peek_blob(digest)?;
        if let Blob::Downloading { download, .. } = &blob {
            download.share();
        }
        Some(blob)
    }

    /// The blob if the node holds it or is downloading it, for a look that does not keep the
    /// download alive (peers taking pieces, lookups); never starts a download.
    pub fn peek_blob(&self, digest: &crate::oci::Digest) -> Option<Blob> {
        if let Some(size) = self.store.blob_size(digest) {
            return Some(Blob::Stored { size });
        }
        let download = self.inflight.lock().unwrap().get(digest).cloned()?;
        Some(Blob::Downloading {
            download,
            leader: false,
        })
    }

    /// The blob, complete in the store or being downloaded; starts the download when nobody
    /// has. The caller checks authorization for anything but a download it leads.
    ///
    /// # Errors
    /// When the store cannot create a temporary file.
    pub fn blob(self: &Arc<Self>, req: &BlobRequest) -> Result<Blob, RegistryError> {
        if let Some(size) = self.store.blob_size(&req.digest) {
            return Ok(Blob::Stored { size });
        }
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(download) = inflight.get(&req.digest) {
            // A task's request takes over a download started only for peers; anyone else
            // joins it, and it then goes on for them whatever its starter does.
            if !req.meter.as_ref().is_some_and(|m| download.adopt(m)) {
                download.share();
            }
            return Ok(Blob::Downloading {
                download: download.clone(),
                leader: false,
            });
        }
        // Re-check under the lock: a download may have completed since the first look.
        if let Some(size) = self.store.blob_size(&req.digest) {
            return Ok(Blob::Stored { size });
        }
        let writer = self.store.blob_writer(&req.digest).map_err(store_error)?;
        let download = Arc::new(Download::new(
            req.digest.clone(),
            self.store.blob_path(&req.digest),
            writer.temp_path(),
            req.meter.clone(),
        ));
        inflight.insert(req.digest.clone(), download.clone());
        drop(inflight);

        if let Some(p2p) = self.p2p.get() {
            tokio::spawn(super::announce::announce_progress(
                p2p.clone(),
                download.clone(),
            ));
        }
        let this = self.clone();
        let (task_download, req) = (download.clone(), req.clone());
        tokio::spawn(async move {
            this.metrics.downloads_in_flight.inc();
            // A panic must not leave the digest's readers waiting forever.
            let run = std::panic::AssertUnwindSafe(this.run_download(&task_download, &req, writer))
                .catch_unwind();
            let result = tokio::select! {
                result = run => result.unwrap_or_else(|_| {
                    Err(RegistryError::new(
                        ErrorCode::Unknown,
                        "the download failed unexpectedly",
                    ))
                }),
                // Its starter stopped and nobody else waits for it: the transfer ends here (the
                // temporary file goes; verified pieces from peers stay for a later resume).
                () = task_download.unwanted() => Err(RegistryError::new(
                    ErrorCode::Unknown,
                    "the download was stopped",
                )),
            };
            let label = match &result {
                Ok(size) => {
                    let size = *size;
                    task_download.update(|p| {
                        p.phase = Phase::Complete;
                        p.size = Some(size);
                        p.written = size;
                        p.on_disk = size;
                    });
                    tracing::info!(digest = %req.digest, size, "blob stored");
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(digest = %req.digest, error = %e.message, "blob download failed");
                    task_download.update(|p| p.phase = Phase::Failed(e.clone()));
                    "failed"
                }
            };
            if let Some(p2p) = this.p2p.get() {
                if label == "ok" {
                    p2p.provide(&req.digest).await;
                } else {
                    p2p.stop_providing(&req.digest).await;
                }
            }
            if label == "ok" {
                // A peer download that gave up leaves its pieces; the blob is whole now.
                let store = this.store.clone();
                let digest = req.digest.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(Some(partial)) = store.open_partial(&digest) {
                        let _ = partial.discard();
                    }
                })
                .await;
            }
            this.inflight.lock().unwrap().remove(&req.digest);
            this.metrics.downloads_in_flight.dec();
            this.enforce_quota().await;
            this.metrics.downloads.with_label_values(&[label]).inc();
        });
        Ok(Blob::Downloading {
            download,
            leader: true,
        })
    }

    /// Runs the source chain until one source delivers the verified blob.
    async fn run_download(
        &self,
        dl: &Arc<Download>,
        req: &BlobRequest,
        writer: BlobWriter,
    ) -> Result<u64, RegistryError> {
        if self.p2p.get().is_some() {
            match self.fetch_from_peers(dl, req).await {
                Ok(size) => return Ok(size),
                Err(super::swarm::PeerMiss::NoProvider) => {}
                Err(miss) => {
                    tracing::info!(digest = %req.digest, ?miss, "peers could not deliver; trying the upstream");
                    // Readers that already sent bytes from the peers' copy are cut.
                    dl.start_over(Some(writer.temp_path()), |p| {
                        p.phase = Phase::Connecting;
                        p.source = crate::metrics::Source::Upstream;
                    });
                }
            }
        }
        let mut sink = Sink::new(writer);
        let mut failures = Failures::default();
        for (source, hop) in self.hops(req) {
            let host = hop.host();
            // One resume of the same source after a cut body, then the next source.
            let mut resumes_left = 1;
            loop {
                let offset = sink.written();
                let resp = match self.send_hop(req, &hop, Method::GET, Some(offset)).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.metrics.upstream("blob", "error");
                        tracing::warn!(%host, error = %e, "source unreachable");
                        failures.unreachable(source, &e);
                        break;
                    }
                };
                self.metrics.upstream("blob", resp.status().as_str());
                match judge(source, &resp, ErrorCode::BlobUnknown) {
                    Verdict::Use => {}
                    Verdict::Final(e) => return Err(e),
                    Verdict::Next => {
                        failures.status(source, &host, resp.status());
                        break;
                    }
                }
                let Some((start, size)) = body_extent(&resp) else {
                    failures.bad_content(source, &host, "unusable Content-Range");
                    break;
                };
                if start != offset {
                    // The source ignored the resume and sends from the start: begin again.
                    sink.restart(dl).map_err(store_error)?;
                }
                if start == 0
                    && let Some(size) = size
                {
                    sink.cut_into_pieces(dl, size, self.piece_size_for(size));
                    if let Some(p2p) = self.p2p.get() {
                        // Peers may take pieces from this node while it downloads.
                        p2p.provide(&req.digest).await;
                    }
                }
                let known = dl.progress().size;
                if let (Some(known), Some(size)) = (known, size)
                    && known != size
                {
                    failures.bad_content(source, &host, format!("size {size}, expected {known}"));
                    break;
                }
                dl.update(|p| {
                    p.size = size.or(p.size);
                    p.source = source;
                    p.phase = Phase::Streaming;
                });
                let (returned, body) = self.stream_body(resp, sink, dl, source, size).await;
                sink = returned;
                match body {
                    Ok(()) => {}
                    Err(BodyError::Store(e)) => return Err(store_error(e)),
                    Err(BodyError::TooLong) => {
                        failures.bad_content(source, &host, "more bytes than announced");
                        self.count_bad_content(source);
                        sink.restart(dl).map_err(store_error)?;
                        break;
                    }
                    Err(BodyError::Source(e)) => {
                        let written = sink.written();
                        tracing::warn!(%host, error = %e, written, "body cut short");
                        if resumes_left > 0 && written > offset {
                            resumes_left -= 1;
                            continue;
                        }
                        failures.bad_content(source, &host, "body cut short");
                        break;
                    }
                }
                match sink.writer.verify_with(sink.hasher) {
                    Ok(()) => {
                        // Readers may have the last byte now; durability follows.
                        dl.update(|p| p.verified = true);
                        if let Some(map) =
                            sink.pieces.and_then(|p| p.finish(req.digest.clone()).ok())
                            && let Err(e) = self.store.put_piece_map(&map)
                        {
                            tracing::warn!(error = %e, "cannot keep the piece map");
                        }
                        let writer = sink.writer;
                        let size = tokio::task::spawn_blocking(move || writer.commit())
                            .await
                            .expect("blob commit does not panic")
                            .map_err(store_error)?;
                        if req.file.is_none() {
                            self.authorizer.grant(
                                &req.registry,
                                &req.repo,
                                ObjectKind::Blob,
                                &req.digest,
                                req.credentials.as_ref(),
                            );
                        }
                        return Ok(size);
                    }
                    Err(StoreError::DigestMismatch { actual, .. }) => {
                        self.count_bad_content(source);
                        tracing::warn!(%host, expected = %req.digest, %actual, "source sent content that does not match its digest; discarded");
                        failures.bad_content(source, &host, format!("content hashes to {actual}"));
                        // A new file: readers still holding the old one must not see new bytes.
                        let fresh = self.store.blob_writer(&req.digest).map_err(store_error)?;
                        dl.start_over(Some(fresh.temp_path()), |p| p.phase = Phase::Connecting);
                        sink = Sink::new(fresh);
                        break;
                    }
                    Err(e) => return Err(store_error(e)),
                }
            }
        }
        Err(failures.into_error())
    }

    fn count_bad_content(&self, source: crate::metrics::Source) {
        self.metrics
            .blob_verify_failures
            .with_label_values(&[source.label()])
            .inc();
    }

    /// Answers `HEAD` for a blob: from the store or a running download when possible, else
    /// from the source chain. The caller checks authorization for held blobs.
    ///
    /// # Errors
    /// The chain's failure, `BLOB_UNKNOWN`, or an authorization error from the upstream.
    pub async fn head_blob(&self, req: &BlobRequest) -> Result<u64, RegistryError> {
        self.head_chain(req, "blob_head", |resp| {
            content_length(resp).ok_or("no Content-Length")
        })
        .await
    }

    /// Asks the blob's source chain (registry or file origin) with `HEAD`: the first usable
    /// answer that `read` accepts, else the chain's failure. `kind` labels the upstream
    /// requests metric.
    ///
    /// # Errors
    /// The chain's failure, `BLOB_UNKNOWN`, or an authorization error from the source.
    pub(crate) async fn head_chain<T>(
        &self,
        req: &BlobRequest,
        kind: &str,
        read: impl Fn(&reqwest::Response) -> Result<T, &'static str>,
    ) -> Result<T, RegistryError> {
        let mut failures = Failures::default();
        for (source, hop) in self.hops(req) {
            let host = hop.host();
            let resp = match self.send_hop(req, &hop, Method::HEAD, None).await {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.upstream(kind, "error");
                    failures.unreachable(source, &e);
                    continue;
                }
            };
            self.metrics.upstream(kind, resp.status().as_str());
            match judge(source, &resp, ErrorCode::BlobUnknown) {
                Verdict::Use => match read(&resp) {
                    Ok(answer) => return Ok(answer),
                    Err(why) => failures.bad_content(source, &host, why),
                },
                Verdict::Final(e) => return Err(e),
                Verdict::Next => failures.status(source, &host, resp.status()),
            }
        }
        Err(failures.into_error())
    }
}

/// Where the body of a blob response starts and the blob's total size (if announced).
pub(super) fn body_extent(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Some((0, content_length(resp)));
    }
    // "bytes START-END/TOTAL"
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

/// Where one download's bytes go: the file, and the running hash. They are fed on two
/// threads, so hashing and writing proceed side by side.
struct Sink {
    writer: BlobWriter,
    hasher: Hasher,
    /// Piece hashes, computed as the bytes arrive (when the size is known), so that peers can
    /// take pieces while the download runs and the piece map is ready when it ends.
    pieces: Option<PieceHasher>,
}

impl Sink {
    fn new(mut writer: BlobWriter) -> Sink {
        let hasher = writer.detach_hasher();
        Sink {
            writer,
            hasher,
            pieces: None,
        }
    }

    /// Starts computing piece hashes for a blob of `size`, from its first byte.
    fn cut_into_pieces(&mut self, dl: &Download, size: u64, piece_size: u32) {
        match (
            PieceHasher::new(size, piece_size),
            PieceMap::new(dl.digest.clone(), size, piece_size),
        ) {
            (Ok(hasher), Ok(map)) => {
                self.pieces = Some(hasher);
                dl.set_view(Some(PieceView { map, have: None }));
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(size, error = %e, "blob not cut into pieces")
            }
        }
    }

    fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Throws away what was written and tells readers the content starts over.
    fn restart(&mut self, dl: &Download) -> Result<(), StoreError> {
        self.writer.reset()?;
        self.hasher = Hasher::new(dl.digest.algorithm());
        self.pieces = None;
        dl.start_over(None, |_| {});
        Ok(())
    }
}

enum BodyError {
    /// The source's stream failed (cut, stalled, reset, or ended short).
    Source(String),
    /// The source sent more than it announced.
    TooLong,
    /// Writing to the store failed.
    Store(StoreError),
}

/// Bytes gathered (as a list of received chunks, not copied) before they are handed to the
/// writer thread.
const BATCH_BYTES: usize = 512 * 1024;
/// Batches queued for the writer thread: bounds the memory of one download.
const QUEUE_BATCHES: usize = 8;

/// Copies a response body into the sink. Received chunks go to readers at once (from memory);
/// one blocking thread writes them to the file and another hashes them, while this task keeps
/// receiving. The channels are bounded, so a slow disk slows the download rather than filling
/// memory.
impl Fetcher {
    async fn stream_body(
        &self,
        mut resp: reqwest::Response,
        sink: Sink,
        dl: &Arc<Download>,
        source: crate::metrics::Source,
        size: Option<u64>,
    ) -> (Sink, Result<(), BodyError>) {
        let Sink {
            mut writer,
            mut hasher,
            mut pieces,
        } = sink;
        let mut received = writer.written();
        let (write_tx, mut write_rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(QUEUE_BATCHES);
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(QUEUE_BATCHES);
        let progress = dl.clone();
        let write_thread = tokio::task::spawn_blocking(move || {
            while let Some(batch) = write_rx.blocking_recv() {
                for chunk in batch {
                    if let Err(e) = writer.write(&chunk) {
                        return (writer, Err(e));
                    }
                }
                let on_disk = writer.written();
                progress.update(|p| p.on_disk = on_disk);
            }
            (writer, Ok(()))
        });
        let view = dl.clone();
        let hash_thread = tokio::task::spawn_blocking(move || {
            while let Some(batch) = hash_rx.blocking_recv() {
                for chunk in batch {
                    hasher.update(&chunk);
                    if let Some(p) = &mut pieces
                        && p.update(&chunk, |i, h| {
                            view.update_view(|v| drop(v.map.set_hash(i, h)))
                        })
                        .is_err()
                    {
                        // More bytes than the size: the body check reports it.
                        pieces = None;
                    }
                }
            }
            (hasher, pieces)
        });
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let outcome = loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if size.is_some_and(|s| received + c.len() as u64 > s) {
                        break Err(BodyError::TooLong);
                    }
                    // Holding the next read back is what slows the sender (TCP flow control).
                    self.download_budget(dl.meter(), c.len() as u64).await;
                    dl.count(source, c.len() as u64);
                    dl.received(received, c.clone());
                    received += c.len() as u64;
                    batch_bytes += c.len();
                    batch.push(c);
                    if batch_bytes >= BATCH_BYTES {
                        batch_bytes = 0;
                        let b = std::mem::take(&mut batch);
                        // A failed send means the writer stopped; its error is reported below.
                        if hash_tx.send(b.clone()).await.is_err() || write_tx.send(b).await.is_err()
                        {
                            break Ok(());
                        }
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(BodyError::Source(e.without_url().to_string())),
            }
        };
        if !batch.is_empty() && !matches!(outcome, Err(BodyError::TooLong)) {
            let _ = hash_tx.send(batch.clone()).await;
            let _ = write_tx.send(batch).await;
        }
        drop((write_tx, hash_tx));
        let (writer, written) = write_thread.await.expect("blob writer does not panic");
        let (hasher, pieces) = hash_thread.await.expect("hasher does not panic");
        let total = writer.written();
        let sink = Sink {
            writer,
            hasher,
            pieces,
        };
        let result = written
            .map_err(BodyError::Store)
            .and(outcome)
            .and_then(|()| match size {
                Some(s) if total < s => Err(BodyError::Source(format!(
                    "body ended after {total} of {s} bytes"
                ))),
                _ => Ok(()),
            });
        (sink, result)
    }
}
