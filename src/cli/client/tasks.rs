//! `shoal task`: create distribution tasks, list and inspect them, stop, delete and copy them,
//! read their logs, and watch one run (in [`super::watch`]).

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::ClientOpts;
use super::http::{Client, ClientError};
use super::output::{self, Table, int, text};
use crate::fetch::limit::ByteRate;

/// `shoal task …`.
#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state: scheduled, waiting, running, succeeded, failed, stopped.
        #[arg(long)]
        state: Option<String>,
        /// Only image or file tasks.
        #[arg(long, value_parser = ["image", "file"])]
        kind: Option<String>,
        /// Only tasks reaching this cluster (id or name).
        #[arg(long, value_name = "CLUSTER")]
        cluster: Option<String>,
    },
    /// Create a task: an image or a file to clusters and/or nodes, now, at a time or on a cron
    /// schedule.
    Create(Box<CreateArgs>),
    /// Show a task and its nodes' progress.
    Show {
        /// The task's id.
        id: i64,
    },
    /// Stop a task (nodes abort its transfers; a cron task fires no more).
    Stop {
        /// The task's id.
        id: i64,
    },
    /// Delete a task with its per-node records and logs.
    Delete {
        /// The task's id.
        id: i64,
    },
    /// Run a task again: a new task with the same source, targets, schedule and limit.
    Copy {
        /// The task's id.
        id: i64,
    },
    /// Print a task's log lines.
    Logs {
        /// The task's id.
        id: i64,
        /// Keep printing new lines until the task ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Follow a task live until it ends; exit 0 if it succeeded, 1 otherwise.
    Watch {
        /// The task's id.
        id: i64,
    },
}

/// Flags of `shoal task create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["image", "file", "file_version"])))]
#[command(group(ArgGroup::new("targets").required(true).multiple(true).args(["cluster", "node"])))]
struct CreateArgs {
    /// An image to distribute, e.g. registry.example.com/team/app:1.2.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// A platform of the image (repeatable) [default: all].
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        requires = "image",
        value_delimiter = ','
    )]
    platform: Vec<String>,
    /// A file to distribute: its http(s) URL.
    #[arg(long, value_name = "URL")]
    file: Option<String>,
    /// The file's digest (sha256:…), which every node verifies.
    #[arg(long, requires = "file")]
    digest: Option<String>,
    /// A published file version to distribute (see shoal file list).
    #[arg(long, value_name = "ID")]
    file_version: Option<i64>,
    /// A target cluster: every member node (id or name; repeatable).
    #[arg(long, value_name = "CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// A target node (id or name; repeatable).
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    node: Vec<String>,
    /// Run at this time, e.g. 2026-05-01T03:00:00Z [default: now].
    #[arg(long, value_name = "RFC3339", conflicts_with = "cron")]
    at: Option<String>,
    /// Run on this cron schedule, in UTC, e.g. "0 3 * * *".
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Bandwidth limit each node applies to the task's transfers, e.g. 20MiB/s.
    #[arg(long, value_name = "RATE")]
    limit: Option<ByteRate>,
    /// A name [default: from the source].
    #[arg(long)]
    name: Option<String>,
}

/// The API's `TaskInput` for these flags.
async fn input_of(client: &Client, a: &CreateArgs) -> Result<Value, ClientError> {
    let source = if let Some(image) = &a.image {
        json!({"kind": "image", "image": image, "platforms": a.platform})
    } else if let Some(url) = &a.file {
        json!({"kind": "file", "url": url, "digest": a.digest})
    } else {
        json!({"kind": "file", "version_id": a.file_version})
    };
    let schedule = if let Some(at) = &a.at {
        let t = chrono::DateTime::parse_from_rfc3339(at.trim()).map_err(|e| {
            ClientError::Usage(format!(
                "invalid --at {at:?} ({e}): write e.g. 2026-05-01T03:00:00Z"
            ))
        })?;
        json!({"kind": "at", "at": t.timestamp_millis()})
    } else if let Some(cron) = &a.cron {
        json!({"kind": "cron", "cron": cron})
    } else {
        json!({"kind": "now"})
    };
    let mut clusters = Vec::new();
    for c in &a.cluster {
        clusters.push(client.resolve("/api/v1/clusters", "cluster", c).await?);
    }
    let mut nodes = Vec::new();
    for n in &a.node {
        nodes.push(client.resolve("/api/v1/nodes", "node", n).await?);
    }
    Ok(
        json!({"name": a.name, "source": source, "clusters": clusters, "nodes": nodes,
              "schedule": schedule, "bandwidth": a.limit.map(|l| l.bytes_per_sec())}),
    )
}

