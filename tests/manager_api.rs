//! The manager's API end to end over HTTP, with fake agents speaking the node protocol: the
//! same suite on SQLite and on a real PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::manager::{Api, FakeAgent, TestManager, now_ms};
use serde_json::{Value, json};
use shoal::manager::ManualClock;

async fn task_state(api: &Api, id: i64) -> Value {
    api.get_ok(&format!("/api/v1/tasks/{id}")).await
}

/// Waits until the task reaches `state` (the scheduler ticks every 200 ms in tests).
async fn wait_state(api: &Api, id: i64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = task_state(api, id).await;
        if t["state"] == state {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {state}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn suite(m: &TestManager) {
    let anon = m.anonymous();
    let (s, v) = anon.get("/api/v1/users").await;
    assert_eq!(s, 401);
    assert_eq!(v["code"], "UNAUTHORIZED");
    let (s, v) = anon
        .post(
            "/api/v1/auth/login",
            json!({"name": "admin", "password": "wrong-password"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let admin = m.admin().await;
    let me = admin.get_ok("/api/v1/auth/me").await;
    assert_eq!(me["super_admin"], true);

    // The OpenAPI document describes the routes the server has.
    let doc = anon.get_ok("/api/v1/openapi.json").await;
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/{id}/stop",
        "/api/v1/clusters",
        "/api/v1/agent/work",
        "/api/v1/stats",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }

    // A static cluster of three hosts; the join token is shown once.
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "c1", "zone": "z1", "spec": {"kind": "static", "hosts": ["node-a", "node-b", "node-c"]}}),
            201,
        )
        .await;
    let cid = cluster["id"].as_i64().unwrap();
    let join = cluster["join_token"].as_str().unwrap().to_string();
    assert!(admin.get_ok(&format!("/api/v1/clusters/{cid}")).await["join_token"].is_null());
    let a = FakeAgent::register(&m.url, &join, "node-a").await;
    let b = FakeAgent::register(&m.url, &join, "node-b").await;
    let c = FakeAgent::register(&m.url, &join, "node-c").await;
    let (s, v) = Api::new(&m.url, Some(join.clone()))
        .post(
            "/api/v1/agent/register",
            json!({"name": "intruder", "peer_id": "p", "address": "x:1", "version": "0", "role": "node", "zone": "z1"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("DENIED")), "{v}");
    let (s, _) = Api::new(&m.url, Some("shj_wrong".into()))
        .post(
            "/api/v1/agent/register",
            json!({"name": "node-a", "peer_id": "p", "address": "x:1", "version": "0", "role": "node", "zone": "z1"}),
        )
        .await;
    assert_eq!(s, 401);
    for n in [&a, &b, &c] {
        n.heartbeat().await;
    }
    let nodes = admin
        .get_ok(&format!("/api/v1/nodes?cluster_id={cid}"))
        .await;
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["health"] == "healthy"),
        "{nodes}"
    );

    // An image task: two nodes succeed, one fails.
    let t1 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "registry.example/app:1", "platforms": ["linux/amd64"]},
                   "clusters": [cid], "bandwidth": 1048576}),
            201,
        )
        .await;
    let t1 = t1["id"].as_i64().unwrap();
    assert_eq!(task_state(&admin, t1).await["state"], "running");
    for n in [&a, &b, &c] {
        assert_eq!(n.work(&[], 0).await, vec![t1]);
    }
    assert!(a.report(t1, "running", 500, 300, 200).await);
    assert!(!a.report(t1, "succeeded", 1000, 600, 400).await);
    b.report(t1, "succeeded", 1000, 1000, 0).await;
    c.report(t1, "failed", 10, 0, 10).await;
    let t = task_state(&admin, t1).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["progress"]["nodes"]["succeeded"], 2);
    assert_eq!(t["progress"]["bytes_peer"], 1600);
    assert_eq!(t["progress"]["bytes_upstream"], 410);
    assert!(t["error"].as_str().unwrap().contains("2 of 3"), "{t}");
    let logs = admin.get_ok(&format!("/api/v1/tasks/{t1}/logs")).await;
    let messages: Vec<&str> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"started on 3 nodes"), "{messages:?}");
    assert!(messages.contains(&"failed on node"), "{messages:?}");
    let per_node = admin.get_ok(&format!("/api/v1/tasks/{t1}/nodes")).await;
    assert_eq!(per_node.as_array().unwrap().len(), 3);

    // A task on two listed nodes that succeeds.
    let t2 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:2"}, "nodes": [a.id, b.id]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(c.work(&[], 0).await, Vec::<i64>::new());
    a.report(t2, "succeeded", 1000, 500, 500).await;
    b.report(t2, "succeeded", 1000, 1000, 0).await;
    assert_eq!(task_state(&admin, t2).await["state"], "succeeded");

    // Stop: a node's long poll wakes at once and the assignment is gone.
    let t3 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:3"}, "clusters": [cid]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    a.report(t3, "running", 1, 0, 1).await;
    let poll = {
        let a = a.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            (a.work(&[t3], 30).await, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = admin
        .post_ok(&format!("/api/v1/tasks/{t3}/stop"), json!({}), 200)
        .await;
    assert_eq!(stopped["state"], "stopped");
    let (left, took) = poll.await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(took < Duration::from_secs(5), "the long poll took {took:?}");
    assert!(
        !a.report(t3, "running", 2, 0, 2).await,
        "a stopped task must not proceed"
    );
    let (s, v) = admin
        .post(&format!("/api/v1/tasks/{t3}/stop"), json!({}))
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("CONFLICT")));

    // Copy runs the same spec again.
    let copy = admin
        .post_ok(&format!("/api/v1/tasks/{t2}/copy"), json!({}), 201)
        .await;
    assert_eq!(copy["copied_from"], t2);
    assert_eq!(copy["state"], "running");
    assert_eq!(copy["nodes"], json!([a.id, b.id]));

    // File versions feed file tasks.
    let fv = admin
        .post_ok(
            "/api/v1/files",
            json!({"name": "tool", "version": "1.4", "url": "http://files.example/tool-1.4.tar",
                   "digest": format!("sha256:{}", "a".repeat(64)), "metadata": {"team": "infra"}}),
            201,
        )
        .await;
    let ft = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "file", "version_id": fv["id"]}, "clusters": [cid]}),
            201,
        )
        .await;
    assert_eq!(ft["source"]["url"], "http://files.example/tool-1.4.tar");
    assert_eq!(ft["name"], "tool-1.4.tar");
    let (s, _) = admin.post("/api/v1/files", json!({"name": "tool", "version": "1.4", "url": "http://x/y", "digest": format!("sha256:{}", "b".repeat(64))})).await;
    assert_eq!(s, 409, "duplicate version");

    // A cron task fires once per occurrence, by the manager's clock.
    let cron = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:cron"}, "clusters": [cid],
                   "schedule": {"kind": "cron", "cron": "*/5 * * * *"}}),
            201,
        )
        .await;
    let cron_id = cron["id"].as_i64().unwrap();
    assert_eq!(cron["state"], "scheduled");
    let next = cron["next_run_at"].as_i64().unwrap();
    assert!(next > m.clock_now() && next - m.clock_now() <= 5 * 60_000);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(runs(&admin, cron_id).await, 0, "fired before its time");
    m.clock.set(next);
    wait_runs(&admin, cron_id, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        runs(&admin, cron_id).await,
        1,
        "fired twice for one occurrence"
    );
    let cron = task_state(&admin, cron_id).await;
    assert_eq!(cron["next_run_at"].as_i64().unwrap(), next + 5 * 60_000);
    // The next occurrence comes while the first run still goes: it is skipped, not piled up.
    m.clock.set(next + 5 * 60_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_state(&admin, cron_id).await["next_run_at"]
        .as_i64()
        .unwrap()
        != next + 10 * 60_000
    {
        assert!(
            Instant::now() < deadline,
            "the occurrence was not passed over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        runs(&admin, cron_id).await,
        1,
        "a run started beside a running one"
    );
    let cron_log = admin.get_ok(&format!("/api/v1/tasks/{cron_id}/logs")).await;
    assert!(
        cron_log.to_string().contains("skipped an occurrence"),
        "{cron_log}"
    );
    let first_run = admin
        .get_ok(&format!("/api/v1/tasks?parent_id={cron_id}"))
        .await[0]["id"]
        .as_i64()
        .unwrap();
    for n in [&a, &b, &c] {
        n.report(first_run, "succeeded", 1000, 1000, 0).await;
    }
    assert_eq!(task_state(&admin, first_run).await["state"], "succeeded");
    m.clock.set(next + 10 * 60_000);
    wait_runs(&admin, cron_id, 2).await;
    admin
        .post_ok(&format!("/api/v1/tasks/{cron_id}/stop"), json!({}), 200)
        .await;
    m.clock.set(next + 15 * 60_000);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(runs(&admin, cron_id).await, 2, "a stopped cron task fired");

    // A task at a time waits for it.
    let at = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:at"}, "nodes": [c.id],
                   "schedule": {"kind": "at", "at": m.clock_now() + 3_600_000}}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(task_state(&admin, at).await["state"], "scheduled");
    m.clock.advance(3_600_000);
    wait_state(&admin, at, "running").await;
    assert!(c.work(&[], 0).await.contains(&at));

    // Bad input: clear 4xx, nothing written.
    let before = count(m, "tasks").await;
    for (body, want) in [
        (
            json!({"source": {"kind": "image", "image": "UPPER/Case:1"}, "clusters": [cid]}),
            "invalid image reference",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1", "platforms": ["linux"]}, "clusters": [cid]}),
            "invalid platform",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid], "schedule": {"kind": "cron", "cron": "99 * * * *"}}),
            "cron",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1"}}),
            "target",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [9999]}),
            "cluster 9999",
        ),
        (
            json!({"source": {"kind": "file", "url": "ftp://x/y"}, "clusters": [cid]}),
            "http",
        ),
        (
            json!({"source": {"kind": "file", "url": "http://x/y", "digest": "md5:1"}, "clusters": [cid]}),
            "digest",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid], "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid], "bandwidth": -1}),
            "bandwidth",
        ),
    ] {
        let (s, v) = admin.post("/api/v1/tasks", body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["code"], "INVALID");
        assert!(v["message"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let (s, v) = admin
        .raw(
            "POST",
            "/api/v1/tasks",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("INVALID")), "{v}");
    let (s, v) = admin
        .raw(
            "POST",
            "/api/v1/tasks",
            "application/json",
            vec![b' '; 2 << 20],
        )
        .await;
    assert_eq!(s, 413, "{v}");
    let (s, _) = admin.get("/api/v1/tasks/not-a-number").await;
    assert_eq!(s, 400);
    let (s, v) = admin.get("/api/v1/tasks/99999").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("NOT_FOUND")));
    assert_eq!(count(m, "tasks").await, before, "a rejected task left rows");

    // Names that look like SQL are only names.
    let evil = "x'); DROP TABLE users; --";
    let u = admin
        .post_ok(
            "/api/v1/users",
            json!({"name": evil, "password": "password-123"}),
            201,
        )
        .await;
    assert_eq!(u["name"], evil);
    Api::login(&m.url, evil, "password-123").await;
    assert!(count(m, "users").await >= 2);

    // Statistics: the finished tasks, per day and per task.
    let stats = admin.get_ok("/api/v1/stats").await;
    let by_id = |id: i64| {
        stats["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    };
    assert_eq!(by_id(t1).unwrap()["state"], "failed");
    assert_eq!(by_id(t2).unwrap()["nodes"], 2);
    assert_eq!(by_id(t2).unwrap()["bytes_peer"], 1500);
    assert!(by_id(t3).is_some());
    let total = &stats["total"];
    // t2 and the cron task's first run.
    assert_eq!(total["succeeded"].as_i64().unwrap(), 2);
    assert!(total["tasks"].as_i64().unwrap() >= 3);

    // Delete removes the task and its per-node rows.
    let (s, _) = admin.delete(&format!("/api/v1/tasks/{t1}")).await;
    assert_eq!(s, 204);
    assert_eq!(admin.get(&format!("/api/v1/tasks/{t1}")).await.0, 404);

    // The audit log holds changes with their actors and results, denials included.
    let audit = admin.get_ok("/api/v1/audit?limit=1000").await;
    let entries = audit.as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "POST /api/v1/tasks"
        && e["actor"] == "admin"
        && e["result"] == "ok"));
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "POST /api/v1/tasks" && e["result"] == "rejected")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "POST /api/v1/auth/login" && e["result"] == "unauthenticated")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "DELETE /api/v1/tasks/{id}" && e["result"] == "ok")
    );
    assert!(
        !entries
            .iter()
            .any(|e| e["action"] == "POST /api/v1/agent/heartbeat")
    );

    // Removing a node stops its assignments.
    let t4 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:4"}, "nodes": [b.id, c.id]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    b.report(t4, "succeeded", 1000, 1000, 0).await;
    let (s, _) = admin.delete(&format!("/api/v1/nodes/{}", c.id)).await;
    assert_eq!(s, 204);
    let t = task_state(&admin, t4).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(
        c.api.get("/api/v1/agent/work").await.0,
        401,
        "a removed node's token still works"
    );

    // Sign-out ends the session.
    let (s, _) = admin.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(s, 204);
    assert_eq!(admin.get("/api/v1/auth/me").await.0, 401);
}

