//! One assignment on this node: fetching its image or file into the store through the node's
//! usual machinery (the same functions as preheat), with its own bandwidth limit and byte
//! counts ([`Meter`]), and reports to the manager — at most one a second while it runs, and a
//! final one that is retried until the manager has it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::client::{Backoff, CallError};
use crate::fetch::Meter;
use crate::fetch::limit::ByteRate;
use crate::manager::protocol::{
    Assignment, LogLine, MAX_LOG_LINES, NodeTaskState, Progress, Source,
};
use crate::oci::{Digest, ImageRef};
use crate::preheat::{Platform, fetch_blobs, resolve};

/// The shortest time between two reports of one running assignment.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Characters of a log message the manager keeps.
const MAX_MESSAGE: usize = 1000;
/// Log lines kept while the manager cannot be told; older ones are dropped first.
const MAX_PENDING_LOGS: usize = 10 * MAX_LOG_LINES;

/// What an assignment has done so far, shared by the fetch and the reports.
#[derive(Debug, Default)]
struct Tally {
    /// The task, for the node's own log.
    task_id: i64,
    /// Every blob to fetch, with its size (0 while unknown: a file before its download).
    blobs: Vec<(Digest, u64)>,
    /// Blobs complete in the store.
    done: HashSet<Digest>,
    /// Log lines not yet delivered.
    logs: VecDeque<LogLine>,
    /// Log lines dropped because the manager could not be told for long.
    dropped: u64,
}

