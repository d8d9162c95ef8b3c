//! A task's lifecycle: starting (within the tenant's bandwidth budget), firing at a time or on
//! a cron schedule (exactly once, however many managers share the database), stopping, and
//! settling into its final state once every node has finished.
//!
//! Firing is a compare-and-set on `next_run_at`: each manager reads the due tasks, and only the
//! one whose `UPDATE … WHERE next_run_at = old` changes a row starts the run.

use std::str::FromStr as _;

use sqlx::Row as _;

use crate::manager::db::{Backend, json_col};
use crate::manager::error::{ApiError, ApiResult};
use crate::manager::{ManagerState, tenants};

/// Why a task did not start.
#[derive(Debug)]
pub enum StartError {
    /// The tenant's budget has no room and its policy is `refuse`.
    Refused(String),
    /// Anything else.
    Api(ApiError),
}

impl From<ApiError> for StartError {
    fn from(e: ApiError) -> StartError {
        StartError::Api(e)
    }
}

impl From<sqlx::Error> for StartError {
    fn from(e: sqlx::Error) -> StartError {
        StartError::Api(e.into())
    }
}

/// The next time (Unix ms) after `now` that `expr` names, in UTC.
///
/// # Errors
/// A message for people when the expression is invalid or never fires.
pub fn next_cron(expr: &str, now: i64) -> Result<i64, String> {
    if expr.len() > 200 {
        return Err("cron expression too long".into());
    }
    let cron = croner::Cron::from_str(expr)
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
    let start = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)
        .ok_or_else(|| "the clock is out of range".to_string())?;
    let next = cron
        .find_next_occurrence(&start, false)
        .map_err(|e| format!("cron expression {expr:?} never fires: {e}"))?;
    // Distribution runs take minutes: firing more than once a minute only piles them up.
    if let Ok(after) = cron.find_next_occurrence(&next, false)
        && (after - next).num_seconds() < 60
    {
        return Err(format!(
            "cron expression {expr:?} fires more than once a minute; the shortest period is a minute"
        ));
    }
    Ok(next.timestamp_millis())
}

/// Appends a manager log line to a task.
///
/// # Errors
/// Database failures.
pub async fn log(state: &ManagerState, task: i64, level: &str, message: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO task_logs (task_id, node_id, at, level, message) VALUES ($1, NULL, $2, $3, $4)")
        .bind(task)
        .bind(state.now_ms())
        .bind(level)
        .bind(message)
        .execute(&state.db.pool)
        .await?;
    Ok(())
}

