//! The harness of `tests/cli_manager.rs`: the `shoal` binary run with a credentials directory
//! of its own, its output, and a cluster of fake nodes to aim tasks at.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::common::manager::{ADMIN_PASSWORD, Api, FakeAgent, TestManager};

/// One run of the binary.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        self.stdout
    }

    /// Asserts a failure with exactly this status and stderr, and no stdout.
    pub fn fails(&self, code: i32, stderr: &str) {
        assert_eq!(
            (self.code, self.stderr.as_str(), self.stdout.as_str()),
            (code, stderr, ""),
            "{self:?}"
        );
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// The `shoal` binary with a credentials directory of its own.
pub struct Shoal {
    pub dir: tempfile::TempDir,
    pub manager: String,
}

impl Shoal {
    pub fn new(manager: &str) -> Shoal {
        Shoal {
            dir: tempfile::tempdir().unwrap(),
            manager: manager.to_string(),
        }
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(args)
            .env("SHOAL_CONFIG_DIR", self.dir.path())
            .env("HOME", self.dir.path())
            .env("SHOAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in [
            "SHOAL_TOKEN",
            "SHOAL_MANAGER_URL",
            "SHOAL_MANAGER",
            "SHOAL_OUTPUT",
            "SHOAL_PASSWORD",
            "SHOAL_USER",
            "XDG_CONFIG_HOME",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub async fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = self.command(args, env);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("shoal {args:?} did not end"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None, &[]).await
    }

    pub async fn login(&self) {
        let out = self
            .run_with(
                &[
                    "login",
                    "--manager",
                    &self.manager,
                    "--user",
                    "admin",
                    "--password-stdin",
                ],
                Some(&format!("{ADMIN_PASSWORD}\n")),
                &[],
            )
            .await
            .ok();
        let want = format!("signed in to {} as admin (session ends ", self.manager);
        assert!(out.starts_with(&want), "{out}");
    }
}

/// The number in `text` after `prefix`, e.g. the id in "task 7 created".
pub fn id_after(text: &str, prefix: &str) -> i64 {
    let rest = &text[text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text:?}"))
        + prefix.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The rows of a table, split into cells on runs of spaces (cells here have no double spaces).
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// A static cluster `c1` of node-a and node-b with both registered; returns its id and agents.
pub async fn cluster_with_nodes(shoal: &Shoal, m: &TestManager) -> (i64, FakeAgent, FakeAgent) {
    let out = shoal
        .run(&[
            "cluster",
            "create",
            "c1",
            "--static",
            "node-a,node-b",
            "--zone",
            "z1",
        ])
        .await
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    let cid = id_after(lines[0], "cluster ");
    assert_eq!(
        lines[0],
        format!("cluster {cid} (c1) created; its join token (shown this once):")
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("shj_"), "{out}");
    // Rotation prints only the new token; the old one stops working.
    let rotated = shoal.run(&["cluster", "token", "c1"]).await.ok();
    let token = rotated.trim_end();
    assert!(token.starts_with("shj_") && token != lines[1], "{rotated}");
    assert_eq!(rotated, format!("{token}\n"));
    let (s, _) = Api::new(&m.url, Some(lines[1].to_string()))
        .post(
            "/api/v1/agent/register",
            json!({"name": "node-a", "peer_id": "p", "address": "x:1", "version": "0", "role": "node", "zone": "z1"}),
        )
        .await;
    assert_eq!(s, 401, "the rotated-out join token still works");
    let a = FakeAgent::register(&m.url, token, "node-a").await;
    let b = FakeAgent::register(&m.url, token, "node-b").await;
    a.heartbeat().await;
    b.heartbeat().await;
    (cid, a, b)
}

/// Runs `shoal task watch ID` while `act` plays the nodes; returns the exit status and output.
pub async fn watch(
    shoal: &Shoal,
    id: i64,
    first: &str,
    act: impl std::future::Future<Output = ()>,
) -> (i32, String) {
    let mut child = shoal
        .command(&["task", "watch", &id.to_string()], &[])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // Wait until the watch has shown `first`, then let the nodes go on.
    tokio::time::timeout(Duration::from_secs(20), async {
        while !seen.contains(first) {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).await.unwrap() > 0,
                "the watch ended early: {seen}"
            );
            seen.push_str(&line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch never showed {first:?}: {seen}"));
    act.await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the watch did not end")
        .unwrap();
    stdout.read_to_string(&mut seen).await.unwrap();
    (status.code().unwrap(), seen)
}
