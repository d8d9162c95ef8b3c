//! "Have" announcements: while a blob downloads, the pieces this node holds are published on
//! the zone's gossip topic (at most every [`ANNOUNCE_EVERY`]) with the hashes of the new ones,
//! so that peers fetching the same blob learn of each piece at once, and can check it, instead
//! of at their next piece-map refresh.

use std::sync::Arc;
use std::time::Duration;

use super::download::{Download, Phase};
use super::pieces::all_bits;
use crate::p2p::{Have, P2p, PieceHash};
use crate::store::partial::bitmap_has;

/// The shortest time between two announcements of one download.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(40);
/// Hashes carried by one announcement (the rest are in the piece map), well inside the gossip
/// message cap.
const MAX_HASHES: usize = 1024;

/// Announces `dl`'s progress until it completes (a last announcement says so) or fails.
pub(super) async fn announce_progress(p2p: P2p, dl: Arc<Download>) {
    let mut state = dl.watch();
    let mut last: Vec<u8> = Vec::new();
    let mut generation = None;
    loop {
        let progress = state.borrow_and_update().clone();
        let complete = match progress.phase {
            Phase::Failed(_) => return,
            Phase::Complete => true,
            Phase::Connecting | Phase::Streaming => false,
        };
        if generation != Some(progress.generation) {
            // The content started over: every piece is news again.
            generation = Some(progress.generation);
            last.clear();
        }
        if let Some(view) = dl.view() {
            let count = view.map.piece_count();
            let bits = if complete {
                all_bits(count)
            } else {
                view.have_bits(progress.on_disk)
            };
            if bits != last {
                let hashes = (0..count)
                    .filter(|&i| bitmap_has(&bits, i) && !bitmap_has(&last, i))
                    .filter_map(|i| {
                        view.map.hash(i).map(|h| PieceHash {
                            index: i,
                            hash: h.to_vec(),
                        })
                    })
                    .take(MAX_HASHES)
                    .collect();
                p2p.announce(Have {
                    digest: dl.digest.to_string(),
                    size: view.map.size(),
                    piece_size: view.map.piece_size(),
                    have: bits.clone(),
                    complete,
                    hashes,
                })
                .await;
                last = bits;
            }
        }
        if complete {
            return;
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
        if state.changed().await.is_err() {
            return;
        }
    }
}
