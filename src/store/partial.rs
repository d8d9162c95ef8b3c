//! Partial downloads: a blob being assembled piece by piece, from several sources and across
//! restarts.
//!
//! ```text
//! DATA_DIR/partial/<alg>-<hex>.data   the blob's bytes at their offsets (a sparse file of full size)
//! DATA_DIR/partial/<alg>-<hex>.meta   its piece map and the bitmap of verified pieces (see meta.rs)
//! ```
//!
//! A piece is marked verified only after its bytes matched its SHA-256 in the piece map (or came
//! from a trusted source that defines the hash), and the whole blob still has to match its OCI
//! digest in [`PartialBlob::finish`] before it enters `blobs/`: a lying peer can cost time, never
//! correctness.
//!
//! **Durability.** Progress is persisted at checkpoints rather than per piece: the data file is
//! fsynced and then the meta is replaced atomically (temp file, fsync, rename, fsync of the
//! directory) once 64 MiB were written or 2 s passed since the last checkpoint, and when the
//! [`PartialBlob`] is dropped. Per-piece fsyncs would cap a 4 MiB-piece download at the disk's
//! fsync rate; a crash now costs at most 64 MiB or 2 s of transfer. Because the data is fsynced
//! before the meta that marks it, a persisted bit never refers to unwritten data; and because a
//! piece whose bit is set in the persisted meta is never rewritten before a checkpoint has
//! cleared that bit on disk, it never refers to overwritten data either.
//!
//! One [`PartialBlob`] per digest at a time (the fetch engine's single flight ensures it); all
//! I/O is blocking, so async callers use `spawn_blocking`.

mod error;
mod files;
mod map;
mod meta;

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::StoreError;
use super::read::READ_CHUNK;
use crate::oci::{Digest, Hasher};
use files::{Paths, remove_if_exists, sync_dir};

pub use error::PieceError;
pub use map::{
    MAX_PIECE_SIZE, MAX_PIECES, MIN_DEFAULT_PIECE_SIZE, MIN_PIECE_SIZE, PieceHash, PieceHasher,
    PieceMap, bitmap_has, default_piece_size, hash_piece, piece_count, piece_size_for,
    valid_piece_size,
};

/// Bytes written since the last checkpoint that trigger the next one.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// Time since the last checkpoint after which the next write triggers one.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// One download in progress: which pieces are verified, their bytes on disk, and the piece map.
/// Dropping it keeps the download for later (after a last checkpoint); [`PartialBlob::finish`]
/// completes it and [`PartialBlob::discard`] throws it away.
pub struct PartialBlob {
    map: PieceMap,
    /// Verified pieces: bit i is piece i, least significant bit first within each byte.
    bits: Vec<u8>,
    verified: u32,
    /// The bitmap the meta on disk may hold (a superset of it after a failed checkpoint).
    persisted: Vec<u8>,
    /// `None` once finished or discarded.
    file: Option<File>,
    paths: Paths,
    blob_path: PathBuf,
    /// The in-memory state differs from the meta on disk.
    dirty: bool,
    /// Bytes written since the data file was last fsynced.
    unsynced: u64,
    last_checkpoint: Instant,
    /// Whole-blob hash of bytes `0..prefix_end`, extended while pieces arrive in order, so that
    /// `finish` after a sequential download need not read the file back.
    prefix: Hasher,
    prefix_end: u64,
}

impl PartialBlob {
    fn file(&self) -> &File {
        self.file
            .as_ref()
            .expect("partial download used after finish")
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        self.map.digest()
    }

    /// The piece map as known so far (to share with peers).
    pub fn map(&self) -> &PieceMap {
        &self.map
    }

    /// The data file, for readers that stream the verified prefix
    /// ([`PartialBlob::contiguous_verified`]) straight from disk. Bytes outside verified pieces
    /// are meaningless, and [`PartialBlob::finish`] renames the file into `blobs/` (an open
    /// handle keeps working; opening the path again then fails).
    pub fn data_path(&self) -> &Path {
        &self.paths.data
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.map.size()
    }

    /// The size of every piece but the last.
    pub fn piece_size(&self) -> u32 {
        self.map.piece_size()
    }

