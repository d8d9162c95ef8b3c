//! Reading stored files off the async threads: positioned reads of large chunks in the
//! blocking pool, with one chunk read ahead while the previous one is being sent.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Size of one read; large enough that the blocking-pool hop is noise.
pub const READ_CHUNK: u64 = 2 * 1024 * 1024;

/// Reads exactly `len` bytes at `offset`.
///
/// # Errors
/// On I/O failure, or `UnexpectedEof` if the file is shorter.
pub async fn read_at(file: Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(len);
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf.freeze())
    })
    .await
    .map_err(io::Error::other)?
}

/// Reads `len` bytes at `offset` of the file at `path` into a fresh buffer, without zeroing it
/// first (a file of its own per read, so reads ahead of each other do not share a cursor).
async fn read_path_at(path: Arc<Path>, offset: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(io::Error::other)?
}

/// Streams bytes `start..end` of a complete (immutable) file, reading one chunk ahead.
pub fn file_stream(
    path: &Path,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let path: Arc<Path> = Arc::from(path);
    let offsets = (start..end).step_by(READ_CHUNK as usize);
    futures_util::stream::iter(offsets)
        .map(move |off| read_path_at(path.clone(), off, (end - off).min(READ_CHUNK) as usize))
        .buffered(2)
}

/// Reads exactly `len` bytes at `offset` of the file at `path`.
///
/// # Errors
/// On I/O failure, or `UnexpectedEof` if the file is shorter.
pub async fn read_path(path: &Path, offset: u64, len: usize) -> io::Result<Bytes> {
    read_path_at(Arc::from(path), offset, len).await
}
