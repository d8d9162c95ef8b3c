//! The manager's command-line client end to end: a manager in process, the real `shoal` binary
//! against it (with its own credentials directory), fake agents playing the nodes.

mod common;
#[path = "cli_manager/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::manager::{ADMIN_PASSWORD, Api, TestManager};
use serde_json::{Value, json};
use support::{Shoal, cluster_with_nodes, id_after, rows, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_nodes_and_tasks() {
    let m = TestManager::sqlite().await;
    let admin = m.admin().await;
    let shoal = Shoal::new(&m.url);
    shoal.login().await;
    let creds = shoal.dir.path().join("credentials.json");
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert_eq!(stored["manager"], m.url.as_str());
    assert!(stored["token"].as_str().unwrap().len() > 20, "{stored}");
    assert!(stored["expires_at"].as_i64().unwrap() > common::manager::now_ms());

    let (cid, a, b) = cluster_with_nodes(&shoal, &m).await;

    // Nodes: a table for people, the API's JSON for scripts.
    let out = shoal.run(&["node", "list"]).await.ok();
    let table = rows(&out);
    assert_eq!(
        table[0],
        [
            "ID",
            "NAME",
            "CLUSTER",
            "ZONE",
            "ROLE",
            "HEALTH",
            "VERSION",
            "PEERS",
            "DISK FREE",
            "LAST SEEN"
        ]
    );
    assert_eq!(table.len(), 3, "{out}");
    let expect = |id: i64, name: &str| {
        vec![
            id.to_string(),
            name.into(),
            cid.to_string(),
            "z1".into(),
            "node".into(),
            "healthy".into(),
            "0.1.0".into(),
            "2".into(),
            "500 B of 1000 B".into(),
        ]
    };
    assert_eq!(table[1][..9], expect(a.id, "node-a")[..], "{out}");
    assert_eq!(table[2][..9], expect(b.id, "node-b")[..], "{out}");
    let listed = shoal
        .run(&[
            "node",
            "list",
            "--cluster",
            "c1",
            "--health",
            "healthy",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let none = shoal
        .run(&["node", "list", "--health", "offline", "--output", "json"])
        .await
        .json();
    assert_eq!(none, json!([]));

    // A task with a rate limit; the API has it in bytes/s.
    let out = shoal
        .run(&[
            "task",
            "create",
            "--image",
            "registry.example/app:1",
            "--cluster",
            "c1",
            "--limit",
            "20MiB/s",
        ])
        .await
        .ok();
    let t1 = id_after(&out, "task ");
    assert_eq!(out, format!("task {t1} created: running\n"));
    let task = admin.get_ok(&format!("/api/v1/tasks/{t1}")).await;
    assert_eq!(task["bandwidth"], 20 * 1024 * 1024);
    assert_eq!(task["clusters"], json!([cid]));

    let out = shoal.run(&["task", "list"]).await.ok();
    let table = rows(&out);
    assert_eq!(
        table[0],
        [
            "ID", "NAME", "KIND", "STATE", "NODES", "PROGRESS", "CREATED"
        ]
    );
    assert_eq!(
        table[1][..6],
        [
            t1.to_string(),
            "registry.example/app:1".into(),
            "image".into(),
            "running".into(),
            "0/2".into(),
            "-".into()
        ]
    );
    let listed = shoal.run(&["task", "list", "--output", "json"]).await;
    // The API's JSON as sent (in the server's field order), not re-encoded.
    assert!(
        listed
            .stdout
            .starts_with(&format!("[{{\"id\":{t1},\"tenant_id\":1,")),
        "{listed:?}"
    );
    assert_eq!(listed.json(), admin.get_ok("/api/v1/tasks").await);
    assert_eq!(listed.json()[0]["id"], t1);
    let shown = shoal.run(&["task", "show", &t1.to_string()]).await.ok();
    assert!(shown.contains("limit:      20.0 MiB/s\n"), "{shown}");
    assert!(shown.contains("state:      running\n"), "{shown}");
    assert!(shown.contains("\nnode-a  queued"), "{shown}");

    // Stop, and stopping again is the API's conflict.
    let out = shoal.run(&["task", "stop", &t1.to_string()]).await.ok();
    assert_eq!(out, format!("task {t1} stopped\n"));
    shoal
        .run(&["task", "stop", &t1.to_string()])
        .await
        .fails(1, &format!("error: task {t1} is already stopped\n"));

    // Copy runs it again.
    let out = shoal.run(&["task", "copy", &t1.to_string()]).await.ok();
    let t2 = id_after(&out, "task ");
    assert_eq!(out, format!("task {t2} created from task {t1}: running\n"));
    assert_eq!(
        admin.get_ok(&format!("/api/v1/tasks/{t2}")).await["copied_from"],
        t1
    );
    let out = shoal.run(&["task", "delete", &t2.to_string()]).await.ok();
    assert_eq!(out, format!("task {t2} deleted\n"));

    // Nodes by name; a time in RFC 3339.
    let out = shoal
        .run(&[
            "task",
            "create",
            "--image",
            "app:2",
            "--node",
            "node-b",
            "--at",
            "2099-01-01T00:00:00Z",
            "--name",
            "later",
        ])
        .await
        .ok();
    let t3 = id_after(&out, "task ");
    assert_eq!(out, format!("task {t3} created: scheduled\n"));
    let task = admin.get_ok(&format!("/api/v1/tasks/{t3}")).await;
    assert_eq!(task["nodes"], json!([b.id]));
    assert_eq!(
        task["schedule"],
        json!({"kind": "at", "at": 4_070_908_800_000_i64})
    );

    // A bad cron expression: the API's message, exit 1.
    let (s, v) = admin
        .post("/api/v1/tasks", json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid], "schedule": {"kind": "cron", "cron": "99 * * * *"}}))
        .await;
    assert_eq!(s, 400);
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("cron"), "{v}");
    shoal
        .run(&[
            "task",
            "create",
            "--image",
            "app:1",
            "--cluster",
            "c1",
            "--cron",
            "99 * * * *",
        ])
        .await
        .fails(1, &format!("error: {message}\n"));
    // Usage errors exit 1 too: a cluster name that names nothing, a missing target, a bad time.
    shoal
        .run(&["task", "create", "--image", "app:1", "--cluster", "nosuch"])
        .await
        .fails(1, "error: no cluster is named \"nosuch\"\n");
    let out = shoal.run(&["task", "create", "--image", "app:1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("--cluster <CLUSTER>|--node <NODE>"),
        "{out:?}"
    );
    let out = shoal
        .run(&[
            "task",
            "create",
            "--image",
            "app:1",
            "--cluster",
            "c1",
            "--at",
            "tomorrow",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("error: invalid --at \"tomorrow\""),
        "{out:?}"
    );

    // Cluster views and removal of a node.
    let out = shoal.run(&["cluster", "list"]).await.ok();
    assert_eq!(
        rows(&out)[1],
        [
            cid.to_string(),
            "c1".into(),
            "static".into(),
            "z1".into(),
            "2".into(),
            "2 healthy".into()
        ]
    );
    let out = shoal.run(&["node", "remove", "node-b"]).await.ok();
    assert_eq!(out, format!("node {} removed\n", b.id));
    assert_eq!(
        admin
            .get_ok("/api/v1/nodes")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_task_to_its_end() {
    let m = TestManager::sqlite().await;
    let shoal = Shoal::new(&m.url);
    shoal.login().await;
    let (_, a, b) = cluster_with_nodes(&shoal, &m).await;

    let out = shoal
        .run(&["task", "create", "--image", "app:1", "--node", "node-a"])
        .await
        .ok();
    let t = id_after(&out, "task ");
    a.report(t, "running", 500, 300, 200).await;
    let (code, seen) = watch(&shoal, t, "node-a 50%", async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        a.report(t, "succeeded", 1000, 600, 400).await;
    })
    .await;
    assert_eq!(code, 0, "{seen}");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "task {t} (image docker.io/library/app:1): running, nodes 0/1 done, 500 B of 1000 B, from peers 300 B, from upstream 200 B"
        )
    );
    assert!(
        lines.contains(&"  node-a 50% 500 B of 1000 B (running, peers 300 B, upstream 200 B)"),
        "{seen}"
    );
    assert!(
        lines.contains(&"  node-a 100% 1000 B of 1000 B (succeeded, peers 600 B, upstream 400 B)"),
        "{seen}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  | ") && l.ends_with(" node-a info: running on node")),
        "{seen}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" node-a info: succeeded on node")),
        "{seen}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("task {t} succeeded")),
        "{seen}"
    );
    // Each log line once.
    assert_eq!(seen.matches("running on node").count(), 1, "{seen}");

    // A task that fails: exit 1, and the last line says why.
    let out = shoal
        .run(&[
            "task",
            "create",
            "--image",
            "app:2",
            "--node",
            &b.id.to_string(),
        ])
        .await
        .ok();
    let t = id_after(&out, "task ");
    let (code, seen) = watch(&shoal, t, "nodes 0/1 done", async {
        b.report(t, "failed", 10, 0, 10).await;
    })
    .await;
    assert_eq!(code, 1, "{seen}");
    let last = seen.lines().last().unwrap();
    assert!(last.starts_with(&format!("task {t} failed")), "{seen}");
    assert!(
        last.ends_with(": 0 of 1 nodes succeeded (1 failed, 0 stopped)"),
        "{seen}"
    );

    // With --output json, only the final task, as the API has it.
    let out = shoal
        .run(&["task", "watch", &t.to_string(), "-o", "json"])
        .await;
    assert_eq!((out.code, out.stderr.as_str()), (1, ""), "{out:?}");
    let task: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (task["id"].as_i64(), task["state"].as_str()),
        (Some(t), Some("failed"))
    );
    let logs = shoal.run(&["task", "logs", &t.to_string()]).await.ok();
    assert!(
        logs.lines()
            .any(|l| l.ends_with(" node-b info: failed on node")),
        "{logs}"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_files_tokens_and_reports() {
    let m = TestManager::sqlite().await;
    let admin = m.admin().await;
    let shoal = Shoal::new(&m.url);
    shoal.login().await;
    let (cid, _a, _b) = cluster_with_nodes(&shoal, &m).await;

    // A user with a role on one cluster.
    let out = shoal
        .run_with(
            &["user", "create", "alice", "--password-stdin"],
            Some("alice-password-1\n"),
            &[],
        )
        .await
        .ok();
    let alice = id_after(&out, "user ");
    assert_eq!(out, format!("user {alice} (alice) created\n"));
    let out = shoal
        .run(&["user", "bind", "alice", "task-admin", "--cluster", "c1"])
        .await
        .ok();
    let binding = id_after(&out, "binding ");
    assert_eq!(
        out,
        format!("binding {binding}: role task-admin for user {alice} on clusters {cid}\n")
    );
    let out = shoal.run(&["user", "list"]).await.ok();
    let table = rows(&out);
    assert_eq!(table[0], ["ID", "NAME", "TENANT", "STATE", "ROLES"]);
    assert!(
        table.contains(&vec![
            alice.to_string(),
            "alice".into(),
            "1".into(),
            "enabled".into(),
            format!("task-admin (clusters {cid})")
        ]),
        "{out}"
    );
    Api::login(&m.url, "alice", "alice-password-1").await;
    let out = shoal.run(&["user", "disable", "alice"]).await.ok();
    assert_eq!(out, format!("user {alice} (alice) disabled\n"));
    assert_eq!(
        admin.get_ok(&format!("/api/v1/users/{alice}")).await["disabled"],
        true
    );
    let out = shoal
        .run(&["user", "unbind", &binding.to_string()])
        .await
        .ok();
    assert_eq!(out, format!("binding {binding} removed\n"));

    // A published file version, distributed by id.
    let digest = format!("sha256:{}", "a".repeat(64));
    let out = shoal
        .run(&[
            "file",
            "publish",
            "tool",
            "1.4",
            "http://files.example/tool-1.4.tar",
            "--digest",
            &digest,
            "--size",
            "2048",
            "--meta",
            "team=infra",
        ])
        .await
        .ok();
    let fv = id_after(&out, "file version ");
    assert_eq!(out, format!("file version {fv} (tool 1.4) published\n"));
    let version = admin.get_ok(&format!("/api/v1/files/{fv}")).await;
    assert_eq!(
        (version["size"].as_i64(), &version["metadata"]),
        (Some(2048), &json!({"team": "infra"}))
    );
    let out = shoal
        .run(&[
            "task",
            "create",
            "--file-version",
            &fv.to_string(),
            "--cluster",
            &cid.to_string(),
        ])
        .await
        .ok();
    let t = id_after(&out, "task ");
    assert_eq!(out, format!("task {t} created: running\n"));
    let task = admin.get_ok(&format!("/api/v1/tasks/{t}")).await;
    assert_eq!(
        task["source"],
        json!({"kind": "file", "url": "http://files.example/tool-1.4.tar", "digest": digest, "version_id": fv})
    );
    let out = shoal.run(&["file", "list"]).await.ok();
    assert_eq!(
        rows(&out)[1][..5],
        [
            fv.to_string(),
            "tool".into(),
            "1.4".into(),
            "2.0 KiB".into(),
            digest.clone()
        ]
    );

    // Tenants and budgets.
    let out = shoal
        .run(&[
            "tenant", "create", "team-b", "--budget", "100MiB/s", "--policy", "refuse",
        ])
        .await
        .ok();
    let tenant = id_after(&out, "tenant ");
    assert_eq!(
        out,
        format!("tenant {tenant} (team-b) created: budget 100.0 MiB/s, policy refuse\n")
    );
    let out = shoal
        .run(&["tenant", "set-budget", "team-b", "none"])
        .await
        .ok();
    assert_eq!(
        out,
        format!("tenant {tenant} (team-b): budget none, policy refuse\n")
    );

    // A personal access token works until it is revoked; then the sign-in hint, exit 1.
    let out = shoal
        .run(&["token", "create", "ci", "--days", "7"])
        .await
        .ok();
    let lines: Vec<&str> = out.lines().collect();
    let token_id = id_after(lines[0], "token ");
    assert!(
        lines[0].starts_with(&format!("token {token_id} (ci) created, expires ")),
        "{out}"
    );
    let pat = lines[1].to_string();
    let other = Shoal::new(&m.url);
    let env = [
        ("SHOAL_TOKEN", pat.as_str()),
        ("SHOAL_MANAGER_URL", m.url.as_str()),
    ];
    let listed = other
        .run_with(&["task", "list", "-o", "json"], None, &env)
        .await
        .json();
    assert_eq!(listed[0]["id"], t);
    let out = shoal.run(&["token", "list"]).await.ok();
    assert_eq!(
        rows(&out)[1][..3],
        [token_id.to_string(), "ci".into(), "all".into()]
    );
    assert_eq!(rows(&out)[1].last().unwrap(), "active");
    let out = shoal
        .run(&["token", "revoke", &token_id.to_string()])
        .await
        .ok();
    assert_eq!(out, format!("token {token_id} revoked\n"));
    other.run_with(&["task", "list"], None, &env).await.fails(
        1,
        "error: not signed in or session expired: run shoal login\n",
    );

    // The audit log and the statistics.
    let out = shoal
        .run(&[
            "audit", "--actor", "admin", "--action", "tasks", "--limit", "1",
        ])
        .await
        .ok();
    let table = rows(&out);
    assert_eq!(
        table[0],
        ["TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "DETAIL"]
    );
    assert_eq!(table.len(), 2, "{out}");
    assert_eq!(
        table[1][1..],
        [
            "admin".to_string(),
            "POST /api/v1/tasks".into(),
            "/api/v1/tasks".into(),
            "ok (201)".into(),
            format!("task {t}")
        ]
    );
    let out = shoal.run(&["stats", "--days", "7"]).await.ok();
    assert!(out.starts_with("tasks that ended, started "), "{out}");
    let table = rows(&out);
    assert_eq!(table[1][0], "DAY", "{out}");
    assert_eq!(
        table.last().unwrap()[..6],
        ["total", "0", "0", "0", "0", "0%"],
        "{out}"
    );
    let stats = shoal.run(&["stats", "-o", "json"]).await.json();
    assert!(stats["days"].is_array(), "{stats}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_failures_and_an_unreachable_manager() {
    let m = TestManager::sqlite().await;
    let shoal = Shoal::new(&m.url);

    // Not signed in at all.
    shoal
        .run(&["task", "list", "--manager", &m.url])
        .await
        .fails(
            1,
            "error: not signed in or session expired: run shoal login\n",
        );
    // A wrong password: the API's message, nothing stored.
    shoal
        .run_with(
            &[
                "login",
                "--manager",
                &m.url,
                "--user",
                "admin",
                "--password-stdin",
            ],
            Some("wrong-password\n"),
            &[],
        )
        .await
        .fails(1, "error: wrong user name or password\n");
    assert!(!shoal.dir.path().join("credentials.json").exists());
    // SHOAL_PASSWORD works as well as stdin.
    let out = shoal
        .run_with(
            &["login", "--manager", &m.url, "--user", "admin"],
            None,
            &[("SHOAL_PASSWORD", ADMIN_PASSWORD)],
        )
        .await
        .ok();
    assert!(out.starts_with("signed in to "), "{out}");
    shoal.run(&["task", "list"]).await.ok();

    // The session expires by the manager's clock.
    m.clock.advance(13 * 3600 * 1000);
    shoal.run(&["cluster", "list"]).await.fails(
        1,
        "error: not signed in or session expired: run shoal login\n",
    );

    // Sign out forgets the session (and revokes it while it is valid).
    shoal.login().await;
    let token = {
        let creds: Value = serde_json::from_str(
            &std::fs::read_to_string(shoal.dir.path().join("credentials.json")).unwrap(),
        )
        .unwrap();
        creds["token"].as_str().unwrap().to_string()
    };
    let out = shoal.run(&["logout"]).await.ok();
    assert_eq!(out, format!("signed out of {}\n", m.url));
    assert!(!shoal.dir.path().join("credentials.json").exists());
    assert_eq!(
        Api::new(&m.url, Some(token)).get("/api/v1/auth/me").await.0,
        401,
        "logout did not revoke"
    );
    assert_eq!(shoal.run(&["logout"]).await.ok(), "not signed in\n");

    // A stopped manager: exit 2.
    shoal.login().await;
    let url = m.url.clone();
    m.shutdown().await;
    let out = shoal.run(&["task", "list"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out:?}");
    let want = format!("error: cannot reach the manager at {url}: ");
    assert!(
        out.stderr.starts_with(&want) && out.stderr.contains("Connection refused"),
        "{out:?}"
    );
}
