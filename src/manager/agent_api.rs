//! The endpoints nodes call (see [`super::protocol`]): registration with a cluster's join
//! token, heartbeats, the long poll for work, and progress reports.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, FromRequestParts, State};
use axum::http::request::Parts;
use serde::Deserialize;
use sqlx::Row as _;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::auth::{bearer, new_token, token_hash};
use super::db::json_col;
use super::discovery::{ClusterSpec, Member};
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use super::protocol::{
    Assignment, Heartbeat, MAX_LOG_LINES, MAX_WAIT_SECS, NodeTaskState, Progress, ProgressAck,
    Registered, Registration, Source, Work,
};

/// Wakes the long polls of nodes whose assignments changed, and orders task starts.
#[derive(Default)]
pub struct WorkSignals {
    /// Per node, a generation bumped at every change: every poll of the node sees it.
    waiters: Mutex<HashMap<i64, watch::Sender<u64>>>,
    /// Held while a task starts, so budget checks in one manager do not interleave.
    pub start_lock: tokio::sync::Mutex<()>,
    waiting_told: Mutex<HashSet<i64>>,
}

impl WorkSignals {
    /// A receiver of `node`'s changes, with the current generation marked seen.
    fn subscribe(&self, node: i64) -> watch::Receiver<u64> {
        self.waiters
            .lock()
            .unwrap()
            .entry(node)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes every long poll of `node` (a poll that starts later reads the change anyway).
    pub fn wake(&self, node: i64) {
        if let Some(tx) = self.waiters.lock().unwrap().get(&node) {
            tx.send_modify(|g| *g += 1);
        }
    }

    /// Whether the "waiting for budget" line was already logged for `task` (and notes it).
    pub fn told_waiting(&self, task: i64) -> bool {
        let mut told = self.waiting_told.lock().unwrap();
        // Tasks that started long ago need no memory; a bound keeps the set small.
        if told.len() > 100_000 {
            told.clear();
        }
        !told.insert(task)
    }

    /// Forgets `task` once it no longer waits.
    pub fn started(&self, task: i64) {
        self.waiting_told.lock().unwrap().remove(&task);
    }
}

/// A node authenticated by its node token.
#[derive(Debug, Clone, Copy)]
pub struct AgentNode {
    /// The node's id.
    pub id: i64,
}

impl FromRequestParts<ManagerState> for AgentNode {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ManagerState,
    ) -> Result<AgentNode, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("send the node token as a bearer token"))?;
        let row = sqlx::query("SELECT id FROM nodes WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&state.db.pool)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown node token: register again"))?;
        Ok(AgentNode {
            id: row.try_get("id")?,
        })
    }
}

fn check_registration(r: &Registration) -> ApiResult<()> {
    let field_ok = |s: &str, max: usize| s.len() <= max && !s.chars().any(char::is_control);
    if r.name.is_empty() || !field_ok(&r.name, 253) {
        return Err(ApiError::invalid("name must be 1 to 253 characters"));
    }
    for (field, value) in [
        ("peer_id", &r.peer_id),
        ("address", &r.address),
        ("version", &r.version),
        ("zone", &r.zone),
    ] {
        if !field_ok(value, 200) {
            return Err(ApiError::invalid(format!(
                "{field} is too long or malformed"
            )));
        }
    }
    if r.role != "node" && r.role != "seed" {
        return Err(ApiError::invalid("role must be node or seed"));
    }
    Ok(())
}