/// Starts a `waiting` task: assigns it to its target nodes and marks it running, if the
/// tenant's budget has room. Returns whether it started (false: it keeps waiting).
///
/// # Errors
/// [`StartError::Refused`] when the budget has no room and the tenant refuses.
pub async fn start(state: &ManagerState, id: i64) -> Result<bool, StartError> {
    // One start at a time per manager; on PostgreSQL the tenant row's lock orders managers.
    let _guard = state.work.start_lock.lock().await;
    let mut tx = state.db.begin_write().await?;
    // On PostgreSQL the task's row lock makes a second manager starting it wait, then see it
    // running; SQLite's IMMEDIATE transaction already excludes other writers.
    let lock = if state.db.backend == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let task = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT tenant_id, bandwidth, clusters, nodes, state FROM tasks WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(task) = task else { return Ok(false) };
    let current: String = task.try_get("state")?;
    if current != "waiting" && current != "starting" {
        return Ok(false);
    }
    let tenant: i64 = task.try_get("tenant_id")?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT bandwidth_budget, budget_policy FROM tenants WHERE id = $1{lock}"
    )))
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let budget: Option<i64> = row.try_get("bandwidth_budget")?;
    let policy: String = row.try_get("budget_policy")?;
    let mut bandwidth: Option<i64> = task.try_get("bandwidth")?;
    if let Some(budget) = budget {
        // In a tenant with a budget, a task without a limit takes the whole budget.
        let want = *bandwidth.get_or_insert(budget);
        let used = tenants::bandwidth_in_use(&mut *tx, tenant).await?;
        // Tasks start in order: a newer one does not take room an older waiting one needs.
        let older_waiting = super::sum_col(
            &sqlx::query(
                "SELECT COUNT(*) AS n FROM tasks WHERE tenant_id = $1 AND state = 'waiting' AND id < $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?,
            "n",
        );
        if used.saturating_add(want) > budget || older_waiting > 0 {
            let message = if older_waiting > 0 {
                format!("{older_waiting} older tasks of the tenant wait for bandwidth budget")
            } else {
                format!(
                    "the tenant's bandwidth budget ({budget} B/s) has {} B/s free; the task needs {want} B/s",
                    (budget - used).max(0)
                )
            };
            if policy == "refuse" {
                return Err(StartError::Refused(message));
            }
            sqlx::query("UPDATE tasks SET state = 'waiting', updated_at = $1 WHERE id = $2")
                .bind(state.now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if !state.work.told_waiting(id) {
                log(state, id, "info", &format!("waiting: {message}")).await?;
            }
            return Ok(false);
        }
    }
    let clusters: Vec<i64> = json_col(&task, "clusters");
    let listed: Vec<i64> = json_col(&task, "nodes");
    let mut nodes: Vec<i64> = Vec::new();
    for cluster in &clusters {
        let rows = sqlx::query("SELECT id FROM nodes WHERE cluster_id = $1 AND member = TRUE")
            .bind(cluster)
            .fetch_all(&mut *tx)
            .await?;
        for r in rows {
            nodes.push(r.try_get("id")?);
        }
    }
    for node in listed {
        let exists = sqlx::query("SELECT id FROM nodes WHERE id = $1 AND member = TRUE")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            nodes.push(node);
        }
    }
    nodes.sort_unstable();
    nodes.dedup();
    let now = state.now_ms();
    if nodes.is_empty() {
        sqlx::query(
            "UPDATE tasks SET state = 'failed', error = 'no registered node in its targets', started_at = $1, \
             finished_at = $1, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        log(
            state,
            id,
            "error",
            "no registered node in the task's targets",
        )
        .await?;
        return Ok(true);
    }
    for node in &nodes {
        sqlx::query(
            "INSERT INTO task_nodes (task_id, node_id, state, updated_at) VALUES ($1, $2, 'queued', $3)",
        )
        .bind(id)
        .bind(node)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE tasks SET state = 'running', bandwidth = $1, started_at = $2, updated_at = $2 WHERE id = $3",
    )
    .bind(bandwidth)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state.work.started(id);
    log(
        state,
        id,
        "info",
        &format!("started on {} nodes", nodes.len()),
    )
    .await?;
    for node in nodes {
        state.work.wake(node);
    }
    Ok(true)
}

/// The nodes assigned to a task.
///
/// # Errors
/// Database failures.
pub async fn nodes_of(state: &ManagerState, task: i64) -> ApiResult<Vec<i64>> {
    let rows = sqlx::query("SELECT node_id FROM task_nodes WHERE task_id = $1")
        .bind(task)
        .fetch_all(&state.db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("node_id"))
        .collect::<Result<_, _>>()?)
}

/// Stops a task (and, for a cron task, its running runs): its nodes drop the assignment at
/// their next poll, which the manager wakes at once.
///
/// # Errors
/// Database failures.
pub async fn stop(state: &ManagerState, id: i64, why: &str) -> ApiResult<()> {
    let now = state.now_ms();
    let runs: Vec<i64> = sqlx::query(
        "SELECT id FROM tasks WHERE (id = $1 OR parent_id = $1) AND state IN ('scheduled', 'starting', 'waiting', 'running')",
    )
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?
    .iter()
    .map(|r| r.try_get("id"))
    .collect::<Result<_, _>>()?;
    for task in runs {
        let mut tx = state.db.begin_write().await?;
        sqlx::query(
            "UPDATE tasks SET state = 'stopped', error = $1, next_run_at = NULL, finished_at = $2, updated_at = $2 \
             WHERE id = $3 AND state IN ('scheduled', 'starting', 'waiting', 'running')",
        )
        .bind(why)
        .bind(now)
        .bind(task)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE task_nodes SET state = 'stopped', error = $1, finished_at = $2, updated_at = $2 \
             WHERE task_id = $3 AND state IN ('queued', 'running')",
        )
        .bind(why)
        .bind(now)
        .bind(task)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        log(state, task, "info", why).await?;
        for node in nodes_of(state, task).await? {
            state.work.wake(node);
        }
    }
    Ok(())
}

/// Stops a node's active assignments (it was removed or left its cluster).
///
/// # Errors
/// Database failures.
pub async fn stop_node_assignments(state: &ManagerState, node: i64, why: &str) -> ApiResult<()> {
    let now = state.now_ms();
    sqlx::query(
        "UPDATE task_nodes SET state = 'stopped', error = $1, finished_at = $2, updated_at = $2 \
         WHERE node_id = $3 AND state IN ('queued', 'running')",
    )
    .bind(why)
    .bind(now)
    .bind(node)
    .execute(&state.db.pool)
    .await?;
    Ok(())
}

