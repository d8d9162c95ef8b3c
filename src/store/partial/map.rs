//! Piece geometry and piece maps: how a blob is cut into fixed-size pieces, the SHA-256 of each
//! piece, and the incremental hasher that computes a map from a sequential byte stream.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::PieceError;
use crate::oci::Digest;

/// The SHA-256 of one piece.
pub type PieceHash = [u8; 32];

/// Smallest piece size accepted (`--piece-size` or a peer's map).
pub const MIN_PIECE_SIZE: u32 = 256 * 1024;
/// Smallest piece size [`default_piece_size`] chooses.
pub const MIN_DEFAULT_PIECE_SIZE: u32 = 4 * 1024 * 1024;
/// Largest piece size accepted anywhere: a piece is buffered whole before it is verified, and the
/// piece protocol caps a response at 64 MiB plus an envelope.
pub const MAX_PIECE_SIZE: u32 = 64 * 1024 * 1024;
/// Largest number of pieces a blob may have. Bounds what a (possibly hostile) piece map can make
/// us allocate: 2^18 hashes are 8 MiB; at 4 MiB pieces that is a 1 TiB blob, at 64 MiB 16 TiB.
pub const MAX_PIECES: u32 = 1 << 18;
/// [`default_piece_size`] grows the piece size until a blob has at most this many pieces.
const TARGET_MAX_PIECES: u64 = 2048;

/// Number of pieces of `piece_size` bytes that cover `size` bytes (the last one may be short;
/// an empty blob has none).
///
/// # Panics
/// If `piece_size` is zero.
pub fn piece_count(size: u64, piece_size: u32) -> u64 {
    size.div_ceil(u64::from(piece_size))
}

/// The piece size used when none is configured.
///
/// 4 MiB at least, so that per-request overhead stays small next to the data (at ~800 MiB/s a
/// peer link moves ~200 pieces a second). Above 8 GiB the size doubles until the blob has at most
/// 2048 pieces (so 1025–2048 pieces for blobs up to 128 GiB): the piece map stays under 70 KiB
/// and the have-bitmap under 256 bytes, small enough for one message. Never above 64 MiB
/// ([`MAX_PIECE_SIZE`]), because a piece is held in memory whole until it is verified and a bad
/// piece costs its whole size again; larger blobs just get more pieces.
pub fn default_piece_size(size: u64) -> u32 {
    let mut piece_size = MIN_DEFAULT_PIECE_SIZE;
    while piece_size < MAX_PIECE_SIZE && piece_count(size, piece_size) > TARGET_MAX_PIECES {
        piece_size *= 2;
    }
    piece_size
}

/// Whether `piece_size` is a layout this node accepts: a power of two from [`MIN_PIECE_SIZE`]
/// to [`MAX_PIECE_SIZE`].
pub fn valid_piece_size(piece_size: u32) -> bool {
    piece_size.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size)
}

/// The piece size for a blob of `size` bytes: the configured one (`--piece-size`, doubled if
/// the blob would have more than [`MAX_PIECES`] pieces), else [`default_piece_size`].
pub fn piece_size_for(size: u64, configured: Option<u32>) -> u32 {
    debug_assert!(configured.is_none_or(valid_piece_size));
    match configured {
        Some(mut piece_size) => {
            while piece_size < MAX_PIECE_SIZE
                && piece_count(size, piece_size) > u64::from(MAX_PIECES)
            {
                piece_size *= 2;
            }
            piece_size
        }
        None => default_piece_size(size),
    }
}

/// Whether bit `index` is set in a piece bitmap (bit i is piece i, least significant bit first
/// within each byte, as on the wire). Bits beyond the slice are unset.
pub fn bitmap_has(bitmap: &[u8], index: u32) -> bool {
    bitmap
        .get(index as usize / 8)
        .is_some_and(|b| b & (1 << (index % 8)) != 0)
}

/// The SHA-256 of one piece's bytes.
pub fn hash_piece(data: &[u8]) -> PieceHash {
    Sha256::digest(data).into()
}

/// Checks a blob's piece layout and returns its piece count.
fn check_layout(size: u64, piece_size: u32) -> Result<u32, PieceError> {
    if piece_size == 0 || piece_size > MAX_PIECE_SIZE {
        return Err(PieceError::InvalidLayout {
            reason: format!("piece size {piece_size} is not in 1..={MAX_PIECE_SIZE}"),
        });
    }
    let count = piece_count(size, piece_size);
    if count > u64::from(MAX_PIECES) {
        return Err(PieceError::InvalidLayout {
            reason: format!("{count} pieces of {piece_size} bytes exceed the limit {MAX_PIECES}"),
        });
    }
    Ok(count as u32)
}

