//! One blob download and its readers.
//!
//! The download task writes into a temporary file and publishes its progress on a `watch`
//! channel; every reader opens the file itself and streams bytes up to what has been written.
//! Readers always hold back the last byte until the whole blob has been verified, so a client
//! never receives a complete body of unverified content: if verification fails, readers end
//! with an error and the client's connection is cut short.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use crate::metrics::{NodeMetrics, Source};
use crate::oci::{Digest, RegistryError};
use crate::store::partial::{PieceMap, bitmap_has};
use crate::store::read::{READ_CHUNK, read_at};

/// Where a download stands.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Looking for a source that answers.
    Connecting,
    /// A source is sending bytes.
    Streaming,
    /// Verified and in the store.
    Complete,
    /// Every source failed.
    Failed(RegistryError),
}

/// A snapshot of a download's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Bumped whenever the content starts over (a source sent bad bytes or ignored a resume).
    pub generation: u32,
    /// Bytes received in this generation (in memory or in `temp`); readers may have them.
    pub written: u64,
    /// Bytes of this generation already in `temp`.
    pub on_disk: u64,
    /// Total size, once a source has announced it.
    pub size: Option<u64>,
    /// Where the bytes are coming from.
    pub source: Source,
    /// The phase.
    pub phase: Phase,
    /// The content written in this generation matched the digest (it may not be durable and in
    /// place yet: `Complete` says that).
    pub verified: bool,
    /// The file being written in this generation.
    pub temp: Arc<Path>,
}

/// How many bytes of the newest chunks stay in memory, so readers that keep up with the
/// download are served without reading the file back.
const RECENT_BYTES: u64 = 8 * 1024 * 1024;

/// What peers may take of a running download: the piece map as known so far, and which
/// pieces are in the file at [`Progress::temp`].
#[derive(Clone)]
pub struct PieceView {
    /// Layout and the hashes known so far.
    pub map: PieceMap,
    /// Pieces held, for downloads assembled out of order (from peers). `None`: every piece
    /// whose hash is known and that lies wholly below `on_disk` (downloads written in order).
    pub have: Option<Vec<u8>>,
}

impl PieceView {
    /// Whether piece `index` can be served, given the bytes on disk.
    pub fn has(&self, index: u32, on_disk: u64) -> bool {
        match &self.have {
            Some(bits) => bitmap_has(bits, index),
            None => {
                index < self.map.piece_count()
                    && self.map.hash(index).is_some()
                    && self.map.piece_range(index).end <= on_disk
            }
        }
    }

    /// The held pieces as a bitmap.
    pub fn have_bits(&self, on_disk: u64) -> Vec<u8> {
        let count = self.map.piece_count();
        let mut bits = vec![0u8; (count as usize).div_ceil(8)];
        for i in (0..count).filter(|&i| self.has(i, on_disk)) {
            bits[i as usize / 8] |= 1 << (i % 8);
        }
        bits
    }
}

/// A download shared by every request for the same digest on this node.
#[derive(Debug)]
pub struct Download {
    /// The blob.
    pub digest: Digest,
    /// Its place in the store once complete.
    pub final_path: PathBuf,
    state: watch::Sender<Progress>,
    /// The newest written chunks: (generation, offset, bytes), oldest first.
    recent: Mutex<VecDeque<(u32, u64, Bytes)>>,
    /// What peers may take of it (once the size is known).
    view: Mutex<Option<PieceView>>,
    /// The meter of the request that started it, or of the task that adopted it.
    meter: std::sync::OnceLock<Arc<super::Meter>>,
    /// Signalled when a meter is adopted.
    adopted: tokio::sync::Notify,
    /// Started for peers (a fetch hint), with nobody of this node waiting: the first metered
    /// request that joins adopts it.
    for_peers: AtomicBool,
    /// Whether another request has joined it (then stopping the meter does not end it).
    shared: AtomicBool,
}

impl std::fmt::Debug for PieceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceView({} pieces)", self.map.piece_count())
    }
}

