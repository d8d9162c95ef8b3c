//! The node's side of the piece protocol: piece maps and pieces of complete blobs, answered
//! from the store. A complete blob's piece map is computed while it is downloaded (or, for a
//! blob stored without one, from the file on first request) and kept beside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use std::time::Duration;

use super::download::Phase;
use super::{Blob, BlobRequest, Fetcher};
use crate::oci::Digest;
use crate::p2p::{self, ErrorCode, Outgoing, PeerId, PieceService};
use crate::store::partial::{PieceHasher, PieceMap};
use crate::store::read::{READ_CHUNK, read_path};

/// Serves peers from a node's store. Holds the engine weakly, so that the swarm task does not
/// keep it alive.
pub struct StorePieces {
    fetcher: Weak<Fetcher>,
    sends: Arc<RecentSends>,
}

impl StorePieces {
    /// Serves pieces for `fetcher`.
    pub fn new(fetcher: &Arc<Fetcher>) -> Arc<StorePieces> {
        Arc::new(StorePieces {
            fetcher: Arc::downgrade(fetcher),
            sends: Arc::default(),
        })
    }
}

/// How long after sending a piece to one peer this node sends others elsewhere for it (while
/// its upload is busy).
const SPREAD_WINDOW: Duration = Duration::from_secs(10);
/// Sends remembered before old ones are forgotten.
const MAX_SENDS: usize = 8192;

/// Which peer each piece went to last, and when. A node's upload is the scarce resource of a
/// swarm: when every peer asks the one node that has a fresh piece, it would send that piece N
/// times while it has nothing else to give. Instead it sends it to the first asker and, while
/// busy, tells the others to take it from a peer that has it by now (`ELSEWHERE`), so that
/// each node uploads different pieces and the swarm's whole upload capacity is used (what
/// BitTorrent calls super-seeding).
#[derive(Default)]
struct RecentSends(Mutex<HashMap<(Digest, u32), (PeerId, tokio::time::Instant)>>);

impl RecentSends {
    /// The peer that got this piece moments ago, while this node's upload is busy: `from`
    /// should take it from there. Otherwise `None`, and the send to `from` is recorded.
    fn elsewhere(&self, from: PeerId, digest: &Digest, index: u32, busy: bool) -> Option<PeerId> {
        let now = tokio::time::Instant::now();
        if let Some((to, at)) = self.0.lock().unwrap().get(&(digest.clone(), index))
            && *to != from
            && now.duration_since(*at) < SPREAD_WINDOW
            && busy
        {
            return Some(*to);
        }
        self.record(from, digest, index);
        None
    }

    /// Records that the piece goes to `from` now.
    fn record(&self, from: PeerId, digest: &Digest, index: u32) {
        let now = tokio::time::Instant::now();
        let mut sent = self.0.lock().unwrap();
        if sent.len() >= MAX_SENDS {
            sent.retain(|_, (_, at)| now.duration_since(*at) < SPREAD_WINDOW);
        }
        sent.insert((digest.clone(), index), (from, now));
    }
}

/// A bitmap with the first `count` bits set.
pub fn all_bits(count: u32) -> Vec<u8> {
    let mut bits = vec![0u8; (count as usize).div_ceil(8)];
    for i in 0..count {
        bits[i as usize / 8] |= 1 << (i % 8);
    }
    bits
}

/// The wire form of a map and the pieces held.
pub fn wire_map(map: &PieceMap, have: Vec<u8>) -> p2p::PieceMap {
    p2p::PieceMap {
        digest: map.digest().to_string(),
        size: map.size(),
        piece_size: map.piece_size(),
        hashes: map
            .hashes()
            .iter()
            .map(|h| h.map(|h| h.to_vec()).unwrap_or_default())
            .collect(),
        have,
    }
}