impl ClockNow for TestManager {
    fn clock_now(&self) -> i64 {
        use shoal::manager::Clock as _;
        self.clock.now_ms()
    }
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}

async fn runs(api: &Api, cron: i64) -> usize {
    api.get_ok(&format!("/api/v1/tasks?parent_id={cron}"))
        .await
        .as_array()
        .unwrap()
        .len()
}

async fn wait_runs(api: &Api, cron: i64, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(api, cron).await < n {
        assert!(
            Instant::now() < deadline,
            "cron task {cron} did not reach {n} runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(m: &TestManager, table: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(&m.state.db.pool)
    .await
    .unwrap()
    .try_get("n")
    .unwrap()
}

async fn budget_suite(m: &TestManager) {
    let admin = m.admin().await;
    let tenant = admin
        .post_ok(
            "/api/v1/tenants",
            json!({"name": "team-b", "bandwidth_budget": 100, "budget_policy": "refuse"}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "b1", "tenant_id": tenant, "spec": {"kind": "static", "hosts": ["b-1"]}}),
            201,
        )
        .await;
    let cid = cluster["id"].as_i64().unwrap();
    let node = FakeAgent::register(&m.url, cluster["join_token"].as_str().unwrap(), "b-1").await;
    let task = |bw: i64| json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid], "bandwidth": bw, "tenant_id": tenant});
    let first = admin.post_ok("/api/v1/tasks", task(60), 201).await["id"]
        .as_i64()
        .unwrap();
    let before = count(m, "tasks").await;
    let (s, v) = admin.post("/api/v1/tasks", task(60)).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("CONFLICT")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("budget"), "{v}");
    assert_eq!(count(m, "tasks").await, before, "a refused task left a row");
    let small = admin.post_ok("/api/v1/tasks", task(40), 201).await;
    assert_eq!(small["state"], "running");
    let t = admin.get_ok(&format!("/api/v1/tenants/{tenant}")).await;
    assert_eq!(t["bandwidth_in_use"], 100);

    // With the wait policy, a task over the budget waits for room and then starts.
    admin
        .patch(
            &format!("/api/v1/tenants/{tenant}"),
            json!({"bandwidth_budget": 100, "budget_policy": "wait"}),
        )
        .await;
    let waiting = admin.post_ok("/api/v1/tasks", task(50), 201).await;
    let waiting = waiting["id"].as_i64().unwrap();
    assert_eq!(task_state(&admin, waiting).await["state"], "waiting");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(task_state(&admin, waiting).await["state"], "waiting");
    node.report(first, "succeeded", 1000, 0, 1000).await;
    wait_state(&admin, waiting, "running").await;
    let t = admin.get_ok(&format!("/api/v1/tenants/{tenant}")).await;
    assert!(t["bandwidth_in_use"].as_i64().unwrap() <= 100, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_sqlite() {
    let m = TestManager::sqlite().await;
    suite(&m).await;
    budget_suite(&m).await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_postgres() {
    if !common::postgres::postgres_available() {
        return;
    }
    let pg = common::postgres::Postgres::start();
    let url = pg.create_database("api");
    let m = TestManager::start(&url, Arc::new(ManualClock::new(now_ms()))).await;
    suite(&m).await;
    budget_suite(&m).await;
    m.shutdown().await;
}

/// Two managers on one PostgreSQL, with one clock: each occurrence of a cron task fires once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_fire_a_cron_task_once() {
    if !common::postgres::postgres_available() {
        return;
    }
    let pg = common::postgres::Postgres::start();
    let url = pg.create_database("ha");
    let clock = Arc::new(ManualClock::new(now_ms()));
    let m1 = TestManager::start(&url, clock.clone()).await;
    let m2 = TestManager::start(&url, clock.clone()).await;
    let admin = m1.admin().await;
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "ha", "spec": {"kind": "static", "hosts": ["h-1"]}}),
            201,
        )
        .await;
    let cid = cluster["id"].as_i64().unwrap();
    let node = FakeAgent::register(&m2.url, cluster["join_token"].as_str().unwrap(), "h-1").await;
    let cron = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid],
                   "schedule": {"kind": "cron", "cron": "0 * * * *"}}),
            201,
        )
        .await;
    let id = cron["id"].as_i64().unwrap();
    let mut next = cron["next_run_at"].as_i64().unwrap();
    let admin2 = m2.admin().await;
    for round in 1..=5 {
        clock.set(next);
        wait_runs(&admin, id, round).await;
        // Both managers tick five times per second: give them time to double-fire.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(runs(&admin2, id).await, round, "round {round}");
        // The node, polling the second manager, sees the run whichever manager started it,
        // and finishes it before the next occurrence.
        let work = node.work(&[], 0).await;
        assert_eq!(work.len(), 1, "round {round}: {work:?}");
        node.report(work[0], "succeeded", 1000, 0, 1000).await;
        next += 3_600_000;
    }
    let all = admin.get_ok(&format!("/api/v1/tasks?parent_id={id}")).await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "succeeded"),
        "{all}"
    );
    m1.shutdown().await;
    m2.shutdown().await;
}

