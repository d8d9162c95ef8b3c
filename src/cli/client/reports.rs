//! `shoal audit` and `shoal stats`: the audit log and the statistics of finished tasks.

use clap::Args;

use super::ClientOpts;
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};

/// Flags of `shoal audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only this actor's entries.
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// Only actions containing this text, e.g. tasks or "DELETE".
    #[arg(long, value_name = "TEXT")]
    action: Option<String>,
    /// Only this result: ok, denied, unauthenticated, rejected or error.
    #[arg(long)]
    result: Option<String>,
    /// At most this many entries (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

/// Flags of `shoal stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The window: tasks that started in the last N days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=3650))]
    days: i64,
}

/// `shoal audit`.
pub(super) async fn audit(args: AuditArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(a) = args.actor {
        query.push(("actor", a));
    }
    if let Some(a) = args.action {
        query.push(("action", a));
    }
    if let Some(r) = args.result {
        query.push(("result", r));
    }
    let reply = client.get("/api/v1/audit", &query).await?;
    output::show(&client, &reply, |v| {
        let mut table = Table::new(&["TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "DETAIL"]);
        for e in v.as_array().into_iter().flatten() {
            table.row(vec![
                output::time_of(&e["at"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["object"]),
                format!("{} ({})", text(&e["result"]), int(&e["status"])),
                e["detail"]
                    .as_str()
                    .filter(|d| !d.is_empty())
                    .unwrap_or("-")
                    .to_string(),
            ]);
        }
        table.print();
        Ok(())
    })
}

/// `shoal stats`.
pub(super) async fn stats(args: StatsArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    let from = output::now_ms() - args.days * 86_400_000;
    let reply = client
        .get("/api/v1/stats", &[("from", from.to_string())])
        .await?;
    output::show(&client, &reply, |s| {
        let row = |d: &serde_json::Value, label: String| {
            let peer = int(&d["bytes_peer"]);
            let upstream = int(&d["bytes_upstream"]);
            vec![
                label,
                int(&d["tasks"]).to_string(),
                int(&d["succeeded"]).to_string(),
                int(&d["failed"]).to_string(),
                int(&d["stopped"]).to_string(),
                format!("{:.0}%", d["success_rate"].as_f64().unwrap_or(0.0) * 100.0),
                output::duration(int(&d["duration_p50_ms"])),
                output::duration(int(&d["duration_p90_ms"])),
                output::bytes(peer),
                output::bytes(upstream),
                output::percent(peer, peer + upstream),
            ]
        };
        let mut table = Table::new(&[
            "DAY",
            "TASKS",
            "SUCCEEDED",
            "FAILED",
            "STOPPED",
            "SUCCESS",
            "P50",
            "P90",
            "PEERS",
            "UPSTREAM",
            "FROM PEERS",
        ]);
        for d in s["days"].as_array().into_iter().flatten() {
            table.row(row(d, text(&d["day"])));
        }
        table.row(row(&s["total"], "total".into()));
        println!(
            "tasks that ended, started {} to {}:",
            output::time_of(&s["from"]),
            output::time_of(&s["to"])
        );
        table.print();
        Ok(())
    })
}
