//! Piece maps of complete blobs, kept beside them in `DATA_DIR/pieces/<alg>/<hex>.json` so that
//! peers can be answered without hashing the blob again.

use std::fs;
use std::path::PathBuf;

use super::{Store, StoreError};
use crate::oci::Digest;
use crate::store::partial::PieceMap;

impl Store {
    fn piece_map_path(&self, digest: &Digest) -> PathBuf {
        self.root()
            .join("pieces")
            .join(digest.algorithm().as_str())
            .join(format!("{}.json", digest.hex()))
    }

    /// The stored piece map of a complete blob, if one was kept and is whole.
    pub fn piece_map(&self, digest: &Digest) -> Option<PieceMap> {
        let bytes = fs::read(self.piece_map_path(digest)).ok()?;
        let map: PieceMap = serde_json::from_slice(&bytes).ok()?;
        (map.digest() == digest && map.is_complete()).then_some(map)
    }

    /// Keeps the piece map of a complete blob.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn put_piece_map(&self, map: &PieceMap) -> Result<(), StoreError> {
        let path = self.piece_map_path(map.digest());
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        }
        let json = serde_json::to_vec(map).expect("piece map serializes");
        self.write_atomic(&path, &json)
    }

    /// Forgets the piece map of a blob that left the store.
    pub fn remove_piece_map(&self, digest: &Digest) {
        let _ = fs::remove_file(self.piece_map_path(digest));
    }
}