    /// The number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.map.piece_count()
    }

    /// Whether piece `index` is verified (false for an index out of range).
    pub fn has(&self, index: u32) -> bool {
        bitmap_has(&self.bits, index)
    }

    /// The verified pieces as a bitmap: bit i (byte `i / 8`, mask `1 << (i % 8)`, least
    /// significant bit first) is piece i, as in the wire's `have` field.
    pub fn bitmap(&self) -> Vec<u8> {
        self.bits.clone()
    }

    /// How many pieces are verified.
    pub fn verified_count(&self) -> u32 {
        self.verified
    }

    /// Whether every piece is verified (ready for [`PartialBlob::finish`]).
    pub fn is_complete(&self) -> bool {
        self.verified == self.piece_count()
    }

    /// The bytes in verified pieces.
    pub fn verified_bytes(&self) -> u64 {
        (0..self.piece_count())
            .filter(|&i| self.has(i))
            .map(|i| u64::from(self.map.piece_len(i)))
            .sum()
    }

    /// How many bytes from the start are verified: what can be streamed to a reader in order.
    pub fn contiguous_verified(&self) -> u64 {
        let pieces = (0..self.piece_count())
            .find(|&i| !self.has(i))
            .unwrap_or(self.piece_count());
        (u64::from(pieces) * u64::from(self.piece_size())).min(self.size())
    }

    /// The pieces not verified yet, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.piece_count()).filter(|&i| !self.has(i)).collect()
    }

    /// Learns the hash of piece `index`; `Ok(true)` if it was new.
    ///
    /// # Errors
    /// [`PieceError::OutOfRange`], or [`PieceError::HashConflict`] when another hash is known.
    pub fn set_hash(&mut self, index: u32, hash: PieceHash) -> Result<bool, PieceError> {
        let new = self.map.set_hash(index, hash)?;
        self.dirty |= new;
        Ok(new)
    }

    /// Learns every hash of `map` (all or nothing); returns how many were new.
    ///
    /// # Errors
    /// [`PieceError::MapMismatch`] for another blob or layout, [`PieceError::HashConflict`] when
    /// `map` contradicts a known hash.
    pub fn merge_map(&mut self, map: &PieceMap) -> Result<u32, PieceError> {
        let new = self.map.merge(map)?;
        self.dirty |= new > 0;
        Ok(new)
    }

    /// Checks a piece's bytes against its hash, then writes and marks it. A piece already
    /// verified is checked but not rewritten.
    ///
    /// # Errors
    /// [`PieceError::UnknownHash`] (learn the map first), [`PieceError::WrongLength`] and
    /// [`PieceError::HashMismatch`] (the sender's fault; nothing written or marked),
    /// [`PieceError::OutOfRange`], or [`PieceError::Store`] when the disk fails.
    pub fn write_piece(&mut self, index: u32, data: &[u8]) -> Result<(), PieceError> {
        self.check_piece(index, data)?;
        let expected = self
            .map
            .hash(index)
            .ok_or(PieceError::UnknownHash { index })?;
        if hash_piece(data) != expected {
            return Err(PieceError::HashMismatch { index });
        }
        if !self.has(index) {
            self.store_piece(index, data)?;
        }
        Ok(())
    }

    /// Writes and marks a piece whose bytes come from a trusted source (the upstream, in order):
    /// its hash is computed from the bytes and replaces any different hash known before (the
    /// whole-blob digest check in [`PartialBlob::finish`] remains the final word).
    ///
    /// # Errors
    /// [`PieceError::OutOfRange`], [`PieceError::WrongLength`], or [`PieceError::Store`].
    pub fn write_trusted_piece(&mut self, index: u32, data: &[u8]) -> Result<(), PieceError> {
        self.check_piece(index, data)?;
        let hash = hash_piece(data);
        match self.map.hash(index) {
            Some(known) if known == hash && self.has(index) => return Ok(()),
            Some(known) if known != hash => {
                tracing::warn!(digest = %self.digest(), index, "trusted bytes contradict the piece map; replacing its hash");
                self.unmark(index);
            }
            _ => {}
        }
        self.map.replace_hash(index, hash);
        self.dirty = true;
        self.store_piece(index, data)
    }

    /// Forgets pieces whose content is suspect (for instance those that came from peers when
    /// the whole-blob digest did not match): they are unmarked and their hashes forgotten, so
    /// they must be fetched again, with hashes from a trusted source.
    ///
    /// # Errors
    /// [`PieceError::OutOfRange`] (and nothing changed) if an index is not a piece.
    pub fn reset_pieces(&mut self, indices: &[u32]) -> Result<(), PieceError> {
        let count = self.piece_count();
        if let Some(&index) = indices.iter().find(|&&i| i >= count) {
            return Err(PieceError::OutOfRange { index, count });
        }
        for &index in indices {
            self.unmark(index);
            self.map.forget_hash(index);
        }
        self.dirty = true;
        Ok(())
    }

    /// The bytes of a verified piece.
    ///
    /// # Errors
    /// [`PieceError::OutOfRange`], [`PieceError::NotVerified`], or [`PieceError::Store`].
    pub fn read_piece(&self, index: u32) -> Result<Bytes, PieceError> {
        let count = self.piece_count();
        if index >= count {
            return Err(PieceError::OutOfRange { index, count });
        }
        let range = self.map.piece_range(index);
        self.read_at(range.start, (range.end - range.start) as usize)
    }

    /// `len` bytes at `offset`, all within verified pieces.
    ///
    /// # Errors
    /// [`PieceError::BeyondEnd`], [`PieceError::NotVerified`] naming the first unverified piece,
    /// or [`PieceError::Store`].
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, PieceError> {
        let end = offset.saturating_add(len as u64);
        if end > self.size() {
            return Err(PieceError::BeyondEnd {
                end,
                size: self.size(),
            });
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        let piece_size = u64::from(self.piece_size());
        for index in (offset / piece_size) as u32..=((end - 1) / piece_size) as u32 {
            if !self.has(index) {
                return Err(PieceError::NotVerified { index });
            }
        }
        let mut buf = vec![0; len];
        self.file()
            .read_exact_at(&mut buf, offset)
            .map_err(StoreError::io("read", &self.paths.data))?;
        Ok(Bytes::from(buf))
    }

    /// Persists progress now: fsyncs the data, then atomically replaces the meta. Runs by itself
    /// every 64 MiB or 2 s of writes and on drop.
    ///
    /// # Errors
    /// On I/O failure (the previous meta then stays in place).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.dirty || self.file.is_none() {
            return Ok(());
        }
        if self.unsynced > 0 {
            self.file()
                .sync_data()
                .map_err(StoreError::io("sync", &self.paths.data))?;
            self.unsynced = 0;
        }
        let bytes = meta::encode(&self.map, &self.bits);
        let temp = &self.paths.temp;
        let written = File::create(temp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .map_err(StoreError::io("write", temp));
        if let Err(e) = written {
            let _ = fs::remove_file(temp);
            return Err(e);
        }
        // From the rename on, the disk may hold either bitmap until the directory is synced.
        for (p, b) in self.persisted.iter_mut().zip(&self.bits) {
            *p |= b;
        }
        fs::rename(temp, &self.paths.meta).map_err(StoreError::io("rename", &self.paths.meta))?;
        sync_dir(&self.paths.dir)?;
        self.persisted.clone_from(&self.bits);
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Verifies the whole blob against its digest and moves it into `blobs/`; returns its size.
    ///
    /// # Errors
    /// [`StoreError::DigestMismatch`] when the pieces do not make the blob (the piece map was
    /// wrong): the partial download is removed, and the blob must be fetched again from a
    /// trusted source. On I/O failure the partial download is kept.
    ///
    /// # Panics
    /// If a piece is not verified (check [`PartialBlob::is_complete`]).
    pub fn finish(mut self) -> Result<u64, StoreError> {
        assert!(
            self.is_complete(),
            "finish of an incomplete partial download"
        );
        let result = self.commit();
        if let Err(StoreError::DigestMismatch { .. }) = &result {
            tracing::warn!(digest = %self.digest(), "pieces do not make the blob; discarding them");
            self.file = None;
            let _ = remove_if_exists(&self.paths.data);
            let _ = remove_if_exists(&self.paths.meta);
        }
        result.map(|()| self.size())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let algorithm = self.digest().algorithm();
        let mut hasher = std::mem::replace(&mut self.prefix, Hasher::new(algorithm));
        let mut offset = std::mem::take(&mut self.prefix_end);
        let size = self.size();
        let mut buf = vec![0; READ_CHUNK.min(size - offset) as usize];
        while offset < size {
            let n = buf.len().min((size - offset) as usize);
            self.file()
                .read_exact_at(&mut buf[..n], offset)
                .map_err(StoreError::io("read", &self.paths.data))?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let actual = hasher.finish();
        if actual != *self.digest() {
            return Err(StoreError::DigestMismatch {
                expected: self.digest().clone(),
                actual,
            });
        }
        self.file()
            .sync_all()
            .map_err(StoreError::io("sync", &self.paths.data))?;
        fs::rename(&self.paths.data, &self.blob_path)
            .map_err(StoreError::io("rename", &self.blob_path))?;
        self.file = None;
        if let Err(e) = remove_if_exists(&self.paths.meta) {
            // Harmless: the next open removes a meta without its data file.
            tracing::warn!(error = %e, "cannot remove the meta of a finished download");
        }
        match self.blob_path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }

    /// Throws the partial download away.
    ///
    /// # Errors
    /// When its files cannot be removed.
    pub fn discard(mut self) -> Result<(), StoreError> {
        self.file = None;
        remove_if_exists(&self.paths.meta)?;
        remove_if_exists(&self.paths.data)
    }

    /// Checks the index and length of a piece's bytes.
    fn check_piece(&self, index: u32, data: &[u8]) -> Result<(), PieceError> {
        let count = self.piece_count();
        if index >= count {
            return Err(PieceError::OutOfRange { index, count });
        }
        let expected = self.map.piece_len(index);
        if data.len() != expected as usize {
            return Err(PieceError::WrongLength {
                index,
                expected,
                actual: data.len(),
            });
        }
        Ok(())
    }

    /// Writes checked bytes of an unverified piece and marks it.
    fn store_piece(&mut self, index: u32, data: &[u8]) -> Result<(), PieceError> {
        if bitmap_has(&self.persisted, index) {
            // The meta on disk still vouches for the old bytes: retract that before they change.
            self.checkpoint()?;
        }
        let range = self.map.piece_range(index);
        if range.start < self.prefix_end {
            self.restart_prefix();
        }
        self.file()
            .write_all_at(data, range.start)
            .map_err(StoreError::io("write", &self.paths.data))?;
        if range.start == self.prefix_end {
            self.prefix.update(data);
            self.prefix_end = range.end;
        }
        self.bits[index as usize / 8] |= 1 << (index % 8);
        self.verified += 1;
        self.dirty = true;
        self.unsynced += data.len() as u64;
        let due = self.unsynced >= CHECKPOINT_BYTES
            || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL;
        if due && let Err(e) = self.checkpoint() {
            // Progress stays in memory and the meta on disk stays consistent; a crash now only
            // costs the pieces since the last checkpoint.
            tracing::warn!(digest = %self.digest(), error = %e, "cannot persist download progress");
        }
        Ok(())
    }

    /// Clears a piece's verified bit (in memory; the next checkpoint persists it).
    fn unmark(&mut self, index: u32) {
        if self.has(index) {
            self.bits[index as usize / 8] &= !(1 << (index % 8));
            self.verified -= 1;
            self.dirty = true;
            if self.map.piece_range(index).start < self.prefix_end {
                self.restart_prefix();
            }
        }
    }

    fn restart_prefix(&mut self) {
        self.prefix = Hasher::new(self.digest().algorithm());
        self.prefix_end = 0;
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!(digest = %self.digest(), error = %e, "cannot persist download progress");
        }
    }
}

impl fmt::Debug for PartialBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialBlob")
            .field("map", &self.map)
            .field("verified", &self.verified)
            .field("data", &self.paths.data)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
