//! Manager benchmark: one `shoal manager` process with N registered nodes (default 2,000) that
//! each send a heartbeat every 10 s, hold a long poll for work open and report progress on
//! their assignment every 5 s, while T tasks (default 50, each on a cluster of N/T nodes) run and
//! a few console users read task lists, tasks, nodes and statistics. Reports the latency of
//! each kind of call (p50, p99, max) and the manager's CPU and memory, on SQLite and on
//! PostgreSQL (started by the harness when Debian's `postgresql` is installed).
//!
//! `cargo bench --bench manager -- [--nodes 2000] [--tasks 50] [--seconds 60]
//! [--backend sqlite|postgres|both]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    nodes: usize,
    tasks: usize,
    seconds: u64,
    backends: Vec<&'static str>,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 2000,
        tasks: 50,
        seconds: 60,
        backends: vec!["sqlite", "postgres"],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--nodes" => a.nodes = value().parse().unwrap(),
            "--tasks" => a.tasks = value().parse().unwrap(),
            "--seconds" => a.seconds = value().parse().unwrap(),
            "--backend" => {
                a.backends = match value().as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    _ => vec!["sqlite", "postgres"],
                }
            }
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Latencies by kind of call, in microseconds.
#[derive(Default)]
struct Latencies(Mutex<BTreeMap<&'static str, Vec<u64>>>);

impl Latencies {
    fn add(&self, kind: &'static str, d: Duration) {
        self.0
            .lock()
            .unwrap()
            .entry(kind)
            .or_default()
            .push(d.as_micros() as u64);
    }
}

struct ManagerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_manager(database: Option<&str>) -> ManagerProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args([
        "manager",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(dir.path())
    .env("SHOAL_ADMIN_PASSWORD", "bench-password")
    .env("SHOAL_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(db) = database {
        cmd.args(["--database", db]);
    }
    let child = cmd.spawn().expect("start shoal manager");
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        common::wait_for_http(&format!("{url}/healthz"), Duration::from_secs(30)),
        "the manager did not start"
    );
    ManagerProcess {
        child,
        url,
        _dir: dir,
    }
}

/// CPU seconds of a process and its children (PostgreSQL's backends), by /proc.
fn tree_cpu(root: u32) -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ppid: u32 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if pid == root || ppid == root {
            total += cpu_and_rss(pid).0;
        }
    }
    total
}

/// utime + stime of a process, in seconds, and its resident memory in MiB.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12, rss 21 (pages).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let rss = ticks(21) * 4096.0 / (1 << 20) as f64;
    (cpu, rss)
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let v = resp
                .text()
                .await
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            (status, v)
        }
        Err(_) => (0, Value::Null),
    }
}