/// A fake Kubernetes API server whose node list the test changes.
async fn fake_kubernetes(names: Arc<std::sync::Mutex<Vec<String>>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/api/v1/nodes",
        get(move || {
            let names = names.clone();
            async move {
                let items: Vec<Value> = names
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|n| {
                        json!({"metadata": {"name": n, "labels": {"shoal.io/node": "true", "topology.kubernetes.io/zone": "z1"}},
                               "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                                          "conditions": [{"type": "Ready", "status": "True"}]}})
                    })
                    .collect();
                (
                    [("content-type", "application/json")],
                    json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
                        .to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Kubernetes members come from the API server; a node that leaves the list stops its work,
/// and a failing API server keeps the members it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_members_decide_who_gets_work() {
    let m = TestManager::sqlite().await;
    let admin = m.admin().await;
    let names = Arc::new(std::sync::Mutex::new(vec![
        "k1".to_string(),
        "k2".to_string(),
    ]));
    let api_server = fake_kubernetes(names.clone()).await;
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "k8s", "spec": {"kind": "kubernetes", "api_server": api_server, "token": "secret-token",
                   "label_selector": "shoal.io/node=true"}}),
            201,
        )
        .await;
    assert_eq!(
        cluster["spec"]["token"], "********",
        "the token must not come back"
    );
    let cid = cluster["id"].as_i64().unwrap();
    let c = admin
        .post_ok(&format!("/api/v1/clusters/{cid}/discover"), json!({}), 200)
        .await;
    let members: Vec<&str> = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["k1", "k2"], "{c}");
    let join = cluster["join_token"].as_str().unwrap();
    let k1 = FakeAgent::register(&m.url, join, "k1").await;
    let k2 = FakeAgent::register(&m.url, join, "k2").await;
    let stranger = FakeAgent::register(&m.url, join, "k9").await;
    let task = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cid]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(k1.work(&[], 0).await, vec![task]);
    assert_eq!(k2.work(&[], 0).await, vec![task]);
    assert!(
        stranger.work(&[], 0).await.is_empty(),
        "a node the API server does not list got work"
    );
    let nodes = admin
        .get_ok(&format!("/api/v1/nodes?cluster_id={cid}"))
        .await;
    let k9 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "k9")
        .unwrap();
    assert_eq!(k9["member"], false);

    // k2 leaves the cluster: its assignment stops, the task ends failed once k1 is done.
    names.lock().unwrap().retain(|n| n != "k2");
    admin
        .post_ok(&format!("/api/v1/clusters/{cid}/discover"), json!({}), 200)
        .await;
    assert!(k2.work(&[task], 0).await.is_empty());
    assert!(!k2.report(task, "running", 1, 0, 1).await);
    k1.report(task, "succeeded", 1000, 0, 1000).await;
    let t = admin.get_ok(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["progress"]["nodes"]["stopped"], 1, "{t}");

    // The API server fails: the error is shown, the members stay.
    // Pointing the cluster elsewhere does not carry the stored token along.
    let moved = admin
        .put(
            &format!("/api/v1/clusters/{cid}"),
            json!({"name": "k8s", "spec": {"kind": "kubernetes", "api_server": "http://127.0.0.1:9", "token": "********",
                   "label_selector": "shoal.io/node=true"}}),
        )
        .await;
    assert_eq!(
        (moved.0, moved.1["code"].as_str()),
        (400, Some("INVALID")),
        "{}",
        moved.1
    );
    let dead = admin
        .put(
            &format!("/api/v1/clusters/{cid}"),
            json!({"name": "k8s", "spec": {"kind": "kubernetes", "api_server": "http://127.0.0.1:9", "token": "other-token",
                   "label_selector": "shoal.io/node=true"}}),
        )
        .await;
    assert_eq!(dead.0, 200, "{}", dead.1);
    assert!(
        dead.1["discovery_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        dead.1
    );
    assert_eq!(dead.1["members"].as_array().unwrap().len(), 1);
    assert!(
        !dead.1.to_string().contains("secret-token") && !dead.1.to_string().contains("other-token")
    );
    m.shutdown().await;
}

