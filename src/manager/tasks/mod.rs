//! Distribution tasks: an image (all platforms or chosen ones) or a file (URL with an optional
//! digest, or a published file version) sent to clusters and/or listed nodes, now, at a time,
//! or on a cron schedule; with a bandwidth limit each node applies to the task's transfers.
//!
//! States: `scheduled` (at / cron; a cron task stays scheduled and starts a run — a task with
//! `parent_id` — at each firing), `waiting` (for room in the tenant's bandwidth budget),
//! `running`, and the final `succeeded` (every node succeeded), `failed` (some node failed or
//! left), `stopped`. The lifecycle is in [`run`]; this file is the API.

pub mod run;
mod types;

use axum::Json;
use axum::extract::{Extension, State};
use sqlx::Row as _;
use sqlx::any::AnyRow;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::audit::AuditSlot;
use super::db::{json_col, to_json};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, ClusterScope, Permission};

pub use run::{settle, settle_all, stop_node_assignments};
pub use types::*;

/// The columns [`task_of`] reads.
const COLUMNS: &str = "id, tenant_id, name, kind, source, digest, platforms, file_version_id, clusters, nodes, \
    scope_clusters, schedule, run_at, cron, next_run_at, bandwidth, state, parent_id, copied_from, error, \
    created_by, created_at, started_at, finished_at";

/// A task row as the API shows it (progress added by [`with_progress`]).
fn task_of(row: &AnyRow) -> Result<Task, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let source = if kind == "image" {
        TaskSource::Image {
            image: row.try_get("source")?,
            platforms: json_col(row, "platforms"),
        }
    } else {
        TaskSource::File {
            url: Some(row.try_get("source")?),
            digest: row.try_get("digest")?,
            version_id: row.try_get("file_version_id")?,
        }
    };
    let schedule: String = row.try_get("schedule")?;
    let schedule = match schedule.as_str() {
        "at" => Schedule::At {
            at: row.try_get::<Option<i64>, _>("run_at")?.unwrap_or(0),
        },
        "cron" => Schedule::Cron {
            cron: row
                .try_get::<Option<String>, _>("cron")?
                .unwrap_or_default(),
        },
        _ => Schedule::Now,
    };
    let started: Option<i64> = row.try_get("started_at")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(Task {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        source,
        clusters: json_col(row, "clusters"),
        nodes: json_col(row, "nodes"),
        scope_clusters: json_col(row, "scope_clusters"),
        schedule,
        next_run_at: row.try_get("next_run_at")?,
        bandwidth: row.try_get("bandwidth")?,
        state: row.try_get("state")?,
        parent_id: row.try_get("parent_id")?,
        copied_from: row.try_get("copied_from")?,
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        started_at: started,
        finished_at: finished,
        duration_ms: started.zip(finished).map(|(s, f)| f - s),
        progress: TaskProgress::default(),
    })
}

/// Adds the per-node totals to a task.
async fn with_progress(state: &ManagerState, task: Task) -> ApiResult<Task> {
    Ok(with_progress_all(state, vec![task]).await?.remove(0))
}

/// Adds the per-node totals to tasks, in one query.
async fn with_progress_all(state: &ManagerState, mut tasks: Vec<Task>) -> ApiResult<Vec<Task>> {
    if tasks.is_empty() {
        return Ok(tasks);
    }
    // Ids are numbers from the database: listing them inline is safe, and the Any driver has
    // no array parameters.
    let ids = tasks
        .iter()
        .map(|t| t.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT task_id, state, COUNT(*) AS n, CAST(SUM(bytes_total) AS BIGINT) AS bt, \
         CAST(SUM(bytes_done) AS BIGINT) AS bd, CAST(SUM(bytes_peer) AS BIGINT) AS bp, \
         CAST(SUM(bytes_upstream) AS BIGINT) AS bu FROM task_nodes WHERE task_id IN ({ids}) \
         GROUP BY task_id, state"
    )))
    .fetch_all(&state.db.pool)
    .await?;
    let mut by_task: std::collections::HashMap<i64, TaskProgress> = Default::default();
    for r in &rows {
        let p = by_task.entry(r.try_get("task_id")?).or_default();
        let n = sum_col(r, "n");
        p.nodes_total += n;
        p.nodes.insert(r.try_get("state")?, n);
        p.bytes_total += sum_col(r, "bt");
        p.bytes_done += sum_col(r, "bd");
        p.bytes_peer += sum_col(r, "bp");
        p.bytes_upstream += sum_col(r, "bu");
    }
    for t in &mut tasks {
        t.progress = by_task.remove(&t.id).unwrap_or_default();
    }
    Ok(tasks)
}