/// Registers a node with its cluster's join token; a node registering again under the same
/// name gets a new node token (its old one stops working).
#[utoipa::path(post, path = "/api/v1/agent/register", tag = "agent", request_body = Registration,
    responses((status = 200, body = Registered), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn register(
    State(state): State<ManagerState>,
    Extension(audit): Extension<AuditSlot>,
    parts: Parts0,
    ApiJson(reg): ApiJson<Registration>,
) -> ApiResult<Json<Registered>> {
    let join = parts
        .0
        .ok_or_else(|| ApiError::unauthorized("send the cluster's join token as a bearer token"))?;
    check_registration(&reg)?;
    let cluster = sqlx::query(
        "SELECT id, tenant_id, spec, members, discovered_at FROM clusters WHERE token_hash = $1",
    )
    .bind(token_hash(&join))
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::unauthorized("unknown join token"))?;
    let cluster_id: i64 = cluster.try_get("id")?;
    audit.actor(
        &format!("node {}", reg.name),
        Some(cluster.try_get("tenant_id")?),
    );
    let spec: ClusterSpec =
        serde_json::from_str(&cluster.try_get::<String, _>("spec")?).map_err(ApiError::internal)?;
    let members: Vec<Member> = json_col(&cluster, "members");
    let discovered: Option<i64> = cluster.try_get("discovered_at")?;
    let host = super::clusters::address_host(&reg.address);
    // Until a first discovery succeeds, a Kubernetes or Mesos cluster accepts its token holders.
    let member = match spec {
        ClusterSpec::Static { .. } => spec.is_member(&members, &reg.name, host),
        _ => discovered.is_none() || spec.is_member(&members, &reg.name, host),
    };
    if !member && matches!(spec, ClusterSpec::Static { .. }) {
        return Err(ApiError::denied(format!(
            "{} is not in the cluster's host list",
            reg.name
        )));
    }
    let token = new_token("shn_");
    let now = state.now_ms();
    let mut tx = state.db.begin_write().await?;
    let existing = sqlx::query("SELECT id FROM nodes WHERE cluster_id = $1 AND name = $2")
        .bind(cluster_id)
        .bind(&reg.name)
        .fetch_optional(&mut *tx)
        .await?;
    let node_id: i64 = match existing {
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            sqlx::query(
                "UPDATE nodes SET peer_id = $1, address = $2, version = $3, role = $4, zone = $5, token_hash = $6, \
                 member = $7, removed = FALSE, last_seen = $8 WHERE id = $9",
            )
            .bind(&reg.peer_id)
            .bind(&reg.address)
            .bind(&reg.version)
            .bind(&reg.role)
            .bind(&reg.zone)
            .bind(token_hash(&token))
            .bind(member)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            id
        }
        None => sqlx::query(
            "INSERT INTO nodes (cluster_id, name, peer_id, address, version, role, zone, token_hash, member, \
             registered_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
        )
        .bind(cluster_id)
        .bind(&reg.name)
        .bind(&reg.peer_id)
        .bind(&reg.address)
        .bind(&reg.version)
        .bind(&reg.role)
        .bind(&reg.zone)
        .bind(token_hash(&token))
        .bind(member)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?,
    };
    tx.commit().await?;
    audit.detail(format!("node {node_id} in cluster {cluster_id}"));
    tracing::info!(node = %reg.name, node_id, cluster_id, "node registered");
    Ok(Json(Registered {
        node_id,
        node_token: token,
        cluster_id,
    }))
}

/// The bearer token of a request, taken without failing (registration answers its own 401).
struct Parts0(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Parts0 {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Parts0, ApiError> {
        Ok(Parts0(bearer(parts).map(str::to_string)))
    }
}

/// Records a node's heartbeat.
#[utoipa::path(post, path = "/api/v1/agent/heartbeat", tag = "agent", request_body = Heartbeat,
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn heartbeat(
    State(state): State<ManagerState>,
    node: AgentNode,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<http::StatusCode> {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let text = |s: &str| s.chars().take(200).collect::<String>();
    sqlx::query(
        "UPDATE nodes SET version = $1, role = $2, zone = $3, peer_id = $4, address = $5, disk_total = $6, \
         disk_free = $7, peers = $8, downloads = $9, load = $10, ready = $11, last_seen = $12 WHERE id = $13",
    )
    .bind(text(&hb.version))
    .bind(if hb.role == "seed" { "seed" } else { "node" })
    .bind(text(&hb.zone))
    .bind(text(&hb.peer_id))
    .bind(text(&hb.address))
    .bind(clamp(hb.disk_total))
    .bind(clamp(hb.disk_free))
    .bind(clamp(hb.peers))
    .bind(clamp(hb.downloads))
    .bind(if hb.load.is_finite() { hb.load } else { 0.0 })
    .bind(hb.ready)
    .bind(state.now_ms())
    .bind(node.id)
    .execute(&state.db.pool)
    .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Parameters of the work poll.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WorkQuery {
    /// Seconds to wait for a change (0 to 60; default 0).
    pub wait: Option<u64>,
    /// Task ids the node runs now, comma-separated.
    pub have: Option<String>,
}

async fn assignments(state: &ManagerState, node: i64) -> ApiResult<Vec<Assignment>> {
    let rows = sqlx::query(
        "SELECT t.id, t.kind, t.source, t.digest, t.platforms, t.bandwidth FROM task_nodes tn \
         JOIN tasks t ON t.id = tn.task_id JOIN nodes n ON n.id = tn.node_id \
         WHERE tn.node_id = $1 AND tn.state IN ('queued', 'running') AND t.state = 'running' AND n.member = TRUE \
         ORDER BY t.id",
    )
    .bind(node)
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            let source: String = r.try_get("source")?;
            let bandwidth: Option<i64> = r.try_get("bandwidth")?;
            Ok(Assignment {
                task_id: r.try_get("id")?,
                source: if kind == "image" {
                    Source::Image {
                        image: source,
                        platforms: json_col(r, "platforms"),
                    }
                } else {
                    Source::File {
                        url: source,
                        digest: r.try_get("digest")?,
                    }
                },
                bandwidth: bandwidth.and_then(|b| u64::try_from(b).ok()),
            })
        })
        .collect()
}

/// Every assignment the node should run; waits up to `wait` seconds for a change when the
/// node already runs exactly these.
#[utoipa::path(get, path = "/api/v1/agent/work", tag = "agent", params(WorkQuery),
    responses((status = 200, body = Work), (status = 401, body = ErrorBody)))]
