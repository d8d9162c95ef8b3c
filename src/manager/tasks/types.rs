//! The task API's types and the checks a new task passes before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::manager::ManagerState;
use crate::manager::error::{ApiError, ApiResult};

/// What a task distributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TaskSource {
    /// An image.
    Image {
        /// The reference, e.g. `registry.example.com/team/app:1.2` or `nginx:1.27`.
        image: String,
        /// `os/arch[/variant]` platforms to fetch; empty = all.
        #[serde(default)]
        platforms: Vec<String>,
    },
    /// A file: its URL (with an optional digest), or a published file version.
    File {
        /// The http(s) URL.
        #[serde(default)]
        url: Option<String>,
        /// Its digest (`sha256:…`): nodes verify every byte against it.
        #[serde(default)]
        digest: Option<String>,
        /// A published file version (gives URL and digest).
        #[serde(default)]
        version_id: Option<i64>,
    },
}

/// When a task runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// At once.
    #[default]
    Now,
    /// At a time (Unix ms).
    At {
        /// When.
        at: i64,
    },
    /// On a cron schedule, in UTC (`min hour day month weekday`, or with seconds first); each
    /// firing starts a run of the task.
    Cron {
        /// The expression, e.g. `0 3 * * *`.
        cron: String,
    },
}

/// A new task.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// A name (default: from the source).
    #[serde(default)]
    pub name: Option<String>,
    /// What to distribute.
    pub source: TaskSource,
    /// Target clusters: every member node.
    #[serde(default)]
    pub clusters: Vec<i64>,
    /// Target nodes.
    #[serde(default)]
    pub nodes: Vec<i64>,
    /// When (default now).
    #[serde(default)]
    pub schedule: Schedule,
    /// Bandwidth limit each node applies to this task's transfers, bytes/s.
    #[serde(default)]
    pub bandwidth: Option<i64>,
    /// Tenant (super administrators; default the caller's).
    #[serde(default)]
    pub tenant_id: Option<i64>,
}

/// Totals over a task's nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskProgress {
    /// Nodes assigned.
    pub nodes_total: i64,
    /// Nodes by state (`queued`, `running`, `succeeded`, `failed`, `stopped`).
    pub nodes: BTreeMap<String, i64>,
    /// Bytes to fetch, summed over the nodes.
    pub bytes_total: i64,
    /// Bytes in the nodes' stores.
    pub bytes_done: i64,
    /// Bytes the nodes downloaded from peers and seeds.
    pub bytes_peer: i64,
    /// Bytes the nodes downloaded from the upstream (registry, standby mirror, file origin).
    pub bytes_upstream: i64,
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: i64,
    /// Name.
    pub name: String,
    /// What it distributes (a file version's URL and digest filled in).
    pub source: TaskSource,
    /// Target clusters.
    pub clusters: Vec<i64>,
    /// Target nodes.
    pub nodes: Vec<i64>,
    /// Every cluster it reaches (its clusters and its nodes' clusters): changing it needs
    /// `tasks:write` on each.
    #[serde(default)]
    pub scope_clusters: Vec<i64>,
    /// When it runs.
    pub schedule: Schedule,
    /// When it fires next (at and cron).
    pub next_run_at: Option<i64>,
    /// Per-node bandwidth limit, bytes/s.
    pub bandwidth: Option<i64>,
    /// `scheduled`, `waiting`, `running`, `succeeded`, `failed` or `stopped`.
    pub state: String,
    /// For a run of a cron task: the cron task.
    pub parent_id: Option<i64>,
    /// The task this one copies.
    pub copied_from: Option<i64>,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at: i64,
    /// When it started running.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// How long it ran.
    pub duration_ms: Option<i64>,
    /// Totals over its nodes.
    pub progress: TaskProgress,
}

/// One node's part in a task.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeTask {
    /// The task.
    pub task_id: i64,
    /// The node.
    pub node_id: i64,
    /// The node's name.
    pub node_name: String,
    /// `queued`, `running`, `succeeded`, `failed` or `stopped`.
    pub state: String,
    /// Blobs to fetch.
    pub blobs_total: i64,
    /// Blobs done.
    pub blobs_done: i64,
    /// Bytes to fetch.
    pub bytes_total: i64,
    /// Bytes done.
    pub bytes_done: i64,
    /// Bytes from peers and seeds.
    pub bytes_peer: i64,
    /// Bytes from the upstream.
    pub bytes_upstream: i64,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// When the node started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
}

/// A log line.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// Id (for `after=`).
    pub id: i64,
    /// The node, or none for the manager's own lines.
    pub node_id: Option<i64>,
    /// The node's name.
    pub node_name: Option<String>,
    /// When (Unix ms).
    pub at: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The message.
    pub message: String,
}

/// Filters of the task list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only this state.
    pub state: Option<String>,
    /// Only `image` or `file` tasks.
    pub kind: Option<String>,
    /// Only tasks reaching this cluster.
    pub cluster_id: Option<i64>,
    /// Only runs of this cron task.
    pub parent_id: Option<i64>,
    /// Only tasks with a part on this node.
    pub node_id: Option<i64>,
    /// Tasks with ids below this (paging).
    pub before: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

