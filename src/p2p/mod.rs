//! The libp2p swarm. One task owns the `Swarm`; everyone else holds a cloneable [`P2p`] handle
//! that sends it commands and awaits replies on oneshot channels.
//!
//! Transport: TCP, noise (its prologue derived from the swarm key, so only members complete the
//! handshake), yamux. Behaviours: identify (which also carries the peer's zone and role), Kademlia in
//! server mode (provider records keyed by digest), gossipsub (one topic per zone for "have"
//! announcements), ping (a silent peer is disconnected within seconds), a block list (banned
//! peers), and the piece protocol `/shoal/piece/1` (messages in `proto/`).

pub mod dns;
pub mod keys;
pub mod proto;
mod swarm;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use libp2p::pnet::PreSharedKey;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::oci::Digest;
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use proto::{
    ErrorCode, FileAnswer, Have, PieceHash, PieceMap, PreheatOrder, PreheatProgress, Task, TaskKind,
};

/// How this node takes part in the swarm.
#[derive(Clone)]
pub struct P2pConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/65002`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (with or without `/p2p/ID`).
    pub bootstrap: Vec<Multiaddr>,
    /// The swarm's pre-shared key (only nodes holding it complete the handshake); without one
    /// the swarm is open to anyone who can reach it.
    pub swarm_key: Option<PreSharedKey>,
    /// Locality zone: pieces are exchanged only with peers of the same zone.
    pub zone: String,
    /// `node` or `seed`.
    pub role: String,
    /// How long a piece request may take before the peer counts as failed.
    pub request_timeout: Duration,
    /// Seeds of different zones exchange pieces (both must be seeds, and this node must
    /// allow it).
    pub zone_peering: bool,
}

/// Where a blob can be fetched from: asking a peer with this hint makes it the fetcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchHint {
    /// The registry host.
    pub registry: crate::oci::RegistryHost,
    /// The repository.
    pub repository: crate::oci::RepoName,
    /// For a file: its URL (the registry and repository are placeholders).
    pub url: Option<String>,
}

/// A piece on its way to a peer, with what the node holds until it has been sent (an upload
/// slot: a node's upload concurrency is the number of pieces on the wire, not being read).
pub struct Outgoing {
    /// The piece's bytes.
    pub data: bytes::Bytes,
    /// Dropped once the response has been sent or has failed.
    pub hold: Option<Box<dyn std::any::Any + Send>>,
}

impl From<bytes::Bytes> for Outgoing {
    fn from(data: bytes::Bytes) -> Outgoing {
        Outgoing { data, hold: None }
    }
}

/// What the swarm needs from the node to answer peers.
pub trait PieceService: Send + Sync + 'static {
    /// What this node knows of a blob, if anything. With a hint and nothing held, the node
    /// starts fetching the blob itself and answers once its size is known.
    fn piece_map(
        &self,
        digest: Digest,
        hint: Option<FetchHint>,
    ) -> BoxFuture<'static, Option<PieceMap>>;
    /// What a file identity is; with the URL, an unknown one is fetched (answered pending).
    /// The default knows no files.
    fn file_lookup(
        &self,
        _id: String,
        _url: Option<String>,
    ) -> BoxFuture<'static, Option<FileAnswer>> {
        Box::pin(async { None })
    }

    /// One verified piece, for peer `from`.
    fn piece(
        &self,
        from: PeerId,
        digest: Digest,
        index: u32,
    ) -> BoxFuture<'static, Result<Outgoing, ErrorCode>>;
}

/// Swarm failures as callers see them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum P2pError {
    /// The swarm task has stopped.
    #[error("the swarm is not running")]
    Stopped,
    /// Listening or dialing failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A peer did not answer, or its stream failed.
    #[error("peer {peer} failed: {reason}")]
    Peer {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A peer answered with a protocol error.
    #[error("peer {peer} refused: {code:?} {message}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// The protocol's code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its zone, once identify has told.
    pub zone: Option<String>,
    /// Its role, once identify has told.
    pub role: Option<String>,
}

impl PeerInfo {
    /// Whether it said it is a seed.
    pub fn is_seed(&self) -> bool {
        self.role.as_deref() == Some("seed")
    }
}

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr),
    Provide(Digest),
    StopProviding(Digest),
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
    Request(
        PeerId,
        proto::Request,
        oneshot::Sender<Result<proto::Response, P2pError>>,
    ),
    Announce(Have),
    PublishTask(Task),
    Ban(PeerId),
}

/// The handle to the swarm. Cheap to clone.
#[derive(Clone)]
pub struct P2p {
    peer_id: PeerId,
    zone: String,
    seed: bool,
    zone_peering: bool,
    commands: mpsc::Sender<Command>,
    haves: broadcast::Sender<(PeerId, Have)>,
    tasks: broadcast::Sender<(PeerId, Task)>,
}

impl P2p {
    /// Starts the swarm task: listens, dials the bootstrap peers, and serves `service`.
    ///
    /// # Errors
    /// When the transport cannot be built or a listen address cannot be bound.
    pub async fn start(
        config: P2pConfig,
        service: std::sync::Arc<dyn PieceService>,
    ) -> Result<P2p, P2pError> {
        swarm::start(config, service).await
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Whether this node is a seed.
    pub fn is_seed(&self) -> bool {
        self.seed
    }

    /// Whether this node exchanges pieces with seeds of other zones (as a seed).
    pub fn zone_peering(&self) -> bool {
        self.zone_peering && self.seed
    }

    /// Connected peers whose zone and role are known. Peers that just connected and have not
    /// said them yet are waited for briefly, so that a fresh connection is not mistaken for
    /// none.
    pub async fn known_peers(&self) -> Vec<PeerInfo> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let peers = self.peers().await;
            let unknown = peers.iter().any(|p| p.zone.is_none());
            if !unknown || tokio::time::Instant::now() >= deadline {
                return peers.into_iter().filter(|p| p.zone.is_some()).collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connected peers of this node's zone.
    pub async fn zone_members(&self) -> Vec<PeerInfo> {
        let mut peers = self.known_peers().await;
        peers.retain(|p| p.zone.as_deref() == Some(self.zone.as_str()));
        peers
    }

    /// Connected peers of this node's zone, by id.
    pub async fn zone_peers(&self) -> Vec<PeerId> {
        self.zone_members()
            .await
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Full listen addresses, each ending in `/p2p/<id>`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Connected peers.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial(addr)).await;
    }

    /// Announces in the DHT that this node holds (pieces of) `digest`; re-provided before the
    /// record expires.
    pub async fn provide(&self, digest: &Digest) {
        let _ = self.commands.send(Command::Provide(digest.clone())).await;
    }

    /// Withdraws the provider record (the blob was evicted).
    pub async fn stop_providing(&self, digest: &Digest) {
        let _ = self
            .commands
            .send(Command::StopProviding(digest.clone()))
            .await;
    }

    /// Peers that provide `digest` (this node excluded), found within the query timeout.
    pub async fn providers(&self, digest: &Digest) -> Vec<PeerId> {
        self.ask(|tx| Command::Providers(digest.clone(), tx))
            .await
            .unwrap_or_default()
    }

    /// Sends a piece-protocol request and awaits the answer.
    ///
    /// # Errors
    /// When the peer cannot be reached, times out, or its stream fails.
    pub async fn request(
        &self,
        peer: PeerId,
        req: proto::Request,
    ) -> Result<proto::Response, P2pError> {
        self.ask(|tx| Command::Request(peer, req, tx)).await?
    }

    /// Asks a peer for its piece map of `digest`.
    ///
    /// # Errors
    /// As [`P2p::request`], or the peer's refusal.
    pub async fn piece_map(
        &self,
        peer: PeerId,
        digest: &Digest,
        hint: Option<&FetchHint>,
    ) -> Result<PieceMap, P2pError> {
        let req = proto::Request {
            kind: Some(proto::RequestKind::Map(proto::PieceMapRequest {
                digest: digest.to_string(),
                registry: hint.map(|h| h.registry.to_string()).unwrap_or_default(),
                repository: hint.map(|h| h.repository.to_string()).unwrap_or_default(),
                url: hint.and_then(|h| h.url.clone()).unwrap_or_default(),
            })),
        };
        match self.request(peer, req).await?.kind {
            Some(proto::ResponseKind::Map(m)) => Ok(m),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Asks a peer what a file identity is (with the URL, it fetches an unknown one).
    ///
    /// # Errors
    /// As [`P2p::request`], or the peer's refusal.
    pub async fn file_lookup(
        &self,
        peer: PeerId,
        id: &str,
        url: &str,
    ) -> Result<FileAnswer, P2pError> {
        let req = proto::Request {
            kind: Some(proto::RequestKind::File(proto::FileLookup {
                id: id.into(),
                url: url.into(),
            })),
        };
        match self.request(peer, req).await?.kind {
            Some(proto::ResponseKind::File(a)) => Ok(a),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Asks a peer for one piece.
    ///
    /// # Errors
    /// As [`P2p::request`], or the peer's refusal.
    pub async fn piece(
        &self,
        peer: PeerId,
        digest: &Digest,
        index: u32,
    ) -> Result<bytes::Bytes, P2pError> {
        let req = proto::Request {
            kind: Some(proto::RequestKind::Piece(proto::PieceRequest {
                digest: digest.to_string(),
                index,
            })),
        };
        match self.request(peer, req).await?.kind {
            Some(proto::ResponseKind::Piece(p)) if p.index == index => Ok(p.data),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Publishes a "have" announcement on the zone's topic.
    pub async fn announce(&self, have: Have) {
        let _ = self.commands.send(Command::Announce(have)).await;
    }

    /// Announcements from peers of this zone.
    pub fn subscribe_haves(&self) -> broadcast::Receiver<(PeerId, Have)> {
        self.haves.subscribe()
    }

    /// Publishes a message on the cluster-wide task topic.
    pub async fn publish_task(&self, task: Task) {
        let _ = self.commands.send(Command::PublishTask(task)).await;
    }

    /// Task messages from any peer (with their author).
    pub fn subscribe_tasks(&self) -> broadcast::Receiver<(PeerId, Task)> {
        self.tasks.subscribe()
    }

    /// Whether the swarm task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }

    /// Disconnects a peer and refuses it from now on (it sent corrupt data repeatedly).
    pub async fn ban(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Ban(peer)).await;
    }

    /// Peers per zone, for status pages.
    pub async fn peers_by_zone(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for p in self.peers().await {
            *out.entry(p.zone.unwrap_or_else(|| "?".into())).or_default() += 1;
        }
        out
    }
}

fn unexpected(peer: PeerId, kind: Option<proto::ResponseKind>) -> P2pError {
    match kind {
        Some(proto::ResponseKind::Error(e)) => P2pError::Refused {
            peer,
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::CodeUnspecified),
            message: e.message,
        },
        _ => P2pError::Peer {
            peer,
            reason: "unexpected answer".into(),
        },
    }
}

#[cfg(test)]
mod tests;
