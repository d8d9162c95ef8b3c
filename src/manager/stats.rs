//! Statistics over finished tasks: per day (count, success rate, duration percentiles, bytes
//! from peers vs the upstream) and per task (duration against the number of nodes), the raw
//! figures the console's charts draw.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ManagerState;
use super::error::{ApiQuery, ApiResult, ErrorBody};
use super::rbac::{Caller, Permission};
use super::tasks::sum_col;

/// The window and tenant of the statistics.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Tasks that started at or after this time (Unix ms; default 30 days ago).
    pub from: Option<i64>,
    /// … and before this time (default now).
    pub to: Option<i64>,
    /// Only this tenant (super administrators; others always see their own).
    pub tenant_id: Option<i64>,
}

/// Figures of one day (UTC).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayStats {
    /// The day, `YYYY-MM-DD`.
    pub day: String,
    /// Tasks that ended.
    pub tasks: i64,
    /// Of which succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Stopped.
    pub stopped: i64,
    /// succeeded / tasks.
    pub success_rate: f64,
    /// Median duration.
    pub duration_p50_ms: i64,
    /// 90th percentile duration.
    pub duration_p90_ms: i64,
    /// 99th percentile duration.
    pub duration_p99_ms: i64,
    /// Bytes nodes took from peers and seeds.
    pub bytes_peer: i64,
    /// Bytes nodes took from the upstream.
    pub bytes_upstream: i64,
}

/// Figures of one task.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskStats {
    /// The task.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// `image` or `file`.
    pub kind: String,
    /// Its final state.
    pub state: String,
    /// When it started (Unix ms).
    pub started_at: i64,
    /// How long it ran.
    pub duration_ms: i64,
    /// Nodes it reached.
    pub nodes: i64,
    /// Bytes from peers and seeds.
    pub bytes_peer: i64,
    /// Bytes from the upstream.
    pub bytes_upstream: i64,
}

/// The statistics.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// Window start.
    pub from: i64,
    /// Window end.
    pub to: i64,
    /// Per day, oldest first.
    pub days: Vec<DayStats>,
    /// Per task, oldest first (the newest 5000 of the window; only tasks the caller may read).
    pub tasks: Vec<TaskStats>,
    /// Over the whole window.
    pub total: DayStats,
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarize(day: String, tasks: &[&TaskStats]) -> DayStats {
    let mut durations: Vec<i64> = tasks.iter().map(|t| t.duration_ms).collect();
    durations.sort_unstable();
    let count = |s: &str| tasks.iter().filter(|t| t.state == s).count() as i64;
    let n = tasks.len() as i64;
    DayStats {
        day,
        tasks: n,
        succeeded: count("succeeded"),
        failed: count("failed"),
        stopped: count("stopped"),
        success_rate: if n == 0 {
            0.0
        } else {
            count("succeeded") as f64 / n as f64
        },
        duration_p50_ms: quantile(&durations, 0.5),
        duration_p90_ms: quantile(&durations, 0.9),
        duration_p99_ms: quantile(&durations, 0.99),
        bytes_peer: tasks.iter().map(|t| t.bytes_peer).sum(),
        bytes_upstream: tasks.iter().map(|t| t.bytes_upstream).sum(),
    }
}

/// Statistics of the tasks that ended in a window.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", params(StatsQuery),
    responses((status = 200, body = Stats), (status = 403, body = ErrorBody)))]
async fn stats(
    State(state): State<ManagerState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    caller.require(Permission::StatsRead)?;
    // Statistics name tasks: a caller sees those of the clusters it may read tasks on.
    let scope = caller.scope(Permission::TasksRead);
    let to = q.to.unwrap_or_else(|| state.now_ms() + 1);
    let from = q.from.unwrap_or(to - 30 * 86_400_000);
    let rows = sqlx::query(
        "SELECT t.id, t.name, t.kind, t.state, t.started_at, t.finished_at, t.scope_clusters, COUNT(tn.node_id) AS nodes, \
         CAST(SUM(tn.bytes_peer) AS BIGINT) AS bp, CAST(SUM(tn.bytes_upstream) AS BIGINT) AS bu FROM tasks t \
         LEFT JOIN task_nodes tn ON tn.task_id = t.id \
         WHERE ($1 IS NULL OR t.tenant_id = $1) AND t.started_at >= $2 AND t.started_at < $3 \
         AND t.finished_at IS NOT NULL AND t.schedule <> 'cron' \
         GROUP BY t.id, t.name, t.kind, t.state, t.started_at, t.finished_at, t.scope_clusters \
         ORDER BY t.started_at DESC LIMIT 5000",
    )
    .bind(caller.tenant_filter().or(q.tenant_id))
    .bind(from)
    .bind(to)
    .fetch_all(&state.db.pool)
    .await?;
    let mut tasks = Vec::with_capacity(rows.len());
    // Newest first from the query (so a long window keeps its latest tasks), oldest first out.
    for r in rows.iter().rev() {
        let reach: Vec<i64> = super::db::json_col(r, "scope_clusters");
        if !scope
            .as_ref()
            .is_some_and(|s| reach.iter().all(|c| s.covers(*c)))
        {
            continue;
        }
        let started: i64 = r.try_get("started_at")?;
        let finished: i64 = r.try_get("finished_at")?;
        tasks.push(TaskStats {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            state: r.try_get("state")?,
            started_at: started,
            duration_ms: finished - started,
            nodes: sum_col(r, "nodes"),
            bytes_peer: sum_col(r, "bp"),
            bytes_upstream: sum_col(r, "bu"),
        });
    }
    let mut by_day: BTreeMap<String, Vec<&TaskStats>> = BTreeMap::new();
    for t in &tasks {
        let day = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.started_at)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        by_day.entry(day).or_default().push(t);
    }
    let days = by_day
        .into_iter()
        .map(|(day, ts)| summarize(day, &ts))
        .collect();
    let all: Vec<&TaskStats> = tasks.iter().collect();
    let total = summarize(String::new(), &all);
    Ok(Json(Stats {
        from,
        to,
        days,
        tasks,
        total,
    }))
}

pub(super) fn routes() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::new().routes(routes!(stats))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.9), 90);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
