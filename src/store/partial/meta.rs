//! The on-disk record of a partial download (`<alg>-<hex>.meta`): its piece map and the bitmap of
//! verified pieces, in a compact binary form sealed with a checksum.
//!
//! ```text
//! "SHOALPM1"                      magic and format version
//! u16 LE n, n bytes               the digest, "sha256:<hex>"
//! u64 LE size, u32 LE piece_size
//! ceil(count/8) bytes             which hashes are known (bit i = piece i, LSB first)
//! ceil(count/8) bytes             which pieces are verified (same order)
//! 32 bytes per known hash         in piece order
//! 32 bytes                        SHA-256 of everything above
//! ```
//!
//! Binary rather than JSON because it is rewritten at every checkpoint: ~34 bytes a piece instead
//! of ~70. Anything that does not decode exactly — bad checksum, wrong lengths, stray bits, a
//! verified piece without a hash — is rejected whole, and the download starts over.

use super::map::{PieceHash, PieceMap, bitmap_has, hash_piece};
use crate::oci::Digest;

const MAGIC: &[u8; 8] = b"SHOALPM1";

/// Encodes a map and its verified-pieces bitmap.
pub(super) fn encode(map: &PieceMap, verified: &[u8]) -> Vec<u8> {
    let count = map.piece_count() as usize;
    let digest = map.digest().to_string();
    let mut known = vec![0u8; count.div_ceil(8)];
    for (i, h) in map.hashes().iter().enumerate() {
        if h.is_some() {
            known[i / 8] |= 1 << (i % 8);
        }
    }
    let mut out = Vec::with_capacity(64 + digest.len() + 2 * known.len() + 32 * count);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(digest.len() as u16).to_le_bytes());
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(&map.size().to_le_bytes());
    out.extend_from_slice(&map.piece_size().to_le_bytes());
    out.extend_from_slice(&known);
    out.extend_from_slice(verified);
    for h in map.hashes().iter().flatten() {
        out.extend_from_slice(h);
    }
    let sum = hash_piece(&out);
    out.extend_from_slice(&sum);
    out
}

/// Decodes what [`encode`] wrote; `None` for anything else.
pub(super) fn decode(bytes: &[u8]) -> Option<(PieceMap, Vec<u8>)> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if hash_piece(body) != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let digest_len = u16::from_le_bytes(r.array()?) as usize;
    let digest: Digest = std::str::from_utf8(r.take(digest_len)?)
        .ok()?
        .parse()
        .ok()?;
    let size = u64::from_le_bytes(r.array()?);
    let piece_size = u32::from_le_bytes(r.array()?);
    // Validates the layout before anything is allocated from it.
    let mut map = PieceMap::new(digest, size, piece_size).ok()?;
    let count = map.piece_count();
    let bitmap_len = (count as usize).div_ceil(8);
    let known = r.take(bitmap_len)?;
    let verified = r.take(bitmap_len)?.to_vec();
    if stray_bits(known, count) || stray_bits(&verified, count) {
        return None;
    }
    for i in 0..count {
        if bitmap_has(known, i) {
            let hash: PieceHash = r.array()?;
            map.set_hash(i, hash).ok()?;
        } else if bitmap_has(&verified, i) {
            return None;
        }
    }
    r.0.is_empty().then_some((map, verified))
}

/// Whether a bitmap has bits set past the last piece.
fn stray_bits(bitmap: &[u8], count: u32) -> bool {
    match (count % 8, bitmap.last()) {
        (0, _) | (_, None) => false,
        (used, Some(last)) => last >> used != 0,
    }
}

/// A cursor over the bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}
