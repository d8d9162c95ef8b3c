//! Sign-in, sign-out, the caller's own profile, and personal access tokens.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Extension, State};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::auth::{self, issue_token};
use super::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};

/// A sign-in.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
}

/// A session token.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The bearer token for later calls.
    pub token: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// Who signed in.
    pub user: Me,
}

/// The signed-in user and what they may do.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    /// The user's id.
    pub id: i64,
    /// The user's name.
    pub name: String,
    /// The user's tenant.
    pub tenant_id: i64,
    /// Whether they are a super administrator.
    pub super_admin: bool,
    /// Every permission they hold somewhere (cluster-scoped ones may hold on some clusters).
    pub permissions: Vec<Permission>,
    /// The permissions of `permissions` that hold on some clusters only, with those clusters'
    /// ids; the others hold on every cluster.
    #[serde(default)]
    pub limited_to: std::collections::BTreeMap<String, Vec<i64>>,
}

fn me_of(caller: &Caller) -> Me {
    Me {
        id: caller.user_id,
        name: caller.name.clone(),
        tenant_id: caller.tenant_id,
        super_admin: caller.is_super(),
        permissions: caller.permissions().into_iter().collect(),
        limited_to: caller
            .permissions()
            .into_iter()
            .filter_map(|p| match caller.scope(p)? {
                super::rbac::ClusterScope::All => None,
                super::rbac::ClusterScope::Only(ids) => {
                    Some((p.as_str().to_owned(), ids.into_iter().collect()))
                }
            })
            .collect(),
    }
}

/// Signs in with a name and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()),
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<ManagerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    audit.actor(&req.name, None);
    let keys = [format!("user:{}", req.name), format!("ip:{}", peer.ip())];
    state.logins.check(&keys)?;
    let row = sqlx::query("SELECT id, password_hash, disabled FROM users WHERE name = $1")
        .bind(&req.name)
        .fetch_optional(&state.db.pool)
        .await?;
    // The same slow hash runs whether or not the user exists, so timing does not tell.
    let (id, hash, disabled) = match &row {
        Some(r) => (
            r.try_get::<i64, _>("id")?,
            Some(r.try_get::<String, _>("password_hash")?),
            super::db::flag(r, "disabled")?,
        ),
        None => (0, None, true),
    };
    let password = req.password;
    let _slot = state
        .logins
        .hashing
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let ok = tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| {
            DUMMY_HASH
                .get_or_init(|| auth::hash_password(&auth::new_token("")).unwrap_or_default())
                .clone()
        });
        auth::verify_password(&password, &hash)
    })
    .await
    .map_err(ApiError::internal)?;
    if !ok || disabled || row.is_none() {
        return Err(ApiError::unauthorized("wrong user name or password"));
    }
    state.logins.succeeded(&keys);
    let expires_at = state.now_ms() + state.settings.session_ttl.as_millis() as i64;
    let (_, token) = issue_token(&state, id, "session", "", &[], expires_at).await?;
    let caller = auth::caller_for_token(&state, &token).await?;
    audit.actor(&caller.name, Some(caller.tenant_id));
    Ok(Json(LoginResponse {
        token,
        expires_at,
        user: me_of(&caller),
    }))
}

/// An argon2 hash of a random password, verified against when the user does not exist.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Signs out: revokes the token of this call.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(State(state): State<ManagerState>, caller: Caller) -> ApiResult<http::StatusCode> {
    sqlx::query("UPDATE tokens SET revoked = TRUE WHERE id = $1")
        .bind(caller.token_id)
        .execute(&state.db.pool)
        .await?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(caller: Caller) -> Json<Me> {
    Json(me_of(&caller))
}

/// A new personal access token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for.
    pub name: String,
    /// Permissions it is limited to (a subset of the user's); empty = all of them.
    #[serde(default)]
    pub scopes: Vec<Permission>,
    /// Days until it expires (1 to 365; default 90).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// A personal access token (the secret only in the answer to its creation).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Permission>,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// When it was created.
    pub created_at: i64,
    /// When it was last used (to the minute).
    pub last_used_at: Option<i64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The token itself: only when just created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Creates a personal access token for the caller.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = NewToken,
    responses((status = 201, body = TokenInfo), (status = 400, body = ErrorBody)))]
async fn create_token(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(req): ApiJson<NewToken>,
) -> ApiResult<(http::StatusCode, Json<TokenInfo>)> {
    let name = super::users::check_name("token name", &req.name)?;
    let days = req.expires_in_days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        return Err(ApiError::invalid("expires_in_days must be 1 to 365"));
    }
    if let Some(p) = req.scopes.iter().find(|p| !caller.has(**p)) {
        return Err(ApiError::denied(format!(
            "a token cannot carry {p}, which you do not hold"
        )));
    }
    if caller.personal {
        return Err(ApiError::denied(
            "a personal access token cannot create tokens; sign in",
        ));
    }
    let now = state.now_ms();
    let expires_at = now + days * 86_400_000;
    let (id, token) = issue_token(
        &state,
        caller.user_id,
        "personal",
        &name,
        &req.scopes,
        expires_at,
    )
    .await?;
    audit.detail(format!("token {id} ({name})"));
    Ok((
        http::StatusCode::CREATED,
        Json(TokenInfo {
            id,
            name,
            scopes: req.scopes,
            expires_at,
            created_at: now,
            last_used_at: None,
            revoked: false,
            token: Some(token),
        }),
    ))
}

/// Lists the caller's personal access tokens.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth",
    responses((status = 200, body = Vec<TokenInfo>)))]
async fn list_tokens(
    State(state): State<ManagerState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let rows = sqlx::query(
        "SELECT id, name, scopes, expires_at, created_at, last_used_at, revoked FROM tokens \
         WHERE user_id = $1 AND kind = 'personal' ORDER BY id",
    )
    .bind(caller.user_id)
    .fetch_all(&state.db.pool)
    .await?;
    let tokens = rows
        .iter()
        .map(|r| {
            Ok(TokenInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                scopes: super::db::json_col(r, "scopes"),
                expires_at: r.try_get("expires_at")?,
                created_at: r.try_get("created_at")?,
                last_used_at: r.try_get("last_used_at")?,
                revoked: super::db::flag(r, "revoked")?,
                token: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(tokens))
}

/// Revokes one of the caller's personal access tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "auth",
    params(("id" = i64, Path, description = "The token's id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    let done = sqlx::query(
        "UPDATE tokens SET revoked = TRUE WHERE id = $1 AND user_id = $2 AND kind = 'personal'",
    )
    .bind(id)
    .bind(caller.user_id)
    .execute(&state.db.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("token {id}")));
    }
    Ok(http::StatusCode::NO_CONTENT)
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}