/// The piece map of a complete blob: the stored one, or computed from the file and stored.
pub(super) fn complete_map(fetcher: &Fetcher, digest: &Digest) -> Option<PieceMap> {
    let store = fetcher.store();
    if let Some(map) = store.piece_map(digest) {
        return Some(map);
    }
    let size = store.blob_size(digest)?;
    let mut hasher = PieceHasher::new(size, fetcher.piece_size_for(size)).ok()?;
    let path = store.blob_path(digest);
    let file = std::fs::File::open(&path).ok()?;
    let mut offset = 0;
    let mut buf = vec![0u8; READ_CHUNK as usize];
    while offset < size {
        let n = ((size - offset) as usize).min(buf.len());
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..n], offset).ok()?;
        hasher.update(&buf[..n], |_, _| {}).ok()?;
        offset += n as u64;
    }
    let map = hasher.finish(digest.clone()).ok()?;
    if let Err(e) = store.put_piece_map(&map) {
        tracing::warn!(%digest, error = %e, "cannot keep the piece map");
    }
    Some(map)
}

/// How long a peer that named this node the fetcher waits for the blob's size.
const HINT_WAIT: Duration = Duration::from_secs(8);

async fn complete_wire_map(fetcher: Arc<Fetcher>, digest: Digest) -> Option<p2p::PieceMap> {
    tokio::task::spawn_blocking(move || {
        complete_map(&fetcher, &digest).map(|m| {
            let all = all_bits(m.piece_count());
            wire_map(&m, all)
        })
    })
    .await
    .ok()
    .flatten()
}

