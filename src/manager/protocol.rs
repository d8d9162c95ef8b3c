//! The wire contract between a node's agent and the manager (JSON over HTTP, under
//! `/api/v1/agent`). Nodes call the manager, never the other way round:
//!
//! 1. `POST /api/v1/agent/register` with the cluster's join token (`Authorization: Bearer
//!    JOIN_TOKEN`) and a [`Registration`] → [`Registered`]: the node's id and its own node token,
//!    which the agent keeps in its data dir and sends on every later call.
//! 2. `POST /api/v1/agent/heartbeat` with a [`Heartbeat`] every [`HEARTBEAT_EVERY`].
//! 3. `GET /api/v1/agent/work?wait=SECS&have=ID,ID…` → [`Work`]: every assignment the node
//!    should be running now. The call returns at once when that set differs from `have`, else
//!    when it changes or after `wait` seconds (a long poll). Level-triggered: an agent starts
//!    what is listed and not running, and stops what runs and is no longer listed, so a lost
//!    answer or a restart on either side converges.
//! 4. `POST /api/v1/agent/progress` with a [`Progress`] while an assignment runs and once when
//!    it ends → [`ProgressAck`] (whether the assignment is still wanted).

use serde::{Deserialize, Serialize};

/// How often an agent sends a heartbeat.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest long poll the manager holds open.
pub const MAX_WAIT_SECS: u64 = 60;

/// What a node tells the manager when it joins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The node's name in its cluster: the host name (Kubernetes: the node name).
    pub name: String,
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// The node's mirror address as others can reach it, e.g. `10.0.0.5:65001`.
    pub address: String,
    /// The shoal version.
    pub version: String,
    /// `node` or `seed`.
    pub role: String,
    /// The node's zone.
    pub zone: String,
}

/// The manager's answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// The node's id at the manager.
    pub node_id: i64,
    /// The node's own bearer token for every later agent call (shown once).
    pub node_token: String,
    /// The cluster the join token belongs to.
    pub cluster_id: i64,
}

/// A node's periodic report of its state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The shoal version.
    pub version: String,
    /// `node` or `seed`.
    pub role: String,
    /// The node's zone.
    pub zone: String,
    /// The libp2p peer id.
    pub peer_id: String,
    /// The mirror address.
    pub address: String,
    /// Bytes of the store's file system.
    pub disk_total: u64,
    /// Bytes free on it.
    pub disk_free: u64,
    /// Connected swarm peers.
    pub peers: u64,
    /// Downloads in flight.
    pub downloads: u64,
    /// One-minute load average of the host.
    pub load: f64,
    /// Whether the node's `/readyz` holds (store usable, a source reachable).
    pub ready: bool,
}

/// One assignment: a task a node should carry out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Assignment {
    /// The task's id.
    pub task_id: i64,
    /// What to fetch.
    pub source: Source,
    /// The task's bandwidth limit for this node's transfers, bytes per second.
    pub bandwidth: Option<u64>,
}

/// What an assignment fetches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// An image: every blob of the chosen platforms (all when empty).
    Image {
        /// The reference, e.g. `registry.example.com/team/app:1.2`.
        image: String,
        /// `os/arch[/variant]` platforms; empty = all.
        platforms: Vec<String>,
    },
    /// A file.
    File {
        /// The file's http(s) URL.
        url: String,
        /// Its digest (`sha256:…`), which the node verifies. Without one the node takes the
        /// file by its URL's identity (ETag, Last-Modified, length), as `shoal get` does.
        #[serde(default)]
        digest: Option<String>,
    },
}

/// The answer to a work poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Work {
    /// Every assignment the node should be running now.
    pub assignments: Vec<Assignment>,
}

/// The state of one node's part in a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, Hash)]
#[serde(rename_all = "lowercase")]
pub enum NodeTaskState {
    /// Assigned, not started.
    Queued,
    /// Fetching.
    Running,
    /// Everything is in the node's store.
    Succeeded,
    /// Gave up, with an error.
    Failed,
    /// Stopped by an operator or because the node left the cluster.
    Stopped,
}

impl NodeTaskState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeTaskState::Queued => "queued",
            NodeTaskState::Running => "running",
            NodeTaskState::Succeeded => "succeeded",
            NodeTaskState::Failed => "failed",
            NodeTaskState::Stopped => "stopped",
        }
    }

    /// Whether nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NodeTaskState::Succeeded | NodeTaskState::Failed | NodeTaskState::Stopped
        )
    }
}

impl std::str::FromStr for NodeTaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => NodeTaskState::Queued,
            "running" => NodeTaskState::Running,
            "succeeded" => NodeTaskState::Succeeded,
            "failed" => NodeTaskState::Failed,
            "stopped" => NodeTaskState::Stopped,
            _ => return Err(format!("unknown node task state {s:?}")),
        })
    }
}

/// A node's report on one assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The task.
    pub task_id: i64,
    /// `running` while it runs; `succeeded`, `failed` or `stopped` at the end.
    pub state: NodeTaskState,
    /// Blobs (or the one file) to fetch, and done.
    pub blobs_total: u64,
    /// Blobs done.
    pub blobs_done: u64,
    /// Bytes to fetch.
    pub bytes_total: u64,
    /// Bytes in the store so far.
    pub bytes_done: u64,
    /// Of the bytes this node downloaded for the task: from peers (seeds included).
    pub bytes_peer: u64,
    /// From the upstream registry, a standby mirror or the file origin.
    pub bytes_upstream: u64,
    /// The error, when failed.
    #[serde(default)]
    pub error: Option<String>,
    /// New log lines since the last report (at most [`MAX_LOG_LINES`] per report).
    #[serde(default)]
    pub logs: Vec<LogLine>,
}

/// The most log lines one report may carry.
pub const MAX_LOG_LINES: usize = 100;

/// One log line of a node's part in a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Unix time in milliseconds.
    pub at: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The message (at most 1000 characters are kept).
    pub message: String,
}

/// The manager's answer to a progress report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressAck {
    /// Whether the node should go on with the assignment (false once stopped or deleted).
    pub proceed: bool,
}
