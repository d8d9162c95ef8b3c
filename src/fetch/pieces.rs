//! The node's side of the piece protocol: piece maps and pieces of complete blobs, answered
//! from the store. A complete blob's piece map is computed while it is downloaded (or, for a
//! blob stored without one, from the file on first request) and kept beside it.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Fetcher;
use crate::oci::Digest;
use crate::p2p::{self, ErrorCode, PieceService};
use crate::store::partial::{PieceHasher, PieceMap, default_piece_size};
use crate::store::read::READ_CHUNK;

/// Serves peers from a node's store. Holds the engine weakly, so that the swarm task does not
/// keep it alive.
pub struct StorePieces(pub Weak<Fetcher>);

impl StorePieces {
    /// Serves pieces for `fetcher`.
    pub fn new(fetcher: &Arc<Fetcher>) -> Arc<StorePieces> {
        Arc::new(StorePieces(Arc::downgrade(fetcher)))
    }
}

/// The wire form of a complete blob's map.
pub fn wire_map(map: &PieceMap, have_all: bool) -> p2p::PieceMap {
    let count = map.piece_count() as usize;
    p2p::PieceMap {
        digest: map.digest().to_string(),
        size: map.size(),
        piece_size: map.piece_size(),
        hashes: map
            .hashes()
            .iter()
            .map(|h| h.map(|h| h.to_vec()).unwrap_or_default())
            .collect(),
        have: if have_all {
            let mut bits = vec![0xffu8; count.div_ceil(8)];
            if !count.is_multiple_of(8)
                && let Some(last) = bits.last_mut()
            {
                *last = (1u8 << (count % 8)) - 1;
            }
            bits
        } else {
            vec![0; count.div_ceil(8)]
        },
    }
}

/// The piece map of a complete blob: the stored one, or computed from the file and stored.
pub(super) fn complete_map(fetcher: &Fetcher, digest: &Digest) -> Option<PieceMap> {
    let store = fetcher.store();
    if let Some(map) = store.piece_map(digest) {
        return Some(map);
    }
    let size = store.blob_size(digest)?;
    let mut hasher = PieceHasher::new(size, default_piece_size(size)).ok()?;
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

impl PieceService for StorePieces {
    fn piece_map(&self, digest: Digest) -> BoxFuture<'static, Option<p2p::PieceMap>> {
        let fetcher = self.0.clone();
        async move {
            let fetcher = fetcher.upgrade()?;
            tokio::task::spawn_blocking(move || {
                complete_map(&fetcher, &digest).map(|m| wire_map(&m, true))
            })
            .await
            .ok()
            .flatten()
        }
        .boxed()
    }

    fn piece(&self, digest: Digest, index: u32) -> BoxFuture<'static, Result<Bytes, ErrorCode>> {
        let fetcher = self.0.clone();
        async move {
            let fetcher = fetcher.upgrade().ok_or(ErrorCode::NotFound)?;
            let map = {
                let f = fetcher.clone();
                let d = digest.clone();
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
            let _permit = fetcher.upload_slot().await.ok_or(ErrorCode::Busy)?;
            let path = fetcher.store().blob_path(&digest);
            let data = crate::store::read::read_path(
                &path,
                range.start,
                (range.end - range.start) as usize,
            )
            .await
            .map_err(|_| ErrorCode::NotFound)?;
            fetcher.metrics().p2p_sent(data.len() as u64);
            Ok(data)
        }
        .boxed()
    }
}
