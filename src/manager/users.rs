//! Users, roles and role bindings. Nobody can hand out more than they hold: a custom role may
//! only carry permissions its creator holds, and binding a role needs every permission of it
//! on the clusters the binding names; changing, disabling, deleting or unbinding a user needs
//! every permission that user holds (a password reset would otherwise hand them over). Users
//! see and manage only their own tenant unless they are super administrators.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::auth;
use super::db::{json_col, to_json};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};

/// Checks a name (user, role, cluster, task, token): 1–100 characters, no control characters,
/// trimmed.
///
/// # Errors
/// 400 `INVALID` naming the field.
pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(format!(
            "{field} must have 1 to 100 characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(name.to_string())
}

/// A user as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Tenant.
    pub tenant_id: i64,
    /// Whether signing in is refused.
    pub disabled: bool,
    /// When created (Unix ms).
    pub created_at: i64,
    /// The user's role bindings.
    pub bindings: Vec<Binding>,
}

/// A role binding.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Binding {
    /// Id.
    pub id: i64,
    /// The role.
    pub role_id: i64,
    /// The role's name.
    pub role: String,
    /// Clusters it covers; empty = all of the tenant's.
    pub clusters: Vec<i64>,
}

/// A new user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Name (unique).
    pub name: String,
    /// Initial password (at least 8 characters).
    pub password: String,
    /// Tenant (super administrators only; default: the caller's).
    #[serde(default)]
    pub tenant_id: Option<i64>,
    /// Roles to bind at once.
    #[serde(default)]
    pub bindings: Vec<NewBinding>,
}

/// A change to a user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// Disable or enable sign-in (disabling also ends the user's sessions).
    #[serde(default)]
    pub disabled: Option<bool>,
    /// A new password (a reset by an administrator).
    #[serde(default)]
    pub password: Option<String>,
}

/// A new role binding.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBinding {
    /// The role.
    pub role_id: i64,
    /// Clusters it covers; empty = every cluster of the tenant.
    #[serde(default)]
    pub clusters: Vec<i64>,
}

/// A role.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Role {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its permissions.
    pub permissions: Vec<Permission>,
    /// Built-in roles cannot be changed or deleted.
    pub builtin: bool,
    /// The tenant of a custom role.
    pub tenant_id: Option<i64>,
}

/// A new custom role, or a change to one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Name (unique within the tenant).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its permissions.
    pub permissions: Vec<Permission>,
}

/// Filter of the user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// Only this tenant (super administrators).
    pub tenant_id: Option<i64>,
}

async fn bindings_of(state: &ManagerState, user: i64) -> ApiResult<Vec<Binding>> {
    let rows = sqlx::query(
        "SELECT b.id, b.role_id, r.name, b.clusters FROM role_bindings b \
         JOIN roles r ON r.id = b.role_id WHERE b.user_id = $1 ORDER BY b.id",
    )
    .bind(user)
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Binding {
                id: r.try_get("id")?,
                role_id: r.try_get("role_id")?,
                role: r.try_get("name")?,
                clusters: json_col(r, "clusters"),
            })
        })
        .collect()
}

async fn user_row(state: &ManagerState, caller: &Caller, id: i64) -> ApiResult<AnyRow> {
    let row =
        sqlx::query("SELECT id, name, tenant_id, disabled, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    if !caller.sees_tenant(row.try_get("tenant_id")?) {
        return Err(ApiError::not_found(format!("user {id}")));
    }
    Ok(row)
}