impl Download {
    pub(super) fn new(
        digest: Digest,
        final_path: PathBuf,
        temp: &Path,
        meter: Option<Arc<super::Meter>>,
    ) -> Download {
        let (state, _) = watch::channel(Progress {
            generation: 0,
            written: 0,
            on_disk: 0,
            size: None,
            source: Source::Upstream,
            phase: Phase::Connecting,
            verified: false,
            temp: Arc::from(temp),
        });
        Download {
            digest,
            final_path,
            state,
            recent: Mutex::new(VecDeque::new()),
            view: Mutex::new(None),
            meter: meter.map(std::sync::OnceLock::from).unwrap_or_default(),
            adopted: tokio::sync::Notify::new(),
            for_peers: AtomicBool::new(false),
            shared: AtomicBool::new(false),
        }
    }

    /// The meter of the request that started (or adopted) the download.
    pub(super) fn meter(&self) -> Option<&super::Meter> {
        self.meter.get().map(Arc::as_ref)
    }

    /// The same, to hand to a task.
    pub(super) fn meter_handle(&self) -> Option<Arc<super::Meter>> {
        self.meter.get().cloned()
    }

    /// Marks a download started for peers, which a task's request may adopt.
    pub(super) fn mark_for_peers(&self) {
        self.for_peers.store(true, Ordering::Relaxed);
    }

    /// A metered request joins: a download started for peers becomes its own (limited, counted
    /// and stoppable by it). Returns whether it did.
    pub(super) fn adopt(&self, meter: &Arc<super::Meter>) -> bool {
        if self.for_peers.swap(false, Ordering::Relaxed) && self.meter.set(meter.clone()).is_ok() {
            self.adopted.notify_waiters();
            return true;
        }
        false
    }

    /// Counts `bytes` received from `source` on the starter's meter.
    pub(super) fn count(&self, source: Source, bytes: u64) {
        if let Some(m) = self.meter.get() {
            m.count(source, bytes);
        }
    }

    /// Records that another request has joined the download.
    pub(super) fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// Resolves when the starter's meter is stopped while nobody else has joined: the download
    /// should end. Never resolves otherwise.
    pub(super) async fn unwanted(&self) {
        loop {
            // Armed before looking, so an adoption in between is not missed.
            let adopted = self.adopted.notified();
            tokio::pin!(adopted);
            adopted.as_mut().enable();
            if let Some(m) = self.meter.get() {
                m.stopped().await;
                if self.shared.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
                return;
            }
            adopted.await;
        }
    }

    /// Replaces what peers may take (`None`: nothing, e.g. after a restart of the content).
    pub(super) fn set_view(&self, view: Option<PieceView>) {
        *self.view.lock().unwrap() = view;
    }

    /// The content starts over (a source sent bad bytes or ignored a resume, or the peers gave
    /// up): peers may take nothing of it any more, readers that already sent bytes are cut, and
    /// the size is learned again from the next source.
    pub(super) fn start_over(&self, temp: Option<&Path>, also: impl FnOnce(&mut Progress)) {
        self.set_view(None);
        self.update(|p| {
            p.generation += 1;
            p.size = None;
            p.written = 0;
            p.on_disk = 0;
            p.verified = false;
            if let Some(t) = temp {
                p.temp = t.into();
            }
            also(p);
        });
    }

    /// Changes the view, if there is one.
    pub(super) fn update_view(&self, f: impl FnOnce(&mut PieceView)) {
        if let Some(v) = self.view.lock().unwrap().as_mut() {
            f(v);
        }
    }

    /// What peers may take now.
    pub fn view(&self) -> Option<PieceView> {
        self.view.lock().unwrap().clone()
    }

    /// Publishes a received chunk at `offset` to readers (from memory, until it is on disk).
    pub(super) fn received(&self, offset: u64, chunk: Bytes) {
        let generation = self.state.borrow().generation;
        let end = offset + chunk.len() as u64;
        {
            let mut recent = self.recent.lock().unwrap();
            recent.push_back((generation, offset, chunk));
            while recent
                .front()
                .is_some_and(|(g, o, _)| *g != generation || end - o > RECENT_BYTES)
            {
                recent.pop_front();
            }
        }
        self.update(|p| p.written = end);
    }