/// What a task distributes, in a few words.
pub(super) fn source_text(source: &Value) -> String {
    match source["kind"].as_str() {
        Some("image") => {
            let platforms = text(&source["platforms"]);
            if platforms == "-" {
                format!("image {}", text(&source["image"]))
            } else {
                format!("image {} ({platforms})", text(&source["image"]))
            }
        }
        _ => {
            let mut s = format!("file {}", text(&source["url"]));
            if let Some(v) = source["version_id"].as_i64() {
                s.push_str(&format!(" (version {v})"));
            }
            s
        }
    }
}

fn schedule_text(t: &Value) -> String {
    let s = &t["schedule"];
    match s["kind"].as_str() {
        Some("at") => format!("at {}", output::time_of(&s["at"])),
        Some("cron") => format!(
            "cron {:?} (next {})",
            text(&s["cron"]),
            output::time_of(&t["next_run_at"])
        ),
        _ => "now".into(),
    }
}

/// A task's state, with the reason when it failed or stopped: `failed (no registered node …)`.
fn state_text(t: &Value) -> String {
    match (t["state"].as_str(), t["error"].as_str()) {
        (Some(s @ ("failed" | "stopped")), Some(e)) => format!("{s} ({e})"),
        _ => text(&t["state"]),
    }
}

/// Nodes that ended of all nodes: `2/3`.
pub(super) fn nodes_done(progress: &Value) -> String {
    let n = &progress["nodes"];
    let done = int(&n["succeeded"]) + int(&n["failed"]) + int(&n["stopped"]);
    format!("{done}/{}", int(&progress["nodes_total"]))
}

/// `shoal task …`.
pub(super) async fn task(args: TaskArgs) -> Result<i32, ClientError> {
    let client = Client::from_opts(&args.opts, None)?;
    match args.command {
        TaskCommand::List {
            state,
            kind,
            cluster,
        } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(("state", s));
            }
            if let Some(k) = kind {
                query.push(("kind", k));
            }
            if let Some(c) = cluster {
                let id = client.resolve("/api/v1/clusters", "cluster", &c).await?;
                query.push(("cluster_id", id.to_string()));
            }
            let reply = client.get("/api/v1/tasks", &query).await?;
            output::show(&client, &reply, |v| {
                let mut table = Table::new(&[
                    "ID", "NAME", "KIND", "STATE", "NODES", "PROGRESS", "CREATED",
                ]);
                for t in v.as_array().into_iter().flatten() {
                    let p = &t["progress"];
                    table.row(vec![
                        int(&t["id"]).to_string(),
                        text(&t["name"]),
                        text(&t["source"]["kind"]),
                        text(&t["state"]),
                        nodes_done(p),
                        output::percent(int(&p["bytes_done"]), int(&p["bytes_total"])),
                        output::time_of(&t["created_at"]),
                    ]);
                }
                table.print();
                Ok(())
            })
        }
        TaskCommand::Create(a) => {
            let body = input_of(&client, &a).await?;
            let reply = client.post("/api/v1/tasks", &body).await?;
            output::show(&client, &reply, |t| {
                println!("task {} created: {}", int(&t["id"]), state_text(t));
                Ok(())
            })
        }
        TaskCommand::Show { id } => show(&client, id).await,
        TaskCommand::Stop { id } => {
            let reply = client
                .post(&format!("/api/v1/tasks/{id}/stop"), &json!({}))
                .await?;
            output::show(&client, &reply, |t| {
                println!("task {id} {}", text(&t["state"]));
                Ok(())
            })
        }
        TaskCommand::Delete { id } => {
            let reply = client.delete(&format!("/api/v1/tasks/{id}")).await?;
            output::show(&client, &reply, |_| {
                println!("task {id} deleted");
                Ok(())
            })
        }
        TaskCommand::Copy { id } => {
            let reply = client
                .post(&format!("/api/v1/tasks/{id}/copy"), &json!({}))
                .await?;
            output::show(&client, &reply, |t| {
                println!(
                    "task {} created from task {id}: {}",
                    int(&t["id"]),
                    state_text(t)
                );
                Ok(())
            })
        }
        TaskCommand::Logs { id, follow } => logs(&client, id, follow).await,
        TaskCommand::Watch { id } => super::watch::watch(&client, id).await,
    }
}