/// Filters of a task's log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Lines after this id.
    pub after: Option<i64>,
    /// Only this node's lines.
    pub node_id: Option<i64>,
    /// At most this many (default 500).
    pub limit: Option<i64>,
}

/// A task's input after its checks.
pub(super) struct Checked {
    pub kind: &'static str,
    pub source: String,
    pub digest: Option<String>,
    pub platforms: Vec<String>,
    pub file_version: Option<i64>,
    pub scope_clusters: Vec<i64>,
    pub default_name: String,
}

/// The largest bandwidth limit (10 TB/s): sums of many stay far from overflowing.
const MAX_BANDWIDTH: i64 = 10_000_000_000_000;

/// The largest number of explicit targets.
const MAX_TARGETS: usize = 10_000;

/// Checks a new task's source, targets, schedule and limit.
pub(super) async fn check_input(
    state: &ManagerState,
    tenant: i64,
    input: &TaskInput,
) -> ApiResult<Checked> {
    if input.clusters.is_empty() && input.nodes.is_empty() {
        return Err(ApiError::invalid("a task needs target clusters or nodes"));
    }
    if input.clusters.len() + input.nodes.len() > MAX_TARGETS {
        return Err(ApiError::invalid(format!("at most {MAX_TARGETS} targets")));
    }
    if input
        .bandwidth
        .is_some_and(|b| !(1..=MAX_BANDWIDTH).contains(&b))
    {
        return Err(ApiError::invalid(format!(
            "bandwidth must be 1 to {MAX_BANDWIDTH} bytes/s"
        )));
    }
    let budget: Option<i64> = sqlx::query("SELECT bandwidth_budget FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&state.db.pool)
        .await?
        .map(|r| r.try_get("bandwidth_budget"))
        .transpose()?
        .flatten();
    if let (Some(budget), Some(b)) = (budget, input.bandwidth)
        && b > budget
    {
        return Err(ApiError::invalid(format!(
            "bandwidth {b} B/s exceeds the tenant's whole budget of {budget} B/s"
        )));
    }
    if let Schedule::Cron { cron } = &input.schedule {
        super::run::next_cron(cron, state.now_ms()).map_err(ApiError::invalid)?;
    }
    let mut checked = match &input.source {
        TaskSource::Image { image, platforms } => {
            let parsed: crate::oci::ImageRef = image
                .parse()
                .map_err(|e| ApiError::invalid(format!("invalid image reference: {e}")))?;
            for p in platforms {
                p.parse::<crate::preheat::Platform>()
                    .map_err(|e| ApiError::invalid(format!("invalid platform {p:?}: {e}")))?;
            }
            Checked {
                kind: "image",
                source: parsed.to_string(),
                digest: None,
                platforms: platforms.clone(),
                file_version: None,
                scope_clusters: Vec::new(),
                default_name: parsed.to_string(),
            }
        }
        TaskSource::File {
            url,
            digest,
            version_id,
        } => {
            let (url, digest, version) = match (url, version_id) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "give a file's url or its version_id, not both",
                    ));
                }
                (None, None) => {
                    return Err(ApiError::invalid("a file task needs a url or a version_id"));
                }
                (Some(url), None) => (url.clone(), digest.clone(), None),
                (None, Some(v)) => {
                    let row = sqlx::query(
                        "SELECT url, digest FROM file_versions WHERE id = $1 AND tenant_id = $2",
                    )
                    .bind(v)
                    .bind(tenant)
                    .fetch_optional(&state.db.pool)
                    .await?
                    .ok_or_else(|| ApiError::invalid(format!("file version {v} does not exist")))?;
                    (row.try_get("url")?, Some(row.try_get("digest")?), Some(*v))
                }
            };
            let parsed = crate::files::parse_url(&url).map_err(|e| ApiError::invalid(e.message))?;
            if let Some(d) = &digest {
                d.parse::<crate::oci::Digest>()
                    .map_err(|e| ApiError::invalid(format!("invalid digest: {e}")))?;
            }
            let file_name = parsed
                .path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| parsed.host_str().unwrap_or("file").to_string());
            Checked {
                kind: "file",
                source: url,
                digest,
                platforms: Vec::new(),
                file_version: version,
                scope_clusters: Vec::new(),
                default_name: file_name,
            }
        }
    };
    let mut scope: BTreeSet<i64> = BTreeSet::new();
    crate::manager::clusters::check_clusters_in_tenant(state, tenant, &input.clusters).await?;
    scope.extend(input.clusters.iter().copied());
    for node in &input.nodes {
        let row = sqlx::query(
            "SELECT n.cluster_id FROM nodes n JOIN clusters c ON c.id = n.cluster_id \
             WHERE n.id = $1 AND c.tenant_id = $2 AND n.removed = FALSE",
        )
        .bind(node)
        .bind(tenant)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::invalid(format!("node {node} does not exist in the tenant")))?;
        scope.insert(row.try_get("cluster_id")?);
    }
    checked.scope_clusters = scope.into_iter().collect();
    Ok(checked)
}