/// Reads an aggregate (cast to BIGINT in the query); NULL (no rows) is 0.
pub fn sum_col(row: &AnyRow, col: &str) -> i64 {
    row.try_get::<Option<i64>, _>(col)
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Whether `scope` covers every cluster a task reaches.
fn covers(scope: &ClusterScope, clusters: &[i64]) -> bool {
    clusters.iter().all(|c| scope.covers(*c))
}

/// A task the caller may reach with `p`, or 404 / 403.
async fn visible(
    state: &ManagerState,
    caller: &Caller,
    p: Permission,
    id: i64,
) -> ApiResult<(Task, Vec<i64>)> {
    let not_found = || ApiError::not_found(format!("task {id}"));
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tasks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(not_found)?;
    let scope_clusters: Vec<i64> = json_col(&row, "scope_clusters");
    let task = task_of(&row)?;
    if !caller.sees_tenant(task.tenant_id)
        || !covers(&caller.require(Permission::TasksRead)?, &scope_clusters)
    {
        return Err(not_found());
    }
    caller.require_on(p, &scope_clusters)?;
    Ok((task, scope_clusters))
}

/// Lists tasks, newest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Vec<Task>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    let scope = caller.require(Permission::TasksRead)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tasks WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR parent_id = $4) AND ($5 IS NULL OR id < $5) \
         AND ($6 IS NULL OR id IN (SELECT task_id FROM task_nodes WHERE node_id = $6)) \
         ORDER BY id DESC LIMIT $7"
    )))
    .bind(caller.tenant_filter())
    .bind(q.state)
    .bind(q.kind)
    .bind(q.parent_id)
    .bind(q.before)
    .bind(q.node_id)
    // Scope filtering happens after the query; fetch more so a page is rarely short.
    .bind(limit * 4)
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let reach: Vec<i64> = json_col(row, "scope_clusters");
        if !covers(&scope, &reach) || q.cluster_id.is_some_and(|c| !reach.contains(&c)) {
            continue;
        }
        out.push(task_of(row)?);
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(Json(with_progress_all(&state, out).await?))
}

/// Creates a task; `now` tasks start at once (or wait for bandwidth budget).
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = TaskInput,
    responses((status = 201, body = Task), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiJson(input): ApiJson<TaskInput>,
) -> ApiResult<(http::StatusCode, Json<Task>)> {
    caller.require(Permission::TasksWrite)?;
    let id = create_task(&state, &caller, input, None).await?;
    audit.detail(format!("task {id}"));
    let (task, _) = visible(&state, &caller, Permission::TasksRead, id).await?;
    Ok((
        http::StatusCode::CREATED,
        Json(with_progress(&state, task).await?),
    ))
}