async fn show(client: &Client, id: i64) -> Result<i32, ClientError> {
    let reply = client.get(&format!("/api/v1/tasks/{id}"), &[]).await?;
    if client.json() {
        output::print_json(&reply);
        return Ok(0);
    }
    let t = reply.value()?;
    let nodes = client
        .get_value(&format!("/api/v1/tasks/{id}/nodes"), &[])
        .await?;
    let p = &t["progress"];
    let mut fields = vec![
        ("id", int(&t["id"]).to_string()),
        ("name", text(&t["name"])),
        ("source", source_text(&t["source"])),
        ("clusters", text(&t["clusters"])),
        ("nodes", text(&t["nodes"])),
        ("schedule", schedule_text(&t)),
        (
            "limit",
            t["bandwidth"]
                .as_i64()
                .map(output::rate)
                .unwrap_or_else(|| "none".into()),
        ),
        ("state", text(&t["state"])),
        ("error", text(&t["error"])),
        (
            "created",
            format!(
                "{} by {}",
                output::time_of(&t["created_at"]),
                text(&t["created_by"])
            ),
        ),
        ("started", output::time_of(&t["started_at"])),
        ("finished", output::time_of(&t["finished_at"])),
        (
            "duration",
            t["duration_ms"]
                .as_i64()
                .map(output::duration)
                .unwrap_or_else(|| "-".into()),
        ),
        ("nodes done", nodes_done(p)),
        (
            "bytes",
            format!(
                "{} of {} (peers {}, upstream {})",
                output::bytes(int(&p["bytes_done"])),
                output::bytes(int(&p["bytes_total"])),
                output::bytes(int(&p["bytes_peer"])),
                output::bytes(int(&p["bytes_upstream"]))
            ),
        ),
    ];
    if let Some(parent) = t["parent_id"].as_i64() {
        fields.push(("run of", format!("task {parent}")));
    }
    if let Some(from) = t["copied_from"].as_i64() {
        fields.push(("copied from", format!("task {from}")));
    }
    output::print_fields(&fields);
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    if !nodes.is_empty() {
        println!();
        let mut table = Table::new(&["NODE", "STATE", "PROGRESS", "PEERS", "UPSTREAM", "ERROR"]);
        for n in &nodes {
            table.row(vec![
                text(&n["node_name"]),
                text(&n["state"]),
                output::percent(int(&n["bytes_done"]), int(&n["bytes_total"])),
                output::bytes(int(&n["bytes_peer"])),
                output::bytes(int(&n["bytes_upstream"])),
                text(&n["error"]),
            ]);
        }
        table.print();
    }
    Ok(0)
}

/// Whether a task state is final.
pub(super) fn ended(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "stopped")
}

/// A log line: `2026-05-01 03:00:00Z node-a info: message` (`manager` for the manager's own).
pub(super) fn log_line(l: &Value) -> String {
    format!(
        "{} {} {}: {}",
        output::time_of(&l["at"]),
        l["node_name"].as_str().unwrap_or("manager"),
        text(&l["level"]),
        text(&l["message"])
    )
}

/// Most log lines one call returns (the API's cap).
const LOG_PAGE: usize = 5000;

/// The log lines after `after`, the body as sent, and the last id seen.
pub(super) async fn new_logs(
    client: &Client,
    id: i64,
    after: Option<i64>,
) -> Result<(Vec<Value>, String, Option<i64>), ClientError> {
    let mut query = vec![("limit", LOG_PAGE.to_string())];
    if let Some(a) = after {
        query.push(("after", a.to_string()));
    }
    let reply = client
        .get(&format!("/api/v1/tasks/{id}/logs"), &query)
        .await?;
    let lines = reply.value()?.as_array().cloned().unwrap_or_default();
    let last = lines.last().and_then(|l| l["id"].as_i64()).or(after);
    Ok((lines, reply.text, last))
}

async fn logs(client: &Client, id: i64, follow: bool) -> Result<i32, ClientError> {
    let mut after = None;
    loop {
        // Read the state first: lines written before a task ended are all there once it has.
        let done = !follow
            || ended(
                text(
                    &client
                        .get_value(&format!("/api/v1/tasks/{id}"), &[])
                        .await?["state"],
                )
                .as_str(),
            );
        let (lines, raw, last) = new_logs(client, id, after).await?;
        after = last;
        let full = lines.len() >= LOG_PAGE;
        if client.json() {
            if !lines.is_empty() || !follow {
                println!("{}", raw.trim_end());
            }
        } else {
            for l in &lines {
                println!("{}", log_line(l));
            }
        }
        if full {
            continue;
        }
        if done {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
