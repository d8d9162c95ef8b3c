//! Clusters: a named set of nodes in one zone, of kind `static` (a host list), `kubernetes`
//! (nodes selected by labels) or `mesos` (agents of a master). Each has a join token that its
//! nodes register with (only its hash is stored: it is shown at creation and on rotation).
//! Members are discovered again every `discovery_every`; a node that is no longer a member
//! gets no work and its running assignments stop.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::auth::{new_token, token_hash};
use super::db::{json_col, to_json};
use super::discovery::{ClusterSpec, Member};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, ClusterScope, Permission};

/// A cluster as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cluster {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: i64,
    /// Name (unique within the tenant).
    pub name: String,
    /// What it is.
    pub description: String,
    /// The zone its nodes are in (their `--zone`).
    pub zone: String,
    /// Kind and member source (secrets redacted).
    pub spec: ClusterSpec,
    /// Members found by the last discovery.
    pub members: Vec<Member>,
    /// When members were last discovered (Unix ms).
    pub discovered_at: Option<i64>,
    /// Why the last discovery failed, if it did.
    pub discovery_error: Option<String>,
    /// Registered nodes by health: `healthy`, `degraded`, `offline`.
    pub nodes: BTreeMap<String, i64>,
    /// The join token: only in the answer to a creation or a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// A new cluster, or its replacement.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInput {
    /// Name.
    pub name: String,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// Zone (default `default`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Kind and member source. On a change, a Kubernetes token of `********` keeps the old one.
    pub spec: ClusterSpec,
    /// Tenant (super administrators; default the caller's). Ignored on change.
    #[serde(default)]
    pub tenant_id: Option<i64>,
}

/// Filter of the cluster list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClusterQuery {
    /// Only this tenant (super administrators).
    pub tenant_id: Option<i64>,
}

/// Fails unless every cluster in `ids` exists in `tenant`.
///
/// # Errors
/// 400 `INVALID` naming the first one that does not.
pub async fn check_clusters_in_tenant(
    state: &ManagerState,
    tenant: i64,
    ids: &[i64],
) -> ApiResult<()> {
    for id in ids {
        let found = sqlx::query("SELECT id FROM clusters WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&state.db.pool)
            .await?;
        if found.is_none() {
            return Err(ApiError::invalid(format!(
                "cluster {id} does not exist in the tenant"
            )));
        }
    }
    Ok(())
}

const COLUMNS: &str =
    "id, tenant_id, name, description, zone, spec, members, discovered_at, discovery_error";

fn spec_of(row: &AnyRow) -> ApiResult<ClusterSpec> {
    let text: String = row.try_get("spec")?;
    serde_json::from_str(&text).map_err(ApiError::internal)
}

async fn cluster_of(state: &ManagerState, row: &AnyRow) -> ApiResult<Cluster> {
    let id: i64 = row.try_get("id")?;
    let now = state.now_ms();
    let nodes = sqlx::query("SELECT last_seen, ready, disk_total, disk_free FROM nodes WHERE cluster_id = $1 AND removed = FALSE")
        .bind(id)
        .fetch_all(&state.db.pool)
        .await?;
    let mut health = BTreeMap::new();
    for n in &nodes {
        let h = super::nodes::health(
            now,
            n.try_get("last_seen")?,
            super::db::flag(n, "ready")?,
            n.try_get("disk_total")?,
            n.try_get("disk_free")?,
        );
        *health.entry(h.to_string()).or_insert(0) += 1;
    }
    Ok(Cluster {
        id,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        zone: row.try_get("zone")?,
        spec: spec_of(row)?.redacted(),
        members: json_col(row, "members"),
        discovered_at: row.try_get("discovered_at")?,
        discovery_error: row.try_get("discovery_error")?,
        nodes: health,
        join_token: None,
    })
}

/// A cluster the caller may see with `p`, or 404.
async fn visible(
    state: &ManagerState,
    caller: &Caller,
    p: Permission,
    id: i64,
) -> ApiResult<AnyRow> {
    let not_found = || ApiError::not_found(format!("cluster {id}"));
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM clusters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(not_found)?;
    if !caller.sees_tenant(row.try_get("tenant_id")?) {
        return Err(not_found());
    }
    let read = caller.require(Permission::ClustersRead)?;
    if !read.covers(id) {
        return Err(not_found());
    }
    caller.require_on(p, &[id])?;
    Ok(row)
}

/// Lists the clusters the caller may read.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", params(ClusterQuery),
    responses((status = 200, body = Vec<Cluster>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ClusterQuery>,
) -> ApiResult<Json<Vec<Cluster>>> {
    let scope = caller.require(Permission::ClustersRead)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM clusters WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY id"
    )))
    .bind(caller.tenant_filter().or(q.tenant_id))
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        if scope.covers(row.try_get("id")?) {
            out.push(cluster_of(&state, row).await?);
        }
    }
    Ok(Json(out))
}