async fn run(backend: &'static str, args: &Args, database: Option<String>, db_pid: Option<u32>) {
    let manager = start_manager(database.as_deref());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = manager.url.clone();
    let (s, login) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/api/v1/auth/login"),
        "",
        Some(json!({"name": "admin", "password": "bench-password"})),
    )
    .await;
    assert_eq!(s, 200, "{login}");
    let admin = login["token"].as_str().unwrap().to_string();

    // Clusters of N/T hosts, every node registered, one running task per cluster.
    let per_cluster = args.nodes.div_ceil(args.tasks);
    let setup = Instant::now();
    let mut nodes: Vec<(i64, String, i64)> = Vec::new(); // (node id, token, cluster index)
    for c in 0..args.tasks {
        let hosts: Vec<String> = (0..per_cluster)
            .map(|i| format!("n-{c}-{i}"))
            .take(args.nodes - nodes.len().min(args.nodes))
            .collect();
        let (s, cluster) = call(
            &client,
            reqwest::Method::POST,
            format!("{base}/api/v1/clusters"),
            &admin,
            Some(json!({"name": format!("c{c}"), "spec": {"kind": "static", "hosts": hosts}})),
        )
        .await;
        assert_eq!(s, 201, "{cluster}");
        let join = cluster["join_token"].as_str().unwrap().to_string();
        let registrations = hosts.iter().map(|h| {
            let client = client.clone();
            let base = base.clone();
            let join = join.clone();
            async move {
                let (s, r) = call(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/api/v1/agent/register"),
                    &join,
                    Some(json!({"name": h, "peer_id": format!("peer-{h}"), "address": format!("{h}:65001"),
                                "version": "bench", "role": "node", "zone": "z"})),
                )
                .await;
                assert_eq!(s, 200, "{r}");
                (r["node_id"].as_i64().unwrap(), r["node_token"].as_str().unwrap().to_string())
            }
        });
        for (id, token) in futures_util::future::join_all(registrations).await {
            nodes.push((id, token, c as i64));
        }
        let (s, t) = call(
            &client,
            reqwest::Method::POST,
            format!("{base}/api/v1/tasks"),
            &admin,
            Some(
                json!({"source": {"kind": "image", "image": format!("bench/app:{c}")},
                        "clusters": [cluster["id"]], "bandwidth": 10_485_760}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{t}");
    }
    println!(
        "[{backend}] set up {} nodes, {} clusters, {} running tasks in {:.1}s",
        nodes.len(),
        args.tasks,
        args.tasks,
        setup.elapsed().as_secs_f64()
    );

    let lat = Arc::new(Latencies::default());
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for (i, (_, token, _)) in nodes.iter().enumerate() {
        let phase = Duration::from_millis((i as u64 * 10_000) / nodes.len() as u64);
        let (client, base, token, lat, errors, stop) = (
            client.clone(),
            base.clone(),
            token.clone(),
            lat.clone(),
            errors.clone(),
            stop.clone(),
        );
        // Heartbeats and progress reports.
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n = 0u64;
            let mut assigned: Option<i64> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                if n.is_multiple_of(2) {
                    let t0 = Instant::now();
                    let (s, _) = call(
                        &client,
                        reqwest::Method::POST,
                        format!("{base}/api/v1/agent/heartbeat"),
                        &token,
                        Some(json!({"version": "bench", "role": "node", "zone": "z", "peer_id": "p", "address": "a:1",
                                    "disk_total": 1u64 << 40, "disk_free": 1u64 << 39, "peers": 12, "downloads": 1,
                                    "load": 0.4, "ready": true})),
                    )
                    .await;
                    lat.add("heartbeat", t0.elapsed());
                    if s != 204 {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if assigned.is_none() {
                    let (_, w) = call(
                        &client,
                        reqwest::Method::GET,
                        format!("{base}/api/v1/agent/work?wait=0"),
                        &token,
                        None,
                    )
                    .await;
                    assigned = w["assignments"][0]["task_id"].as_i64();
                }
                if let Some(task) = assigned {
                    let t0 = Instant::now();
                    let (s, _) = call(
                        &client,
                        reqwest::Method::POST,
                        format!("{base}/api/v1/agent/progress"),
                        &token,
                        Some(json!({"task_id": task, "state": "running", "blobs_total": 10, "blobs_done": n % 10,
                                    "bytes_total": 1u64 << 30, "bytes_done": n << 20, "bytes_peer": n << 19,
                                    "bytes_upstream": n << 19, "logs": []})),
                    )
                    .await;
                    lat.add("progress", t0.elapsed());
                    if s != 200 {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        }));
    }
    // Long polls held open, as agents do.
    for (_, token, _) in &nodes {
        let (client, base, token, stop) =
            (client.clone(), base.clone(), token.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut have = String::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, w) = call(
                    &client,
                    reqwest::Method::GET,
                    format!("{base}/api/v1/agent/work?wait=30&have={have}"),
                    &token,
                    None,
                )
                .await;
                have = w["assignments"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x["task_id"].as_i64())
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
            }
        }));
    }
    // Console users.
    for u in 0..4 {
        let (client, base, admin, lat, errors, stop) = (
            client.clone(),
            base.clone(),
            admin.clone(),
            lat.clone(),
            errors.clone(),
            stop.clone(),
        );
        let tasks = args.tasks as i64;
        handles.push(tokio::spawn(async move {
            let mut i = u as i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (kind, path) in [
                    ("GET /tasks", "/api/v1/tasks?limit=50".to_string()),
                    (
                        "GET /tasks/{id}",
                        format!("/api/v1/tasks/{}", i % tasks + 1),
                    ),
                    (
                        "GET /nodes",
                        format!("/api/v1/nodes?cluster_id={}", i % tasks + 1),
                    ),
                    ("GET /stats", "/api/v1/stats".to_string()),
                ] {
                    let t0 = Instant::now();
                    let (s, _) = call(
                        &client,
                        reqwest::Method::GET,
                        format!("{base}{path}"),
                        &admin,
                        None,
                    )
                    .await;
                    lat.add(kind, t0.elapsed());
                    if s != 200 {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                i += 1;
            }
        }));
    }
    // Warm-up: one full heartbeat round before measuring.
    tokio::time::sleep(Duration::from_secs(10)).await;
    lat.0.lock().unwrap().clear();
    let (cpu1, _) = cpu_and_rss(manager.child.id());
    let db1 = db_pid.map(tree_cpu);
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let wall = measured.elapsed().as_secs_f64();
    let (cpu2, rss) = cpu_and_rss(manager.child.id());
    let db_cpu = db_pid
        .map(tree_cpu)
        .zip(db1)
        .map(|(b, a)| 100.0 * (b - a) / wall);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "[{backend}] {} nodes, {} running tasks, {:.0}s measured: manager CPU {:.1}% of one core, RSS {:.0} MiB, errors {}",
        nodes.len(),
        args.tasks,
        wall,
        100.0 * (cpu2 - cpu1) / wall,
        rss,
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Some(cpu) = db_cpu {
        println!("[{backend}] PostgreSQL server CPU {cpu:.1}% of one core");
    }
    println!(
        "[{backend}] {:<18} {:>8} {:>9} {:>9} {:>9}",
        "call", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (kind, mut v) in std::mem::take(&mut *lat.0.lock().unwrap()) {
        v.sort_unstable();
        let q = |p: f64| {
            v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0
        };
        println!(
            "[{backend}] {:<18} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            kind,
            v.len(),
            q(0.5),
            q(0.99),
            *v.last().unwrap() as f64 / 1000.0
        );
    }
    for h in handles {
        h.abort();
    }
}

fn main() {
    let args = args();
    shoal::oci::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for backend in args.backends.clone() {
        match backend {
            "sqlite" => rt.block_on(run("sqlite", &args, None, None)),
            _ => {
                if common::postgres::postgres_bin_dir().is_none() {
                    println!("[postgres] skipped: PostgreSQL is not installed");
                    continue;
                }
                let pg = common::postgres::Postgres::start();
                let url = pg.create_database("bench");
                rt.block_on(run("postgres", &args, Some(url), pg.pid()));
            }
        }
    }
}
