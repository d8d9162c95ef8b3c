//! What can go wrong with pieces, and whose fault it is.

use super::super::StoreError;

/// Why a piece operation failed. [`PieceError::blames_sender`] tells bad input from a peer apart
/// from our own failures.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    /// A piece size or count outside the limits, or a map whose parts do not fit together.
    #[error("invalid piece layout: {reason}")]
    InvalidLayout {
        /// What is wrong.
        reason: String,
    },
    /// A piece index past the last piece.
    #[error("piece {index} out of range (the blob has {count} pieces)")]
    OutOfRange {
        /// The index asked for.
        index: u32,
        /// The number of pieces.
        count: u32,
    },
    /// A range that ends past the end of the blob.
    #[error("range ends at {end}, past the blob's end at {size}")]
    BeyondEnd {
        /// Where the range ends.
        end: u64,
        /// The blob's size.
        size: u64,
    },
    /// The piece's hash is not known yet, so its bytes cannot be checked.
    #[error("hash of piece {index} not known")]
    UnknownHash {
        /// The piece.
        index: u32,
    },
    /// The bytes are not as long as the piece.
    #[error("piece {index} has {actual} bytes, expected {expected}")]
    WrongLength {
        /// The piece.
        index: u32,
        /// Its length.
        expected: u32,
        /// The length received.
        actual: usize,
    },
    /// The bytes do not hash to the piece's hash; nothing was written.
    #[error("piece {index} does not match its hash")]
    HashMismatch {
        /// The piece.
        index: u32,
    },
    /// A source claims a hash that contradicts one already known (one of them is wrong).
    #[error("conflicting hashes for piece {index}")]
    HashConflict {
        /// The piece.
        index: u32,
    },
    /// The piece (or a piece of the range) is not verified yet.
    #[error("piece {index} is not verified")]
    NotVerified {
        /// The piece.
        index: u32,
    },
    /// A piece map for another blob, size or piece size.
    #[error("piece map of another blob or layout")]
    MapMismatch,
    /// A [`PieceHasher`](super::PieceHasher) was fed more or fewer bytes than the blob's size.
    #[error("stream of {actual} bytes for a blob of {expected}")]
    StreamLength {
        /// The blob's size.
        expected: u64,
        /// Bytes fed.
        actual: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PieceError {
    /// Whether the piece's sender is at fault (wrong bytes or length): penalize it and fetch the
    /// piece elsewhere. Everything else is our state or our disk.
    pub fn blames_sender(&self) -> bool {
        matches!(
            self,
            PieceError::HashMismatch { .. } | PieceError::WrongLength { .. }
        )
    }
}