impl Tally {
    fn log(&mut self, level: &str, message: String) {
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        match level {
            "error" | "warn" => tracing::warn!(task = self.task_id, "{message}"),
            _ => tracing::info!(task = self.task_id, "{message}"),
        }
        if self.logs.len() >= MAX_PENDING_LOGS {
            self.logs.pop_front();
            self.dropped += 1;
        }
        self.logs.push_back(LogLine {
            at: now_millis(),
            level: level.into(),
            message,
        });
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A running assignment's handle, kept by the work loop.
pub(super) struct Running {
    /// Stops it (it then reports `stopped`).
    pub cancel: CancellationToken,
    /// Ends once its final report is delivered (or given up).
    pub handle: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `assignment`: fetches, reports, and delivers a final report.
pub(super) fn start(inner: &Arc<Inner>, assignment: Assignment) -> Running {
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(run(inner.clone(), assignment, cancel.clone()));
    Running { cancel, handle }
}

/// How a run ended.
struct Ending {
    state: NodeTaskState,
    error: Option<String>,
}

async fn run(inner: Arc<Inner>, assignment: Assignment, cancel: CancellationToken) {
    let task_id = assignment.task_id;
    let limit = assignment.bandwidth.and_then(ByteRate::from_bytes_per_sec);
    let meter = Arc::new(Meter::new(limit));
    let tally = Arc::new(Mutex::new(Tally {
        task_id,
        ..Tally::default()
    }));
    let started = Instant::now();
    let mut work = tokio::spawn(execute(
        inner.clone(),
        assignment,
        meter.clone(),
        tally.clone(),
    ));
    // The fetch ends with this run, however the run ends (the agent may be dropped).
    let _fetch = AbortOnDrop(work.abort_handle());
    let mut reporter = Reporter {
        inner: inner.clone(),
        task_id,
        meter: meter.clone(),
        tally: tally.clone(),
        backoff: Backoff::default(),
    };
    let mut next_report = Instant::now();
    let ending = loop {
        tokio::select! {
            result = &mut work => break match result {
                Ok(Ok(())) => Ending { state: NodeTaskState::Succeeded, error: None },
                Ok(Err(error)) => Ending { state: NodeTaskState::Failed, error: Some(error) },
                Err(e) => Ending {
                    state: NodeTaskState::Failed,
                    error: Some(format!("the task ended unexpectedly: {e}")),
                },
            },
            () = cancel.cancelled() => break Ending { state: NodeTaskState::Stopped, error: None },
            () = inner.manager_back.notified() => next_report = Instant::now(),
            () = tokio::time::sleep_until(next_report) => {
                match reporter.send(NodeTaskState::Running, None).await {
                    Ok(true) => next_report = Instant::now() + REPORT_EVERY,
                    Ok(false) => break Ending { state: NodeTaskState::Stopped, error: None },
                    Err((pause, _)) => next_report = Instant::now() + pause,
                }
            }
        }
    };
    if ending.state == NodeTaskState::Stopped {
        // The fetch ends here; downloads it started end too, unless a client joined them.
        work.abort();
        meter.stop();
    }
    {
        let mut t = tally.lock().unwrap();
        let secs = started.elapsed().as_secs_f64();
        let (peer, upstream) = (meter.bytes_peer(), meter.bytes_upstream());
        match &ending.error {
            Some(e) => t.log("error", format!("failed after {secs:.1} s: {e}")),
            None if ending.state == NodeTaskState::Stopped => t.log(
                "warn",
                format!("stopped after {secs:.1} s ({peer} bytes from peers, {upstream} from the upstream)"),
            ),
            None => {
                let bytes: u64 = t.blobs.iter().map(|(_, s)| s).sum();
                let blobs = t.blobs.len();
                t.log(
                    "info",
                    format!("finished in {secs:.1} s: {blobs} blobs, {bytes} bytes; downloaded {peer} bytes from peers, {upstream} from the upstream"),
                );
            }
        }
    }
    reporter.deliver_final(ending).await;
}

/// Fetches the assignment's content, logging its course into `tally`.
async fn execute(
    inner: Arc<Inner>,
    assignment: Assignment,
    meter: Arc<Meter>,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), String> {
    let log = |level: &str, message: String| tally.lock().unwrap().log(level, message);
    let limit = match assignment.bandwidth {
        Some(b) if b > 0 => format!(", limited to {b} bytes/s"),
        _ => String::new(),
    };
    match &assignment.source {
        Source::Image { image, platforms } => {
            let which = if platforms.is_empty() {
                "all platforms".to_owned()
            } else {
                platforms.join(", ")
            };
            log(
                "info",
                format!(
                    "task {}: image {image} ({which}){limit}",
                    assignment.task_id
                ),
            );
            let image: ImageRef = image
                .parse()
                .map_err(|e| format!("invalid image {image:?}: {e}"))?;
            let platforms = platforms
                .iter()
                .map(|p| p.parse::<Platform>())
                .collect::<Result<Vec<_>, _>>()?;
            let resolved = resolve(&inner.fetcher, &image, &platforms)
                .await
                .map_err(|e| format!("cannot resolve {image}: {}", e.message))?;
            log(
                "info",
                format!(
                    "resolved {image}: {} manifests, {} blobs, {} bytes",
                    resolved.manifests.len(),
                    resolved.blobs.len(),
                    resolved.bytes()
                ),
            );
            tally.lock().unwrap().blobs = resolved.blobs.clone();
            let mut fetches = std::pin::pin!(fetch_blobs(
                &inner.fetcher,
                &image,
                &resolved.blobs,
                Some(meter)
            ));
            while let Some(done) = fetches.next().await {
                let (digest, _) = done.map_err(|e| e.message)?;
                tally.lock().unwrap().done.insert(digest);
            }
            Ok(())
        }
        Source::File { url, digest } => {
            let parsed = crate::files::parse_url(url).map_err(|e| e.message)?;
            let digest: Option<Digest> = digest
                .as_deref()
                .map(|d| d.parse().map_err(|e| format!("invalid digest {d:?}: {e}")))
                .transpose()?;
            // The URL may carry a signature: logs name the host only.
            let host = parsed.host_str().unwrap_or("?").to_owned();
            let what = digest
                .as_ref()
                .map_or_else(|| "by its URL".to_string(), ToString::to_string);
            log(
                "info",
                format!(
                    "task {}: file on {host} ({what}){limit}",
                    assignment.task_id
                ),
            );
            let (digest, size) = match digest {
                Some(digest) => {
                    tally.lock().unwrap().blobs = vec![(digest.clone(), 0)];
                    let size = inner
                        .files
                        .fetch_known(&parsed, digest.clone(), Some(meter))
                        .await
                        .map_err(|e| format!("file on {host}: {}", e.message))?;
                    (digest, size)
                }
                None => inner
                    .files
                    .fetch_by_url(&parsed, Some(meter))
                    .await
                    .map_err(|e| format!("file on {host}: {}", e.message))?,
            };
            let mut t = tally.lock().unwrap();
            t.blobs = vec![(digest.clone(), size)];
            t.done.insert(digest);
            Ok(())
        }
    }
}

/// Sends one assignment's reports.
struct Reporter {
    inner: Arc<Inner>,
    task_id: i64,
    meter: Arc<Meter>,
    tally: Arc<Mutex<Tally>>,
    backoff: Backoff,
}

impl Reporter {
    /// The report now, with up to [`MAX_LOG_LINES`] of the pending log lines.
    fn report(&self, state: NodeTaskState, error: Option<String>) -> Progress {
        // Downloads running now count with what they have received.
        let running: HashMap<Digest, crate::fetch::Progress> =
            self.inner.fetcher.downloads().into_iter().collect();
        let mut t = self.tally.lock().unwrap();
        let (mut bytes_total, mut bytes_done) = (0, 0);
        for (digest, size) in &t.blobs {
            let download = running.get(digest);
            let size = match (*size, download.and_then(|p| p.size)) {
                (0, Some(learned)) => learned,
                (size, _) => size,
            };
            bytes_total += size;
            bytes_done += if t.done.contains(digest) {
                size
            } else {
                download.map_or(0, |p| p.written.min(size))
            };
        }
        let mut logs = Vec::new();
        if t.dropped > 0 {
            let dropped = std::mem::take(&mut t.dropped);
            logs.push(LogLine {
                at: now_millis(),
                level: "warn".into(),
                message: format!("{dropped} log lines dropped while the manager was unreachable"),
            });
        }
        while logs.len() < MAX_LOG_LINES
            && let Some(line) = t.logs.pop_front()
        {
            logs.push(line);
        }
        Progress {
            task_id: self.task_id,
            state,
            blobs_total: t.blobs.len() as u64,
            blobs_done: t.done.len() as u64,
            bytes_total,
            bytes_done,
            bytes_peer: self.meter.bytes_peer(),
            bytes_upstream: self.meter.bytes_upstream(),
            error,
            logs,
        }
    }

    /// Puts undelivered log lines back, in front.
    fn keep_logs(&self, logs: Vec<LogLine>) {
        let mut t = self.tally.lock().unwrap();
        for line in logs.into_iter().rev() {
            t.logs.push_front(line);
        }
    }

    /// Sends a report. `Ok(proceed)`, or the pause before the next attempt and whether one
    /// can help (the manager refused the report itself, not for a reason of the moment).
    async fn send(
        &mut self,
        state: NodeTaskState,
        error: Option<String>,
    ) -> Result<bool, (Duration, bool)> {
        let Some(session) = self.inner.session() else {
            // Registering again: reports wait for the new token.
            return Err((self.backoff.fail(), true));
        };
        let report = self.report(state, error);
        match self
            .inner
            .client
            .progress(&session.node_token, &report)
            .await
        {
            Ok(ack) => {
                self.backoff.reset();
                Ok(ack.proceed)
            }
            // The manager no longer knows the task: nothing more to say about it.
            Err(CallError::NotFound) => Ok(false),
            Err(e) => {
                if !self.backoff.failing() {
                    tracing::warn!(task = self.task_id, error = %e, "cannot report progress; retrying");
                }
                if matches!(e, CallError::Unauthorized) {
                    self.inner.forget(&session);
                }
                self.keep_logs(report.logs);
                let retry = e.is_transient() || matches!(e, CallError::Unauthorized);
                Err((self.backoff.fail(), retry))
            }
        }
    }

    /// Delivers the final report (after any log lines that do not fit in it), retrying while
    /// the manager is unreachable.
    async fn deliver_final(&mut self, ending: Ending) {
        loop {
            let more_logs = self.tally.lock().unwrap().logs.len() > MAX_LOG_LINES;
            let result = if more_logs {
                self.send(NodeTaskState::Running, None).await.map(|_| false)
            } else {
                self.send(ending.state, ending.error.clone()).await
            };
            match result {
                Ok(_) if more_logs => continue,
                Ok(_) => {
                    tracing::debug!(
                        task = self.task_id,
                        state = ending.state.as_str(),
                        "final report delivered"
                    );
                    return;
                }
                Err((_, false)) => {
                    tracing::warn!(
                        task = self.task_id,
                        "the manager refused the final report; giving up on it"
                    );
                    return;
                }
                Err((pause, true)) => {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.inner.manager_back.notified() => {}
                    }
                }
            }
        }
    }
}
