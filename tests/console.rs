//! The web console end to end, in Debian's real Chromium driven by Playwright
//! (`console/e2e/console.e2e.mjs`): a real `shoal manager` process, a real `docker-registry`
//! and two real `shoal node`s that join the cluster the browser creates, with the join token
//! the browser was shown. The browser signs in, creates the cluster and an image task to both
//! nodes, watches it succeed, reads the analysis page's charts, and checks that a task
//! administrator sees no edit controls on the permission pages. This test then checks what the
//! browser did against the API and the nodes' stores, and that the API refuses the task
//! administrator too.
//!
//! Screenshots of every page are saved in `target/console-screenshots/` (README, "Console").

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::manager::Api;
use common::process::Daemon;
use common::{Registry, RegistryOpts, ShoalNode, make_image, push_image, write_swarm_key};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ADMIN_PASSWORD: &str = "console-admin-password";
const OPS_PASSWORD: &str = "ops-password-123";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The console's npm packages (Playwright's library among them), installed from the lock file
/// when missing.
fn console_packages() -> bool {
    let console = repo_root().join("console");
    if console.join("node_modules/playwright-core").is_dir() {
        return true;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&console)
        .status()
        .expect("run npm ci");
    assert!(status.success(), "npm ci in console/ failed");
    true
}

