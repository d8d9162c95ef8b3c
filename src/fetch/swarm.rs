//! Downloading a blob from peers of the zone: providers are found in the DHT, their piece maps
//! fetched, and pieces requested from several peers at once (rarest first, a bounded number in
//! flight per peer). Every piece is checked against its hash on arrival; a peer that sends a bad
//! piece is dropped for this download and banned after repeated faults. The assembled blob is
//! checked against its OCI digest before it enters the store; if that fails, everything that
//! came from peers is thrown away and the caller fetches from a trusted source.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::task::JoinSet;

use super::download::{Download, Phase};
use super::{BlobRequest, Fetcher};
use crate::metrics::Source;
use crate::p2p::{self, P2p, P2pError};
use crate::store::StoreError;
use crate::store::partial::{PartialBlob, PieceError, PieceHash, PieceMap, bitmap_has};

/// Piece requests in flight to one peer.
const PER_PEER: usize = 2;
/// Piece requests in flight for one download.
const IN_FLIGHT: usize = 16;
/// Bad pieces after which a peer is banned.
const BAN_AFTER: u32 = 2;
/// Providers asked for their piece maps.
const MAP_QUERIES: usize = 8;

/// Why the peers could not deliver (the caller then tries the upstream chain).
#[derive(Debug)]
pub(super) enum PeerMiss {
    /// No peer of the zone holds the blob.
    NoProvider,
    /// Peers ran out before every piece arrived.
    Exhausted,
    /// The assembled blob did not match its digest.
    BadContent,
    /// The local store failed.
    Store(#[allow(dead_code)] String),
}

struct Holder {
    have: Vec<u8>,
    in_flight: usize,
}

/// Turns a wire map into a store map, refusing anything inconsistent.
fn parse_map(digest: &crate::oci::Digest, m: &p2p::PieceMap) -> Option<PieceMap> {
    if m.digest != digest.to_string() {
        return None;
    }
    let hashes = m
        .hashes
        .iter()
        .map(|h| match h.len() {
            0 => Some(None),
            32 => Some(Some(PieceHash::try_from(h.as_slice()).ok()?)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    PieceMap::from_parts(digest.clone(), m.size, m.piece_size, hashes).ok()
}

impl Fetcher {
    /// Fetches the blob from peers into a partial download and completes it in the store.
    pub(super) async fn fetch_from_peers(
        &self,
        dl: &Arc<Download>,
        req: &BlobRequest,
    ) -> Result<u64, PeerMiss> {
        let p2p = self.p2p.get().ok_or(PeerMiss::NoProvider)?;
        let zone: HashSet<PeerId> = p2p.zone_peers().await.into_iter().collect();
        if zone.is_empty() {
            return Err(PeerMiss::NoProvider);
        }
        let providers: Vec<PeerId> = p2p
            .providers(&req.digest)
            .await
            .into_iter()
            .filter(|p| zone.contains(p))
            .take(MAP_QUERIES)
            .collect();
        let mut holders: HashMap<PeerId, Holder> = HashMap::new();
        let mut layout: Option<PieceMap> = None;
        let answers = futures_util::future::join_all(
            providers
                .iter()
                .map(|peer| p2p.piece_map(*peer, &req.digest)),
        )
        .await;
        for (peer, answer) in providers.iter().zip(answers) {
            let Some(map) = answer.ok().and_then(|m| {
                let parsed = parse_map(&req.digest, &m)?;
                Some((parsed, m.have))
            }) else {
                continue;
            };
            let (map, have) = map;
            match &mut layout {
                None => layout = Some(map),
                Some(known) if known.same_layout(&map) => {
                    let _ = known.merge(&map);
                }
                Some(_) => continue,
            }
            holders.insert(*peer, Holder { have, in_flight: 0 });
        }
        let layout = layout.ok_or(PeerMiss::NoProvider)?;
        tracing::info!(digest = %req.digest, peers = holders.len(), "fetching from peers");

        let store = self.store.clone();
        let (digest, size, piece_size) = (req.digest.clone(), layout.size(), layout.piece_size());
        let partial = blocking(move || {
            let mut partial = store.partial(&digest, size, piece_size)?;
            partial.merge_map(&layout)?;
            Ok::<_, PieceError>(partial)
        })
        .await
        .map_err(|e| PeerMiss::Store(e.to_string()))?;
        let data_path = partial.data_path().to_owned();
        let contiguous = partial.contiguous_verified();
        let partial = Arc::new(Mutex::new(partial));
        dl.update(|p| {
            p.generation += 1;
            p.size = Some(size);
            p.source = Source::Peer;
            p.phase = Phase::Streaming;
            p.temp = data_path.as_path().into();
            p.written = contiguous;
            p.on_disk = contiguous;
        });

        self.fetch_pieces(p2p, dl, &partial, holders).await?;

        // Every piece task has ended, so this is the last reference.
        let partial = Arc::try_unwrap(partial)
            .map_err(|_| PeerMiss::Store("partial download still shared".into()))?
            .into_inner()
            .expect("no piece task panicked holding the lock");
        let finished = blocking(move || {
            let map = partial.map().clone();
            partial.finish().map(|size| (size, map))
        })
        .await;
        match finished {
            Ok((size, map)) => {
                dl.update(|p| p.verified = true);
                if let Err(e) = self.store.put_piece_map(&map) {
                    tracing::warn!(error = %e, "cannot keep the piece map");
                }
                Ok(size)
            }
            Err(StoreError::DigestMismatch { actual, .. }) => {
                self.metrics
                    .blob_verify_failures
                    .with_label_values(&[Source::Peer.label()])
                    .inc();
                tracing::warn!(digest = %req.digest, %actual, "blob assembled from peers does not match its digest; discarded");
                Err(PeerMiss::BadContent)
            }
            Err(e) => Err(PeerMiss::Store(e.to_string())),
        }
    }

    /// Requests missing pieces until all are verified or no holder is left.
    async fn fetch_pieces(
        &self,
        p2p: &P2p,
        dl: &Download,
        partial: &Arc<Mutex<PartialBlob>>,
        mut holders: HashMap<PeerId, Holder>,
    ) -> Result<(), PeerMiss> {
        let digest = dl.digest.clone();
        let mut missing: Vec<u32> = partial.lock().unwrap().missing();
        let mut in_flight: HashSet<u32> = HashSet::new();
        let mut faults: HashMap<PeerId, u32> = HashMap::new();
        let mut tasks: JoinSet<(PeerId, u32, Result<bytes::Bytes, P2pError>)> = JoinSet::new();
        loop {
            // Rarest first: pieces held by the fewest peers go out first.
            let mut candidates: Vec<(usize, u32)> = missing
                .iter()
                .filter(|i| !in_flight.contains(i))
                .map(|&i| {
                    let n = holders.values().filter(|h| bitmap_has(&h.have, i)).count();
                    (n, i)
                })
                .filter(|(n, _)| *n > 0)
                .collect();
            candidates.sort_unstable();
            for (_, index) in candidates {
                if in_flight.len() >= IN_FLIGHT {
                    break;
                }
                let Some((peer, holder)) = holders
                    .iter_mut()
                    .filter(|(_, h)| h.in_flight < PER_PEER && bitmap_has(&h.have, index))
                    .min_by_key(|(_, h)| h.in_flight)
                else {
                    continue;
                };
                holder.in_flight += 1;
                in_flight.insert(index);
                let (p2p, peer, digest) = (p2p.clone(), *peer, digest.clone());
                tasks.spawn(async move { (peer, index, p2p.piece(peer, &digest, index).await) });
            }
            let Some(done) = tasks.join_next().await else {
                return if missing.is_empty() {
                    Ok(())
                } else {
                    Err(PeerMiss::Exhausted)
                };
            };
            let (peer, index, result) = done.expect("piece task does not panic");
            in_flight.remove(&index);
            if let Some(h) = holders.get_mut(&peer) {
                h.in_flight -= 1;
            }
            let data = match result {
                Ok(data) => data,
                Err(e) => {
                    // Dead, slow or refusing: not asked again in this download.
                    tracing::info!(%peer, error = %e, "dropping peer from this download");
                    holders.remove(&peer);
                    continue;
                }
            };
            self.metrics.p2p_received_bytes.inc_by(data.len() as u64);
            let writing = partial.clone();
            let written = blocking(move || {
                let mut p = writing.lock().unwrap();
                p.write_piece(index, &data)
                    .map(|()| p.contiguous_verified())
            })
            .await;
            match written {
                Ok(contiguous) => {
                    missing.retain(|&i| i != index);
                    dl.update(|p| {
                        p.written = contiguous;
                        p.on_disk = contiguous;
                    });
                }
                Err(e) if e.blames_sender() => {
                    self.metrics.piece_verify_failures.inc();
                    let n = faults.entry(peer).or_default();
                    *n += 1;
                    tracing::warn!(%peer, index, error = %e, "peer sent a bad piece");
                    holders.remove(&peer);
                    if *n >= BAN_AFTER {
                        self.metrics.peer_bans.inc();
                        p2p.ban(peer).await;
                    }
                }
                Err(PieceError::Store(e)) => return Err(PeerMiss::Store(e.to_string())),
                Err(e) => {
                    tracing::warn!(%peer, index, error = %e, "piece not usable");
                    holders.remove(&peer);
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking store work does not panic")
}
