//! The node's side of the control plane (the contract is [`crate::manager::protocol`]): it
//! joins the manager with the cluster's join token, keeps the node id and node token it gets
//! in `DATA_DIR/agent.json` (so a restart does not join again; a node token the manager
//! refuses makes it join again), sends a heartbeat every
//! [`HEARTBEAT_EVERY`](crate::manager::protocol::HEARTBEAT_EVERY), and long-polls for the
//! assignments the node should run: it starts those listed and not running, stops those
//! running and no longer listed, and reports each one's progress.
//!
//! The manager is never on the node's serving path. When it is down or answers errors, every
//! call is retried with a backoff (1 s doubling to 30 s); running assignments go on, keep their
//! reports (and log lines), and deliver them once it answers again.

mod client;
pub(crate) mod host;

pub use host::hostname;
mod run;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::fetch::Fetcher;
use crate::files::Files;
use crate::manager::protocol::{HEARTBEAT_EVERY, Heartbeat, MAX_WAIT_SECS, Registration};
use client::{Backoff, CallError, ManagerClient};

/// The file in the data dir that keeps the node's id and token at the manager.
pub const STATE_FILE: &str = "agent.json";

/// How long one work poll may wait at the manager.
const POLL_WAIT_SECS: u64 = MAX_WAIT_SECS / 2;

/// What the agent needs to know about the node and its manager.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The manager's base URL.
    pub manager: Url,
    /// The file holding the cluster's join token (read at each registration).
    pub token_file: PathBuf,
    /// The node's name in its cluster.
    pub node_name: String,
    /// The node's data dir (its file system is reported; `agent.json` lives there).
    pub data_dir: PathBuf,
    /// `node` or `seed`.
    pub role: String,
    /// The node's zone.
    pub zone: String,
    /// The mirror's bound address.
    pub mirror_addr: SocketAddr,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP client could not be built.
    #[error("cannot build the manager client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the manager gave this node when it joined, as kept in [`STATE_FILE`].
#[derive(Clone, Serialize, Deserialize, PartialEq)]
struct Session {
    /// The manager it was given by.
    manager: String,
    node_id: i64,
    cluster_id: i64,
    node_token: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("manager", &self.manager)
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("node_token", &"***")
            .finish()
    }
}

/// The agent's shared state.
struct Inner {
    config: AgentConfig,
    fetcher: Arc<Fetcher>,
    files: Arc<Files>,
    client: ManagerClient,
    /// The node's id and token, once it has joined (`None` while it joins again).
    session: watch::Sender<Option<Session>>,
    /// Fired when the manager answers again after failures: waiting reports go out at once.
    manager_back: Notify,
    /// The mirror's address as the manager can reach it.
    address: tokio::sync::OnceCell<String>,
}

/// The running agent. Dropping it stops it (assignments running on this node stop with it,
/// without a report: the manager assigns them again when the node returns).
pub struct Agent {
    tasks: JoinSet<()>,
}

