//! Swarms of in-process nodes on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::*;

/// Serves pieces of blobs held in memory.
#[derive(Default)]
struct Memory {
    blobs: HashMap<Digest, Vec<Bytes>>,
}

impl PieceService for Memory {
    fn piece_map(
        &self,
        digest: Digest,
        _: Option<FetchHint>,
    ) -> BoxFuture<'static, Option<PieceMap>> {
        let map = self.blobs.get(&digest).map(|pieces| PieceMap {
            digest: digest.to_string(),
            size: pieces.iter().map(|p| p.len() as u64).sum(),
            piece_size: 4,
            hashes: pieces
                .iter()
                .map(|p| hex::decode(Digest::sha256_of(p).hex()).unwrap())
                .collect(),
            have: vec![0xff; pieces.len().div_ceil(8)],
        });
        async move { map }.boxed()
    }

    fn piece(
        &self,
        _: PeerId,
        digest: Digest,
        index: u32,
    ) -> BoxFuture<'static, Result<Outgoing, ErrorCode>> {
        let piece = self
            .blobs
            .get(&digest)
            .and_then(|p| p.get(index as usize).cloned())
            .map(Outgoing::from)
            .ok_or(ErrorCode::NotFound);
        async move { piece }.boxed()
    }
}

fn key(byte: u8) -> PreSharedKey {
    PreSharedKey::new([byte; 32])
}

/// A new identity on a free loopback port.
fn config(psk: Option<PreSharedKey>, zone: &str, bootstrap: Vec<Multiaddr>) -> P2pConfig {
    P2pConfig {
        keypair: Keypair::generate_ed25519(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        swarm_key: psk,
        zone: zone.into(),
        role: "node".into(),
        zone_peering: false,
        request_timeout: Duration::from_secs(5),
    }
}

async fn node(
    psk: Option<PreSharedKey>,
    zone: &str,
    bootstrap: Vec<Multiaddr>,
    service: Memory,
) -> P2p {
    P2p::start(config(psk, zone, bootstrap), Arc::new(service))
        .await
        .unwrap()
}

/// The peers `node` is connected to and knows the zone `z` of.
async fn zone_peers(node: &P2p) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = node
        .peers()
        .await
        .into_iter()
        .filter(|p| p.zone.as_deref() == Some("z"))
        .map(|p| p.id)
        .collect();
    peers.sort();
    peers
}

/// Whether `check` holds within 10 s.
async fn wait_for(check: impl AsyncFnMut() -> bool) -> bool {
    wait_up_to(Duration::from_secs(10), check).await
}

