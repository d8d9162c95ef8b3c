//! Downloading a blob from peers of the zone: providers are found in the DHT, their piece maps
//! fetched, and pieces requested from several peers at once (rarest first, a bounded number in
//! flight per peer). Every piece is checked against its hash on arrival; a peer that sends a bad
//! piece is dropped for this download and banned after repeated faults. The assembled blob is
//! checked against its OCI digest before it enters the store; if that fails, everything that
//! came from peers is thrown away and the caller fetches from a trusted source.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use rand::seq::SliceRandom;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::download::{Download, Phase, PieceView};
use super::{BlobRequest, Fetcher};
use crate::metrics::Source;
use http::Method;

use crate::oci::Digest;
use crate::p2p::{self, FetchHint, P2p, P2pError};
use crate::store::StoreError;
use crate::store::partial::{
    PartialBlob, PieceError, PieceHash, PieceMap, bitmap_has, valid_piece_size,
};

/// Piece requests in flight to one peer.
const PER_PEER: usize = 2;
/// Piece requests in flight for one download.
const IN_FLIGHT: usize = 16;
/// Bad pieces (over all downloads) after which a peer is banned.
const BAN_AFTER: u32 = 2;
/// Providers asked for their piece maps.
const MAP_QUERIES: usize = 8;
/// How often what peers hold is asked again while pieces are missing and none is on its way
/// (peers also announce new pieces on the zone's gossip topic as they get them).
const REFRESH: Duration = Duration::from_millis(500);
/// How long a peer that answered `BUSY` is left alone.
const BUSY_BACKOFF: Duration = Duration::from_millis(500);
/// How long a peer that answered `ELSEWHERE` for a piece is not asked for it again.
const ELSEWHERE_BACKOFF: Duration = Duration::from_secs(1);
/// How long one refresh of piece maps may take.
const REFRESH_DEADLINE: Duration = Duration::from_secs(2);
/// Every this many refreshes, the DHT and the zone are searched for new holders.
const LOOK_AROUND: u32 = 8;

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

#[derive(Default)]
struct Holder {
    have: Vec<u8>,
    in_flight: usize,
    /// Answered `BUSY`: not asked again before this.
    busy_until: Option<tokio::time::Instant>,
    /// Pieces it answered `ELSEWHERE` for, and until when they are taken from others.
    elsewhere: HashMap<u32, tokio::time::Instant>,
}

impl Holder {
    /// Whether piece `index` may be asked of this holder now.
    fn offers(&self, index: u32, now: tokio::time::Instant) -> bool {
        self.in_flight < PER_PEER
            && bitmap_has(&self.have, index)
            && self.busy_until.is_none_or(|t| t <= now)
            && self.elsewhere.get(&index).is_none_or(|t| *t <= now)
    }
}