impl Agent {
    /// Starts joining `config.manager` and serving its assignments with the node's engine
    /// and file service.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn spawn(
        config: AgentConfig,
        fetcher: Arc<Fetcher>,
        files: Arc<Files>,
    ) -> Result<Agent, AgentError> {
        let client = ManagerClient::new(&config.manager)?;
        tracing::info!(manager = %config.manager, name = %config.node_name, "joining the manager");
        let inner = Arc::new(Inner {
            config,
            fetcher,
            files,
            client,
            session: watch::Sender::new(None),
            manager_back: Notify::new(),
            address: tokio::sync::OnceCell::new(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(work_loop(inner.clone()));
        tasks.spawn(heartbeats(inner));
        Ok(Agent { tasks })
    }

    /// Stops the agent.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

impl Inner {
    fn state_path(&self) -> PathBuf {
        self.config.data_dir.join(STATE_FILE)
    }

    /// The node's session now, if it has joined.
    fn session(&self) -> Option<Session> {
        self.session.borrow().clone()
    }

    /// The manager refused `session`'s token: forget it (and its file) so the node joins again.
    fn forget(&self, session: &Session) {
        let forgotten = self.session.send_if_modified(|current| {
            if current.as_ref() == Some(session) {
                *current = None;
                true
            } else {
                false
            }
        });
        if forgotten {
            tracing::warn!(
                node_id = session.node_id,
                "the manager refused the node token; joining again"
            );
            if let Err(e) = std::fs::remove_file(self.state_path())
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "cannot remove the agent state file");
            }
        }
    }

    /// The session: the current one, the one kept in the data dir, or a new registration
    /// (retried until the manager accepts the join token).
    async fn established(&self) -> Session {
        if let Some(s) = self.session() {
            return s;
        }
        if let Some(s) = self.load() {
            tracing::info!(
                node_id = s.node_id,
                cluster_id = s.cluster_id,
                "joined the manager earlier (agent.json)"
            );
            self.session.send_replace(Some(s.clone()));
            return s;
        }
        let mut backoff = Backoff::default();
        loop {
            match self.register().await {
                Ok(s) => {
                    tracing::info!(
                        node_id = s.node_id,
                        cluster_id = s.cluster_id,
                        "joined the manager"
                    );
                    if let Err(e) = self.save(&s) {
                        tracing::warn!(error = %e, "cannot keep the node token in the data dir; the node will join again after a restart");
                    }
                    self.session.send_replace(Some(s.clone()));
                    return s;
                }
                Err(e) => {
                    let pause = backoff.fail();
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot join the manager");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Registers with the join token from the token file.
    async fn register(&self) -> Result<Session, String> {
        let path = &self.config.token_file;
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        let registration = Registration {
            name: self.config.node_name.clone(),
            peer_id: self.peer_id(),
            address: self.address().await,
            version: env!("CARGO_PKG_VERSION").into(),
            role: self.config.role.clone(),
            zone: self.config.zone.clone(),
        };
        let registered = self
            .client
            .register(token, &registration)
            .await
            .map_err(|e| match e {
                CallError::Unauthorized => "the manager refused the join token".to_owned(),
                e => e.to_string(),
            })?;
        Ok(Session {
            manager: self.config.manager.to_string(),
            node_id: registered.node_id,
            cluster_id: registered.cluster_id,
            node_token: registered.node_token,
        })
    }

    /// The session kept in the data dir, if it was given by this manager.
    fn load(&self) -> Option<Session> {
        let text = std::fs::read(self.state_path()).ok()?;
        match serde_json::from_slice::<Session>(&text) {
            Ok(s) if s.manager == self.config.manager.as_str() => Some(s),
            Ok(_) => {
                tracing::info!("agent.json names another manager; joining this one");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent.json is unreadable; joining again");
                None
            }
        }
    }

    /// Keeps the session in the data dir, readable by this user only.
    fn save(&self, session: &Session) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.state_path();
        let temp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(session).expect("the session serializes"))?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    }

    fn peer_id(&self) -> String {
        self.fetcher
            .p2p()
            .map(|p| p.peer_id().to_string())
            .unwrap_or_default()
    }

    async fn address(&self) -> String {
        self.address
            .get_or_init(|| host::advertised(self.config.mirror_addr, &self.config.manager))
            .await
            .clone()
    }

    /// The node's state now.
    async fn heartbeat(&self) -> Heartbeat {
        let dir = self.config.data_dir.clone();
        let (disk_total, disk_free) = tokio::task::spawn_blocking(move || host::disk(&dir))
            .await
            .unwrap_or((0, 0));
        let peers = match self.fetcher.p2p() {
            Some(p) => p.peers().await.len() as u64,
            None => 0,
        };
        Heartbeat {
            version: env!("CARGO_PKG_VERSION").into(),
            role: self.config.role.clone(),
            zone: self.config.zone.clone(),
            peer_id: self.peer_id(),
            address: self.address().await,
            disk_total,
            disk_free,
            peers,
            downloads: self.fetcher.downloads_in_flight() as u64,
            load: host::load(),
            ready: self.fetcher.readiness().await.is_ok(),
        }
    }
}

/// Sends a heartbeat every [`HEARTBEAT_EVERY`] while the node has a session, and one at once
/// when it gets a new one.
async fn heartbeats(inner: Arc<Inner>) {
    let mut sessions = inner.session.subscribe();
    let mut failing = false;
    loop {
        let Ok(session) = sessions.wait_for(Option::is_some).await.map(|s| s.clone()) else {
            return;
        };
        let session = session.expect("waited for a session");
        let heartbeat = inner.heartbeat().await;
        match inner
            .client
            .heartbeat(&session.node_token, &heartbeat)
            .await
        {
            Ok(()) => failing = false,
            Err(CallError::Unauthorized) => inner.forget(&session),
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "heartbeat failed; the node serves on and tries again");
                }
                failing = true;
            }
        }
        sessions.mark_unchanged();
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = sessions.changed() => {}
        }
    }
}

/// Polls for work and keeps the running assignments equal to the manager's list.
async fn work_loop(inner: Arc<Inner>) {
    let mut runs: HashMap<i64, run::Running> = HashMap::new();
    // The last list, and the tasks that ended here while listed (not started again until the
    // manager drops them from the list).
    let mut listed: HashSet<i64> = HashSet::new();
    let mut finished: HashSet<i64> = HashSet::new();
    let mut backoff = Backoff::default();
    let mut sessions = inner.session.subscribe();
    loop {
        let session = inner.established().await;
        runs.retain(|id, run| {
            if !run.handle.is_finished() {
                return true;
            }
            // Stopped because it left the list: it may run again if it comes back.
            if listed.contains(id) && !run.cancel.is_cancelled() {
                finished.insert(*id);
            }
            false
        });
        let mut have: Vec<i64> = runs.keys().chain(&finished).copied().collect();
        have.sort_unstable();
        have.dedup();
        let poll = inner
            .client
            .work(&session.node_token, POLL_WAIT_SECS, &have);
        // A token refused elsewhere (a heartbeat) ends the poll: the node joins again now.
        let replaced = sessions.wait_for(|s| s.as_ref() != Some(&session));
        let result = tokio::select! {
            result = poll => result,
            _ = replaced => continue,
        };
        match result {
            Ok(work) => {
                if backoff.failing() {
                    tracing::info!("the manager answers again");
                    inner.manager_back.notify_waiters();
                }
                backoff.reset();
                listed = work.assignments.iter().map(|a| a.task_id).collect();
                finished.retain(|id| listed.contains(id));
                for (id, run) in &runs {
                    if !listed.contains(id) && !run.cancel.is_cancelled() {
                        tracing::info!(task = id, "assignment withdrawn; stopping it");
                        run.cancel.cancel();
                    }
                }
                for assignment in work.assignments {
                    let id = assignment.task_id;
                    if !runs.contains_key(&id) && !finished.contains(&id) {
                        tracing::info!(task = id, "assignment received; starting it");
                        runs.insert(id, run::start(&inner, assignment));
                    }
                }
            }
            Err(CallError::Unauthorized) => inner.forget(&session),
            Err(e) => {
                let pause = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?pause, "cannot poll the manager for work; running tasks go on");
                tokio::time::sleep(pause).await;
            }
        }
    }
}