/// A blob's piece map: its layout and the SHA-256 of each piece, where known.
///
/// Always valid: the piece size is in `1..=MAX_PIECE_SIZE`, the blob has at most
/// [`MAX_PIECES`] pieces and there is exactly one hash slot per piece. Serializes (serde) as
/// `{"digest", "size", "piece_size", "hashes": ["<hex>" | null, …]}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPieceMap", into = "RawPieceMap")]
pub struct PieceMap {
    digest: Digest,
    size: u64,
    piece_size: u32,
    hashes: Vec<Option<PieceHash>>,
}

impl PieceMap {
    /// A map that knows no hashes yet.
    ///
    /// # Errors
    /// [`PieceError::InvalidLayout`] for a zero or oversized piece size, or too many pieces.
    pub fn new(digest: Digest, size: u64, piece_size: u32) -> Result<PieceMap, PieceError> {
        let count = check_layout(size, piece_size)?;
        Ok(PieceMap {
            digest,
            size,
            piece_size,
            hashes: vec![None; count as usize],
        })
    }

    /// A map from its parts, e.g. decoded from the wire.
    ///
    /// # Errors
    /// [`PieceError::InvalidLayout`] as for [`PieceMap::new`], or when `hashes` does not have one
    /// entry per piece.
    pub fn from_parts(
        digest: Digest,
        size: u64,
        piece_size: u32,
        hashes: Vec<Option<PieceHash>>,
    ) -> Result<PieceMap, PieceError> {
        let count = check_layout(size, piece_size)?;
        if hashes.len() != count as usize {
            return Err(PieceError::InvalidLayout {
                reason: format!("{} hashes for {count} pieces", hashes.len()),
            });
        }
        Ok(PieceMap {
            digest,
            size,
            piece_size,
            hashes,
        })
    }

    /// The complete map of `data` (for blobs already in memory, and tests).
    ///
    /// # Errors
    /// As [`PieceMap::new`].
    pub fn from_data(digest: Digest, data: &[u8], piece_size: u32) -> Result<PieceMap, PieceError> {
        let mut hasher = PieceHasher::new(data.len() as u64, piece_size)?;
        hasher.update(data, |_, _| {})?;
        hasher.finish(digest)
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size of every piece but the last.
    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    /// The number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The bytes piece `index` covers.
    ///
    /// # Panics
    /// If `index` is not a piece of this blob.
    pub fn piece_range(&self, index: u32) -> Range<u64> {
        assert!(index < self.piece_count(), "piece {index} out of range");
        let start = u64::from(index) * u64::from(self.piece_size);
        start..(start + u64::from(self.piece_size)).min(self.size)
    }

    /// The length of piece `index`.
    ///
    /// # Panics
    /// If `index` is not a piece of this blob.
    pub fn piece_len(&self, index: u32) -> u32 {
        let r = self.piece_range(index);
        (r.end - r.start) as u32
    }

    /// The hash of piece `index`, if known (`None` also for an index out of range).
    pub fn hash(&self, index: u32) -> Option<PieceHash> {
        self.hashes.get(index as usize).copied().flatten()
    }

    /// All hash slots, in piece order.
    pub fn hashes(&self) -> &[Option<PieceHash>] {
        &self.hashes
    }

    /// How many piece hashes are known.
    pub fn known_count(&self) -> u32 {
        self.hashes.iter().filter(|h| h.is_some()).count() as u32
    }

    /// Whether every piece's hash is known.
    pub fn is_complete(&self) -> bool {
        self.hashes.iter().all(Option::is_some)
    }

    /// Whether `other` describes the same blob cut the same way.
    pub fn same_layout(&self, other: &PieceMap) -> bool {
        self.digest == other.digest
            && self.size == other.size
            && self.piece_size == other.piece_size
    }

    /// Learns the hash of piece `index`; `Ok(true)` if it was not known before.
    ///
    /// # Errors
    /// [`PieceError::OutOfRange`], or [`PieceError::HashConflict`] when a different hash is
    /// already known (one of the two sources is wrong; the known hash is kept).
    pub fn set_hash(&mut self, index: u32, hash: PieceHash) -> Result<bool, PieceError> {
        let count = self.piece_count();
        let slot = self
            .hashes
            .get_mut(index as usize)
            .ok_or(PieceError::OutOfRange { index, count })?;
        match slot {
            Some(known) if *known == hash => Ok(false),
            Some(_) => Err(PieceError::HashConflict { index }),
            None => {
                *slot = Some(hash);
                Ok(true)
            }
        }
    }

    /// Learns every hash `other` knows, all or nothing; returns how many were new.
    ///
    /// # Errors
    /// [`PieceError::MapMismatch`] when `other` is another blob or layout;
    /// [`PieceError::HashConflict`] (and nothing learned) when it contradicts a known hash.
    pub fn merge(&mut self, other: &PieceMap) -> Result<u32, PieceError> {
        if !self.same_layout(other) {
            return Err(PieceError::MapMismatch);
        }
        let mut new = 0;
        for (index, (mine, theirs)) in self.hashes.iter().zip(&other.hashes).enumerate() {
            match (mine, theirs) {
                (Some(a), Some(b)) if a != b => {
                    return Err(PieceError::HashConflict {
                        index: index as u32,
                    });
                }
                (None, Some(_)) => new += 1,
                _ => {}
            }
        }
        for (mine, theirs) in self.hashes.iter_mut().zip(&other.hashes) {
            if mine.is_none() {
                *mine = *theirs;
            }
        }
        Ok(new)
    }

    /// Sets a hash even over a different known one (for bytes from a trusted source).
    pub(super) fn replace_hash(&mut self, index: u32, hash: PieceHash) {
        self.hashes[index as usize] = Some(hash);
    }

    /// Forgets the hash of piece `index`.
    pub(super) fn forget_hash(&mut self, index: u32) {
        self.hashes[index as usize] = None;
    }
}

impl fmt::Debug for PieceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Thousands of hashes help nobody reading a log.
        f.debug_struct("PieceMap")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("piece_size", &self.piece_size)
            .field("pieces", &self.piece_count())
            .field("known", &self.known_count())
            .finish()
    }
}

