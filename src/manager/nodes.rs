//! Nodes as the manager knows them: registered by their agents, kept fresh by heartbeats, and
//! shown as `healthy`, `degraded` (late heartbeat, not ready, disk almost full) or `offline`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::db::flag;
use super::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};

/// A heartbeat older than this makes a node degraded (2.5 heartbeats).
pub const LATE_MS: i64 = 25_000;
/// A heartbeat older than this makes a node offline (6 heartbeats).
pub const OFFLINE_MS: i64 = 60_000;

/// A node's health from its last heartbeat.
pub fn health(
    now: i64,
    last_seen: i64,
    ready: bool,
    disk_total: i64,
    disk_free: i64,
) -> &'static str {
    let age = now - last_seen;
    if age > OFFLINE_MS {
        "offline"
    } else if age > LATE_MS || !ready || (disk_total > 0 && disk_free * 20 < disk_total) {
        "degraded"
    } else {
        "healthy"
    }
}

/// A node.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    /// Id.
    pub id: i64,
    /// Cluster.
    pub cluster_id: i64,
    /// Name (host name).
    pub name: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Mirror address.
    pub address: String,
    /// shoal version.
    pub version: String,
    /// `node` or `seed`.
    pub role: String,
    /// Zone.
    pub zone: String,
    /// `healthy`, `degraded` or `offline`.
    pub health: String,
    /// Whether the cluster's member list holds it (non-members get no work).
    pub member: bool,
    /// Whether its `/readyz` held at the last heartbeat.
    pub ready: bool,
    /// Bytes of its store's file system.
    pub disk_total: i64,
    /// Bytes free there.
    pub disk_free: i64,
    /// Connected peers.
    pub peers: i64,
    /// Downloads in flight.
    pub downloads: i64,
    /// Load average.
    pub load: f64,
    /// When it registered (Unix ms).
    pub registered_at: i64,
    /// Its last heartbeat (Unix ms).
    pub last_seen: i64,
}

/// A node with its recent tasks.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeDetail {
    /// The node.
    #[serde(flatten)]
    pub node: Node,
    /// Its 50 most recent assignments.
    pub tasks: Vec<super::tasks::NodeTask>,
}

/// Filters of the node list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NodeQuery {
    /// Only this cluster.
    pub cluster_id: Option<i64>,
    /// Only this health.
    pub health: Option<String>,
}

/// The columns [`node_of`] reads.
pub const COLUMNS: &str = "n.id, n.cluster_id, n.name, n.peer_id, n.address, n.version, n.role, n.zone, \
    n.disk_total, n.disk_free, n.peers, n.downloads, n.load, n.ready, n.member, n.registered_at, n.last_seen";

/// A node row as the API shows it.
pub fn node_of(now: i64, r: &AnyRow) -> Result<Node, sqlx::Error> {
    let last_seen = r.try_get("last_seen")?;
    let ready = flag(r, "ready")?;
    let disk_total = r.try_get("disk_total")?;
    let disk_free = r.try_get("disk_free")?;
    Ok(Node {
        id: r.try_get("id")?,
        cluster_id: r.try_get("cluster_id")?,
        name: r.try_get("name")?,
        peer_id: r.try_get("peer_id")?,
        address: r.try_get("address")?,
        version: r.try_get("version")?,
        role: r.try_get("role")?,
        zone: r.try_get("zone")?,
        health: health(now, last_seen, ready, disk_total, disk_free).into(),
        member: flag(r, "member")?,
        ready,
        disk_total,
        disk_free,
        peers: r.try_get("peers")?,
        downloads: r.try_get("downloads")?,
        load: r.try_get("load")?,
        registered_at: r.try_get("registered_at")?,
        last_seen,
    })
}

/// Lists the nodes of the clusters the caller may read.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", params(NodeQuery),
    responses((status = 200, body = Vec<Node>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NodeQuery>,
) -> ApiResult<Json<Vec<Node>>> {
    let scope = caller.require(Permission::NodesRead)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM nodes n JOIN clusters c ON c.id = n.cluster_id \
         WHERE n.removed = FALSE AND ($1 IS NULL OR c.tenant_id = $1) AND ($2 IS NULL OR n.cluster_id = $2) ORDER BY n.id"
    )))
    .bind(caller.tenant_filter())
    .bind(q.cluster_id)
    .fetch_all(&state.db.pool)
    .await?;
    let now = state.now_ms();
    let mut out = Vec::new();
    for r in &rows {
        let node = node_of(now, r)?;
        if scope.covers(node.cluster_id) && q.health.as_deref().is_none_or(|h| h == node.health) {
            out.push(node);
        }
    }
    Ok(Json(out))
}

/// A node the caller may reach with `p`, or 404 / 403.
async fn visible(state: &ManagerState, caller: &Caller, p: Permission, id: i64) -> ApiResult<Node> {
    let not_found = || ApiError::not_found(format!("node {id}"));
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, c.tenant_id FROM nodes n JOIN clusters c ON c.id = n.cluster_id WHERE n.id = $1 AND n.removed = FALSE"
    )))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(not_found)?;
    let node = node_of(state.now_ms(), &row)?;
    if !caller.sees_tenant(row.try_get("tenant_id")?)
        || !caller
            .require(Permission::NodesRead)?
            .covers(node.cluster_id)
    {
        return Err(not_found());
    }
    caller.require_on(p, &[node.cluster_id])?;
    Ok(node)
}

/// Reads a node and its recent assignments.
#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = i64, Path, description = "Node id")),
    responses((status = 200, body = NodeDetail), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<NodeDetail>> {
    let node = visible(&state, &caller, Permission::NodesRead, id).await?;
    let tasks = super::tasks::recent_for_node(&state, id, 50).await?;
    Ok(Json(NodeDetail { node, tasks }))
}

/// Removes a node: its assignments stop; it registers again if its agent still runs and the
/// cluster still lists it.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = i64, Path, description = "Node id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    visible(&state, &caller, Permission::NodesWrite, id).await?;
    super::tasks::stop_node_assignments(&state, id, "the node was removed").await?;
    // Soft: the node's part in past tasks stays on record; its token stops working.
    sqlx::query("UPDATE nodes SET removed = TRUE, member = FALSE, token_hash = $1 WHERE id = $2")
        .bind(format!("removed:{id}:{}", super::auth::new_token("")))
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    state.work.wake(id);
    super::tasks::settle_all(&state).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, delete))
}

#[cfg(test)]
mod tests {
    use super::health;

    #[test]
    fn health_from_heartbeats() {
        assert_eq!(health(100_000, 95_000, true, 100, 50), "healthy");
        assert_eq!(health(100_000, 95_000, false, 100, 50), "degraded");
        assert_eq!(health(100_000, 95_000, true, 100, 4), "degraded");
        assert_eq!(health(100_000, 70_000, true, 100, 50), "degraded");
        assert_eq!(health(100_000, 30_000, true, 100, 50), "offline");
    }
}
