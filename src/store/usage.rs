//! What the store holds on disk: complete blobs with their size and last use, and the total of
//! everything (blobs, manifests, partial downloads), for the disk quota.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Store;
use crate::oci::Digest;

/// A complete blob as the quota sees it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written or served.
    pub last_used: SystemTime,
}

/// How often a served blob's last-use time is refreshed at most (it is a file write).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Store {
    /// Bytes the store uses on disk: blobs, manifests, piece maps and partial downloads.
    pub fn usage(&self) -> u64 {
        ["blobs", "manifests", "pieces", "partial", "tmp"]
            .iter()
            .map(|d| dir_size(&self.root().join(d)))
            .sum()
    }

    /// Every complete blob, oldest use first.
    pub fn blobs_by_last_use(&self) -> Vec<StoredBlob> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let Ok(entries) = fs::read_dir(self.root().join("blobs").join(alg)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("{alg}:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                let Ok(meta) = e.metadata() else { continue };
                out.push(StoredBlob {
                    digest,
                    size: meta.len(),
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        out.sort_by_key(|b| b.last_used);
        out
    }

    /// Records that a blob was used now (its file's modification time), at most once a minute.
    pub fn touch_blob(&self, digest: &Digest) {
        let path = self.blob_path(digest);
        let stale = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > TOUCH_EVERY);
        if stale && let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Removes a complete blob and its piece map.
    pub fn remove_blob(&self, digest: &Digest) -> std::io::Result<()> {
        self.remove_piece_map(digest);
        fs::remove_file(self.blob_path(digest))
    }
}