impl PieceService for StorePieces {
    fn file_lookup(
        &self,
        id: String,
        url: Option<String>,
    ) -> BoxFuture<'static, Option<p2p::FileAnswer>> {
        let files = self.fetcher.upgrade().and_then(|f| f.files());
        async move { files?.lookup(&id, url) }.boxed()
    }

    fn piece_map(
        &self,
        digest: Digest,
        hint: Option<p2p::FetchHint>,
    ) -> BoxFuture<'static, Option<p2p::PieceMap>> {
        let fetcher = self.fetcher.clone();
        async move {
            let fetcher = fetcher.upgrade()?;
            let waits = hint.is_some();
            let held = match fetcher.peek_blob(&digest) {
                Some(b) => b,
                // Named the zone's fetcher for this blob: fetch it as if a client had asked.
                None => {
                    let hint = hint?;
                    let file = match &hint.url {
                        Some(url) => Some(Arc::new(super::FileOrigin {
                            urls: vec![(
                                crate::metrics::Source::Upstream,
                                crate::files::parse_url(url).ok()?,
                            )],
                            headers: http::HeaderMap::new(),
                        })),
                        None => None,
                    };
                    if file.is_some() {
                        // Fetched as a file for the zone: the file endpoint may serve it.
                        fetcher.store().mark_file(&digest).ok()?;
                    }
                    let req = BlobRequest {
                        registry: hint.registry,
                        repo: hint.repository,
                        digest: digest.clone(),
                        credentials: None,
                        file,
                        meter: None,
                    };
                    let blob = fetcher.blob(&req).ok()?;
                    if let Blob::Downloading {
                        download,
                        leader: true,
                    } = &blob
                    {
                        download.mark_for_peers();
                    }
                    blob
                }
            };
            let download = match held {
                Blob::Stored { .. } => return complete_wire_map(fetcher, digest).await,
                Blob::Downloading { download, .. } => download,
            };
            if !waits {
                // Only the zone's fetcher is waited for; anyone else answers with what it has,
                // so that two nodes still looking for sources never wait on each other.
                let progress = download.progress();
                let view = download.view()?;
                return Some(wire_map(&view.map, view.have_bits(progress.on_disk)));
            }
            let deadline = tokio::time::Instant::now() + HINT_WAIT;
            tokio::time::timeout_at(deadline, download.ready())
                .await
                .ok()?
                .ok()?;
            loop {
                let progress = download.progress();
                if matches!(progress.phase, Phase::Complete) {
                    return complete_wire_map(fetcher, digest).await;
                }
                if let Some(view) = download.view() {
                    return Some(wire_map(&view.map, view.have_bits(progress.on_disk)));
                }
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .boxed()
    }

    fn piece(
        &self,
        from: PeerId,
        digest: Digest,
        index: u32,
    ) -> BoxFuture<'static, Result<Outgoing, ErrorCode>> {
        let (fetcher, sends) = (self.fetcher.clone(), self.sends.clone());
        async move {
            let fetcher = fetcher.upgrade().ok_or(ErrorCode::NotFound)?;
            let busy = fetcher.uploads_in_progress() > 0;
            if let Some(to) = sends.elsewhere(from, &digest, index, busy) {
                // Only while that peer is still there to give it, to a peer of its own zone.
                let alive = match fetcher.p2p() {
                    Some(p2p) => {
                        let peers = p2p.peers().await;
                        let zone = |id: PeerId| {
                            peers
                                .iter()
                                .find(|p| p.id == id)
                                .and_then(|p| p.zone.clone())
                        };
                        zone(to).is_some() && zone(to) == zone(from)
                    }
                    None => false,
                };
                if alive {
                    tracing::debug!(peer = %from, index, "piece sent elsewhere moments ago");
                    return Err(ErrorCode::Elsewhere);
                }
                sends.record(from, &digest, index);
            }
            // Held until the piece is on the wire.
            let permit = fetcher.upload_slot().await.ok_or(ErrorCode::Busy)?;
            let data = match fetcher.peek_blob(&digest).ok_or(ErrorCode::NotFound)? {
                Blob::Stored { .. } => {
                    let map = {
                        let (f, d) = (fetcher.clone(), digest.clone());
                        tokio::task::spawn_blocking(move || complete_map(&f, &d))
                            .await
                            .ok()
                            .flatten()
                            .ok_or(ErrorCode::NotFound)?
                    };
                    if index >= map.piece_count() {
                        return Err(ErrorCode::BadRequest);
                    }
                    let range = map.piece_range(index);
                    let path = fetcher.store().blob_path(&digest);
                    read_path(&path, range.start, (range.end - range.start) as usize)
                        .await
                        .map_err(|_| ErrorCode::NotFound)?
                }
                Blob::Downloading { download, .. } => {
                    let progress = download.progress();
                    let view = download.view().ok_or(ErrorCode::NotFound)?;
                    if !view.has(index, progress.on_disk) {
                        return Err(ErrorCode::NotFound);
                    }
                    let range = view.map.piece_range(index);
                    let len = (range.end - range.start) as usize;
                    match read_path(&progress.temp, range.start, len).await {
                        Ok(data) => data,
                        // Completed and moved into place meanwhile.
                        Err(_) => read_path(&download.final_path, range.start, len)
                            .await
                            .map_err(|_| ErrorCode::NotFound)?,
                    }
                }
            };
            fetcher.upload_budget(data.len() as u64).await;
            fetcher.metrics().p2p_sent(data.len() as u64);
            Ok(Outgoing {
                data,
                hold: Some(Box::new(permit)),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fresh_piece_goes_out_once_while_the_upload_is_busy() {
        let sends = RecentSends::default();
        let d = Digest::sha256_of(b"blob");
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(
            sends.elsewhere(a, &d, 0, false),
            None,
            "the first asker is served"
        );
        assert_eq!(
            sends.elsewhere(b, &d, 0, true),
            Some(a),
            "busy: the next is sent to a"
        );
        assert_eq!(
            sends.elsewhere(b, &d, 1, true),
            None,
            "another piece is served"
        );
        assert_eq!(
            sends.elsewhere(b, &d, 1, true),
            None,
            "the same asker again (a retry)"
        );
        assert_eq!(
            sends.elsewhere(b, &d, 0, false),
            None,
            "an idle upload serves anyway"
        );
        // Long after: the receiver may be gone, so the piece goes out again.
        tokio::time::advance(SPREAD_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(sends.elsewhere(a, &d, 0, true), None);
        let other = Digest::sha256_of(b"other");
        assert_eq!(sends.elsewhere(b, &other, 0, true), None, "per blob");
    }
}