fn check_input(caller: &Caller, input: &ClusterInput) -> ApiResult<(String, String)> {
    // Without an API server the manager's own service account would list the nodes: only
    // for super administrators.
    if let ClusterSpec::Kubernetes {
        api_server: None, ..
    } = &input.spec
        && !caller.is_super()
    {
        return Err(ApiError::denied(
            "only super administrators may use the manager's own Kubernetes credentials; give api_server and token",
        ));
    }
    let name = super::users::check_name("name", &input.name)?;
    let zone = input.zone.clone().unwrap_or_else(|| "default".into());
    if zone.is_empty()
        || zone.len() > 63
        || !zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::invalid(
            "zone must be 1 to 63 letters, digits, '-', '_' or '.'",
        ));
    }
    if input.description.chars().count() > 1000 {
        return Err(ApiError::invalid(
            "description may have at most 1000 characters",
        ));
    }
    input.spec.validate().map_err(ApiError::invalid)?;
    Ok((name, zone))
}

/// Creates a cluster; the answer carries its join token (shown this once).
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", request_body = ClusterInput,
    responses((status = 201, body = Cluster), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(input): ApiJson<ClusterInput>,
) -> ApiResult<(http::StatusCode, Json<Cluster>)> {
    if caller.require(Permission::ClustersWrite)? != ClusterScope::All {
        return Err(ApiError::denied(
            "creating a cluster needs clusters:write on every cluster",
        ));
    }
    let (name, zone) = check_input(&caller, &input)?;
    let tenant = caller.target_tenant(input.tenant_id, "clusters")?;
    super::tenants::check_tenant(&state, tenant).await?;
    let token = new_token("shj_");
    let now = state.now_ms();
    let members = if let ClusterSpec::Static { .. } = &input.spec {
        super::discovery::discover(&input.spec)
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let id: i64 = sqlx::query(
        "INSERT INTO clusters (tenant_id, name, description, kind, zone, spec, token_hash, members, \
         discovered_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id",
    )
    .bind(tenant)
    .bind(&name)
    .bind(&input.description)
    .bind(input.spec.kind())
    .bind(zone)
    .bind(to_json(&input.spec))
    .bind(token_hash(&token))
    .bind(to_json(&members))
    .bind(matches!(input.spec, ClusterSpec::Static { .. }).then_some(now))
    .bind(now)
    .fetch_one(&state.db.pool)
    .await?
    .try_get("id")?;
    audit.detail(format!("cluster {id} ({name})"));
    if !matches!(input.spec, ClusterSpec::Static { .. }) {
        // The first discovery runs in the background: a slow API server does not hold the call.
        let state = state.clone();
        tokio::spawn(async move { refresh(&state, id).await });
    }
    let row = visible(&state, &caller, Permission::ClustersRead, id).await?;
    let mut cluster = cluster_of(&state, &row).await?;
    cluster.join_token = Some(token);
    Ok((http::StatusCode::CREATED, Json(cluster)))
}

/// Reads a cluster.
#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Cluster), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Cluster>> {
    let row = visible(&state, &caller, Permission::ClustersRead, id).await?;
    Ok(Json(cluster_of(&state, &row).await?))
}