/// A `shoal manager` process on a fresh data directory.
struct ManagerProcess {
    url: String,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl ManagerProcess {
    fn start() -> ManagerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(["manager", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("SHOAL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("SHOAL_CONFIG");
        let log = Arc::new(Mutex::new(Vec::new()));
        let daemon = Daemon::spawn("shoal manager", cmd, log);
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            common::wait_for_http(&format!("{url}/healthz"), Duration::from_secs(30)),
            "shoal manager did not start:\n{}",
            daemon.log_tail(30)
        );
        ManagerProcess {
            url,
            _daemon: daemon,
            _dir: dir,
        }
    }
}

/// Screenshots go where the README says, kept after the run for people (and CI) to look at.
fn screenshot_dir() -> PathBuf {
    let dir = repo_root().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_distributes_an_image_and_shows_it() {
    if !common::tools(&["docker-registry", "skopeo", "node", "npm", "chromium"]) {
        return;
    }
    assert!(tokio::task::block_in_place(console_packages));
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(RegistryOpts::default());
    let image = make_image(
        &dir.path().join("app"),
        &[2 << 20, 1 << 20],
        &[("linux", "amd64")],
    );
    push_image(&image, &registry, "library/app", "v1", None);
    let manager = tokio::task::block_in_place(ManagerProcess::start);
    let shots = screenshot_dir();
    let key = dir.path().join("swarm.key");
    write_swarm_key(&key);

    let mut browser = tokio::process::Command::new("node")
        .arg(repo_root().join("console/e2e/console.e2e.mjs"))
        .current_dir(repo_root().join("console"))
        .env("SHOAL_URL", &manager.url)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("OPS_PASSWORD", OPS_PASSWORD)
        .env("IMAGE", "app:v1")
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut to_browser = browser.stdin.take().unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();

    // The browser reports what it did, one `KEY value` line at a time; the test answers when
    // the nodes it started with the browser's join token have joined.
    let mut nodes: Vec<ShoalNode> = Vec::new();
    let mut cluster_id = None;
    let mut task_id = None;
    let mut copy_id = None;
    let mut node_health = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some(line) = tokio::time::timeout_at(deadline.into(), lines.next_line())
        .await
        .expect("the browser test took longer than 10 minutes")
        .unwrap()
    {
        eprintln!("browser: {line}");
        let (what, value) = line.split_once(' ').unwrap_or((&line, ""));
        match what {
            "CLUSTER" => cluster_id = Some(value.parse::<i64>().unwrap()),
            "JOIN_TOKEN" => {
                assert!(value.starts_with("shj_"), "not a join token: {value}");
                let token_file = dir.path().join("join.token");
                std::fs::write(&token_file, value).unwrap();
                for name in ["n1", "n2"] {
                    let node = tokio::task::block_in_place(|| {
                        ShoalNode::start_joined(
                            &key,
                            &registry.url(),
                            &manager.url,
                            &token_file,
                            name,
                            nodes.first(),
                        )
                    });
                    nodes.push(node);
                }
                to_browser.write_all(b"NODES_STARTED\n").await.unwrap();
            }
            "TASK" => task_id = Some(value.parse::<i64>().unwrap()),
            "COPY" => copy_id = Some(value.parse::<i64>().unwrap()),
            "NODE_HEALTH" => node_health.push(value.to_owned()),
            _ => {}
        }
    }
    let status = browser.wait().await.unwrap();
    assert!(status.success(), "the browser test failed: {status}");
    assert_eq!(node_health.len(), 2, "the browser saw {node_health:?}");

    // What the browser did, seen through the API.
    let admin = Api::login(&manager.url, "admin", ADMIN_PASSWORD).await;
    let cid = cluster_id.expect("the browser reported no cluster");
    let cluster = admin.get_ok(&format!("/api/v1/clusters/{cid}")).await;
    assert_eq!(cluster["name"], "edge", "{cluster}");
    let tid = task_id.expect("the browser reported no task");
    let task = admin.get_ok(&format!("/api/v1/tasks/{tid}")).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["clusters"], json!([cid]), "{task}");
    assert_eq!(task["progress"]["nodes_total"], 2, "{task}");
    assert_eq!(task["bandwidth"], 500_000, "{task}");
    let copy = admin
        .get_ok(&format!(
            "/api/v1/tasks/{}",
            copy_id.expect("the browser reported no copy")
        ))
        .await;
    assert_eq!(copy["state"], "succeeded", "{copy}");
    assert_eq!(copy["copied_from"], tid, "{copy}");
    // Every blob of the image is in both nodes' stores.
    for node in &nodes {
        for (digest, size) in image.blobs() {
            let meta = std::fs::metadata(node.blob_file(&digest));
            assert!(
                meta.is_ok_and(|m| m.len() == size),
                "{digest} missing on a node"
            );
        }
    }
    // The task administrator the browser created holds the role on the cluster, and the API
    // refuses them what the console hid.
    let ops = Api::login(&manager.url, "ops", OPS_PASSWORD).await;
    let me = ops.get_ok("/api/v1/auth/me").await;
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tasks:write")),
        "{me}"
    );
    // … on that cluster only, which the console reads to show cluster-bound controls.
    assert_eq!(me["limited_to"]["tasks:write"], json!([cid]), "{me}");
    assert_eq!(me["limited_to"]["tasks:read"], json!([cid]), "{me}");
    let (code, body) = ops
        .post(
            "/api/v1/users",
            json!({"name": "eve", "password": "longenough1"}),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    let node_id = admin.get_ok("/api/v1/nodes").await[0]["id"]
        .as_i64()
        .unwrap();
    let refused = [
        (
            "POST",
            "/api/v1/roles".to_owned(),
            Some(json!({"name": "mine", "permissions": ["users:write"]})),
        ),
        (
            "POST",
            "/api/v1/clusters".to_owned(),
            Some(json!({"name": "mine", "spec": {"kind": "static", "hosts": []}})),
        ),
        (
            "PUT",
            format!("/api/v1/clusters/{cid}"),
            Some(json!({"name": "edge2", "spec": {"kind": "static", "hosts": []}})),
        ),
        ("POST", format!("/api/v1/clusters/{cid}/token"), None),
        ("DELETE", format!("/api/v1/nodes/{node_id}"), None),
        (
            "POST",
            "/api/v1/users/1/bindings".to_owned(),
            Some(json!({"role_id": 1})),
        ),
        (
            "PATCH",
            "/api/v1/users/1".to_owned(),
            Some(json!({"disabled": true})),
        ),
    ];
    for (method, path, body) in refused {
        let (code, answer) = ops.call(method, &path, body).await;
        assert_eq!(code, 403, "{method} {path}: {answer}");
    }
    assert_eq!(
        admin
            .get_ok("/api/v1/clusters")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Every page was photographed.
    let mut saved: Vec<String> = std::fs::read_dir(&shots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    let names: Vec<&str> = saved
        .iter()
        .filter_map(|f| {
            f.split_once('-')
                .and_then(|(_, rest)| rest.strip_suffix(".png"))
        })
        .collect();
    for page in [
        "signin",
        "clusters-join-token",
        "clusters",
        "nodes",
        "new-task",
        "task",
        "tasks",
        "analysis",
        "audit",
        "users",
        "roles",
        "tokens",
        "task-phone",
        "ops-users",
        "ops-roles",
        "ops-clusters",
        "signin-expired",
    ] {
        assert!(names.contains(&page), "no screenshot of {page}: {saved:?}");
    }
    for f in &saved {
        let bytes = std::fs::read(shots.join(f)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
            "{f} is not a real screenshot"
        );
    }
    drop(nodes);
    drop(manager);
}

/// The console is served by the manager: `index.html` for its routes, hashed assets cached for
/// good, the API's unknown paths still JSON errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_serves_the_console() {
    let manager = tokio::task::block_in_place(ManagerProcess::start);
    shoal::oci::install_crypto_provider();
    let client = reqwest::Client::new();
    let index = client
        .get(format!("{}/tasks/12", manager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = index.text().await.unwrap();
    assert!(html.contains("<div id=\"app\">"), "{html}");
    // Every asset the page names is served, with a content type and long caching, and the page
    // loads nothing from elsewhere.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(assets.len() >= 2, "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for a in &assets {
        let res = client
            .get(format!("{}{a}", manager.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{a}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            ct.starts_with("text/javascript") || ct.starts_with("text/css"),
            "{a}: {ct}"
        );
        assert!(
            res.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = res.headers()["etag"].clone();
        let body = res.bytes().await.unwrap();
        assert!(body.len() > 100, "{a}");
        let again = client
            .get(format!("{}{a}", manager.url))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{a}");
    }
    let missing = client
        .get(format!("{}/assets/gone-1234.js", manager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let api = client
        .get(format!("{}/api/v1/nothing-here", manager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = serde_json::from_slice(&api.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], "NOT_FOUND", "{body}");
    let post = client
        .post(format!("{}/tasks", manager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    drop(manager);
}
