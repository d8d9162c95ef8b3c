//! The content-addressed store on disk.
//!
//! ```text
//! DATA_DIR/blobs/sha256/<hex>                 complete, verified blobs
//! DATA_DIR/manifests/sha256/<hex>             manifest bytes, exactly as the upstream sent them
//! DATA_DIR/manifests/sha256/<hex>.type        their media type
//! DATA_DIR/tags/<registry>/<repo>/_tags/<tag> last known tag → digest (stale-if-error)
//! DATA_DIR/tmp/                               downloads in progress
//! DATA_DIR/partial/<alg>-<hex>.{data,meta}     piece-wise downloads that survive restarts
//! ```
//!
//! A blob is written to a temporary file, verified against its digest, fsynced and renamed into
//! place, so a file under `blobs/` is always complete and correct, whatever was killed when.
//! `tmp/` is emptied when the store opens: a download cut by a crash starts over. `partial/`
//! keeps its intact entries, so those resume where they stopped (see [`partial`]).

mod maps;
pub mod partial;
pub mod read;
mod usage;
mod writer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::oci::{Digest, MediaType, RegistryHost, RepoName, Tag};

pub use partial::{PartialBlob, PieceError, PieceHasher, PieceMap};
pub use usage::StoredBlob;
pub use writer::BlobWriter;

/// A store failure, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed (full disk, permissions, …).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bytes written do not hash to the digest they were written for.
    #[error("content does not match {expected}: got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { op, path, source }
    }
}

/// The last known resolution of a tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    /// The manifest digest the tag pointed at.
    pub digest: Digest,
    /// That manifest's media type.
    pub media_type: MediaType,
}

/// What a file (an HTTP URL, with the origin's validators) was found to be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    /// The content's digest (it is stored as that blob).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The origin's `Content-Type`, if it sent one.
    pub content_type: Option<String>,
}

/// The store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    temp_seq: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store under `root` and discards unfinished downloads,
    /// except intact partial downloads under `partial/`, which resume.
    ///
    /// # Errors
    /// When the directories cannot be created or written.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for dir in [
            "blobs/sha256",
            "blobs/sha512",
            "manifests/sha256",
            "tags",
            "tmp",
            "partial",
        ] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(StoreError::io("create", &p))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(StoreError::io("list", &tmp))? {
            let path = entry.map_err(StoreError::io("list", &tmp))?.path();
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
        }
        let store = Store {
            root,
            temp_seq: AtomicU64::new(0),
        };
        store.sweep_partials();
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a complete blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The size of a complete blob, or `None` if the store does not hold it.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// A fresh temporary path under `tmp/`.
    pub(crate) fn temp_path(&self, hint: &str) -> PathBuf {
        let n = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{hint}.{}.{n}", std::process::id()))
    }

    /// Starts writing a blob; see [`BlobWriter`].
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn blob_writer(&self, digest: &Digest) -> Result<BlobWriter, StoreError> {
        BlobWriter::create(
            self.temp_path(digest.hex()),
            self.blob_path(digest),
            digest.clone(),
        )
    }

    /// Starts writing content whose digest is not known yet; name it with
    /// [`BlobWriter::adopt`] before `commit`.
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub fn unnamed_writer(&self) -> Result<BlobWriter, StoreError> {
        let placeholder = Digest::sha256_of(b"");
        BlobWriter::create(
            self.temp_path("unnamed"),
            self.temp_path("unnamed-dest"),
            placeholder,
        )
    }

    fn file_record_path(&self, id: &str) -> PathBuf {
        self.root.join("files").join(format!("{id}.json"))
    }

    /// What a file identity (URL and validators) was last found to be.
    pub fn file_record(&self, id: &str) -> Option<FileRecord> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let bytes = fs::read(self.file_record_path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records what a file identity is.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn put_file_record(&self, id: &str, record: &FileRecord) -> Result<(), StoreError> {
        let path = self.file_record_path(id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        }
        let json = serde_json::to_vec(record).expect("file record serializes");
        self.write_atomic(&path, &json)
    }

    fn file_mark_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("files").join("content").join(format!(
            "{}-{}",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }

    /// Marks a digest as content fetched as a file (from some URL), which the file endpoint may
    /// serve; content that only came in as a registry blob is served through the registry API,
    /// where the upstream authorizes each client.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn mark_file(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.file_mark_path(digest);
        if path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        }
        self.write_atomic(&path, b"")
    }

    /// Whether a digest was marked as file content.
    pub fn is_file(&self, digest: &Digest) -> bool {
        self.file_mark_path(digest).exists()
    }

    fn manifest_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("manifests")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// A stored manifest, re-verified against its digest on the way out (a corrupt file is
    /// removed and reported as absent).
    pub fn manifest(&self, digest: &Digest) -> Option<(Bytes, MediaType)> {
        let path = self.manifest_path(digest);
        let bytes = fs::read(&path).ok()?;
        let media = fs::read_to_string(path.with_extension("type")).ok()?;
        if !digest.matches(&bytes) {
            tracing::warn!(%digest, "stored manifest is corrupt; removing it");
            let _ = fs::remove_file(&path);
            return None;
        }
        Some((Bytes::from(bytes), media.trim().parse().ok()?))
    }

    /// Stores a manifest that the caller has verified against `digest`.
    ///
    /// # Errors
    /// When the bytes do not match `digest`, or on I/O failure.
    pub fn put_manifest(
        &self,
        digest: &Digest,
        bytes: &[u8],
        media: &MediaType,
    ) -> Result<(), StoreError> {
        if !digest.matches(bytes) {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual: Digest::sha256_of(bytes),
            });
        }
        let path = self.manifest_path(digest);
        fs::create_dir_all(path.parent().unwrap_or(&self.root))
            .map_err(StoreError::io("create", &path))?;
        // The type first: a manifest file without its type would be unreadable.
        self.write_atomic(&path.with_extension("type"), media.as_str().as_bytes())?;
        self.write_atomic(&path, bytes)
    }

    fn tag_path(&self, registry: &RegistryHost, repo: &RepoName, tag: &Tag) -> PathBuf {
        // `_tags` cannot collide with a repository path component, which must start with an
        // alphanumeric; names and hosts were validated, so none of them escapes `tags/`.
        self.root
            .join("tags")
            .join(registry.as_str())
            .join(repo.as_str())
            .join("_tags")
            .join(tag.as_str())
    }

    /// The last known resolution of a tag.
    pub fn tag(&self, registry: &RegistryHost, repo: &RepoName, tag: &Tag) -> Option<TagRecord> {
        let bytes = fs::read(self.tag_path(registry, repo, tag)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records a tag's resolution.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn put_tag(
        &self,
        registry: &RegistryHost,
        repo: &RepoName,
        tag: &Tag,
        record: &TagRecord,
    ) -> Result<(), StoreError> {
        let path = self.tag_path(registry, repo, tag);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        }
        let json = serde_json::to_vec(record).expect("tag record serializes");
        self.write_atomic(&path, &json)
    }

    /// Writes a small file through a temporary file and a rename.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.temp_path("small");
        let result = (|| {
            fs::write(&tmp, bytes).map_err(StoreError::io("write", &tmp))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(StoreError::io("sync", &tmp))?;
            fs::rename(&tmp, path).map_err(StoreError::io("rename", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests;