/// The serde form of [`PieceMap`]: hashes as lowercase hex, validated on the way in.
#[derive(Serialize, Deserialize)]
struct RawPieceMap {
    digest: Digest,
    size: u64,
    piece_size: u32,
    hashes: Vec<Option<String>>,
}

impl TryFrom<RawPieceMap> for PieceMap {
    type Error = PieceError;

    fn try_from(raw: RawPieceMap) -> Result<PieceMap, PieceError> {
        check_layout(raw.size, raw.piece_size)?;
        let hashes = raw
            .hashes
            .iter()
            .map(|h| {
                h.as_deref()
                    .map(|s| {
                        let mut out = [0; 32];
                        hex::decode_to_slice(s, &mut out).map(|()| out)
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PieceError::InvalidLayout {
                reason: format!("bad piece hash: {e}"),
            })?;
        PieceMap::from_parts(raw.digest, raw.size, raw.piece_size, hashes)
    }
}

impl From<PieceMap> for RawPieceMap {
    fn from(map: PieceMap) -> RawPieceMap {
        RawPieceMap {
            digest: map.digest,
            size: map.size,
            piece_size: map.piece_size,
            hashes: map.hashes.iter().map(|h| h.map(hex::encode)).collect(),
        }
    }
}

/// Computes piece hashes from a blob's bytes arriving in order, in chunks of any size: the first
/// node to fetch a blob from a trusted source builds the piece map this way.
#[derive(Clone)]
pub struct PieceHasher {
    size: u64,
    piece_size: u32,
    /// Bytes fed so far.
    fed: u64,
    current: Sha256,
    hashes: Vec<Option<PieceHash>>,
}

impl PieceHasher {
    /// A hasher for a blob of `size` bytes cut into pieces of `piece_size`.
    ///
    /// # Errors
    /// [`PieceError::InvalidLayout`] as for [`PieceMap::new`].
    pub fn new(size: u64, piece_size: u32) -> Result<PieceHasher, PieceError> {
        let count = check_layout(size, piece_size)?;
        Ok(PieceHasher {
            size,
            piece_size,
            fed: 0,
            current: Sha256::new(),
            hashes: Vec::with_capacity(count as usize),
        })
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Feeds the next bytes; `on_piece(index, hash)` is called for each piece they complete,
    /// in order.
    ///
    /// # Errors
    /// [`PieceError::StreamLength`] if the bytes go past the blob's size (nothing is hashed).
    pub fn update(
        &mut self,
        mut data: &[u8],
        mut on_piece: impl FnMut(u32, PieceHash),
    ) -> Result<(), PieceError> {
        let total = self.fed + data.len() as u64;
        if total > self.size {
            return Err(PieceError::StreamLength {
                expected: self.size,
                actual: total,
            });
        }
        while !data.is_empty() {
            let piece_end =
                (self.fed / u64::from(self.piece_size) + 1) * u64::from(self.piece_size);
            let piece_end = piece_end.min(self.size);
            let take = data.len().min((piece_end - self.fed) as usize);
            self.current.update(&data[..take]);
            self.fed += take as u64;
            data = &data[take..];
            if self.fed == piece_end {
                let hash: PieceHash = std::mem::take(&mut self.current).finalize().into();
                on_piece(self.hashes.len() as u32, hash);
                self.hashes.push(Some(hash));
            }
        }
        Ok(())
    }

    /// The complete piece map, once every byte was fed.
    ///
    /// # Errors
    /// [`PieceError::StreamLength`] if fewer bytes than the size were fed.
    pub fn finish(self, digest: Digest) -> Result<PieceMap, PieceError> {
        if self.fed != self.size {
            return Err(PieceError::StreamLength {
                expected: self.size,
                actual: self.fed,
            });
        }
        PieceMap::from_parts(digest, self.size, self.piece_size, self.hashes)
    }
}
