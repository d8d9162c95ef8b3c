//! The manager end to end with real parts: a real `docker-registry` holding images, nginx
//! holding a file, three real `shoal node` processes joined to a static cluster, and the
//! manager (in process, on SQLite, with a clock the test moves). Tasks distribute an image and a
//! file version to every node's store, stop mid-way, copy, and fire on a cron schedule.

mod common;

use std::time::{Duration, Instant};

use common::manager::{Api, TestManager};
use common::nginx::Nginx;
use common::{Registry, RegistryOpts, ShoalNode, make_image, push_image, write_swarm_key};
use serde_json::{Value, json};

async fn wait_task(api: &Api, id: i64, states: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = api.get_ok(&format!("/api/v1/tasks/{id}")).await;
        if states.iter().any(|s| t["state"] == *s) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not reach {states:?}: {t}\nnodes: {}\nlogs: {}",
            api.get_ok(&format!("/api/v1/tasks/{id}/nodes")).await,
            api.get_ok(&format!("/api/v1/tasks/{id}/logs")).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn holds(node: &ShoalNode, digest: &str, size: u64) -> bool {
    std::fs::metadata(node.blob_file(digest)).is_ok_and(|m| m.len() == size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_distribute_images_and_files_to_every_node() {
    if !common::require_tool("docker-registry")
        || !common::require_tool("skopeo")
        || !common::require_tool("nginx")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(RegistryOpts::default());
    let image = make_image(
        &dir.path().join("app"),
        &[3 << 20, 1 << 20],
        &[("linux", "amd64")],
    );
    push_image(&image, &registry, "library/app", "v1", None);
    let big = make_image(&dir.path().join("big"), &[48 << 20], &[("linux", "amd64")]);
    push_image(&big, &registry, "library/big", "v1", None);
    let nginx = Nginx::start();
    let file: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    nginx.put("tool-1.4.tar", &file);
    let file_digest = common::sha256_hex(&file);

    let m = TestManager::sqlite().await;
    let admin = m.admin().await;
    let cluster = admin
        .post_ok(
            "/api/v1/clusters",
            json!({"name": "edge", "spec": {"kind": "static", "hosts": ["n1", "n2", "n3"]}}),
            201,
        )
        .await;
    let cid = cluster["id"].as_i64().unwrap();
    let token_file = dir.path().join("join.token");
    std::fs::write(&token_file, cluster["join_token"].as_str().unwrap()).unwrap();
    let key = dir.path().join("swarm.key");
    write_swarm_key(&key);

    // Three nodes of one swarm, each joining the manager under its own name.
    let mut nodes: Vec<ShoalNode> = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let node = tokio::task::block_in_place(|| {
            ShoalNode::start_joined(
                &key,
                &registry.url(),
                &m.url,
                &token_file,
                name,
                nodes.first(),
            )
        });
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = admin
            .get_ok(&format!("/api/v1/nodes?cluster_id={cid}"))
            .await;
        // Heard from and ready (a nearly full disk on the test machine may make them degraded).
        let joined = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["health"] != "offline" && n["ready"] == true)
            .count();
        if joined == 3 {
            let names: Vec<&str> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["n1", "n2", "n3"]);
            assert!(
                list.as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["disk_total"].as_i64().unwrap() > 0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not all join: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. An image to every node of the cluster.
    let task = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:v1"}, "clusters": [cid]}),
            201,
        )
        .await;
    let t1 = task["id"].as_i64().unwrap();
    let done = wait_task(&admin, t1, &["succeeded", "failed"], 90).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let total: u64 = image.blobs().iter().map(|(_, s)| s).sum();
    for node in &nodes {
        for (digest, size) in image.blobs() {
            assert!(holds(node, &digest, size), "{digest} not in a node's store");
        }
    }
    let per_node = admin.get_ok(&format!("/api/v1/tasks/{t1}/nodes")).await;
    for n in per_node.as_array().unwrap() {
        assert_eq!(n["state"], "succeeded", "{n}");
        assert_eq!(n["bytes_done"].as_u64().unwrap(), total, "{n}");
        assert_eq!(n["bytes_total"].as_u64().unwrap(), total, "{n}");
        let fetched = n["bytes_peer"].as_u64().unwrap() + n["bytes_upstream"].as_u64().unwrap();
        assert!(fetched >= total && fetched <= total + (total / 2), "{n}");
    }
    // The swarm spared the registry: the three nodes together downloaded each blob from it about
    // once (a node may fetch what no peer had yet).
    let upstream_bytes: u64 = per_node
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["bytes_upstream"].as_u64().unwrap())
        .sum();
    assert!(
        upstream_bytes < 2 * total,
        "upstream sent {upstream_bytes} for {total}"
    );
    let logs = admin.get_ok(&format!("/api/v1/tasks/{t1}/logs")).await;
    let nodes_with_logs: std::collections::BTreeSet<i64> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["node_id"].as_i64())
        .collect();
    assert_eq!(nodes_with_logs.len(), 3, "{logs}");

    // 2. A published file version.
    let version = admin
        .post_ok(
            "/api/v1/files",
            json!({"name": "tool", "version": "1.4", "url": format!("{}/tool-1.4.tar", nginx.url()),
                   "digest": file_digest, "size": file.len()}),
            201,
        )
        .await;
    let t2 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "file", "version_id": version["id"]}, "clusters": [cid]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let done = wait_task(&admin, t2, &["succeeded", "failed"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for node in &nodes {
        assert!(holds(node, &file_digest, file.len() as u64));
    }
    let served: u64 = nginx
        .access_log()
        .iter()
        .filter(|l| l.status == 200)
        .map(|l| l.bytes)
        .sum();
    assert!(served <= 2 * file.len() as u64, "nginx sent {served}");

    // 3. Stop mid-way: a slow task (1 MiB/s per node) stops, and the nodes go idle.
    let t3 = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "big:v1"}, "clusters": [cid], "bandwidth": 1 << 20}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = admin.get_ok(&format!("/api/v1/tasks/{t3}")).await;
        if t["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow task never made progress: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped = admin
        .post_ok(&format!("/api/v1/tasks/{t3}/stop"), json!({}), 200)
        .await;
    assert_eq!(stopped["state"], "stopped");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: u64 = nodes
            .iter()
            .map(|n| {
                tokio::task::block_in_place(|| n.status())["downloads"]
                    .as_array()
                    .map_or(0, |d| d.len() as u64)
            })
            .sum();
        if busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes still download after the stop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let big_layer = &big.blobs()[1];
    assert!(nodes.iter().all(|n| !holds(n, &big_layer.0, big_layer.1)));
    let per_node = admin.get_ok(&format!("/api/v1/tasks/{t3}/nodes")).await;
    assert!(
        per_node
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "stopped"),
        "{per_node}"
    );
    assert_eq!(
        admin.get_ok(&format!("/api/v1/tasks/{t3}")).await["state"],
        "stopped"
    );

    // 4. Copy runs the image task again (the nodes hold it already, so it is quick).
    let copy = admin
        .post_ok(&format!("/api/v1/tasks/{t1}/copy"), json!({}), 201)
        .await;
    let t4 = copy["id"].as_i64().unwrap();
    assert_eq!(copy["copied_from"], t1);
    let done = wait_task(&admin, t4, &["succeeded", "failed"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // 5. A cron task fires when the manager's clock reaches its time, and its run succeeds.
    let cron = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:v1"}, "clusters": [cid],
                   "schedule": {"kind": "cron", "cron": "*/10 * * * *"}}),
            201,
        )
        .await;
    let cron_id = cron["id"].as_i64().unwrap();
    m.clock.set(cron["next_run_at"].as_i64().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        let runs = admin
            .get_ok(&format!("/api/v1/tasks?parent_id={cron_id}"))
            .await;
        if let Some(r) = runs.as_array().unwrap().first() {
            break r["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "the cron task did not fire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = wait_task(&admin, run, &["succeeded", "failed"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The statistics show what ran.
    let stats = admin.get_ok("/api/v1/stats").await;
    let ids: Vec<i64> = stats["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    for id in [t1, t2, t3, t4, run] {
        assert!(ids.contains(&id), "stats lack task {id}: {ids:?}");
    }
    assert!(
        stats["total"]["bytes_peer"].as_i64().unwrap()
            + stats["total"]["bytes_upstream"].as_i64().unwrap()
            > 0
    );
    drop(nodes);
    m.shutdown().await;
}

/// `shoal up` on an empty data dir: a manager with a first administrator, and the local node
/// registered in the cluster `local`, which a task reaches; a second start keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_up_runs_a_manager_with_its_node_registered() {
    if !common::require_tool("docker-registry") || !common::require_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(RegistryOpts::default());
    let image = make_image(&dir.path().join("app"), &[1 << 20], &[("linux", "amd64")]);
    push_image(&image, &registry, "library/app", "v1", None);
    let data = dir.path().join("data");
    let port = common::free_port();
    let start = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(["--upstream", &format!("docker.io={}", registry.url())])
            .args(["--manager-listen", &format!("127.0.0.1:{port}")])
            .env_remove("SHOAL_ADMIN_PASSWORD");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (
            common::process::Daemon::spawn("shoal up", cmd, log.clone()),
            log,
        )
    };
    let (mut up, log) = start();
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        tokio::task::block_in_place(|| common::wait_for_http(
            &format!("{url}/healthz"),
            Duration::from_secs(30)
        )),
        "{}",
        up.log_tail(30)
    );
    // The generated password is printed once.
    let password = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = log.lock().unwrap().iter().find_map(|l| {
                l.split("with the password \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_owned)
            });
            if let Some(p) = found {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "no password printed: {}",
                up.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let admin = Api::login(&url, "admin", &password).await;
    let node_id = wait_local_node(&admin).await;
    let task = admin
        .post_ok(
            "/api/v1/tasks",
            json!({"source": {"kind": "image", "image": "app:v1"}, "nodes": [node_id]}),
            201,
        )
        .await;
    let done = wait_task(
        &admin,
        task["id"].as_i64().unwrap(),
        &["succeeded", "failed"],
        60,
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // A second start: no new administrator, the same node and cluster.
    up.terminate(Duration::from_secs(10));
    let lines_before = log.lock().unwrap().len();
    let (mut up2, log2) = start();
    assert!(tokio::task::block_in_place(|| common::wait_for_http(
        &format!("{url}/healthz"),
        Duration::from_secs(30)
    )));
    let admin = Api::login(&url, "admin", &password).await;
    assert_eq!(wait_local_node(&admin).await, node_id);
    let clusters = admin.get_ok("/api/v1/clusters").await;
    assert_eq!(clusters.as_array().unwrap().len(), 1, "{clusters}");
    assert!(
        !log2
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("with the password"))
    );
    let _ = lines_before;
    up2.terminate(Duration::from_secs(10));
}

async fn wait_local_node(admin: &Api) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = admin.get_ok("/api/v1/nodes").await;
        if let Some(n) = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["ready"] == true && n["role"] == "seed")
        {
            return n["id"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the local node did not join: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