/// Checks a task's input and writes it; starts it when it runs now.
async fn create_task(
    state: &ManagerState,
    caller: &Caller,
    input: TaskInput,
    copied_from: Option<i64>,
) -> ApiResult<i64> {
    let tenant = caller.target_tenant(input.tenant_id, "tasks")?;
    let checked = types::check_input(state, tenant, &input).await?;
    caller.require_on(Permission::TasksWrite, &checked.scope_clusters)?;
    if checked.file_version.is_some() {
        caller.require(Permission::FilesRead)?;
    }
    let now = state.now_ms();
    let (schedule, run_at, cron, next_run_at, initial) = match &input.schedule {
        // `starting`: the scheduler leaves it alone while this request decides its fate.
        Schedule::Now => ("now", None, None, None, "starting"),
        Schedule::At { at } if *at <= now => ("at", Some(*at), None, None, "starting"),
        Schedule::At { at } => ("at", Some(*at), None, Some(*at), "scheduled"),
        Schedule::Cron { cron } => {
            let next = run::next_cron(cron, now).map_err(ApiError::invalid)?;
            ("cron", None, Some(cron.clone()), Some(next), "scheduled")
        }
    };
    let name = match &input.name {
        Some(n) if !n.trim().is_empty() => super::users::check_name("name", n)?,
        _ => checked.default_name.clone(),
    };
    let id: i64 = sqlx::query(
        "INSERT INTO tasks (tenant_id, name, kind, source, digest, platforms, file_version_id, clusters, nodes, \
         scope_clusters, schedule, run_at, cron, next_run_at, bandwidth, state, copied_from, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $19) RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(checked.kind)
    .bind(&checked.source)
    .bind(&checked.digest)
    .bind(to_json(&checked.platforms))
    .bind(checked.file_version)
    .bind(to_json(&input.clusters))
    .bind(to_json(&input.nodes))
    .bind(to_json(&checked.scope_clusters))
    .bind(schedule)
    .bind(run_at)
    .bind(cron)
    .bind(next_run_at)
    .bind(input.bandwidth)
    .bind(initial)
    .bind(copied_from)
    .bind(&caller.name)
    .bind(now)
    .fetch_one(&state.db.pool)
    .await?
    .try_get("id")?;
    if initial == "starting" {
        match run::start(state, id).await {
            Ok(_) => {}
            Err(run::StartError::Refused(message)) => {
                // A refused task leaves nothing behind.
                sqlx::query("DELETE FROM tasks WHERE id = $1")
                    .bind(id)
                    .execute(&state.db.pool)
                    .await?;
                return Err(ApiError::conflict(message));
            }
            Err(run::StartError::Api(e)) => {
                // The caller sees an error: the task must not run behind their back.
                let _ = sqlx::query("DELETE FROM tasks WHERE id = $1")
                    .bind(id)
                    .execute(&state.db.pool)
                    .await;
                return Err(e);
            }
        }
    }
    Ok(id)
}

/// Reads a task with its totals.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
async fn get(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Task>> {
    let (task, _) = visible(&state, &caller, Permission::TasksRead, id).await?;
    Ok(Json(with_progress(&state, task).await?))
}

/// Stops a task: nodes abort its transfers within seconds; a cron task fires no more.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/stop", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses((status = 200, body = Task), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stop(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Task>> {
    let (task, _) = visible(&state, &caller, Permission::TasksWrite, id).await?;
    if matches!(task.state.as_str(), "succeeded" | "failed" | "stopped") {
        return Err(ApiError::conflict(format!(
            "task {id} is already {}",
            task.state
        )));
    }
    run::stop(&state, id, &format!("stopped by {}", caller.name)).await?;
    let (task, _) = visible(&state, &caller, Permission::TasksRead, id).await?;
    Ok(Json(with_progress(&state, task).await?))
}

/// Deletes a task, its per-node records and logs (a running task is stopped first).
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<http::StatusCode> {
    let (task, _) = visible(&state, &caller, Permission::TasksWrite, id).await?;
    if !matches!(task.state.as_str(), "succeeded" | "failed" | "stopped") {
        run::stop(&state, id, &format!("deleted by {}", caller.name)).await?;
    }
    let nodes = run::nodes_of(&state, id).await?;
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    for node in nodes {
        state.work.wake(node);
    }
    Ok(http::StatusCode::NO_CONTENT)
}

/// Creates and runs a new task with the same source, targets, schedule and limit.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/copy", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses((status = 201, body = Task), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn copy(
    State(state): State<ManagerState>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(http::StatusCode, Json<Task>)> {
    let (task, _) = visible(&state, &caller, Permission::TasksWrite, id).await?;
    let now = state.now_ms();
    let input = TaskInput {
        name: Some(task.name.clone()),
        source: match task.source {
            // A file version's task copies the version, which may since have been deleted.
            TaskSource::File {
                version_id: Some(v),
                ..
            } => TaskSource::File {
                url: None,
                digest: None,
                version_id: Some(v),
            },
            other => other,
        },
        clusters: task.clusters,
        nodes: task.nodes,
        schedule: match task.schedule {
            Schedule::At { at } if at <= now => Schedule::Now,
            other => other,
        },
        bandwidth: task.bandwidth,
        tenant_id: Some(task.tenant_id),
    };
    let new = create_task(&state, &caller, input, Some(id)).await?;
    audit.detail(format!("task {new} copied from {id}"));
    let (task, _) = visible(&state, &caller, Permission::TasksRead, new).await?;
    Ok((
        http::StatusCode::CREATED,
        Json(with_progress(&state, task).await?),
    ))
}

/// The task's per-node state and progress.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/nodes", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses((status = 200, body = Vec<NodeTask>), (status = 404, body = ErrorBody)))]
async fn nodes(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vec<NodeTask>>> {
    visible(&state, &caller, Permission::TasksRead, id).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {NODE_TASK_COLUMNS} FROM task_nodes tn JOIN nodes n ON n.id = tn.node_id \
         WHERE tn.task_id = $1 ORDER BY n.name"
    )))
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(
        rows.iter().map(node_task_of).collect::<Result<_, _>>()?,
    ))
}

