//! Where a partial download's files live, how they are found again after a restart, and how
//! `Store::open` sweeps what cannot be resumed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{PartialBlob, PieceError, PieceMap, meta};
use crate::oci::{Digest, Hasher};
use crate::store::{Store, StoreError};

/// The files of one partial download.
#[derive(Debug)]
pub(super) struct Paths {
    pub(super) dir: PathBuf,
    pub(super) data: PathBuf,
    pub(super) meta: PathBuf,
    pub(super) temp: PathBuf,
}

impl Paths {
    fn new(dir: &Path, digest: &Digest) -> Paths {
        let stem = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        Paths {
            dir: dir.to_owned(),
            data: dir.join(format!("{stem}.data")),
            meta: dir.join(format!("{stem}.meta")),
            temp: dir.join(format!("{stem}.meta.tmp")),
        }
    }
}

/// The digest a partial file's stem (`<alg>-<hex>`) names.
fn stem_digest(stem: &str) -> Option<Digest> {
    let (alg, hex) = stem.split_once('-')?;
    format!("{alg}:{hex}").parse().ok()
}

/// Removes a file, treating "already gone" as success.
pub(super) fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Makes renames in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync", dir))
}

fn log_resume(map: &PieceMap, bits: &[u8]) {
    let verified: u32 = bits.iter().map(|b| b.count_ones()).sum();
    tracing::info!(digest = %map.digest(), verified, pieces = map.piece_count(), "resuming partial download");
}

/// Reads back a persisted partial download of `digest`, if it is intact: the meta decodes and
/// names `digest`, and the data file has the blob's size.
fn load(paths: &Paths, digest: &Digest) -> Option<(PieceMap, Vec<u8>, File)> {
    let (map, bits) = meta::decode(&fs::read(&paths.meta).ok()?)?;
    if map.digest() != digest {
        return None;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths.data)
        .ok()?;
    (file.metadata().ok()?.len() == map.size()).then_some((map, bits, file))
}

impl Store {
    pub(super) fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// Starts a partial download of `digest`, or resumes the one on disk if it has the same
    /// size and piece size (otherwise that one is thrown away and this one starts empty).
    ///
    /// # Errors
    /// [`PieceError::InvalidLayout`] for an unusable piece size, [`PieceError::Store`] when the
    /// files cannot be created.
    pub fn partial(
        &self,
        digest: &Digest,
        size: u64,
        piece_size: u32,
    ) -> Result<PartialBlob, PieceError> {
        let fresh = PieceMap::new(digest.clone(), size, piece_size)?;
        let paths = Paths::new(&self.partial_dir(), digest);
        if let Some((map, bits, file)) = load(&paths, digest) {
            if map.size() == size && map.piece_size() == piece_size {
                log_resume(&map, &bits);
                return Ok(PartialBlob::resumed(
                    map,
                    bits,
                    file,
                    paths,
                    self.blob_path(digest),
                ));
            }
            tracing::info!(%digest, size, piece_size, "partial download had another layout; starting over");
        }
        Ok(PartialBlob::create(fresh, paths, self.blob_path(digest))?)
    }

    /// Resumes the partial download of `digest` with the layout it was started with; `None` if
    /// there is none (or it was unreadable, in which case it is removed).
    ///
    /// # Errors
    /// When an unreadable one cannot be removed.
    pub fn open_partial(&self, digest: &Digest) -> Result<Option<PartialBlob>, StoreError> {
        let paths = Paths::new(&self.partial_dir(), digest);
        if let Some((map, bits, file)) = load(&paths, digest) {
            log_resume(&map, &bits);
            return Ok(Some(PartialBlob::resumed(
                map,
                bits,
                file,
                paths,
                self.blob_path(digest),
            )));
        }
        remove_if_exists(&paths.meta)?;
        remove_if_exists(&paths.data)?;
        Ok(None)
    }

    /// The digests of the partial downloads on disk, sorted (to re-announce them on start).
    ///
    /// # Errors
    /// When `partial/` cannot be listed.
    pub fn partials(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.partial_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let name = entry.map_err(StoreError::io("list", &dir))?.file_name();
            let digest = name
                .to_str()
                .and_then(|n| stem_digest(n.strip_suffix(".meta")?));
            out.extend(digest);
        }
        out.sort();
        Ok(out)
    }

    /// Called by [`Store::open`]: keeps intact partial downloads and removes everything else in
    /// `partial/` — metas that do not decode or lack their data file, data files without a
    /// meta, leftover temporary files, and downloads whose blob is already complete.
    pub(in crate::store) fn sweep_partials(&self) {
        let dir = self.partial_dir();
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        let intact: Vec<&str> = paths
            .iter()
            .filter_map(|p| {
                let stem = p.file_name()?.to_str()?.strip_suffix(".meta")?;
                let digest = stem_digest(stem)?;
                let keep = self.blob_size(&digest).is_none()
                    && load(&Paths::new(&dir, &digest), &digest).is_some();
                keep.then_some(stem)
            })
            .collect();
        for path in &paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stem = name
                .strip_suffix(".meta")
                .or_else(|| name.strip_suffix(".data"));
            if stem.is_some_and(|s| intact.contains(&s)) {
                continue;
            }
            tracing::info!(path = %path.display(), "removing stale partial download file");
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
    }
}

impl PartialBlob {
    pub(super) fn resumed(
        map: PieceMap,
        bits: Vec<u8>,
        file: File,
        paths: Paths,
        blob_path: PathBuf,
    ) -> Self {
        let verified = bits.iter().map(|b| b.count_ones()).sum();
        PartialBlob {
            prefix: Hasher::new(map.digest().algorithm()),
            prefix_end: 0,
            persisted: bits.clone(),
            bits,
            verified,
            map,
            file: Some(file),
            paths,
            blob_path,
            dirty: false,
            unsynced: 0,
            last_checkpoint: Instant::now(),
        }
    }

    fn create(map: PieceMap, paths: Paths, blob_path: PathBuf) -> Result<Self, StoreError> {
        // The old meta goes first, so that it can never describe the new (empty) data file.
        remove_if_exists(&paths.meta)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&paths.data)
            .map_err(StoreError::io("create", &paths.data))?;
        file.set_len(map.size())
            .map_err(StoreError::io("allocate", &paths.data))?;
        let bitmap_len = (map.piece_count() as usize).div_ceil(8);
        let mut blob = PartialBlob::resumed(map, vec![0; bitmap_len], file, paths, blob_path);
        blob.dirty = true;
        blob.checkpoint()?;
        Ok(blob)
    }
}