    /// Bytes `pos..limit` (or a prefix of them) if still held in memory.
    fn recent_slice(&self, generation: u32, pos: u64, limit: u64) -> Option<Bytes> {
        let recent = self.recent.lock().unwrap();
        recent.iter().find_map(|(g, o, b)| {
            let end = o + b.len() as u64;
            (*g == generation && *o <= pos && pos < end).then(|| {
                let from = (pos - o) as usize;
                let to = (end.min(limit) - o) as usize;
                b.slice(from..to)
            })
        })
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of progress.
    pub(super) fn watch(&self) -> watch::Receiver<Progress> {
        self.state.subscribe()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.state.send_modify(f);
    }

    /// Waits until a source has answered (or every source failed), so that the caller can
    /// send response headers.
    ///
    /// # Errors
    /// The download's failure.
    pub async fn ready(&self) -> Result<Progress, RegistryError> {
        let mut rx = self.state.subscribe();
        let p = rx
            .wait_for(|p| !matches!(p.phase, Phase::Connecting))
            .await
            .map_err(|_| gone())?
            .clone();
        match p.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(p),
        }
    }

    /// Waits for the end of the download.
    ///
    /// # Errors
    /// The download's failure.
    pub async fn finished(&self) -> Result<(), RegistryError> {
        let mut rx = self.state.subscribe();
        let p = rx
            .wait_for(|p| matches!(p.phase, Phase::Complete | Phase::Failed(_)))
            .await
            .map_err(|_| gone())?
            .clone();
        match p.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Streams bytes `start..end` as they arrive. The stream ends with an error, rather than
    /// quietly, if the download fails or restarts after bytes were sent.
    pub fn reader(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        metrics: NodeMetrics,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let state = ReaderState {
            download: self.clone(),
            rx: self.state.subscribe(),
            pos: start,
            end,
            file: None,
            generation: None,
            sent_any: false,
            done: false,
            metrics,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            match s.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), s)),
                Ok(None) => None,
                Err(e) => {
                    s.done = true;
                    Some((Err(e), s))
                }
            }
        })
    }
}

fn gone() -> RegistryError {
    RegistryError::new(
        crate::oci::ErrorCode::Unknown,
        "download ended unexpectedly",
    )
}

struct ReaderState {
    download: Arc<Download>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: u64,
    file: Option<Arc<File>>,
    generation: Option<u32>,
    sent_any: bool,
    done: bool,
    metrics: NodeMetrics,
}

impl ReaderState {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            let p = self.rx.borrow_and_update().clone();
            if let Phase::Failed(e) = &p.phase {
                return Err(io::Error::other(e.message.clone()));
            }
            if self.generation != Some(p.generation) {
                if self.sent_any {
                    return Err(io::Error::other(
                        "the source sent bad content; the download restarted",
                    ));
                }
                self.generation = Some(p.generation);
                self.file = None;
            }
            let complete = matches!(p.phase, Phase::Complete);
            // Hold back the last byte until the blob is verified.
            let limit = if complete || p.verified {
                p.size.unwrap_or(p.written)
            } else {
                p.written.saturating_sub(1)
            };
            if limit > self.pos {
                let limit = limit.min(self.end);
                if let Some(chunk) = self.download.recent_slice(p.generation, self.pos, limit) {
                    return Ok(Some(self.sent(chunk, p.source)));
                }
                // Not in memory any more: from the file, as far as it has been written.
                let on_disk = if complete {
                    limit
                } else {
                    p.on_disk.min(limit)
                };
                if on_disk > self.pos {
                    if self.file.is_none() {
                        let path: &Path = if complete {
                            &self.download.final_path
                        } else {
                            &p.temp
                        };
                        match File::open(path) {
                            Ok(f) => self.file = Some(Arc::new(f)),
                            // Renamed into place meanwhile: look at the state again.
                            Err(e) if e.kind() == io::ErrorKind::NotFound && !complete => {
                                self.rx.changed().await.map_err(|_| ended())?;
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    let file = self.file.clone().expect("opened above");
                    let want = (on_disk - self.pos).min(READ_CHUNK);
                    let chunk = read_at(file, self.pos, want as usize).await?;
                    return Ok(Some(self.sent(chunk, p.source)));
                }
            }
            if complete {
                // A stream opened before the size was known ends with the blob.
                if self.end == u64::MAX && p.size.is_some_and(|size| self.pos >= size) {
                    return Ok(None);
                }
                return Err(io::Error::other("range beyond the end of the blob"));
            }
            self.rx.changed().await.map_err(|_| ended())?;
        }
    }

    fn sent(&mut self, chunk: Bytes, source: Source) -> Bytes {
        self.pos += chunk.len() as u64;
        self.sent_any = true;
        self.metrics.served(source, chunk.len() as u64);
        chunk
    }
}

fn ended() -> io::Error {
    io::Error::other("download ended unexpectedly")
}
