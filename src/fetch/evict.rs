//! The disk quota: when the store grows past the high watermark (95% of `--max-disk`), the
//! least recently used complete blobs are removed until it is below the low watermark (85%).
//! A blob is never evicted while a client is reading it, while it is pinned (by a task), or
//! while it is being downloaded; an evicted blob's provider record is withdrawn.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Fetcher;
use crate::oci::Digest;

/// Fraction of the quota above which eviction starts.
const HIGH: f64 = 0.95;
/// Fraction of the quota eviction brings the store down to.
const LOW: f64 = 0.85;
/// How often the quota is checked besides after each download.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Counts a client reading a stored blob; eviction skips it until dropped.
pub struct Reading {
    fetcher: Arc<Fetcher>,
    digest: Digest,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut readers = self.fetcher.readers.lock().unwrap();
        if let Some(n) = readers.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.digest);
            }
        }
    }
}

impl Fetcher {
    /// Marks a stored blob as being read (and as used now) until the guard is dropped.
    pub fn reading(self: &Arc<Self>, digest: &Digest) -> Reading {
        *self
            .readers
            .lock()
            .unwrap()
            .entry(digest.clone())
            .or_default() += 1;
        self.store.touch_blob(digest);
        Reading {
            fetcher: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Keeps a blob from eviction (a distribution task holds it) or lets it go again.
    pub fn pin(&self, digest: &Digest, pinned: bool) {
        let mut pins = self.pins.lock().unwrap();
        if pinned {
            pins.insert(digest.clone());
        } else {
            pins.remove(digest);
        }
    }

    /// Evicts least recently used blobs if the store is over its high watermark; returns the
    /// bytes freed.
    pub async fn enforce_quota(self: &Arc<Self>) -> u64 {
        let Some(max) = self.max_disk else { return 0 };
        let this = self.clone();
        let evicted = tokio::task::spawn_blocking(move || {
            let mut usage = this.store.usage();
            if (usage as f64) < max as f64 * HIGH {
                return Vec::new();
            }
            let target = (max as f64 * LOW) as u64;
            let mut evicted = Vec::new();
            for blob in this.store.blobs_by_last_use() {
                if usage <= target {
                    break;
                }
                let busy = this.readers.lock().unwrap().contains_key(&blob.digest)
                    || this.pins.lock().unwrap().contains(&blob.digest)
                    || this.inflight.lock().unwrap().contains_key(&blob.digest);
                if busy {
                    continue;
                }
                match this.store.remove_blob(&blob.digest) {
                    Ok(()) => {
                        usage = usage.saturating_sub(blob.size);
                        evicted.push((blob.digest, blob.size));
                    }
                    Err(e) => tracing::warn!(digest = %blob.digest, error = %e, "cannot evict"),
                }
            }
            if usage > target {
                tracing::warn!(
                    usage,
                    max,
                    "over quota, and nothing more can be evicted now"
                );
            }
            evicted
        })
        .await
        .unwrap_or_default();
        let mut freed = 0;
        for (digest, size) in &evicted {
            tracing::info!(%digest, size, "evicted (least recently used)");
            self.metrics.evictions.inc();
            freed += size;
            if let Some(p2p) = self.p2p.get() {
                p2p.stop_providing(digest).await;
            }
        }
        freed
    }

    /// Checks the quota every [`CHECK_EVERY`] until the engine is dropped.
    pub fn spawn_quota_loop(self: &Arc<Self>) {
        if self.max_disk.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let Some(this) = weak.upgrade() else { break };
                this.enforce_quota().await;
            }
        });
    }
}

/// Readers per digest.
pub(super) type Readers = std::sync::Mutex<HashMap<Digest, usize>>;