/// Turns a wire map into a store map, refusing anything inconsistent.
fn parse_map(digest: &Digest, m: &p2p::PieceMap) -> Option<PieceMap> {
    // The layout is the first fetcher's (its `--piece-size` or the default); a map whose pieces
    // are tiny, huge or odd is not worth its cost.
    if m.digest != digest.to_string() || m.size == 0 || !valid_piece_size(m.piece_size) {
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

/// The zone's fetcher for a digest: the peer (this node included) with the highest rendezvous
/// hash. Every node of the zone that sees the same peers picks the same one, so the upstream is
/// asked once per zone however many nodes want the blob at once.
fn designated(peers: impl IntoIterator<Item = PeerId>, digest: &Digest) -> Option<PeerId> {
    peers.into_iter().max_by_key(|p| {
        let mut h = Sha256::new();
        h.update(p.to_bytes());
        h.update(digest.to_string().as_bytes());
        h.finalize()
    })
}

/// Who fetches `digest` from the upstream for this node: among the zone's seeds when it has
/// live ones (this node included if it is one), else among all its members; with zone peering,
/// a seed chosen so goes to the seeds of every zone instead, so the blob enters the cluster
/// once. Peers in `failed` are passed over.
pub(crate) fn choose_fetcher(
    p2p: &P2p,
    known: &[p2p::PeerInfo],
    digest: &Digest,
    failed: &HashSet<PeerId>,
) -> PeerId {
    let me = p2p.peer_id();
    let zone = p2p.zone();
    let members = || {
        known
            .iter()
            .filter(move |p| p.zone.as_deref() == Some(zone))
            .filter(|p| !failed.contains(&p.id))
    };
    let mut seeds: Vec<PeerId> = members().filter(|p| p.is_seed()).map(|p| p.id).collect();
    if p2p.is_seed() {
        seeds.push(me);
    }
    let chosen = if seeds.is_empty() {
        designated(members().map(|p| p.id).chain([me]), digest)
    } else {
        designated(seeds, digest)
    }
    .unwrap_or(me);
    if chosen == me && p2p.zone_peering() {
        let all_seeds = known
            .iter()
            .filter(|p| p.is_seed() && !failed.contains(&p.id))
            .map(|p| p.id)
            .chain([me]);
        return designated(all_seeds, digest).unwrap_or(me);
    }
    chosen
}

/// The peer that fetches the blob from the upstream for this download (`None`: this node), the
/// hint that makes it do so, and fetchers that failed (another is chosen among the rest).
struct FetcherChoice {
    peer: Option<PeerId>,
    hint: FetchHint,
    failed: HashSet<PeerId>,
}

/// What a refresh learned: the maps, and the new fetcher if one had to be chosen.
type Refreshed = (MapAnswers, Option<PeerId>);

/// What each asked peer answered.
type MapAnswers = Vec<(PeerId, Result<p2p::PieceMap, P2pError>)>;

/// Asks `peers` for their maps of `digest`, the fetcher with the hint.
async fn fetch_maps(
    p2p: &P2p,
    digest: &Digest,
    peers: &[PeerId],
    fetcher: Option<(PeerId, &FetchHint)>,
) -> MapAnswers {
    let answers = futures_util::future::join_all(peers.iter().map(|peer| {
        let hint = fetcher.filter(|(f, _)| f == peer).map(|(_, h)| h);
        p2p.piece_map(*peer, digest, hint)
    }))
    .await;
    peers.iter().copied().zip(answers).collect()
}

/// What peers told of a blob: the merged layout and each one's pieces.
struct Survey {
    layout: Option<PieceMap>,
    holders: HashMap<PeerId, Holder>,
}

impl Survey {
    /// Asks `peers` for their maps (the fetcher with the hint) and merges the answers.
    async fn ask(
        &mut self,
        p2p: &P2p,
        digest: &Digest,
        peers: &[PeerId],
        fetcher: Option<(PeerId, &FetchHint)>,
    ) {
        let answers = fetch_maps(p2p, digest, peers, fetcher).await;
        self.merge(digest, answers);
    }

    /// Merges maps that peers sent.
    fn merge(&mut self, digest: &Digest, answers: MapAnswers) {
        for (peer, answer) in &answers {
            let Some((map, have)) = answer
                .as_ref()
                .ok()
                .and_then(|m| Some((parse_map(digest, m)?, m.have.clone())))
            else {
                continue;
            };
            match &mut self.layout {
                None => self.layout = Some(map),
                // A peer whose hashes contradict what is known is not asked for pieces: its
                // honest pieces would fail the check, or the check would be the liar's.
                Some(known) if known.same_layout(&map) => {
                    if known.merge(&map).is_err() {
                        self.holders.remove(peer);
                        continue;
                    }
                }
                Some(_) => continue,
            }
            self.holders.entry(*peer).or_default().have = have;
        }
    }

    /// Takes in a peer's "have" announcement: which pieces it holds now, and the hashes of the
    /// new ones. True when hashes were learned (the partial download should take them too).
    fn learn(&mut self, peer: PeerId, have: &p2p::Have) -> bool {
        let Some(layout) = &mut self.layout else {
            return false;
        };
        if have.size != layout.size() || have.piece_size != layout.piece_size() {
            return false;
        }
        let mut learned = false;
        for h in &have.hashes {
            let Ok(hash) = PieceHash::try_from(h.hash.as_slice()) else {
                continue;
            };
            if h.index >= layout.piece_count() || !bitmap_has(&have.have, h.index) {
                continue;
            }
            match layout.set_hash(h.index, hash) {
                Ok(new) => learned |= new,
                Err(_) => {
                    // Contradicts what is known: not asked for pieces (as in `merge`).
                    self.holders.remove(&peer);
                    return learned;
                }
            }
        }
        self.holders.entry(peer).or_default().have = have.have.clone();
        learned
    }
}

impl Fetcher {
    /// Fetches the blob from peers into a partial download and completes it in the store.
    pub(super) async fn fetch_from_peers(
        &self,
        dl: &Arc<Download>,
        req: &BlobRequest,
    ) -> Result<u64, PeerMiss> {
        let p2p = self.p2p.get().ok_or(PeerMiss::NoProvider)?;
        let known = p2p.known_peers().await;
        let zone: Vec<PeerId> = known
            .iter()
            .filter(|p| p.zone.as_deref() == Some(p2p.zone()))
            .map(|p| p.id)
            .collect();
        // A file whose request carries headers for the origin (credentials) is fetched here:
        // those never leave the node.
        let private = req
            .file
            .as_ref()
            .is_some_and(|f| crate::files::private(&f.headers));
        let fetcher = if private {
            p2p.peer_id()
        } else {
            choose_fetcher(p2p, &known, &req.digest, &HashSet::new())
        };
        if zone.is_empty() && fetcher == p2p.peer_id() {
            return Err(PeerMiss::NoProvider);
        }
        let mut providers: Vec<PeerId> = p2p
            .providers(&req.digest)
            .await
            .into_iter()
            .filter(|p| zone.contains(p))
            .take(MAP_QUERIES)
            .collect();
        if providers.is_empty() {
            // Provider records spread slowly in a young swarm: ask some zone peers directly.
            let mut sample = zone.clone();
            sample.shuffle(&mut rand::rng());
            providers.extend(sample.into_iter().take(MAP_QUERIES));
        }
        tracing::debug!(digest = %req.digest, zone = zone.len(), providers = providers.len(), %fetcher, "looking for peers");
        let hint = FetchHint {
            registry: req.registry.clone(),
            repository: req.repo.clone(),
            url: req.file.as_ref().map(|f| f.urls[0].1.to_string()),
        };
        let mut survey = Survey {
            layout: None,
            holders: HashMap::new(),
        };
        if fetcher == p2p.peer_id() {
            // This node is the zone's fetcher: it waits for nobody, unless a peer already holds
            // the whole blob.
            survey.ask(p2p, &req.digest, &providers, None).await;
            let count = survey.layout.as_ref().map_or(0, PieceMap::piece_count);
            survey
                .holders
                .retain(|_, h| (0..count).all(|i| bitmap_has(&h.have, i)));
            if survey.holders.is_empty() {
                return Err(PeerMiss::NoProvider);
            }
        } else {
            if !providers.contains(&fetcher) {
                providers.push(fetcher);
            }
            survey
                .ask(p2p, &req.digest, &providers, Some((fetcher, &hint)))
                .await;
        }
        let layout = survey.layout.clone().ok_or(PeerMiss::NoProvider)?;
        tracing::info!(digest = %req.digest, peers = survey.holders.len(), %fetcher, "fetching from peers");

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
        dl.set_view(Some(PieceView {
            map: partial.map().clone(),
            have: Some(partial.bitmap()),
        }));
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
        // Peers may take pieces from this node as soon as it has some.
        p2p.provide(&req.digest).await;

        let choice = FetcherChoice {
            peer: (fetcher != p2p.peer_id()).then_some(fetcher),
            hint,
            failed: HashSet::new(),
        };
        match self.fetch_pieces(p2p, dl, &partial, survey, choice).await {
            Ok(()) => {}
            // Keep what the peers gave; only the rest comes from the upstream.
            Err(PeerMiss::Exhausted) => self.missing_from_upstream(dl, req, &partial).await?,
            Err(e) => return Err(e),
        }

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
                dl.set_view(None);
                Err(PeerMiss::BadContent)
            }
            Err(e) => Err(PeerMiss::Store(e.to_string())),
        }
    }

    /// Requests missing pieces until all are verified, refreshing what peers hold while they
    /// are still downloading themselves; gives up when nothing arrives for [`STALL`].
    async fn fetch_pieces(
        &self,
        p2p: &P2p,
        dl: &Download,
        partial: &Arc<Mutex<PartialBlob>>,
        mut survey: Survey,
        mut choice: FetcherChoice,
    ) -> Result<(), PeerMiss> {
        let digest = dl.digest.clone();
        let mut missing: Vec<u32> = partial.lock().unwrap().missing();
        let mut in_flight: HashSet<u32> = HashSet::new();
        let mut tasks: JoinSet<(PeerId, u32, Result<bytes::Bytes, P2pError>)> = JoinSet::new();
        let mut last_progress = tokio::time::Instant::now();
        let mut ticks = 0u32;
        let mut refreshing: Option<tokio::task::JoinHandle<Refreshed>> = None;
        // The fetcher failed: choose another at the next refresh.
        let mut redesignate = false;
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut haves = p2p.subscribe_haves();
        let wire_digest = digest.to_string();
        while !missing.is_empty() {
            self.schedule(p2p, dl, &missing, &mut in_flight, &mut survey, &mut tasks);
            let done = tokio::select! {
                // Pieces that arrived are taken first, before the stall deadline is looked at.
                biased;
                Some(done) = tasks.join_next() => done.expect("piece task does not panic"),
                // A refresh runs beside the piece requests, so a slow peer's map does not hold
                // up the pieces that arrive meanwhile.
                Some((answers, chosen)) = async {
                    match &mut refreshing {
                        Some(task) => Some(task.await.unwrap_or_default()),
                        None => std::future::pending().await,
                    }
                } => {
                    refreshing = None;
                    if let Some(chosen) = chosen {
                        if chosen == p2p.peer_id() {
                            // This node is next in line: the rest comes from the upstream.
                            tracing::info!(%digest, "the fetcher failed; fetching the rest");
                            return Err(PeerMiss::Exhausted);
                        }
                        tracing::info!(%digest, fetcher = %chosen, "the fetcher failed; another takes over");
                        choice.peer = Some(chosen);
                    }
                    if let Some(f) = choice.peer
                        && answers.iter().any(|(p, a)| *p == f && matches!(a, Err(P2pError::Peer { .. })))
                    {
                        choice.failed.insert(f);
                        redesignate = true;
                    }
                    survey.merge(&digest, answers);
                    if let Some(layout) = &survey.layout {
                        let learned = partial.lock().unwrap().merge_map(layout).is_ok();
                        if !learned {
                            return Err(PeerMiss::Exhausted);
                        }
                    }
                    continue;
                }
                have = haves.recv() => {
                    match have {
                        Ok((peer, have)) if have.digest == wire_digest && !self.is_faulty(&peer) => {
                            tracing::debug!(%peer, hashes = have.hashes.len(), "have announced");
                            if survey.learn(peer, &have)
                                && let Some(layout) = &survey.layout
                                && partial.lock().unwrap().merge_map(layout).is_err()
                            {
                                return Err(PeerMiss::Exhausted);
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            return Err(PeerMiss::Exhausted);
                        }
                    }
                    continue;
                }
                _ = refresh.tick() => {
                    if last_progress.elapsed() > self.stall {
                        tracing::warn!(%digest, missing = missing.len(), "peers stalled");
                        return Err(PeerMiss::Exhausted);
                    }
                    // Pieces nobody is asked for: learn what peers have gained since, and
                    // now and then look for new holders too.
                    if refreshing.is_none() && missing.iter().any(|i| !in_flight.contains(i)) {
                        ticks += 1;
                        tracing::debug!(missing = missing.len(), "refreshing piece maps");
                        let mut peers: Vec<PeerId> = survey.holders.keys().copied().collect();
                        peers.retain(|p| !self.is_faulty(p));
                        let look_around = ticks % LOOK_AROUND == 1;
                        let (p2p, digest) = (p2p.clone(), digest.clone());
                        let mut fetcher = choice.peer;
                        let hint = choice.hint.clone();
                        let failed = std::mem::take(&mut redesignate).then(|| choice.failed.clone());
                        let faulty: HashSet<PeerId> =
                            self.peer_faults.lock().unwrap().iter()
                                .filter(|(_, n)| **n >= BAN_AFTER)
                                .map(|(p, _)| *p)
                                .collect();
                        refreshing = Some(tokio::spawn(async move {
                            let mut chosen = None;
                            if let Some(failed) = failed {
                                let known = p2p.known_peers().await;
                                let next = choose_fetcher(&p2p, &known, &digest, &failed);
                                chosen = Some(next);
                                fetcher = (next != p2p.peer_id()).then_some(next);
                            }
                            peers.extend(fetcher);
                            if look_around {
                                let zone = p2p.zone_peers().await;
                                let found = tokio::time::timeout(REFRESH_DEADLINE, p2p.providers(&digest))
                                    .await
                                    .unwrap_or_default();
                                peers.extend(found.into_iter().filter(|p| zone.contains(p)));
                                let mut sample = zone;
                                sample.shuffle(&mut rand::rng());
                                peers.extend(sample.into_iter().take(MAP_QUERIES));
                            }
                            peers.retain(|p| !faulty.contains(p));
                            peers.sort();
                            peers.dedup();
                            let hint = fetcher.map(|f| (f, &hint));
                            let answers = tokio::time::timeout(
                                REFRESH_DEADLINE,
                                fetch_maps(&p2p, &digest, &peers, hint),
                            )
                            .await
                            .unwrap_or_default();
                            (answers, chosen)
                        }));
                    }
                    continue;
                }
            };
            let (peer, index, result) = done;
            in_flight.remove(&index);
            if let Some(h) = survey.holders.get_mut(&peer) {
                h.in_flight = h.in_flight.saturating_sub(1);
            }
            let data = match result {
                Ok(data) => data,
                Err(P2pError::Refused {
                    code: p2p::ErrorCode::Busy,
                    ..
                }) => {
                    if let Some(h) = survey.holders.get_mut(&peer) {
                        h.busy_until = Some(tokio::time::Instant::now() + BUSY_BACKOFF);
                    }
                    continue;
                }
                Err(P2pError::Refused {
                    code: p2p::ErrorCode::Elsewhere,
                    ..
                }) => {
                    if let Some(h) = survey.holders.get_mut(&peer) {
                        h.elsewhere
                            .insert(index, tokio::time::Instant::now() + ELSEWHERE_BACKOFF);
                    }
                    continue;
                }
                Err(e) => {
                    // Dead, slow or refusing: not asked again in this download.
                    tracing::info!(%peer, error = %e, "dropping peer from this download");
                    survey.holders.remove(&peer);
                    if choice.peer == Some(peer) && matches!(e, P2pError::Peer { .. }) {
                        choice.failed.insert(peer);
                        redesignate = true;
                    }
                    continue;
                }
            };
            self.metrics.p2p_received_bytes.inc_by(data.len() as u64);
            dl.count(Source::Peer, data.len() as u64);
            let writing = partial.clone();
            let written = blocking(move || {
                let mut p = writing.lock().unwrap();
                p.write_piece(index, &data)
                    .map(|()| (p.contiguous_verified(), p.bitmap()))
            })
            .await;
            match written {
                Ok((contiguous, bits)) => {
                    tracing::debug!(%peer, index, "piece verified");
                    last_progress = tokio::time::Instant::now();
                    missing.retain(|&i| i != index);
                    dl.update_view(|v| v.have = Some(bits));
                    dl.update(|p| {
                        p.written = contiguous;
                        p.on_disk = contiguous;
                    });
                }
                Err(e) if e.blames_sender() => {
                    self.metrics.piece_verify_failures.inc();
                    tracing::warn!(%peer, index, error = %e, "peer sent a bad piece");
                    survey.holders.remove(&peer);
                    if self.fault(&peer) {
                        self.metrics.peer_bans.inc();
                        p2p.ban(peer).await;
                    }
                }
                Err(PieceError::Store(e)) => return Err(PeerMiss::Store(e.to_string())),
                Err(e) => {
                    tracing::warn!(%peer, index, error = %e, "piece not usable");
                    survey.holders.remove(&peer);
                }
            }
        }
        Ok(())
    }

    /// Starts requests for missing pieces: rarest first, at most [`PER_PEER`] per peer and
    /// [`IN_FLIGHT`] in all.
    fn schedule(
        &self,
        p2p: &P2p,
        dl: &Download,
        missing: &[u32],
        in_flight: &mut HashSet<u32>,
        survey: &mut Survey,
        tasks: &mut JoinSet<(PeerId, u32, Result<bytes::Bytes, P2pError>)>,
    ) {
        let digest = &dl.digest;
        let layout = survey.layout.as_ref();
        let now = tokio::time::Instant::now();
        let holders = &mut survey.holders;
        let mut candidates: Vec<(usize, u32)> = missing
            .iter()
            .filter(|i| !in_flight.contains(i))
            // A piece can be taken only once its hash is known (announcements may come first).
            .filter(|&&i| layout.is_some_and(|l| l.hash(i).is_some()))
            .map(|&i| {
                (
                    holders.values().filter(|h| bitmap_has(&h.have, i)).count(),
                    i,
                )
            })
            .filter(|(n, _)| *n > 0)
            .collect();
        // How many of the pieces this node still needs only each holder has: a piece is taken
        // from the holder with the fewest, so the upload of a peer that alone has many (the
        // zone's fetcher, a seed) goes to pieces nobody else can give.
        let mut unique: HashMap<PeerId, usize> = HashMap::new();
        for &(n, i) in &candidates {
            if n == 1
                && let Some((peer, _)) = holders.iter().find(|(_, h)| bitmap_has(&h.have, i))
            {
                *unique.entry(*peer).or_default() += 1;
            }
        }
        // Rarest first; among equally rare pieces, a random order, so that nodes do not all ask
        // their sources for the same pieces and then have nothing to give each other.
        candidates.shuffle(&mut rand::rng());
        candidates.sort_by_key(|(n, _)| *n);
        for (_, index) in candidates {
            if in_flight.len() >= IN_FLIGHT {
                break;
            }
            let Some((peer, holder)) = holders
                .iter_mut()
                .filter(|(_, h)| h.offers(index, now))
                .min_by_key(|(p, h)| (unique.get(*p).copied().unwrap_or(0), h.in_flight))
            else {
                continue;
            };
            holder.in_flight += 1;
            in_flight.insert(index);
            let (p2p, peer, digest) = (p2p.clone(), *peer, digest.clone());
            let bucket = self.download_limit.clone();
            let meter = dl.meter_handle();
            let len = survey_len(layout, index);
            tasks.spawn(async move {
                if let Some(b) = bucket {
                    b.take(len).await;
                }
                if let Some(m) = meter {
                    m.take(len).await;
                }
                (peer, index, p2p.piece(peer, &digest, index).await)
            });
        }
    }

    /// Fetches the pieces still missing from the upstream chain, one run of consecutive
    /// pieces at a time (`Range: bytes=N-`, read up to the run's end), into the partial
    /// download. Readers keep streaming: nothing verified is thrown away.
    async fn missing_from_upstream(
        &self,
        dl: &Download,
        req: &BlobRequest,
        partial: &Arc<Mutex<PartialBlob>>,
    ) -> Result<(), PeerMiss> {
        let (missing, map) = {
            let p = partial.lock().unwrap();
            (p.missing(), p.map().clone())
        };
        tracing::info!(digest = %req.digest, pieces = missing.len(), "peers ran out; fetching the missing pieces from the upstream");
        dl.update(|p| p.source = Source::Upstream);
        for (first, last) in runs(&missing) {
            let mut next = first;
            for (source, hop) in self.hops(req) {
                if next > last {
                    break;
                }
                let start = map.piece_range(next).start;
                let Ok(mut resp) = self.send_hop(req, &hop, Method::GET, Some(start)).await else {
                    continue;
                };
                self.metrics.upstream("blob", resp.status().as_str());
                if !resp.status().is_success() {
                    continue;
                }
                let Some((body_start, _)) = super::blob::body_extent(&resp) else {
                    continue;
                };
                let mut skip = start.saturating_sub(body_start);
                if body_start > start {
                    continue;
                }
                let mut buf = bytes::BytesMut::new();
                while next <= last {
                    let chunk = match resp.chunk().await {
                        Ok(Some(c)) => c,
                        _ => break,
                    };
                    self.download_budget(dl.meter(), chunk.len() as u64).await;
                    dl.count(source, chunk.len() as u64);
                    let chunk = if skip > 0 {
                        let n = skip.min(chunk.len() as u64) as usize;
                        skip -= n as u64;
                        chunk.slice(n..)
                    } else {
                        chunk
                    };
                    buf.extend_from_slice(&chunk);
                    while next <= last && buf.len() >= map.piece_len(next) as usize {
                        let data = buf.split_to(map.piece_len(next) as usize).freeze();
                        self.put_trusted(dl, partial, next, data).await?;
                        next += 1;
                    }
                }
            }
            if next <= last {
                return Err(PeerMiss::Exhausted);
            }
        }
        Ok(())
    }

    /// Writes a piece that came from the upstream (its hash is made from its bytes).
    async fn put_trusted(
        &self,
        dl: &Download,
        partial: &Arc<Mutex<PartialBlob>>,
        index: u32,
        data: bytes::Bytes,
    ) -> Result<(), PeerMiss> {
        let writing = partial.clone();
        let (contiguous, bits) = blocking(move || {
            let mut p = writing.lock().unwrap();
            p.write_trusted_piece(index, &data)
                .map(|()| (p.contiguous_verified(), p.bitmap()))
        })
        .await
        .map_err(|e| PeerMiss::Store(e.to_string()))?;
        dl.update_view(|v| v.have = Some(bits));
        dl.update(|p| {
            p.written = contiguous;
            p.on_disk = contiguous;
        });
        Ok(())
    }

    /// Records a bad piece from `peer`; true when it has now earned a ban.
    fn fault(&self, peer: &PeerId) -> bool {
        let mut faults = self.peer_faults.lock().unwrap();
        let n = faults.entry(*peer).or_default();
        *n += 1;
        *n >= BAN_AFTER
    }

    fn is_faulty(&self, peer: &PeerId) -> bool {
        self.peer_faults
            .lock()
            .unwrap()
            .get(peer)
            .is_some_and(|n| *n >= BAN_AFTER)
    }
}

/// Consecutive runs in a sorted list of piece indices, as (first, last).
fn runs(indices: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &i in indices {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// The length of piece `index` (for the download budget; a piece size if the layout is unknown).
fn survey_len(layout: Option<&PieceMap>, index: u32) -> u64 {
    layout.map_or(
        u64::from(crate::store::partial::MIN_DEFAULT_PIECE_SIZE),
        |m| u64::from(m.piece_len(index)),
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking store work does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_missing_pieces() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[3]), vec![(3, 3)]);
        assert_eq!(runs(&[0, 1, 2, 5, 6, 9]), vec![(0, 2), (5, 6), (9, 9)]);
    }

    fn have(map: &PieceMap, held: &[u32], hashes: &[(u32, PieceHash)]) -> p2p::Have {
        let mut bits = vec![0u8; (map.piece_count() as usize).div_ceil(8)];
        for &i in held {
            bits[i as usize / 8] |= 1 << (i % 8);
        }
        p2p::Have {
            digest: map.digest().to_string(),
            size: map.size(),
            piece_size: map.piece_size(),
            have: bits,
            complete: false,
            hashes: hashes
                .iter()
                .map(|(index, h)| p2p::PieceHash {
                    index: *index,
                    hash: h.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn announcements_teach_holders_and_hashes() {
        let data: Vec<u8> = (0..40u32).map(|i| i as u8).collect();
        let digest = Digest::sha256_of(&data);
        let full = PieceMap::from_data(digest.clone(), &data, 10).unwrap();
        let hash = |i| full.hash(i).unwrap();
        let mut survey = Survey {
            layout: Some(PieceMap::new(digest.clone(), 40, 10).unwrap()),
            holders: HashMap::new(),
        };
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());

        // a holds pieces 0 and 2 and says their hashes.
        assert!(survey.learn(a, &have(&full, &[0, 2], &[(0, hash(0)), (2, hash(2))])));
        let layout = survey.layout.as_ref().unwrap();
        assert_eq!(layout.hash(0), Some(hash(0)));
        assert_eq!(layout.hash(1), None);
        assert!(bitmap_has(&survey.holders[&a].have, 2));
        // A hash for a piece the announcer does not hold is not taken.
        assert!(!survey.learn(b, &have(&full, &[], &[(1, hash(1))])));
        assert_eq!(survey.layout.as_ref().unwrap().hash(1), None);
        // Nothing new: known hashes are not news, but the holder is recorded.
        assert!(!survey.learn(b, &have(&full, &[0], &[(0, hash(0))])));
        assert!(survey.holders.contains_key(&b));
        // A contradicting hash drops the announcer.
        assert!(!survey.learn(b, &have(&full, &[2], &[(2, hash(3))])));
        assert!(!survey.holders.contains_key(&b));
        assert_eq!(survey.layout.as_ref().unwrap().hash(2), Some(hash(2)));
        // Another layout is ignored.
        let other = PieceMap::from_data(digest, &data, 20).unwrap();
        assert!(!survey.learn(c, &have(&other, &[0], &[(0, other.hash(0).unwrap())])));
        assert!(!survey.holders.contains_key(&c));
    }
}
