//! One blob download and its readers.
//!
//! The download task writes into a temporary file and publishes its progress on a `watch`
//! channel; every reader opens the file itself and streams bytes up to what has been written.
//! Readers always hold back the last byte until the whole blob has been verified, so a client
//! never receives a complete body of unverified content: if verification fails, readers end
//! with an error and the client's connection is cut short.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::metrics::{NodeMetrics, Source};
use crate::oci::{Digest, RegistryError};

/// Where a download stands.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Looking for a source that answers.
    Connecting,
    /// A source is sending bytes.
    Streaming,
    /// Verified and in the store.
    Complete,
    /// Every source failed.
    Failed(RegistryError),
}

/// A snapshot of a download's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Bumped whenever the content starts over (a source sent bad bytes or ignored a resume).
    pub generation: u32,
    /// Bytes written to `temp` in this generation.
    pub written: u64,
    /// Total size, once a source has announced it.
    pub size: Option<u64>,
    /// Where the bytes are coming from.
    pub source: Source,
    /// The phase.
    pub phase: Phase,
    /// The file being written in this generation.
    pub temp: Arc<Path>,
}

/// A download shared by every request for the same digest on this node.
#[derive(Debug)]
pub struct Download {
    /// The blob.
    pub digest: Digest,
    /// Its place in the store once complete.
    pub final_path: PathBuf,
    state: watch::Sender<Progress>,
}

impl Download {
    pub(super) fn new(digest: Digest, final_path: PathBuf, temp: &Path) -> Download {
        let (state, _) = watch::channel(Progress {
            generation: 0,
            written: 0,
            size: None,
            source: Source::Upstream,
            phase: Phase::Connecting,
            temp: Arc::from(temp),
        });
        Download {
            digest,
            final_path,
            state,
        }
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        self.state.borrow().clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.state.send_modify(f);
    }

    /// Waits until a source has answered (or every source failed), so that the caller can
    /// send response headers.
    ///
    /// # Errors
    /// The download's failure.
    pub async fn ready(&self) -> Result<Progress, RegistryError> {
        let mut rx = self.state.subscribe();
        let p = rx
            .wait_for(|p| !matches!(p.phase, Phase::Connecting))
            .await
            .map_err(|_| gone())?
            .clone();
        match p.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(p),
        }
    }

    /// Waits for the end of the download.
    ///
    /// # Errors
    /// The download's failure.
    pub async fn finished(&self) -> Result<(), RegistryError> {
        let mut rx = self.state.subscribe();
        let p = rx
            .wait_for(|p| matches!(p.phase, Phase::Complete | Phase::Failed(_)))
            .await
            .map_err(|_| gone())?
            .clone();
        match p.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Streams bytes `start..end` as they arrive. The stream ends with an error, rather than
    /// quietly, if the download fails or restarts after bytes were sent.
    pub fn reader(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        metrics: NodeMetrics,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let state = ReaderState {
            download: self.clone(),
            rx: self.state.subscribe(),
            pos: start,
            end,
            file: None,
            generation: None,
            sent_any: false,
            done: false,
            metrics,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            match s.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), s)),
                Ok(None) => None,
                Err(e) => {
                    s.done = true;
                    Some((Err(e), s))
                }
            }
        })
    }
}

fn gone() -> RegistryError {
    RegistryError::new(
        crate::oci::ErrorCode::Unknown,
        "download ended unexpectedly",
    )
}

const READ_CHUNK: u64 = 256 * 1024;

struct ReaderState {
    download: Arc<Download>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    end: u64,
    file: Option<tokio::fs::File>,
    generation: Option<u32>,
    sent_any: bool,
    done: bool,
    metrics: NodeMetrics,
}

impl ReaderState {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            let p = self.rx.borrow_and_update().clone();
            if let Phase::Failed(e) = &p.phase {
                return Err(io::Error::other(e.message.clone()));
            }
            if self.generation != Some(p.generation) {
                if self.sent_any {
                    return Err(io::Error::other(
                        "the source sent bad content; the download restarted",
                    ));
                }
                self.generation = Some(p.generation);
                self.file = None;
            }
            let complete = matches!(p.phase, Phase::Complete);
            // Hold back the last byte until the blob is verified.
            let limit = if complete {
                p.size.unwrap_or(p.written)
            } else {
                p.written.saturating_sub(1)
            };
            if limit > self.pos {
                if self.file.is_none() {
                    let path: &Path = if complete {
                        &self.download.final_path
                    } else {
                        &p.temp
                    };
                    match tokio::fs::File::open(path).await {
                        Ok(mut f) => {
                            f.seek(SeekFrom::Start(self.pos)).await?;
                            self.file = Some(f);
                        }
                        // Renamed or replaced under us: look at the state again.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            if self.rx.has_changed().unwrap_or(false) {
                                continue;
                            }
                            if complete {
                                return Err(e);
                            }
                            self.rx
                                .changed()
                                .await
                                .map_err(|_| io::Error::other("ended"))?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let want = (limit - self.pos).min(self.end - self.pos).min(READ_CHUNK) as usize;
                let mut buf = BytesMut::zeroed(want);
                let file = self.file.as_mut().expect("opened above");
                file.read_exact(&mut buf).await?;
                self.pos += want as u64;
                self.sent_any = true;
                self.metrics.served(p.source, want as u64);
                return Ok(Some(buf.freeze()));
            }
            if complete {
                // The blob is shorter than the range asked for.
                return Err(io::Error::other("range beyond the end of the blob"));
            }
            self.rx
                .changed()
                .await
                .map_err(|_| io::Error::other("download ended unexpectedly"))?;
        }
    }
}
