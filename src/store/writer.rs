//! Writing one blob: bytes go to a temporary file and a running hash; `verify` checks the hash,
//! `commit` fsyncs and renames the file into `blobs/` (and refuses unverified content).
//! Blocking I/O: call from a blocking thread.
//!
//! The hash may be computed on another thread, in parallel with the writes: take it with
//! `detach_hasher`, feed it the same bytes in the same order, and hand it back to `verify_with`.

use std::fs::{self, File};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::oci::{Digest, Hasher};

/// A blob being written. Dropping it without `finish` removes the temporary file.
pub struct BlobWriter {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    digest: Digest,
    /// `None` once detached: the caller hashes.
    hasher: Option<Hasher>,
    written: u64,
    verified: bool,
}

impl BlobWriter {
    pub(super) fn create(temp: PathBuf, dest: PathBuf, digest: Digest) -> Result<Self, StoreError> {
        let file = File::create(&temp).map_err(StoreError::io("create", &temp))?;
        Ok(BlobWriter {
            file: Some(file),
            temp,
            dest,
            hasher: Some(Hasher::new(digest.algorithm())),
            digest,
            written: 0,
            verified: false,
        })
    }

    /// The temporary file, readable while it is written (readers must not go past `written`).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes (and hashes them, unless the hasher was detached).
    ///
    /// # Errors
    /// On I/O failure (a full disk, for one).
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        assert!(!self.verified, "write after verify");
        let file = self.file.as_mut().expect("writer used after finish");
        file.write_all(data)
            .map_err(StoreError::io("write", &self.temp))?;
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// Takes the running hash out, so that another thread can compute it while this one
    /// writes. That thread must feed it exactly the bytes written, in order; the result goes
    /// back through [`BlobWriter::verify_with`]. A fresh hasher after a reset.
    pub fn detach_hasher(&mut self) -> Hasher {
        self.hasher
            .take()
            .unwrap_or_else(|| Hasher::new(self.digest.algorithm()))
    }

    /// Throws away everything written, to start over from another source.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn reset(&mut self) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("writer used after finish");
        file.set_len(0)
            .and_then(|_| file.rewind())
            .map_err(StoreError::io("truncate", &self.temp))?;
        if self.hasher.is_some() {
            self.hasher = Some(Hasher::new(self.digest.algorithm()));
        }
        self.written = 0;
        self.verified = false;
        Ok(())
    }

    /// Checks the bytes written against the digest. After `Ok`, nothing more may be written;
    /// call [`BlobWriter::commit`].
    ///
    /// # Errors
    /// [`StoreError::DigestMismatch`] when the bytes are not the blob.
    ///
    /// # Panics
    /// If the hasher was detached (use [`BlobWriter::verify_with`]).
    pub fn verify(&mut self) -> Result<(), StoreError> {
        let hasher = self
            .hasher
            .take()
            .expect("hasher detached: use verify_with");
        self.verify_with(hasher)
    }

    /// Names content whose digest was not known in advance (a file fetched without one) by its
    /// own hash: the blob is whatever was written, so it is verified by construction, and
    /// `commit` moves it to that digest's place in `blobs/`. Returns the digest.
    ///
    /// # Panics
    /// If the hasher was detached.
    pub fn adopt(&mut self, blobs: impl FnOnce(&Digest) -> PathBuf) -> Digest {
        let hasher = self
            .hasher
            .take()
            .expect("adopt needs the writer's own hasher");
        self.digest = hasher.finish();
        self.dest = blobs(&self.digest);
        self.verified = true;
        self.digest.clone()
    }

    /// Checks a detached hasher's result against the digest.
    ///
    /// # Errors
    /// [`StoreError::DigestMismatch`] when the bytes are not the blob.
    pub fn verify_with(&mut self, hasher: Hasher) -> Result<(), StoreError> {
        let actual = hasher.finish();
        if actual != self.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        self.verified = true;
        Ok(())
    }

    /// Makes verified content durable and moves it into place.
    ///
    /// # Errors
    /// On I/O failure (the temporary file is then removed).
    ///
    /// # Panics
    /// If the content was not verified: unverified bytes never enter the store.
    pub fn commit(mut self) -> Result<u64, StoreError> {
        assert!(self.verified, "commit of unverified content");
        let file = self.file.take().expect("writer used after finish");
        let result = (|| {
            file.sync_all()
                .map_err(StoreError::io("sync", &self.temp))?;
            drop(file);
            fs::rename(&self.temp, &self.dest).map_err(StoreError::io("rename", &self.dest))?;
            if let Some(dir) = self.dest.parent() {
                // Make the rename itself durable.
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(StoreError::io("sync", dir))?;
            }
            Ok(self.written)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        result
    }

    /// [`verify`](Self::verify) then [`commit`](Self::commit).
    ///
    /// # Errors
    /// As theirs; on a mismatch the temporary file is removed.
    pub fn finish(mut self) -> Result<u64, StoreError> {
        self.verify()?;
        self.commit()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
