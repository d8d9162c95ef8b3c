//! The node's agent against a fake manager: an in-process axum server that implements the four
//! agent calls of `shoal::manager::protocol`, records what it receives and serves the
//! assignments each test decides. Real `shoal node` processes, a real `docker-registry` and
//! nginx do the rest.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::nginx::Nginx;
use common::{
    Registry, RegistryOpts, ShoalNode, http_request, make_image, push_image, sha256_hex, wait_until,
};
use shoal::manager::protocol::{
    Assignment, Heartbeat, NodeTaskState, Progress, ProgressAck, Registered, Registration, Source,
    Work,
};

const MIB: usize = 1024 * 1024;
const JOIN_TOKEN: &str = "join-secret-7f3a";

/// What the fake manager has received.
#[derive(Default)]
struct Recorded {
    /// Accepted registrations.
    registrations: Vec<Registration>,
    /// Registrations refused for a wrong join token.
    refused: usize,
    /// Node tokens issued and not revoked.
    tokens: HashSet<String>,
    heartbeats: Vec<(String, Heartbeat)>,
    /// Work polls: the token and when.
    polls: Vec<(String, Instant)>,
    /// Progress reports, with when they arrived.
    reports: Vec<(Instant, Progress)>,
    assignments: Vec<Assignment>,
}

struct Shared {
    recorded: Mutex<Recorded>,
    /// Bumped when the assignments change (long polls return).
    changed: tokio::sync::watch::Sender<u64>,
}

/// An in-process manager that can be taken down and brought back on the same port.
struct FakeManager {
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeManager {
    fn start() -> FakeManager {
        let shared = Arc::new(Shared {
            recorded: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        });
        let mut m = FakeManager {
            port: 0,
            shared,
            runtime: None,
        };
        m.serve();
        m
    }

    fn serve(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/api/v1/agent/register", post(register))
            .route("/api/v1/agent/heartbeat", post(heartbeat))
            .route("/api/v1/agent/work", get(work))
            .route("/api/v1/agent/progress", post(progress))
            .with_state(self.shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        self.runtime = Some(runtime);
    }

    /// Takes the manager down: its port refuses connections, open ones are cut.
    fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Brings it back on the same port, with what it had recorded.
    fn restart(&mut self) {
        self.stop();
        self.serve();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recorded) -> T) -> T {
        f(&mut self.shared.recorded.lock().unwrap())
    }

    fn assign(&self, assignments: Vec<Assignment>) {
        self.with(|r| r.assignments = assignments);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Reports on `task` so far.
    fn reports(&self, task: i64) -> Vec<(Instant, Progress)> {
        self.with(|r| {
            r.reports
                .iter()
                .filter(|(_, p)| p.task_id == task)
                .cloned()
                .collect()
        })
    }

    /// Waits for the final report on `task`.
    fn final_report(&self, task: i64, timeout: Duration) -> Option<(Instant, Progress)> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .reports(task)
                .into_iter()
                .find(|(_, p)| p.state.is_final());
            found.is_some()
        });
        found
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"code": "unauthorized", "message": "bad token"})),
    )
        .into_response()
}

/// The node token of a request, if the manager knows it.
fn node_token(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers);
    shared
        .recorded
        .lock()
        .unwrap()
        .tokens
        .contains(&token)
        .then_some(token)
}

