//! Tenants: every user, cluster, file version and task belongs to one. A tenant's bandwidth
//! budget caps the sum of its running tasks' limits; its policy says whether a task that would
//! exceed it waits for room (`wait`) or is refused (`refuse`). Only super administrators create
//! and change tenants.

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};

/// A tenant.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Cap on the sum of the running tasks' bandwidth limits, bytes/s; none = no cap.
    pub bandwidth_budget: Option<i64>,
    /// `wait` or `refuse`.
    pub budget_policy: String,
    /// Bandwidth the tenant's running tasks hold now, bytes/s.
    pub bandwidth_in_use: i64,
}

/// A new tenant, or a change to one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Name (new tenants only; ignored on change).
    #[serde(default)]
    pub name: Option<String>,
    /// Budget in bytes/s; null = none; absent = unchanged (on a change).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub bandwidth_budget: Option<Option<i64>>,
    /// `wait` (default) or `refuse`.
    #[serde(default)]
    pub budget_policy: Option<String>,
}

/// A field that may be absent (outer `None`), null (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

fn check_spec(spec: &TenantSpec) -> ApiResult<Option<String>> {
    if spec
        .bandwidth_budget
        .flatten()
        .is_some_and(|b| !(1..=10_000_000_000_000).contains(&b))
    {
        return Err(ApiError::invalid(
            "bandwidth_budget must be 1 to 10^13 bytes/s",
        ));
    }
    match spec.budget_policy.as_deref() {
        None => Ok(None),
        Some(p @ ("wait" | "refuse")) => Ok(Some(p.to_string())),
        Some(_) => Err(ApiError::invalid("budget_policy must be wait or refuse")),
    }
}

/// Fails unless `tenant` exists.
///
/// # Errors
/// 400 `INVALID`.
pub async fn check_tenant(state: &ManagerState, tenant: i64) -> ApiResult<()> {
    sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&state.db.pool)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::invalid(format!("tenant {tenant} does not exist")))
}

/// Bandwidth held by a tenant's running tasks.
///
/// # Errors
/// Database failures.
pub async fn bandwidth_in_use<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    tenant: i64,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(bandwidth), 0) AS BIGINT) AS used FROM tasks WHERE tenant_id = $1 AND state = 'running'",
    )
    .bind(tenant)
    .fetch_one(executor)
    .await?;
    row.try_get::<i64, _>("used")
}

async fn tenant_of(state: &ManagerState, row: &AnyRow) -> ApiResult<Tenant> {
    let id = row.try_get("id")?;
    Ok(Tenant {
        id,
        name: row.try_get("name")?,
        bandwidth_budget: row.try_get("bandwidth_budget")?,
        budget_policy: row.try_get("budget_policy")?,
        bandwidth_in_use: bandwidth_in_use(&state.db.pool, id).await?,
    })
}

/// Lists tenants (one's own, unless a super administrator).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = Vec<Tenant>), (status = 403, body = ErrorBody)))]
async fn list(State(state): State<ManagerState>, caller: Caller) -> ApiResult<Json<Vec<Tenant>>> {
    caller.require(Permission::TenantsRead)?;
    let rows = sqlx::query(
        "SELECT id, name, bandwidth_budget, budget_policy FROM tenants \
         WHERE $1 IS NULL OR id = $1 ORDER BY id",
    )
    .bind(caller.tenant_filter())
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        out.push(tenant_of(&state, row).await?);
    }
    Ok(Json(out))
}

/// Creates a tenant.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = TenantSpec,
    responses((status = 201, body = Tenant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(spec): ApiJson<TenantSpec>,
) -> ApiResult<(http::StatusCode, Json<Tenant>)> {
    caller.require(Permission::System)?;
    let name = super::users::check_name(
        "name",
        spec.name
            .as_deref()
            .ok_or_else(|| ApiError::invalid("a tenant needs a name"))?,
    )?;
    let policy = check_spec(&spec)?.unwrap_or_else(|| "wait".into());
    let row = sqlx::query(
        "INSERT INTO tenants (name, bandwidth_budget, budget_policy, created_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, name, bandwidth_budget, budget_policy",
    )
    .bind(name)
    .bind(spec.bandwidth_budget.flatten())
    .bind(policy)
    .bind(state.now_ms())
    .fetch_one(&state.db.pool)
    .await?;
    let tenant = tenant_of(&state, &row).await?;
    audit.detail(format!("tenant {}", tenant.id));
    Ok((http::StatusCode::CREATED, Json(tenant)))
}

/// Reads a tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = i64, Path, description = "Tenant id")),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Tenant>> {
    caller.require(Permission::TenantsRead)?;
    if !caller.sees_tenant(id) {
        return Err(ApiError::not_found(format!("tenant {id}")));
    }
    let row =
        sqlx::query("SELECT id, name, bandwidth_budget, budget_policy FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("tenant {id}")))?;
    Ok(Json(tenant_of(&state, &row).await?))
}

/// Changes a tenant's budget and policy.
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", request_body = TenantSpec,
    params(("id" = i64, Path, description = "Tenant id")),
    responses((status = 200, body = Tenant), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(spec): ApiJson<TenantSpec>,
) -> ApiResult<Json<Tenant>> {
    caller.require(Permission::System)?;
    let policy = check_spec(&spec)?;
    let current = sqlx::query("SELECT bandwidth_budget, budget_policy FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id}")))?;
    // Fields left out stay as they are.
    let budget: Option<i64> = match spec.bandwidth_budget {
        Some(b) => b,
        None => current.try_get("bandwidth_budget")?,
    };
    let policy: String = match policy {
        Some(p) => p,
        None => current.try_get("budget_policy")?,
    };
    sqlx::query("UPDATE tenants SET bandwidth_budget = $1, budget_policy = $2 WHERE id = $3")
        .bind(budget)
        .bind(policy)
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    get(State(state), caller, ApiPath(id)).await
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update))
}
