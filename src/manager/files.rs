//! Published file versions: a name and version for a URL and its digest (plus free-form
//! metadata), so tasks can distribute "tool 1.4" rather than a raw URL.

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::db::{json_col, to_json};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};

/// A published file version.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileVersion {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: i64,
    /// Name, e.g. `model-weights`.
    pub name: String,
    /// Version, e.g. `2026.11`.
    pub version: String,
    /// The http(s) URL.
    pub url: String,
    /// Its digest (`sha256:…`).
    pub digest: String,
    /// Its size in bytes, if known.
    pub size: Option<i64>,
    /// Free-form metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Who published it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at: i64,
}

/// A new file version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFileVersion {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The http(s) URL.
    pub url: String,
    /// Its digest (`sha256:…`).
    pub digest: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: Option<i64>,
    /// Free-form metadata (a JSON object, at most 16 KiB).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Filter of the file version list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// Only this name.
    pub name: Option<String>,
}

const COLUMNS: &str =
    "id, tenant_id, name, version, url, digest, size, metadata, created_by, created_at";

fn version_of(r: &AnyRow) -> Result<FileVersion, sqlx::Error> {
    Ok(FileVersion {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        url: r.try_get("url")?,
        digest: r.try_get("digest")?,
        size: r.try_get("size")?,
        metadata: json_col(r, "metadata"),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Lists file versions, newest first.
#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(FileQuery),
    responses((status = 200, body = Vec<FileVersion>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<Json<Vec<FileVersion>>> {
    caller.require(Permission::FilesRead)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM file_versions WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR name = $2) \
         ORDER BY id DESC LIMIT 1000"
    )))
    .bind(caller.tenant_filter())
    .bind(q.name)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(rows.iter().map(version_of).collect::<Result<_, _>>()?))
}

/// Publishes a file version.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", request_body = NewFileVersion,
    responses((status = 201, body = FileVersion), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(req): ApiJson<NewFileVersion>,
) -> ApiResult<(http::StatusCode, Json<FileVersion>)> {
    caller.require(Permission::FilesWrite)?;
    let name = super::users::check_name("name", &req.name)?;
    let version = super::users::check_name("version", &req.version)?;
    crate::files::parse_url(&req.url).map_err(|e| ApiError::invalid(e.message))?;
    req.digest
        .parse::<crate::oci::Digest>()
        .map_err(|e| ApiError::invalid(format!("invalid digest: {e}")))?;
    if req.size.is_some_and(|s| s < 0) {
        return Err(ApiError::invalid("size must not be negative"));
    }
    let metadata = to_json(&req.metadata);
    if metadata.len() > 16 * 1024 {
        return Err(ApiError::invalid("metadata may have at most 16 KiB"));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO file_versions (tenant_id, name, version, url, digest, size, metadata, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )))
    .bind(caller.tenant_id)
    .bind(name)
    .bind(version)
    .bind(&req.url)
    .bind(&req.digest)
    .bind(req.size)
    .bind(metadata)
    .bind(&caller.name)
    .bind(state.now_ms())
    .fetch_one(&state.db.pool)
    .await?;
    let created = version_of(&row)?;
    audit.detail(format!("file version {}", created.id));
    Ok((http::StatusCode::CREATED, Json(created)))
}

async fn visible(state: &ManagerState, caller: &Caller, id: i64) -> ApiResult<FileVersion> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM file_versions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("file version {id}")))?;
    let v = version_of(&row)?;
    if !caller.sees_tenant(v.tenant_id) {
        return Err(ApiError::not_found(format!("file version {id}")));
    }
    Ok(v)
}

/// Reads a file version.
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = i64, Path, description = "File version id")),
    responses((status = 200, body = FileVersion), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<FileVersion>> {
    caller.require(Permission::FilesRead)?;
    Ok(Json(visible(&state, &caller, id).await?))
}

/// Deletes a file version (tasks that used it keep their URL and digest).
#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = i64, Path, description = "File version id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    caller.require(Permission::FilesWrite)?;
    visible(&state, &caller, id).await?;
    sqlx::query("DELETE FROM file_versions WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
}
