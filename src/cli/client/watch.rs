//! `shoal task watch ID`: follows a task every second until it ends. On a terminal, a live view
//! (the overall state and bytes from peers vs the upstream on top, a progress bar per node,
//! new log lines above); elsewhere, plain lines whenever something changed. With
//! `--output json`, only the final task, as the API sends it. Exit 0 if the task succeeded, 1
//! otherwise.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::http::{Client, ClientError};
use super::output::{self, int, text};
use super::tasks::{ended, log_line, new_logs, nodes_done, source_text};

/// Consecutive failed polls (manager unreachable or failing) tolerated before giving up.
const MAX_FAILURES: u32 = 10;

/// One look at the task.
struct Snapshot {
    task: Value,
    raw: String,
    nodes: Vec<Value>,
    logs: Vec<Value>,
}

async fn poll(
    client: &Client,
    id: i64,
    after: Option<i64>,
) -> Result<(Snapshot, Option<i64>), ClientError> {
    // The task first: once it has ended, the nodes and log lines read after it are final too.
    let reply = client.get(&format!("/api/v1/tasks/{id}"), &[]).await?;
    let task = reply.value()?;
    let nodes = client
        .get_value(&format!("/api/v1/tasks/{id}/nodes"), &[])
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (logs, _, last) = new_logs(client, id, after).await?;
    Ok((
        Snapshot {
            task,
            raw: reply.text,
            nodes,
            logs,
        },
        last,
    ))
}

/// The overall line: state, nodes done, bytes, and where they came from.
fn summary(task: &Value) -> String {
    let p = &task["progress"];
    format!(
        "task {} ({}): {}, nodes {} done, {} of {}, from peers {}, from upstream {}",
        int(&task["id"]),
        source_text(&task["source"]),
        text(&task["state"]),
        nodes_done(p),
        output::bytes(int(&p["bytes_done"])),
        output::bytes(int(&p["bytes_total"])),
        output::bytes(int(&p["bytes_peer"])),
        output::bytes(int(&p["bytes_upstream"]))
    )
}

/// A node's state and sources: `running, peers 300 B, upstream 200 B`.
fn node_detail(n: &Value) -> String {
    let mut s = format!(
        "{}, peers {}, upstream {}",
        text(&n["state"]),
        output::bytes(int(&n["bytes_peer"])),
        output::bytes(int(&n["bytes_upstream"]))
    );
    if let Some(e) = n["error"].as_str() {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// The last line: how the task ended.
fn outcome(task: &Value) -> String {
    let id = int(&task["id"]);
    let state = text(&task["state"]);
    let took = task["duration_ms"]
        .as_i64()
        .map(|d| format!(" in {}", output::duration(d)))
        .unwrap_or_default();
    match task["error"].as_str() {
        Some(e) if state != "succeeded" => format!("task {id} {state}{took}: {e}"),
        _ => format!("task {id} {state}{took}"),
    }
}

/// How the watch shows what it sees.
trait View {
    fn update(&mut self, snap: &Snapshot);
    fn note(&mut self, line: &str);
    fn finish(&mut self, snap: &Snapshot);
}

/// Plain lines, for pipes and logs: each change once.
#[derive(Default)]
struct Plain {
    summary: String,
    nodes: HashMap<i64, String>,
}

impl View for Plain {
    fn update(&mut self, snap: &Snapshot) {
        let summary = summary(&snap.task);
        if summary != self.summary {
            println!("{summary}");
            self.summary = summary;
        }
        for n in &snap.nodes {
            let line = format!(
                "  {} {} {} of {} ({})",
                text(&n["node_name"]),
                output::percent(int(&n["bytes_done"]), int(&n["bytes_total"])),
                output::bytes(int(&n["bytes_done"])),
                output::bytes(int(&n["bytes_total"])),
                node_detail(n)
            );
            if self.nodes.get(&int(&n["node_id"])) != Some(&line) {
                println!("{line}");
                self.nodes.insert(int(&n["node_id"]), line);
            }
        }
        for l in &snap.logs {
            println!("  | {}", log_line(l));
        }
    }

    fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }

    fn finish(&mut self, snap: &Snapshot) {
        println!("{}", outcome(&snap.task));
    }
}

/// The live view on a terminal.
struct Live {
    multi: MultiProgress,
    header: ProgressBar,
    bars: BTreeMap<i64, ProgressBar>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner:.green} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.enable_steady_tick(Duration::from_millis(120));
        let style = ProgressStyle::with_template(
            "  {prefix:20!} [{bar:30.cyan/blue}] {percent:>3}% {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Live {
            multi,
            header,
            bars: BTreeMap::new(),
            style,
        }
    }
}

fn coloured(state: &str, line: String) -> String {
    match state {
        "succeeded" => console::style(line).green().to_string(),
        "failed" | "stopped" => console::style(line).red().to_string(),
        _ => line,
    }
}

impl View for Live {
    fn update(&mut self, snap: &Snapshot) {
        for l in &snap.logs {
            let _ = self.multi.println(log_line(l));
        }
        self.header.set_message(summary(&snap.task));
        for n in &snap.nodes {
            let bar = self.bars.entry(int(&n["node_id"])).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                bar.set_style(self.style.clone());
                bar.set_prefix(text(&n["node_name"]));
                bar
            });
            bar.set_length(int(&n["bytes_total"]).max(0) as u64);
            bar.set_position(int(&n["bytes_done"]).max(0) as u64);
            bar.set_message(coloured(n["state"].as_str().unwrap_or(""), node_detail(n)));
        }
    }

    fn note(&mut self, line: &str) {
        let _ = self.multi.println(line);
    }

    fn finish(&mut self, snap: &Snapshot) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        let state = snap.task["state"].as_str().unwrap_or("");
        self.header
            .abandon_with_message(coloured(state, summary(&snap.task)));
        println!("{}", coloured(state, outcome(&snap.task)));
    }
}

/// `shoal task watch ID`.
pub(super) async fn watch(client: &Client, id: i64) -> Result<i32, ClientError> {
    let mut view: Option<Box<dyn View>> = if client.json() {
        None
    } else if std::io::stdout().is_terminal() {
        Some(Box::new(Live::new()))
    } else {
        Some(Box::new(Plain::default()))
    };
    let mut after = None;
    let mut failures = 0;
    loop {
        match poll(client, id, after).await {
            Ok((snap, last)) => {
                failures = 0;
                after = last;
                if let Some(v) = view.as_mut() {
                    v.update(&snap);
                }
                let state = text(&snap.task["state"]);
                if ended(&state) {
                    match view.as_mut() {
                        Some(v) => v.finish(&snap),
                        None => println!("{}", snap.raw.trim_end()),
                    }
                    return Ok(if state == "succeeded" { 0 } else { 1 });
                }
            }
            // A manager restart or a network blip should not end a long watch.
            Err(e) if e.exit_code() == super::http::EXIT_UNAVAILABLE && failures < MAX_FAILURES => {
                failures += 1;
                if let Some(v) = view.as_mut() {
                    v.note(&format!("{e} (retrying)"));
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn outcome_lines() {
        let t = json!({"id": 5, "state": "failed", "duration_ms": 3000, "error": "1 of 2 nodes succeeded"});
        assert_eq!(
            super::outcome(&t),
            "task 5 failed in 3s: 1 of 2 nodes succeeded"
        );
        let t = json!({"id": 5, "state": "succeeded", "duration_ms": 999, "error": "succeeded on 2 nodes"});
        assert_eq!(super::outcome(&t), "task 5 succeeded in 999ms");
    }
}