/// A node silent for ten minutes gives up its assignments, so the task ends; a node that still
/// reports keeps its part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_node_gives_up_its_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let m = TestManager::with(&db, Arc::new(ManualClock::new(now_ms())), |s| {
        s.node_gone = Duration::from_secs(600)
    })
    .await;
    let admin = m.admin().await;
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "c", "spec": {"kind": "static", "hosts": ["up", "gone"]}}),
            201,
        )
        .await;
    let join = cluster["join_token"].as_str().unwrap();
    let up = FakeAgent::register(&m.url, join, "up").await;
    let _gone = FakeAgent::register(&m.url, join, "gone").await;
    let task = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:1"}, "clusters": [cluster["id"]]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    up.report(task, "running", 10, 0, 10).await;
    // Nine minutes: nothing happens yet.
    m.clock.advance(9 * 60_000);
    up.heartbeat().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(task_state(&admin, task).await["state"], "running");
    m.clock.advance(2 * 60_000);
    up.heartbeat().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = admin.get_ok(&format!("/api/v1/tasks/{task}/nodes")).await;
        let gone = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_name"] == "gone")
            .unwrap()
            .clone();
        if gone["state"] == "failed" {
            assert_eq!(gone["error"], "the node went offline");
            let still = nodes
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["node_name"] == "up")
                .unwrap();
            assert_eq!(still["state"], "running", "{nodes}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent node kept its assignment: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up.report(task, "succeeded", 1000, 0, 1000).await;
    let t = task_state(&admin, task).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert!(t["error"].as_str().unwrap().contains("1 of 2"), "{t}");
    m.shutdown().await;
}