/// Ends a running task whose nodes have all finished: `succeeded` when every node succeeded,
/// else `failed` with a count. Idempotent.
///
/// # Errors
/// Database failures.
pub async fn settle(state: &ManagerState, id: i64) -> ApiResult<()> {
    let rows = sqlx::query(
        "SELECT state, COUNT(*) AS n FROM task_nodes WHERE task_id = $1 GROUP BY state",
    )
    .bind(id)
    .fetch_all(&state.db.pool)
    .await?;
    let mut total = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    for r in &rows {
        let s: String = r.try_get("state")?;
        let n = super::sum_col(r, "n");
        total += n;
        match s.as_str() {
            "queued" | "running" => return Ok(()),
            "succeeded" => succeeded += n,
            "failed" => failed += n,
            _ => {}
        }
    }
    let (final_state, error) = if total > 0 && succeeded == total {
        ("succeeded", None)
    } else {
        let stopped = total - succeeded - failed;
        (
            "failed",
            Some(format!(
                "{succeeded} of {total} nodes succeeded ({failed} failed, {stopped} stopped)"
            )),
        )
    };
    let now = state.now_ms();
    let done = sqlx::query(
        "UPDATE tasks SET state = $1, error = $2, finished_at = $3, updated_at = $3 WHERE id = $4 AND state = 'running'",
    )
    .bind(final_state)
    .bind(&error)
    .bind(now)
    .bind(id)
    .execute(&state.db.pool)
    .await?;
    if done.rows_affected() > 0 {
        let line = match &error {
            None => format!("succeeded on {total} nodes"),
            Some(e) => e.clone(),
        };
        log(
            state,
            id,
            if error.is_none() { "info" } else { "error" },
            &line,
        )
        .await?;
        // Its bandwidth is free again: waiting tasks need not wait for the next tick.
        start_waiting(state).await?;
    }
    Ok(())
}

