//! The audit log. A layer around the API records every change (every non-GET request except
//! nodes' heartbeats and progress reports): who (the signed-in user, or the name a sign-in
//! tried), what (the route and the concrete object), when, and the result, denials and bad
//! input included. Handlers may add a detail (e.g. the id they created) through the
//! [`AuditSlot`] in the request's extensions.

use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::error::{ApiQuery, ApiResult};
use super::rbac::{Caller, Permission};

/// What the handler and the caller extractor tell the audit layer about a request.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditInfo>>);

/// The parts of an audit entry known only inside the request.
#[derive(Debug, Clone, Default)]
pub struct AuditInfo {
    /// Who acted.
    pub actor: Option<String>,
    /// Their tenant.
    pub tenant_id: Option<i64>,
    /// A detail, e.g. the created object's id.
    pub detail: String,
}

impl AuditSlot {
    /// Records who acts.
    pub fn actor(&self, name: &str, tenant: Option<i64>) {
        let mut info = self.0.lock().unwrap();
        info.actor = Some(name.chars().take(100).collect());
        info.tenant_id = tenant;
    }

    /// Records a detail.
    pub fn detail(&self, detail: impl Into<String>) {
        self.0.lock().unwrap().detail = detail.into();
    }
}

/// Notes the caller of a request for its audit entry (called by the caller extractor).
pub fn note_caller(extensions: &http::Extensions, caller: &Caller) {
    if let Some(slot) = extensions.get::<AuditSlot>() {
        slot.actor(&caller.name, Some(caller.tenant_id));
    }
}

/// Requests that are not audited: reads, and the nodes' periodic calls.
fn audited(method: &http::Method, route: &str) -> bool {
    method != http::Method::GET
        && method != http::Method::HEAD
        && !matches!(
            route,
            "/api/v1/agent/heartbeat" | "/api/v1/agent/progress" | "/api/v1/agent/work"
        )
}

/// The layer: runs the request, then writes its audit entry.
pub async fn layer(State(state): State<ManagerState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let Some(route) = route.filter(|r| audited(&method, r)) else {
        return next.run(req).await;
    };
    let object = req.uri().path().chars().take(300).collect::<String>();
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    let status = response.status();
    let info = slot.0.lock().unwrap().clone();
    let result = match status.as_u16() {
        200..=399 => "ok",
        401 => "unauthenticated",
        403 => "denied",
        400..=499 => "rejected",
        _ => "error",
    };
    let write = sqlx::query(
        "INSERT INTO audit (at, tenant_id, actor, action, object, detail, result, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(state.now_ms())
    .bind(info.tenant_id)
    .bind(info.actor.unwrap_or_else(|| "anonymous".into()))
    .bind(format!("{method} {route}"))
    .bind(object)
    .bind(info.detail)
    .bind(result)
    .bind(i64::from(status.as_u16()))
    .execute(&state.db.pool)
    .await;
    if let Err(e) = write {
        tracing::error!(error = %e, "cannot write an audit entry");
    }
    response
}

/// One audit entry.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The entry's id.
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// The tenant of the actor.
    pub tenant_id: Option<i64>,
    /// Who acted (`anonymous` when unauthenticated).
    pub actor: String,
    /// Method and route, e.g. `POST /api/v1/tasks`.
    pub action: String,
    /// The concrete path.
    pub object: String,
    /// A detail, e.g. the created id.
    pub detail: String,
    /// `ok`, `denied`, `unauthenticated`, `rejected` or `error`.
    pub result: String,
    /// The HTTP status.
    pub status: i64,
}

/// Filters of the audit list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only actions containing this text, e.g. `tasks`.
    pub action: Option<String>,
    /// Only this result.
    pub result: Option<String>,
    /// Entries at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Entries before this id (paging backwards).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// Lists audit entries, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery), tag = "audit",
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = super::ErrorBody)))]
async fn list(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<axum::Json<Vec<AuditEntry>>> {
    caller.require(Permission::AuditRead)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = sqlx::query(
        "SELECT id, at, tenant_id, actor, action, object, detail, result, status FROM audit \
         WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR actor = $2) \
         AND ($3 IS NULL OR action LIKE $3) AND ($4 IS NULL OR result = $4) \
         AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR id < $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(caller.tenant_filter())
    .bind(q.actor)
    .bind(q.action.map(|a| format!("%{a}%")))
    .bind(q.result)
    .bind(q.since)
    .bind(q.before)
    .bind(limit)
    .fetch_all(&state.db.pool)
    .await?;
    let entries = rows
        .iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                tenant_id: r.try_get("tenant_id")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                object: r.try_get("object")?,
                detail: r.try_get("detail")?,
                result: r.try_get("result")?,
                status: r.try_get("status")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(axum::Json(entries))
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new().routes(routes!(list))
}