async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(reg): Json<Registration>,
) -> Response {
    let mut r = shared.recorded.lock().unwrap();
    if bearer(&headers) != JOIN_TOKEN {
        r.refused += 1;
        return unauthorized();
    }
    r.registrations.push(reg);
    let node_id = r.registrations.len() as i64;
    let node_token = format!("node-token-{node_id}-{:x}", rand_u32());
    r.tokens.insert(node_token.clone());
    Json(Registered {
        node_id,
        node_token,
        cluster_id: 7,
    })
    .into_response()
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

async fn heartbeat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(hb): Json<Heartbeat>,
) -> Response {
    let Some(token) = node_token(&shared, &headers) else {
        return unauthorized();
    };
    shared.recorded.lock().unwrap().heartbeats.push((token, hb));
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct WorkQuery {
    wait: u64,
    #[serde(default)]
    have: String,
}

async fn work(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<WorkQuery>,
) -> Response {
    let Some(token) = node_token(&shared, &headers) else {
        return unauthorized();
    };
    shared
        .recorded
        .lock()
        .unwrap()
        .polls
        .push((token, Instant::now()));
    let mut have: Vec<i64> = q
        .have
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    have.sort_unstable();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    let mut changes = shared.changed.subscribe();
    loop {
        let assignments = shared.recorded.lock().unwrap().assignments.clone();
        let mut ids: Vec<i64> = assignments.iter().map(|a| a.task_id).collect();
        ids.sort_unstable();
        if ids != have || tokio::time::Instant::now() >= deadline {
            return Json(Work { assignments }).into_response();
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn progress(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(p): Json<Progress>,
) -> Response {
    if node_token(&shared, &headers).is_none() {
        return unauthorized();
    }
    let mut r = shared.recorded.lock().unwrap();
    let proceed = r.assignments.iter().any(|a| a.task_id == p.task_id);
    r.reports.push((Instant::now(), p));
    Json(ProgressAck { proceed }).into_response()
}

/// A token file with `token` in a directory of its own.
fn token_file(token: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("join-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// A node that joins `manager` with `token_file`, its upstream `registry` (if any).
fn node(manager: &FakeManager, token_file: &str, registry: Option<&Registry>) -> ShoalNode {
    let mut args = vec![
        "--manager".to_owned(),
        manager.url(),
        "--token-file".to_owned(),
        token_file.to_owned(),
        "--node-name".to_owned(),
        "agent-test-node".to_owned(),
    ];
    if let Some(r) = registry {
        args.extend(["--upstream".to_owned(), format!("docker.io={}", r.url())]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ShoalNode::start(&args)
}

fn image_task(task_id: i64, image: &str, bandwidth: Option<u64>) -> Assignment {
    Assignment {
        task_id,
        source: Source::Image {
            image: image.into(),
            platforms: Vec::new(),
        },
        bandwidth,
    }
}

fn file_task(task_id: i64, url: String, data: &[u8], bandwidth: Option<u64>) -> Assignment {
    Assignment {
        task_id,
        source: Source::File {
            url,
            digest: Some(sha256_hex(data)),
        },
        bandwidth,
    }
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761 ^ seed) >> 7) as u8)
        .collect()
}

#[test]
fn the_node_joins_with_the_join_token_keeps_its_node_token_and_sends_heartbeats() {
    if !common::tools(&["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[64 * 1024], &[]);
    push_image(&image, &registry, "library/app", "v1", None);
    let manager = FakeManager::start();
    let (_dir, token_path) = token_file("not-the-join-token");
    let mut node = node(&manager, &token_path, Some(&registry));

    // A wrong join token: refused, retried, and the node serves meanwhile.
    assert!(
        wait_until(Duration::from_secs(10), || manager.with(|r| r.refused) >= 2),
        "{}",
        node.log_tail(30)
    );
    let manifest = http_request(
        "GET",
        &format!("{}/v2/library/app/manifests/v1", node.url()),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        &[],
    )
    .unwrap();
    assert_eq!(manifest.status, 200);
    assert!(node.is_running());
    assert!(manager.with(|r| r.registrations.is_empty()));

    // The right token (the file is read again at each attempt).
    std::fs::write(&token_path, format!("{JOIN_TOKEN}\n")).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || manager
            .with(|r| r.registrations.len())
            == 1),
        "{}",
        node.log_tail(30)
    );
    let status = node.status();
    let reg = manager.with(|r| r.registrations[0].clone());
    assert_eq!(reg.name, "agent-test-node");
    assert_eq!(reg.peer_id, status["peer_id"].as_str().unwrap());
    assert_eq!(reg.address, node.host());
    assert_eq!((reg.role.as_str(), reg.zone.as_str()), ("node", "default"));
    assert_eq!(reg.version, env!("CARGO_PKG_VERSION"));
    let token = manager.with(|r| r.tokens.iter().next().unwrap().clone());

    // A heartbeat with the node token, at once after joining.
    assert!(wait_until(Duration::from_secs(5), || manager
        .with(|r| !r.heartbeats.is_empty())));
    let (hb_token, hb) = manager.with(|r| r.heartbeats[0].clone());
    assert_eq!(hb_token, token);
    assert_eq!(hb.peer_id, reg.peer_id);
    assert_eq!(
        (hb.version.as_str(), hb.role.as_str(), hb.zone.as_str()),
        (env!("CARGO_PKG_VERSION"), "node", "default")
    );
    assert_eq!(hb.address, node.host());
    assert!(hb.disk_total > 1 << 20, "{hb:?}");
    assert!(hb.disk_free > 0 && hb.disk_free <= hb.disk_total, "{hb:?}");
    assert!(hb.load >= 0.0);
    assert!(hb.ready, "{hb:?}");
    assert_eq!((hb.peers, hb.downloads), (0, 0));
    assert!(wait_until(Duration::from_secs(5), || manager
        .with(|r| r.polls.iter().any(|(t, _)| *t == token))));

    // The id and token are kept for this user only; the join token is not.
    let state_file = node.data_dir().join("agent.json");
    let kept = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        kept.contains(&token) && kept.contains("\"node_id\": 1"),
        "{kept}"
    );
    assert!(!kept.contains(JOIN_TOKEN));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart uses the kept token: no second registration.
    let polls_before = manager.with(|r| r.polls.len());
    let beats_before = manager.with(|r| r.heartbeats.len());
    node.restart();
    assert!(wait_until(Duration::from_secs(10), || manager.with(|r| {
        r.polls.len() > polls_before && r.heartbeats.len() > beats_before
    })));
    manager.with(|r| {
        assert_eq!(r.registrations.len(), 1);
        assert!(r.polls[polls_before..].iter().all(|(t, _)| *t == token));
        assert_eq!(r.heartbeats.last().unwrap().0, token);
    });

    // A node token the manager no longer knows: the node joins again.
    manager.with(|r| r.tokens.clear());
    assert!(
        wait_until(Duration::from_secs(15), || manager
            .with(|r| r.registrations.len())
            == 2),
        "{}",
        node.log_tail(30)
    );
    let new_token = manager.with(|r| r.tokens.iter().next().unwrap().clone());
    assert_ne!(new_token, token);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&state_file).is_ok_and(|s| s.contains(&new_token))
    }));

    // No token ever shows in the node's log.
    let log = node.log_tail(100_000);
    for secret in [JOIN_TOKEN, &token, &new_token] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn image_and_file_assignments_end_in_the_store_and_report_their_bytes() {
    if !common::tools(&["docker-registry", "skopeo", "nginx"]) {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[3 * MIB, MIB], &[]);
    push_image(&image, &registry, "library/app", "v1", None);
    let nginx = Nginx::start();
    let file = data(5 * MIB + 17, 1);
    nginx.put("tools/file.bin", &file);
    let manager = FakeManager::start();
    let (_dir, token_path) = token_file(JOIN_TOKEN);
    let node = node(&manager, &token_path, Some(&registry));

    manager.assign(vec![
        image_task(1, "docker.io/library/app:v1", None),
        file_task(2, format!("{}/tools/file.bin", nginx.url()), &file, None),
    ]);
    let (_, image_report) = manager
        .final_report(1, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no final report\n{}", node.log_tail(40)));
    let blobs = image.blobs();
    let total: u64 = blobs.iter().map(|(_, s)| s).sum();
    assert_eq!(
        image_report.state,
        NodeTaskState::Succeeded,
        "{image_report:?}"
    );
    assert_eq!((image_report.blobs_total, image_report.blobs_done), (3, 3));
    assert_eq!(
        (image_report.bytes_total, image_report.bytes_done),
        (total, total)
    );
    assert_eq!(image_report.bytes_upstream, total);
    assert_eq!(image_report.bytes_peer, 0);
    assert_eq!(image_report.error, None);
    // The course of the task, in a few lines over all its reports.
    let logs: Vec<String> = manager
        .reports(1)
        .into_iter()
        .flat_map(|(_, p)| p.logs)
        .map(|l| format!("{} {}", l.level, l.message))
        .collect();
    assert!(logs.len() >= 3 && logs.len() <= 10, "{logs:#?}");
    assert!(logs[0].contains("docker.io/library/app:v1"), "{logs:#?}");
    assert!(logs.iter().any(|l| l.contains("3 blobs")), "{logs:#?}");
    assert!(logs.last().unwrap().contains("finished"), "{logs:#?}");
    for (digest, size) in &blobs {
        let stored = std::fs::metadata(node.blob_file(digest)).unwrap();
        assert_eq!(stored.len(), *size);
    }

    let (_, file_report) = manager
        .final_report(2, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no final report\n{}", node.log_tail(40)));
    assert_eq!(
        file_report.state,
        NodeTaskState::Succeeded,
        "{file_report:?}"
    );
    let len = file.len() as u64;
    assert_eq!((file_report.blobs_total, file_report.blobs_done), (1, 1));
    assert_eq!(
        (file_report.bytes_total, file_report.bytes_done),
        (len, len)
    );
    assert_eq!(file_report.bytes_upstream, len);
    assert_eq!(nginx.bytes_sent("/tools/file.bin"), len);
    assert_eq!(
        std::fs::read(node.blob_file(&sha256_hex(&file))).unwrap(),
        file
    );

    // With the upstream gone, the node serves the image it was told to fetch.
    registry.stop();
    for (digest, _) in &blobs {
        let url = format!("{}/v2/library/app/blobs/{digest}", node.url());
        let resp = http_request("GET", &url, &[], &[]).unwrap();
        assert_eq!(resp.status, 200, "{}", node.log_tail(20));
        assert_eq!(&sha256_hex(&resp.body), digest);
    }
}

#[test]
fn a_withdrawn_assignment_stops_within_seconds_and_its_download_ends() {
    if !common::tools(&["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[40 * MIB], &[]);
    push_image(&image, &registry, "library/big", "v1", None);
    let manager = FakeManager::start();
    let (_dir, token_path) = token_file(JOIN_TOKEN);
    let node = node(&manager, &token_path, Some(&registry));

    manager.assign(vec![image_task(
        5,
        "docker.io/library/big:v1",
        Some(2 * MIB as u64),
    )]);
    // Running, with bytes arriving.
    assert!(
        wait_until(Duration::from_secs(20), || {
            manager
                .reports(5)
                .iter()
                .any(|(_, p)| p.state == NodeTaskState::Running && p.bytes_done > MIB as u64)
        }),
        "{}",
        node.log_tail(30)
    );
    assert_eq!(node.status()["downloads_in_flight"], 1);

    let withdrawn = Instant::now();
    manager.assign(Vec::new());
    let (at, report) = manager
        .final_report(5, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no final report\n{}", node.log_tail(30)));
    assert_eq!(report.state, NodeTaskState::Stopped, "{report:?}");
    let took = at.duration_since(withdrawn);
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    assert!(report.bytes_upstream > 0 && report.bytes_done < report.bytes_total);
    assert!(
        wait_until(
            Duration::from_secs(2),
            || node.status()["downloads_in_flight"] == 0
        ),
        "{}",
        node.status()
    );
    let layer = &image.manifests[0].layers[0].digest;
    assert!(!node.blob_file(layer).exists());
    // Its partial file is gone, and nothing fetches the layer again.
    std::thread::sleep(Duration::from_secs(1));
    assert!(node.temp_files().is_empty(), "{:?}", node.temp_files());
    assert_eq!(registry.blob_gets(layer), 1);
    assert_eq!(node.status()["downloads_in_flight"], 0);
}

#[test]
fn a_task_bandwidth_limit_holds_its_transfer_to_the_rate() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let file = data(32 * MIB, 2);
    nginx.put("big.bin", &file);
    let manager = FakeManager::start();
    let (_dir, token_path) = token_file(JOIN_TOKEN);
    let node = node(&manager, &token_path, None);

    manager.assign(vec![file_task(
        9,
        format!("{}/big.bin", nginx.url()),
        &file,
        Some(4 * MIB as u64),
    )]);
    let (last, report) = manager
        .final_report(9, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no final report\n{}", node.log_tail(30)));
    assert_eq!(report.state, NodeTaskState::Succeeded, "{report:?}");
    assert_eq!(report.bytes_upstream, file.len() as u64);
    let reports = manager.reports(9);
    let first = reports[0].0;
    let secs = last.duration_since(first).as_secs_f64();
    // 32 MiB at 4 MiB/s: 8 s (less the bucket's burst of a fifth of a second).
    assert!((6.8..=9.2).contains(&secs), "took {secs:.2} s");
    // Reports while it ran: at most about one a second.
    let running = reports
        .iter()
        .filter(|(_, p)| p.state == NodeTaskState::Running)
        .count();
    assert!((5..=11).contains(&running), "{running} running reports");
}

#[test]
fn a_task_finishes_while_the_manager_is_down_and_reports_when_it_returns() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let file = data(16 * MIB, 3);
    nginx.put("mid.bin", &file);
    let mut manager = FakeManager::start();
    let (_dir, token_path) = token_file(JOIN_TOKEN);
    let node = node(&manager, &token_path, None);

    manager.assign(vec![file_task(
        4,
        format!("{}/mid.bin", nginx.url()),
        &file,
        Some(4 * MIB as u64),
    )]);
    assert!(
        wait_until(Duration::from_secs(10), || !manager.reports(4).is_empty()),
        "{}",
        node.log_tail(30)
    );
    manager.stop();
    let blob = node.blob_file(&sha256_hex(&file));
    assert!(
        wait_until(Duration::from_secs(15), || blob.exists()),
        "{}",
        node.log_tail(30)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(manager.final_report(4, Duration::ZERO).is_none());
    let back = Instant::now();
    manager.restart();
    let (at, report) = manager
        .final_report(4, Duration::from_secs(40))
        .unwrap_or_else(|| panic!("no final report\n{}", node.log_tail(30)));
    assert!(at > back);
    assert_eq!(report.state, NodeTaskState::Succeeded, "{report:?}");
    assert_eq!(report.bytes_done, file.len() as u64);
    assert_eq!(std::fs::read(&blob).unwrap(), file);
}