async fn user_of(state: &ManagerState, row: &AnyRow) -> ApiResult<User> {
    let id = row.try_get("id")?;
    Ok(User {
        id,
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        disabled: super::db::flag(row, "disabled")?,
        created_at: row.try_get("created_at")?,
        bindings: bindings_of(state, id).await?,
    })
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(TenantQuery),
    responses((status = 200, body = Vec<User>), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<User>>> {
    caller.require(Permission::UsersRead)?;
    let tenant = caller.tenant_filter().or(q.tenant_id);
    let rows = sqlx::query(
        "SELECT id, name, tenant_id, disabled, created_at FROM users \
         WHERE ($1 IS NULL OR tenant_id = $1) ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(&state.db.pool)
    .await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in &rows {
        users.push(user_of(&state, row).await?);
    }
    Ok(Json(users))
}

/// Reads one user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<User>> {
    if id != caller.user_id {
        caller.require(Permission::UsersRead)?;
    }
    let row = user_row(&state, &caller, id).await?;
    Ok(Json(user_of(&state, &row).await?))
}

/// Checks that the caller may bind `role_id` on `clusters` and returns the role's tenant.
async fn check_grantable(
    state: &ManagerState,
    caller: &Caller,
    tenant: i64,
    binding: &NewBinding,
) -> ApiResult<()> {
    let missing = || ApiError::invalid(format!("role {} does not exist", binding.role_id));
    let row = sqlx::query("SELECT tenant_id, permissions FROM roles WHERE id = $1")
        .bind(binding.role_id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(missing)?;
    let role_tenant: Option<i64> = row.try_get("tenant_id")?;
    // A role of a tenant the caller cannot see reads as no role at all (no existence oracle).
    if role_tenant.is_some_and(|t| !caller.sees_tenant(t)) {
        return Err(missing());
    }
    if role_tenant.is_some_and(|t| t != tenant) {
        return Err(ApiError::invalid(format!(
            "role {} belongs to another tenant",
            binding.role_id
        )));
    }
    let perms: BTreeSet<Permission> = json_col(&row, "permissions");
    if perms.contains(&Permission::System) && !binding.clusters.is_empty() {
        return Err(ApiError::invalid(
            "the super-admin role holds on every cluster of every tenant: bind it without clusters",
        ));
    }
    for p in perms {
        if p == Permission::System && !caller.is_super() {
            return Err(ApiError::denied(
                "only super administrators can make super administrators",
            ));
        }
        if p.cluster_scoped() && !binding.clusters.is_empty() {
            caller.require_on(p, &binding.clusters)?;
        } else if p.cluster_scoped() {
            if caller.scope(p) != Some(super::rbac::ClusterScope::All) {
                return Err(ApiError::denied(format!(
                    "binding this role on every cluster needs {p} on every cluster"
                )));
            }
        } else {
            caller.require(p)?;
        }
    }
    super::clusters::check_clusters_in_tenant(state, tenant, &binding.clusters).await
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(req): ApiJson<NewUser>,
) -> ApiResult<(http::StatusCode, Json<User>)> {
    caller.require(Permission::UsersWrite)?;
    let name = check_name("name", &req.name)?;
    auth::check_password(&req.password)?;
    let tenant = caller.target_tenant(req.tenant_id, "users")?;
    super::tenants::check_tenant(&state, tenant).await?;
    for b in &req.bindings {
        check_grantable(&state, &caller, tenant, b).await?;
    }
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    let now = state.now_ms();
    let mut tx = state.db.pool.begin().await?;
    let id: i64 = sqlx::query(
        "INSERT INTO users (tenant_id, name, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(tenant)
    .bind(&name)
    .bind(hash)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    for b in &req.bindings {
        sqlx::query(
            "INSERT INTO role_bindings (user_id, role_id, clusters, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(b.role_id)
        .bind(to_json(&b.clusters))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    audit.detail(format!("user {id} ({name})"));
    let row = user_row(&state, &caller, id).await?;
    Ok((
        http::StatusCode::CREATED,
        Json(user_of(&state, &row).await?),
    ))
}

/// Disables or enables a user, or resets their password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserChange,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = User), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn change_user(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UserChange>,
) -> ApiResult<Json<User>> {
    caller.require(Permission::UsersWrite)?;
    user_row(&state, &caller, id).await?;
    protect_user(&state, &caller, id).await?;
    let hash = match req.password {
        Some(p) => {
            auth::check_password(&p)?;
            Some(
                tokio::task::spawn_blocking(move || auth::hash_password(&p))
                    .await
                    .map_err(ApiError::internal)??,
            )
        }
        None => None,
    };
    let mut tx = state.db.pool.begin().await?;
    if let Some(disabled) = req.disabled {
        if disabled && id == caller.user_id {
            return Err(ApiError::conflict("you cannot disable yourself"));
        }
        sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Disabling ends every session and token: enabling again must not revive them.
        if disabled {
            sqlx::query("UPDATE tokens SET revoked = TRUE WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    if let Some(hash) = hash {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // A reset ends the user's sessions and personal access tokens (whoever knew the old
        // password may have made one).
        sqlx::query("UPDATE tokens SET revoked = TRUE WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let row = user_row(&state, &caller, id).await?;
    Ok(Json(user_of(&state, &row).await?))
}

/// Only someone who holds every permission of a user, wherever the user holds it, may change,
/// disable, delete or unbind them: a password reset hands the caller the user's rights. So
/// only super administrators change super administrators.
async fn protect_user(state: &ManagerState, caller: &Caller, user: i64) -> ApiResult<()> {
    if caller.is_super() {
        return Ok(());
    }
    for grant in auth::grants_of(state, user).await? {
        if grant.permissions.contains(&Permission::System) {
            return Err(ApiError::denied(
                "only super administrators change super administrators",
            ));
        }
        for &p in &grant.permissions {
            let holds = match (p.cluster_scoped(), &grant.clusters) {
                (true, Some(clusters)) => caller
                    .scope(p)
                    .is_some_and(|s| clusters.iter().all(|c| s.covers(*c))),
                (true, None) => caller.scope(p) == Some(super::rbac::ClusterScope::All),
                (false, _) => caller.has(p),
            };
            if !holds {
                return Err(ApiError::denied(format!(
                    "user {user} holds {p} where you do not; only someone holding all of a user's permissions may change them"
                )));
            }
        }
    }
    Ok(())
}

/// Deletes a user (their tokens and bindings go with them).
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_user(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    caller.require(Permission::UsersWrite)?;
    user_row(&state, &caller, id).await?;
    if id == caller.user_id {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    protect_user(&state, &caller, id).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Binds a role to a user.
#[utoipa::path(post, path = "/api/v1/users/{id}/bindings", tag = "users", request_body = NewBinding,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 201, body = Binding), (status = 403, body = ErrorBody)))]
async fn create_binding(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<NewBinding>,
) -> ApiResult<(http::StatusCode, Json<Binding>)> {
    caller.require(Permission::UsersWrite)?;
    let user = user_row(&state, &caller, id).await?;
    check_grantable(&state, &caller, user.try_get("tenant_id")?, &req).await?;
    let binding: i64 = sqlx::query(
        "INSERT INTO role_bindings (user_id, role_id, clusters, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(req.role_id)
    .bind(to_json(&req.clusters))
    .bind(state.now_ms())
    .fetch_one(&state.db.pool)
    .await?
    .try_get("id")?;
    audit.detail(format!(
        "binding {binding}: role {} to user {id}",
        req.role_id
    ));
    let created = bindings_of(&state, id)
        .await?
        .into_iter()
        .find(|b| b.id == binding)
        .ok_or_else(|| ApiError::internal("binding vanished"))?;
    Ok((http::StatusCode::CREATED, Json(created)))
}

/// Removes a role binding.
#[utoipa::path(delete, path = "/api/v1/bindings/{id}", tag = "users",
    params(("id" = i64, Path, description = "Binding id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_binding(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    caller.require(Permission::UsersWrite)?;
    let row = sqlx::query("SELECT user_id FROM role_bindings WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("binding {id}")))?;
    let user: i64 = row.try_get("user_id")?;
    user_row(&state, &caller, user)
        .await
        .map_err(|_| ApiError::not_found(format!("binding {id}")))?;
    protect_user(&state, &caller, user).await?;
    sqlx::query("DELETE FROM role_bindings WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

fn role_of(row: &AnyRow) -> ApiResult<Role> {
    Ok(Role {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        permissions: json_col(row, "permissions"),
        builtin: super::db::flag(row, "builtin")?,
        tenant_id: row.try_get("tenant_id")?,
    })
}

const ROLE_COLUMNS: &str = "id, name, description, permissions, builtin, tenant_id";

/// Lists the built-in roles and the tenant's custom roles.
#[utoipa::path(get, path = "/api/v1/roles", tag = "users", params(TenantQuery),
    responses((status = 200, body = Vec<Role>), (status = 403, body = ErrorBody)))]
async fn list_roles(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Vec<Role>>> {
    caller.require(Permission::RolesRead)?;
    let tenant = caller.tenant_filter().or(q.tenant_id);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id IS NULL OR $1 IS NULL OR tenant_id = $1 ORDER BY id"
    )))
    .bind(tenant)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(rows.iter().map(role_of).collect::<ApiResult<_>>()?))
}

async fn role_row(state: &ManagerState, caller: &Caller, id: i64) -> ApiResult<AnyRow> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ROLE_COLUMNS} FROM roles WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("role {id}")))?;
    let tenant: Option<i64> = row.try_get("tenant_id")?;
    if tenant.is_some_and(|t| !caller.sees_tenant(t)) {
        return Err(ApiError::not_found(format!("role {id}")));
    }
    Ok(row)
}

/// Reads one role.
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "users",
    params(("id" = i64, Path, description = "Role id")),
    responses((status = 200, body = Role), (status = 404, body = ErrorBody)))]
async fn get_role(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Role>> {
    caller.require(Permission::RolesRead)?;
    Ok(Json(role_of(&role_row(&state, &caller, id).await?)?))
}

fn check_role_spec(caller: &Caller, spec: &RoleSpec) -> ApiResult<(String, String)> {
    let name = check_name("name", &spec.name)?;
    if spec.description.chars().count() > 1000 {
        return Err(ApiError::invalid(
            "description may have at most 1000 characters",
        ));
    }
    if spec.permissions.is_empty() {
        return Err(ApiError::invalid("a role needs at least one permission"));
    }
    if spec.permissions.contains(&Permission::System) {
        return Err(ApiError::invalid(
            "the system permission belongs to the built-in super-admin role only",
        ));
    }
    if let Some(p) = spec.permissions.iter().find(|p| !caller.has(**p)) {
        return Err(ApiError::denied(format!(
            "a role you create cannot carry {p}, which you do not hold"
        )));
    }
    Ok((name, spec.description.clone()))
}

/// Creates a custom role in the caller's tenant.
#[utoipa::path(post, path = "/api/v1/roles", tag = "users", request_body = RoleSpec,
    responses((status = 201, body = Role), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_role(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(spec): ApiJson<RoleSpec>,
) -> ApiResult<(http::StatusCode, Json<Role>)> {
    caller.require(Permission::RolesWrite)?;
    let (name, description) = check_role_spec(&caller, &spec)?;
    let perms: BTreeSet<Permission> = spec.permissions.iter().copied().collect();
    let id: i64 = sqlx::query(
        "INSERT INTO roles (tenant_id, name, description, permissions, builtin, created_at) \
         VALUES ($1, $2, $3, $4, FALSE, $5) RETURNING id",
    )
    .bind(caller.tenant_id)
    .bind(&name)
    .bind(description)
    .bind(to_json(&perms))
    .bind(state.now_ms())
    .fetch_one(&state.db.pool)
    .await?
    .try_get("id")?;
    audit.detail(format!("role {id} ({name})"));
    let row = role_row(&state, &caller, id).await?;
    Ok((http::StatusCode::CREATED, Json(role_of(&row)?)))
}

/// Replaces a custom role's name, description and permissions.
#[utoipa::path(put, path = "/api/v1/roles/{id}", tag = "users", request_body = RoleSpec,
    params(("id" = i64, Path, description = "Role id")),
    responses((status = 200, body = Role), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_role(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(spec): ApiJson<RoleSpec>,
) -> ApiResult<Json<Role>> {
    caller.require(Permission::RolesWrite)?;
    let row = role_row(&state, &caller, id).await?;
    if super::db::flag(&row, "builtin")? {
        return Err(ApiError::conflict("built-in roles cannot be changed"));
    }
    let (name, description) = check_role_spec(&caller, &spec)?;
    let perms: BTreeSet<Permission> = spec.permissions.iter().copied().collect();
    // The role may already be bound on every cluster: whoever widens it must hold each
    // permission as widely as a binding can reach.
    for p in &perms {
        if p.cluster_scoped() && caller.scope(*p) != Some(super::rbac::ClusterScope::All) {
            return Err(ApiError::denied(format!(
                "changing a role to carry {p} needs {p} on every cluster"
            )));
        }
    }
    sqlx::query("UPDATE roles SET name = $1, description = $2, permissions = $3 WHERE id = $4")
        .bind(name)
        .bind(description)
        .bind(to_json(&perms))
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(Json(role_of(&role_row(&state, &caller, id).await?)?))
}

/// Deletes a custom role (its bindings go with it).
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "users",
    params(("id" = i64, Path, description = "Role id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn delete_role(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    caller.require(Permission::RolesWrite)?;
    let row = role_row(&state, &caller, id).await?;
    if super::db::flag(&row, "builtin")? {
        return Err(ApiError::conflict("built-in roles cannot be deleted"));
    }
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Every permission there is, for building roles.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "users",
    responses((status = 200, body = Vec<Permission>)))]
async fn permissions(_caller: Caller) -> Json<Vec<Permission>> {
    Json(Permission::ALL.to_vec())
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, change_user, delete_user))
        .routes(routes!(create_binding))
        .routes(routes!(delete_binding))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(permissions))
}
