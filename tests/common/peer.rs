//! In-process swarm members that misbehave on purpose, to test how nodes treat bad peers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use shoal::oci::Digest;
use shoal::p2p::{ErrorCode, FetchHint, Multiaddr, Outgoing, P2pConfig, PeerId, PieceMap};

/// What a fake peer does when asked for a piece.
pub enum Pieces {
    /// Sends bytes of the right length that are not the piece.
    Garbage,
    /// Accepts the request and never answers.
    Never,
}

/// A swarm member that claims every piece of the blobs it has maps for.
pub struct FakePeer {
    /// Maps by digest (`sha256:…`), answered as they are.
    pub maps: HashMap<String, PieceMap>,
    /// How it answers piece requests.
    pub pieces: Pieces,
}

impl shoal::p2p::PieceService for FakePeer {
    fn piece_map(
        &self,
        digest: Digest,
        _: Option<FetchHint>,
    ) -> BoxFuture<'static, Option<PieceMap>> {
        let map = self.maps.get(&digest.to_string()).cloned();
        Box::pin(async move { map })
    }

    fn piece(
        &self,
        _: PeerId,
        digest: Digest,
        index: u32,
    ) -> BoxFuture<'static, Result<Outgoing, ErrorCode>> {
        let map = self.maps.get(&digest.to_string()).cloned();
        match self.pieces {
            Pieces::Never => Box::pin(std::future::pending()),
            Pieces::Garbage => Box::pin(async move {
                let map = map.ok_or(ErrorCode::NotFound)?;
                let start = u64::from(index) * u64::from(map.piece_size);
                let len = (map.size - start).min(u64::from(map.piece_size));
                Ok(bytes::Bytes::from(vec![0x5a; len as usize]).into())
            }),
        }
    }
}

/// The config of an in-process node of zone `default` that holds the swarm key in `key`,
/// listens on loopback and dials `bootstrap`.
pub fn member_config(key: &Path, bootstrap: Multiaddr, request_timeout: Duration) -> P2pConfig {
    P2pConfig {
        keypair: shoal::p2p::Keypair::generate_ed25519(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![bootstrap],
        swarm_key: Some(shoal::p2p::keys::load_swarm_key(key).unwrap()),
        zone: "default".into(),
        role: "node".into(),
        request_timeout,
        zone_peering: false,
    }
}