/// Replaces a cluster's name, description, zone and member source.
#[utoipa::path(put, path = "/api/v1/clusters/{id}", tag = "clusters", request_body = ClusterInput,
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Cluster), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(mut input): ApiJson<ClusterInput>,
) -> ApiResult<Json<Cluster>> {
    let row = visible(&state, &caller, Permission::ClustersWrite, id).await?;
    let old = spec_of(&row)?;
    // A redacted token sent back keeps the stored one, but only for the same API server and
    // trust settings: pointing the cluster elsewhere must not carry the token along.
    if let (
        ClusterSpec::Kubernetes {
            token: new,
            api_server,
            ca_cert,
            insecure_skip_tls_verify,
            ..
        },
        ClusterSpec::Kubernetes {
            token: old,
            api_server: old_server,
            ca_cert: old_ca,
            insecure_skip_tls_verify: old_insecure,
            ..
        },
    ) = (&mut input.spec, &old)
        && new.as_deref() == Some(super::discovery::REDACTED)
    {
        if api_server != old_server || ca_cert != old_ca || insecure_skip_tls_verify != old_insecure
        {
            return Err(ApiError::invalid(
                "the API server or its trust settings changed: give the token again",
            ));
        }
        *new = old.clone();
    }
    let (name, zone) = check_input(&caller, &input)?;
    sqlx::query(
        "UPDATE clusters SET name = $1, description = $2, zone = $3, kind = $4, spec = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(name)
    .bind(&input.description)
    .bind(zone)
    .bind(input.spec.kind())
    .bind(to_json(&input.spec))
    .bind(state.now_ms())
    .bind(id)
    .execute(&state.db.pool)
    .await?;
    refresh(&state, id).await;
    let row = visible(&state, &caller, Permission::ClustersRead, id).await?;
    Ok(Json(cluster_of(&state, &row).await?))
}

/// Deletes a cluster: its nodes are removed and their assignments stopped.
#[utoipa::path(delete, path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    visible(&state, &caller, Permission::ClustersWrite, id).await?;
    let nodes: Vec<i64> = sqlx::query("SELECT id FROM nodes WHERE cluster_id = $1")
        .bind(id)
        .fetch_all(&state.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    for node in &nodes {
        super::tasks::stop_node_assignments(&state, *node, "the node's cluster was deleted")
            .await?;
    }
    sqlx::query("DELETE FROM clusters WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    for node in nodes {
        state.work.wake(node);
    }
    super::tasks::settle_all(&state).await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// A new join token for a cluster (the old one stops working; registered nodes keep theirs).
#[utoipa::path(post, path = "/api/v1/clusters/{id}/token", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rotate_token(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Cluster>> {
    visible(&state, &caller, Permission::ClustersWrite, id).await?;
    let token = new_token("shj_");
    sqlx::query("UPDATE clusters SET token_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(token_hash(&token))
        .bind(state.now_ms())
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    let row = visible(&state, &caller, Permission::ClustersRead, id).await?;
    let mut cluster = cluster_of(&state, &row).await?;
    cluster.join_token = Some(token);
    Ok(Json(cluster))
}

/// Discovers a cluster's members now.
#[utoipa::path(post, path = "/api/v1/clusters/{id}/discover", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses((status = 200, body = Cluster), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn discover_now(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Cluster>> {
    visible(&state, &caller, Permission::ClustersWrite, id).await?;
    refresh(&state, id).await;
    let row = visible(&state, &caller, Permission::ClustersRead, id).await?;
    Ok(Json(cluster_of(&state, &row).await?))
}

/// Discovers a cluster's members and applies them to its nodes. Failures are recorded on the
/// cluster (and members kept as they were: an API server that is down does not empty it).
pub async fn refresh(state: &ManagerState, id: i64) {
    let result = async {
        let row = sqlx::query("SELECT spec FROM clusters WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
        let Some(row) = row else { return Ok(()) };
        let spec = spec_of(&row)?;
        match super::discovery::discover(&spec).await {
            Ok(members) => {
                sqlx::query(
                    "UPDATE clusters SET members = $1, discovered_at = $2, discovery_error = NULL WHERE id = $3",
                )
                .bind(to_json(&members))
                .bind(state.now_ms())
                .bind(id)
                .execute(&state.db.pool)
                .await?;
                apply_members(state, id, &spec, &members).await
            }
            Err(e) => {
                tracing::warn!(cluster = id, error = %e, "cluster discovery failed");
                sqlx::query("UPDATE clusters SET discovery_error = $1 WHERE id = $2")
                    .bind(e.to_string())
                    .bind(id)
                    .execute(&state.db.pool)
                    .await?;
                Ok(())
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(cluster = id, error = %e, "cannot refresh the cluster's members");
    }
}

/// Marks each node of the cluster member or not; nodes that left stop their assignments.
async fn apply_members(
    state: &ManagerState,
    cluster: i64,
    spec: &ClusterSpec,
    members: &[Member],
) -> ApiResult<()> {
    let rows = sqlx::query(
        "SELECT id, name, address, member FROM nodes WHERE cluster_id = $1 AND removed = FALSE",
    )
    .bind(cluster)
    .fetch_all(&state.db.pool)
    .await?;
    let mut left = false;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        let address: String = row.try_get("address")?;
        let was = super::db::flag(row, "member")?;
        let is = spec.is_member(members, &name, address_host(&address));
        if is == was {
            continue;
        }
        sqlx::query("UPDATE nodes SET member = $1 WHERE id = $2")
            .bind(is)
            .bind(id)
            .execute(&state.db.pool)
            .await?;
        if !is {
            tracing::info!(node = %name, cluster, "node is no longer a member of its cluster");
            super::tasks::stop_node_assignments(state, id, "the node left its cluster").await?;
            left = true;
        }
        state.work.wake(id);
    }
    if left {
        super::tasks::settle_all(state).await?;
    }
    Ok(())
}

/// The host part of `host:port` (or of a bare host).
pub fn address_host(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    }
}

/// The cluster `local` of the default tenant for `shoal up`: a static cluster of this one host,
/// created on the first start. Returns a fresh join token (the stored one cannot be read back).
///
/// # Errors
/// Database failures.
pub async fn local_cluster(state: &ManagerState, host: &str) -> Result<String, sqlx::Error> {
    let token = new_token("shj_");
    let now = state.now_ms();
    let tenant: i64 = sqlx::query("SELECT id FROM tenants WHERE name = 'default'")
        .fetch_one(&state.db.pool)
        .await?
        .try_get("id")?;
    let updated = sqlx::query(
        "UPDATE clusters SET token_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND name = 'local'",
    )
    .bind(token_hash(&token))
    .bind(now)
    .bind(tenant)
    .execute(&state.db.pool)
    .await?;
    if updated.rows_affected() == 0 {
        let spec = ClusterSpec::Static {
            hosts: vec![host.to_string()],
        };
        sqlx::query(
            "INSERT INTO clusters (tenant_id, name, description, kind, zone, spec, token_hash, members, \
             discovered_at, created_at, updated_at) VALUES ($1, 'local', 'this machine (shoal up)', 'static', \
             'default', $2, $3, $4, $5, $5, $5)",
        )
        .bind(tenant)
        .bind(to_json(&spec))
        .bind(token_hash(&token))
        .bind(to_json(&super::discovery::discover(&spec).await.unwrap_or_default()))
        .bind(now)
        .execute(&state.db.pool)
        .await?;
    }
    Ok(token)
}

/// Rediscovers every Kubernetes and Mesos cluster, every `discovery_every`.
pub async fn discovery_loop(state: ManagerState) {
    let mut tick = tokio::time::interval(state.settings.discovery_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<i64> = match sqlx::query("SELECT id FROM clusters WHERE kind <> 'static'")
            .fetch_all(&state.db.pool)
            .await
        {
            Ok(rows) => rows.iter().filter_map(|r| r.try_get("id").ok()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list clusters for discovery");
                continue;
            }
        };
        for id in ids {
            refresh(&state, id).await;
        }
    }
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(rotate_token))
        .routes(routes!(discover_now))
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_hosts() {
        assert_eq!(super::address_host("10.0.0.5:65001"), "10.0.0.5");
        assert_eq!(super::address_host("node-1"), "node-1");
        assert_eq!(super::address_host("[::1]:65001"), "::1");
    }
}