/// The columns [`node_task_of`] reads.
const NODE_TASK_COLUMNS: &str = "tn.task_id, tn.node_id, n.name AS node_name, tn.state, tn.blobs_total, \
    tn.blobs_done, tn.bytes_total, tn.bytes_done, tn.bytes_peer, tn.bytes_upstream, tn.error, tn.started_at, tn.finished_at";

fn node_task_of(r: &AnyRow) -> Result<NodeTask, sqlx::Error> {
    Ok(NodeTask {
        task_id: r.try_get("task_id")?,
        node_id: r.try_get("node_id")?,
        node_name: r.try_get("node_name")?,
        state: r.try_get("state")?,
        blobs_total: r.try_get("blobs_total")?,
        blobs_done: r.try_get("blobs_done")?,
        bytes_total: r.try_get("bytes_total")?,
        bytes_done: r.try_get("bytes_done")?,
        bytes_peer: r.try_get("bytes_peer")?,
        bytes_upstream: r.try_get("bytes_upstream")?,
        error: r.try_get("error")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// A node's most recent assignments.
///
/// # Errors
/// Database failures.
pub async fn recent_for_node(
    state: &ManagerState,
    node: i64,
    limit: i64,
) -> ApiResult<Vec<NodeTask>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {NODE_TASK_COLUMNS} FROM task_nodes tn JOIN nodes n ON n.id = tn.node_id \
         WHERE tn.node_id = $1 ORDER BY tn.task_id DESC LIMIT $2"
    )))
    .bind(node)
    .bind(limit)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(rows.iter().map(node_task_of).collect::<Result<_, _>>()?)
}

/// The task's log lines (the manager's and its nodes'), oldest first.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "tasks", params(("id" = i64, Path, description = "Task id"), LogQuery),
    responses((status = 200, body = Vec<LogEntry>), (status = 404, body = ErrorBody)))]
async fn logs(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<Vec<LogEntry>>> {
    visible(&state, &caller, Permission::TasksRead, id).await?;
    let rows = sqlx::query(
        "SELECT l.id, l.node_id, n.name AS node_name, l.at, l.level, l.message FROM task_logs l \
         LEFT JOIN nodes n ON n.id = l.node_id WHERE l.task_id = $1 AND ($2 IS NULL OR l.id > $2) \
         AND ($3 IS NULL OR l.node_id = $3) ORDER BY l.id LIMIT $4",
    )
    .bind(id)
    .bind(q.after)
    .bind(q.node_id)
    .bind(q.limit.unwrap_or(500).clamp(1, 5000))
    .fetch_all(&state.db.pool)
    .await?;
    let lines = rows
        .iter()
        .map(|r| {
            Ok(LogEntry {
                id: r.try_get("id")?,
                node_id: r.try_get("node_id")?,
                node_name: r.try_get("node_name")?,
                at: r.try_get("at")?,
                level: r.try_get("level")?,
                message: r.try_get("message")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(lines))
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(stop))
        .routes(routes!(copy))
        .routes(routes!(nodes))
        .routes(routes!(logs))
}
