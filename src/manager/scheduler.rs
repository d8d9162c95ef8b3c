//! The manager's background work: every `tick`, fire due timed and cron tasks and start waiting
//! ones; every `discovery_every`, rediscover Kubernetes and Mesos members; with PostgreSQL
//! (where another manager may have changed a node's assignments), wake the long polls of nodes
//! whose assignments changed.

use sqlx::Row as _;

use super::ManagerState;
use super::db::Backend;

/// Starts the background loops; aborting the handle stops them all.
pub fn spawn(state: ManagerState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::join!(
            tick_loop(state.clone()),
            super::clusters::discovery_loop(state.clone()),
            watch_assignments(state),
        );
    })
}

async fn tick_loop(state: ManagerState) {
    let mut tick = tokio::time::interval(state.settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = super::tasks::run::tick(&state).await {
            tracing::warn!(error = %e, "scheduler tick failed");
        }
    }
}

/// Wakes nodes whose assignments another manager changed (PostgreSQL only: with SQLite there
/// is one manager, which wakes nodes itself).
async fn watch_assignments(state: ManagerState) {
    if state.db.backend != Backend::Postgres {
        return;
    }
    // Tasks whose change was already signalled, with the `updated_at` signalled.
    let mut signalled: std::collections::HashMap<i64, i64> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = state.now_ms();
        // A task starting, stopping or ending changes its row; a node's progress report does
        // not (it changes no one's assignments). The window overlaps generously: other
        // managers' clocks and slow commits stamp rows late.
        let rows = sqlx::query(
            "SELECT t.id, t.updated_at, tn.node_id FROM tasks t JOIN task_nodes tn ON tn.task_id = t.id \
             WHERE t.updated_at >= $1",
        )
        .bind(now - WINDOW_MS)
        .fetch_all(&state.db.pool)
        .await;
        match rows {
            Ok(rows) => {
                let mut fresh: std::collections::HashMap<i64, i64> = Default::default();
                for r in &rows {
                    let (Ok(task), Ok(updated), Ok(node)) = (
                        r.try_get::<i64, _>("id"),
                        r.try_get::<i64, _>("updated_at"),
                        r.try_get::<i64, _>("node_id"),
                    ) else {
                        continue;
                    };
                    if signalled.get(&task) != Some(&updated) {
                        state.work.wake(node);
                        fresh.insert(task, updated);
                    }
                }
                signalled.extend(fresh);
                signalled.retain(|_, updated| *updated >= now - 2 * WINDOW_MS);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read changed assignments"),
        }
    }
}

/// How far back the watcher looks for changed tasks.
const WINDOW_MS: i64 = 10_000;