async fn work(
    State(state): State<ManagerState>,
    node: AgentNode,
    ApiQuery(q): ApiQuery<WorkQuery>,
) -> ApiResult<Json<Work>> {
    let have: BTreeSet<i64> = q
        .have
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::invalid("have must be task ids separated by commas"))?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.work.subscribe(node.id);
    loop {
        // Marked seen before reading, so a change between the read and the wait is not missed.
        changes.borrow_and_update();
        let list = assignments(&state, node.id).await?;
        let ids: BTreeSet<i64> = list.iter().map(|a| a.task_id).collect();
        if ids != have || tokio::time::Instant::now() >= deadline {
            return Ok(Json(Work { assignments: list }));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(Json(Work { assignments: list }));
        }
    }
}

/// Records a node's progress on an assignment; answers whether to go on.
#[utoipa::path(post, path = "/api/v1/agent/progress", tag = "agent", request_body = Progress,
    responses((status = 200, body = ProgressAck), (status = 401, body = ErrorBody)))]
async fn progress(
    State(state): State<ManagerState>,
    node: AgentNode,
    ApiJson(p): ApiJson<Progress>,
) -> ApiResult<Json<ProgressAck>> {
    if p.logs.len() > MAX_LOG_LINES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_LOG_LINES} log lines per report"
        )));
    }
    if p.state == NodeTaskState::Queued {
        return Err(ApiError::invalid(
            "a node reports running, succeeded, failed or stopped",
        ));
    }
    let now = state.now_ms();
    let row = sqlx::query(
        "SELECT tn.state, t.state AS task_state FROM task_nodes tn JOIN tasks t ON t.id = tn.task_id \
         WHERE tn.task_id = $1 AND tn.node_id = $2",
    )
    .bind(p.task_id)
    .bind(node.id)
    .fetch_optional(&state.db.pool)
    .await?;
    let Some(row) = row else {
        // Deleted, or never this node's: stop.
        return Ok(Json(ProgressAck { proceed: false }));
    };
    let current: NodeTaskState = row
        .try_get::<String, _>("state")?
        .parse()
        .map_err(ApiError::internal)?;
    // Byte counts beyond a petabyte are not real; capped, sums over many nodes cannot overflow.
    let clamp = |v: u64| v.min(1 << 50) as i64;
    if !current.is_final() {
        let finished = p.state.is_final().then_some(now);
        let error = p
            .error
            .as_deref()
            .map(|e| e.chars().take(2000).collect::<String>());
        sqlx::query(
            "UPDATE task_nodes SET state = $1, blobs_total = $2, blobs_done = $3, bytes_total = $4, bytes_done = $5, \
             bytes_peer = $6, bytes_upstream = $7, error = $8, started_at = COALESCE(started_at, $9), \
             finished_at = $10, updated_at = $9 WHERE task_id = $11 AND node_id = $12 \
             AND state IN ('queued', 'running')",
        )
        .bind(p.state.as_str())
        .bind(clamp(p.blobs_total))
        .bind(clamp(p.blobs_done))
        .bind(clamp(p.bytes_total))
        .bind(clamp(p.bytes_done))
        .bind(clamp(p.bytes_peer))
        .bind(clamp(p.bytes_upstream))
        .bind(error)
        .bind(now)
        .bind(finished)
        .bind(p.task_id)
        .bind(node.id)
        .execute(&state.db.pool)
        .await?;
    }
    if !p.logs.is_empty() {
        // One transaction for the report's lines: one commit, not a hundred.
        let mut tx = state.db.pool.begin().await?;
        for line in &p.logs {
            let level = match line.level.as_str() {
                "warn" | "error" => line.level.as_str(),
                _ => "info",
            };
            sqlx::query(
                "INSERT INTO task_logs (task_id, node_id, at, level, message) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(p.task_id)
            .bind(node.id)
            .bind(line.at)
            .bind(level)
            .bind(line.message.chars().take(1000).collect::<String>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    if p.state.is_final() {
        super::tasks::settle(&state, p.task_id).await?;
    }
    let task_state: String = row.try_get("task_state")?;
    Ok(Json(ProgressAck {
        proceed: !current.is_final() && !p.state.is_final() && task_state == "running",
    }))
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(work))
        .routes(routes!(progress))
}