async fn wait_up_to(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn blob() -> (Digest, Memory) {
    let pieces: Vec<Bytes> = ["abcd", "efgh", "ij"]
        .iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect();
    let digest = Digest::sha256_of(b"abcdefghij");
    let mut m = Memory::default();
    m.blobs.insert(digest.clone(), pieces);
    (digest, m)
}

#[tokio::test]
async fn peers_find_providers_and_exchange_pieces() {
    let (digest, memory) = blob();
    let a = node(Some(key(1)), "z", vec![], memory).await;
    let a_addr = a.listen_addrs().await[0].clone();
    assert!(a_addr.to_string().ends_with(&a.peer_id().to_string()));
    let b = node(Some(key(1)), "z", vec![a_addr.clone()], Memory::default()).await;
    let c = node(Some(key(1)), "z", vec![a_addr], Memory::default()).await;
    assert!(
        wait_for(async || b
            .peers()
            .await
            .iter()
            .any(|p| p.zone.as_deref() == Some("z")))
        .await
    );

    a.provide(&digest).await;
    let found = wait_for(async || c.providers(&digest).await.contains(&a.peer_id())).await;
    assert!(found, "provider record not found");

    let map = b.piece_map(a.peer_id(), &digest, None).await.unwrap();
    assert_eq!((map.size, map.hashes.len()), (10, 3));
    assert_eq!(
        &b.piece(a.peer_id(), &digest, 1).await.unwrap()[..],
        b"efgh"
    );
    let missing = b.piece(a.peer_id(), &digest, 9).await.unwrap_err();
    assert!(
        matches!(
            missing,
            P2pError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{missing:?}"
    );
    let unknown = Digest::sha256_of(b"nothing");
    assert!(b.piece_map(a.peer_id(), &unknown, None).await.is_err());

    // Gossip: an announcement from b reaches a.
    let mut haves = a.subscribe_haves();
    let have = Have {
        digest: digest.to_string(),
        size: 10,
        piece_size: 4,
        have: vec![0b101],
        complete: false,
        hashes: vec![PieceHash {
            index: 2,
            hash: vec![7; 32],
        }],
    };
    let heard = wait_for(async || {
        b.announce(have.clone()).await;
        matches!(haves.try_recv(), Ok((from, h)) if from == b.peer_id() && h == have)
    })
    .await;
    assert!(heard, "announcement not received");
}

#[tokio::test]
async fn a_node_without_the_swarm_key_gets_nothing() {
    let (digest, memory) = blob();
    let a = node(Some(key(7)), "z", vec![], memory).await;
    let addr = a.listen_addrs().await[0].clone();
    let outsider = node(Some(key(8)), "z", vec![addr.clone()], Memory::default()).await;
    let open = node(None, "z", vec![addr], Memory::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(outsider.peers().await.is_empty());
    assert!(open.peers().await.is_empty());
    assert!(a.peers().await.is_empty());
    assert!(outsider.piece(a.peer_id(), &digest, 0).await.is_err());
    assert!(open.piece_map(a.peer_id(), &digest, None).await.is_err());
}

#[tokio::test]
async fn pieces_stay_within_a_zone_and_banned_peers_are_refused() {
    let (digest, memory) = blob();
    let a = node(Some(key(3)), "east", vec![], memory).await;
    let addr = a.listen_addrs().await[0].clone();
    let west = node(Some(key(3)), "west", vec![addr.clone()], Memory::default()).await;
    assert!(
        wait_for(async || west
            .peers()
            .await
            .iter()
            .any(|p| p.zone.as_deref() == Some("east")))
        .await
    );
    let refused = west.piece(a.peer_id(), &digest, 0).await.unwrap_err();
    assert!(
        matches!(
            refused,
            P2pError::Refused {
                code: ErrorCode::Refused,
                ..
            }
        ),
        "{refused:?}"
    );

    let east = node(Some(key(3)), "east", vec![addr], Memory::default()).await;
    assert!(wait_for(async || east.piece(a.peer_id(), &digest, 0).await.is_ok()).await);
    a.ban(east.peer_id()).await;
    assert!(wait_for(async || east.piece(a.peer_id(), &digest, 0).await.is_err()).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        east.piece(a.peer_id(), &digest, 0).await.is_err(),
        "banned peer got a piece"
    );
}

#[tokio::test]
async fn a_restarted_bootstrap_node_is_found_again() {
    // `a` is the first node: it has no bootstrap peer. `b` bootstraps from `a`, `c` from `b`.
    let first = config(Some(key(5)), "z", vec![]);
    let (keypair, listen) = (first.keypair.clone(), first.listen.clone());
    let a = P2p::start(first, Arc::new(Memory::default()))
        .await
        .unwrap();
    let a_addr = a.listen_addrs().await[0].clone();
    let a_id = a.peer_id();
    let b = node(Some(key(5)), "z", vec![a_addr.clone()], Memory::default()).await;
    let b_addr = b.listen_addrs().await[0].clone();
    let c = node(Some(key(5)), "z", vec![b_addr], Memory::default()).await;
    let all = async |n: &P2p| zone_peers(n).await.len() == 2;
    assert!(wait_for(async || all(&a).await && all(&b).await && all(&c).await).await);

    // `a` restarts (an upgrade, say) with its identity and address, and knows nobody. It is
    // away long enough for the others' first dials to fail.
    drop(a);
    assert!(wait_for(async || !zone_peers(&b).await.contains(&a_id)).await);
    assert!(wait_for(async || !zone_peers(&c).await.contains(&a_id)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut listen_at = listen;
    listen_at[0] = a_addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    let mut restarted = None;
    for _ in 0..50 {
        let mut again = config(Some(key(5)), "z", vec![]);
        (again.keypair, again.listen) = (keypair.clone(), listen_at.clone());
        // The old listener may still hold the port for a moment.
        match P2p::start(again, Arc::new(Memory::default())).await {
            Ok(p2p) => {
                restarted = Some(p2p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let a = restarted.expect("a did not listen again on its address");
    assert_eq!(a.peer_id(), a_id);

    // The others dial it again (lost routing-table peers every 5 s, bootstrap addresses every
    // 30 s), and the swarm is whole again.
    let whole = wait_up_to(Duration::from_secs(45), async || {
        all(&a).await && all(&b).await && all(&c).await
    })
    .await;
    assert!(
        whole,
        "a sees {:?}, b {:?}, c {:?}",
        zone_peers(&a).await,
        zone_peers(&b).await,
        zone_peers(&c).await
    );
}
