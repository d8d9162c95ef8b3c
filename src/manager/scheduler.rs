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
    let mut since = state.now_ms();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = state.now_ms();
        let rows = sqlx::query("SELECT DISTINCT node_id FROM task_nodes WHERE updated_at >= $1")
            // Generous overlap: other managers' clocks and slow commits stamp rows late.
            .bind(since - 10_000)
            .fetch_all(&state.db.pool)
            .await;
        match rows {
            Ok(rows) => {
                for r in rows {
                    if let Ok(node) = r.try_get::<i64, _>("node_id") {
                        state.work.wake(node);
                    }
                }
                since = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read changed assignments"),
        }
    }
}