/// Settles every running task (after nodes were removed).
///
/// # Errors
/// Database failures.
pub async fn settle_all(state: &ManagerState) -> ApiResult<()> {
    let ids: Vec<i64> = sqlx::query("SELECT id FROM tasks WHERE state = 'running'")
        .fetch_all(&state.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    for id in ids {
        settle(state, id).await?;
    }
    Ok(())
}

/// Fires every due `at` and cron task once, then starts waiting tasks as budgets allow.
///
/// # Errors
/// Database failures.
pub async fn tick(state: &ManagerState) -> ApiResult<()> {
    let now = state.now_ms();
    let due = sqlx::query(
        "SELECT id, schedule, cron, next_run_at FROM tasks WHERE state = 'scheduled' AND next_run_at <= $1 ORDER BY next_run_at",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    for row in &due {
        let id: i64 = row.try_get("id")?;
        let old: i64 = row.try_get("next_run_at")?;
        let schedule: String = row.try_get("schedule")?;
        if schedule == "cron" {
            let expr: String = row
                .try_get::<Option<String>, _>("cron")?
                .unwrap_or_default();
            let next = next_cron(&expr, now.max(old)).ok();
            if !claim(state, id, old, next).await? {
                continue;
            }
            // An occurrence whose previous run still goes is skipped: runs must not pile up.
            let active = super::sum_col(
                &sqlx::query(
                    "SELECT COUNT(*) AS n FROM tasks WHERE parent_id = $1 AND state IN ('starting', 'waiting', 'running')",
                )
                .bind(id)
                .fetch_one(&state.db.pool)
                .await?,
                "n",
            );
            if active > 0 {
                log(
                    state,
                    id,
                    "warn",
                    "skipped an occurrence: the previous run has not ended",
                )
                .await?;
                continue;
            }
            match spawn_run(state, id).await {
                Ok(run) => log(state, id, "info", &format!("fired: run {run}")).await?,
                Err(e) => tracing::warn!(task = id, error = %e, "cron task did not fire"),
            }
        } else {
            // Claimed and made waiting in one statement: a crash cannot strand it.
            sqlx::query(
                "UPDATE tasks SET next_run_at = NULL, state = 'waiting', updated_at = $1 \
                 WHERE id = $2 AND next_run_at = $3 AND state = 'scheduled'",
            )
            .bind(now)
            .bind(id)
            .bind(old)
            .execute(&state.db.pool)
            .await?;
        }
    }
    // A node silent for this long gives up its assignments, so tasks end; not while this manager
    // itself has run for less (nodes could not reach it while it was down).
    let gone_ms = state.settings.node_gone.as_millis() as i64;
    if now - state.started_ms > gone_ms {
        let gone = sqlx::query(
            "UPDATE task_nodes SET state = 'failed', error = 'the node went offline', finished_at = $1, updated_at = $1 \
             WHERE state IN ('queued', 'running') AND node_id IN (SELECT id FROM nodes WHERE last_seen < $2)",
        )
        .bind(now)
        .bind(now - gone_ms)
        .execute(&state.db.pool)
        .await?;
        if gone.rows_affected() > 0 {
            settle_all(state).await?;
        }
    }
    // A creation that died between writing its task and starting it leaves it `starting`.
    sqlx::query("UPDATE tasks SET state = 'waiting', updated_at = $1 WHERE state = 'starting' AND created_at < $2")
        .bind(now)
        .bind(now - 60_000)
        .execute(&state.db.pool)
        .await?;
    start_waiting(state).await
}

/// Starts waiting tasks, oldest first, as budgets allow.
async fn start_waiting(state: &ManagerState) -> ApiResult<()> {
    let waiting: Vec<i64> = sqlx::query("SELECT id FROM tasks WHERE state = 'waiting' ORDER BY id")
        .fetch_all(&state.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    for id in waiting {
        match start(state, id).await {
            Ok(_) => {}
            Err(StartError::Refused(message)) => {
                fail(state, id, &message).await?;
                log(state, id, "error", &format!("refused: {message}")).await?;
            }
            // One task's failure must not hold the others back.
            Err(StartError::Api(e)) => {
                tracing::warn!(task = id, error = %e, "cannot start a waiting task")
            }
        }
    }
    Ok(())
}

/// Ends a task as failed with `message` (a start the tenant's budget refused).
async fn fail(state: &ManagerState, id: i64, message: &str) -> ApiResult<()> {
    sqlx::query(
        "UPDATE tasks SET state = 'failed', error = $1, finished_at = $2, updated_at = $2 WHERE id = $3",
    )
    .bind(message)
    .bind(state.now_ms())
    .bind(id)
    .execute(&state.db.pool)
    .await?;
    Ok(())
}

/// Moves `next_run_at` from `old` to `next`; true for the one manager that did it.
async fn claim(state: &ManagerState, id: i64, old: i64, next: Option<i64>) -> ApiResult<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET next_run_at = $1, updated_at = $2 WHERE id = $3 AND next_run_at = $4 AND state = 'scheduled'",
    )
    .bind(next)
    .bind(state.now_ms())
    .bind(id)
    .bind(old)
    .execute(&state.db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Creates a run of a cron task (a copy with `parent_id`, running now) and starts it.
async fn spawn_run(state: &ManagerState, parent: i64) -> ApiResult<i64> {
    let now = state.now_ms();
    let id: i64 = sqlx::query(
        "INSERT INTO tasks (tenant_id, name, kind, source, digest, platforms, file_version_id, clusters, nodes, \
         scope_clusters, schedule, bandwidth, state, parent_id, created_by, created_at, updated_at) \
         SELECT tenant_id, name, kind, source, digest, platforms, file_version_id, clusters, nodes, scope_clusters, \
         'now', bandwidth, 'waiting', id, created_by, $1, $1 FROM tasks WHERE id = $2 AND state = 'scheduled' \
         RETURNING id",
    )
    .bind(now)
    .bind(parent)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::conflict(format!("task {parent} was stopped as it fired")))?
    .try_get("id")?;
    match start(state, id).await {
        Ok(_) => {}
        Err(StartError::Refused(message)) => fail(state, id, &message).await?,
        Err(StartError::Api(e)) => return Err(e),
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::next_cron;

    #[test]
    fn cron_expressions() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(next_cron("0 3 * * *", t0).unwrap(), t0 + 3 * 3_600_000);
        assert_eq!(next_cron("*/5 * * * *", t0).unwrap(), t0 + 5 * 60_000);
        assert!(next_cron("not a cron", t0).is_err());
        assert!(next_cron("61 * * * *", t0).is_err());
        assert!(next_cron("* * * * * * * *", t0).is_err());
        assert!(
            next_cron("*/10 * * * * *", t0).is_err(),
            "every ten seconds"
        );
        assert!(
            next_cron("0 * * * * *", t0).is_ok(),
            "every minute, with seconds"
        );
    }
}
