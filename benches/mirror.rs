//! Mirror benchmark: a real `docker-registry` (filesystem storage) as the upstream and a
//! `shoal node` in front of it, measured side by side in one run.
//!
//! - cached blob: throughput through the node (served from its store) vs straight from the
//!   registry, and the node's peak RSS during those transfers and when idle;
//! - cold blob: time through the node (first request) vs straight from the registry;
//! - N concurrent requests for one cold blob: how many times the upstream sent it.
//!
//! The cold comparison runs twice: with the registry on loopback (bound by CPU and disk on a
//! small machine, since registry, node and client share it), and with the registry in a network
//! namespace behind a veth link capped by `tc tbf` (as a registry elsewhere on the network is;
//! needs root).
//!
//! `cargo bench --bench mirror -- [--size-mib 1024] [--rounds 3] [--concurrent 500]
//! [--concurrent-size-mib 64] [--upstream-mbit 1000]`

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

struct Args {
    size_mib: u64,
    rounds: usize,
    concurrent: usize,
    concurrent_size_mib: u64,
    upstream_mbit: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        size_mib: 1024,
        rounds: 3,
        concurrent: 500,
        concurrent_size_mib: 64,
        upstream_mbit: 1000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse().ok());
        match argv[i].as_str() {
            "--size-mib" => a.size_mib = value().expect("--size-mib N"),
            "--rounds" => a.rounds = value().expect("--rounds N") as usize,
            "--concurrent" => a.concurrent = value().expect("--concurrent N") as usize,
            "--upstream-mbit" => a.upstream_mbit = value().expect("--upstream-mbit N"),
            "--concurrent-size-mib" => {
                a.concurrent_size_mib = value().expect("--concurrent-size-mib N")
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop, its stdout lines collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(url) {
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not come up");
}

fn start_registry(dir: &Path, storage: &Path, ip: &str, netns: Option<&str>) -> (Proc, String) {
    let port = free_port();
    let config = dir.join(format!("registry-{port}.yml"));
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {ip}:{port}}}\n",
            storage.display()
        ),
    )
    .unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "docker-registry"]);
            c
        }
        None => Command::new("docker-registry"),
    };
    cmd.arg("serve").arg(&config);
    let p = Proc::spawn(cmd);
    wait_http(&format!("{ip}:{port}"));
    (p, format!("http://{ip}:{port}"))
}

/// A network namespace joined to this one by a veth pair whose both directions are capped by
/// `tc tbf` at `mbit`: the upstream's link. Deleted on drop.
struct CappedLink {
    ns: String,
}

impl CappedLink {
    const NS_IP: &str = "10.231.7.2";

    fn create(mbit: u64) -> Option<CappedLink> {
        let id = std::process::id() % 100_000;
        let (ns, host_if, ns_if) = (
            format!("shoal-bench-{id}"),
            format!("sbh{id}"),
            format!("sbn{id}"),
        );
        let rate = format!("{mbit}mbit");
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &ns],
            vec![
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["ip", "link", "set", &ns_if, "netns", &ns],
            vec!["ip", "addr", "add", "10.231.7.1/30", "dev", &host_if],
            vec!["ip", "link", "set", &host_if, "up"],
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                "10.231.7.2/30",
                "dev",
                &ns_if,
            ],
            vec![
                "ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up",
            ],
            vec!["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
            vec![
                "tc", "qdisc", "add", "dev", &host_if, "root", "tbf", "rate", &rate, "burst",
                "4mb", "latency", "50ms",
            ],
            vec![
                "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &ns_if, "root", "tbf",
                "rate", &rate, "burst", "4mb", "latency", "50ms",
            ],
        ];
        let link = CappedLink { ns: ns.clone() };
        for step in steps {
            let ok = Command::new(step[0])
                .args(&step[1..])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "capped upstream link unavailable ({}); skipping that part",
                    step.join(" ")
                );
                return None;
            }
        }
        Some(link)
    }
}

impl Drop for CappedLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Alternating rounds: a direct GET from the registry, then a GET through a fresh node (empty
/// store). Returns the median seconds of each and the last node.
async fn cold_rounds(
    client: &reqwest::Client,
    work: &Path,
    registry_url: &str,
    path: &str,
    bytes: u64,
    rounds: usize,
    label: &str,
) -> (f64, f64, (Proc, String)) {
    let (mut via_node, mut direct) = (Vec::new(), Vec::new());
    let mut node: Option<(Proc, String)> = None;
    for round in 0..rounds {
        direct.push(fetch(client, &format!("{registry_url}{path}")).await.0);
        drop(node.take());
        let started = start_node(&work.join(format!("node-{label}-{round}")), registry_url);
        let (secs, n) = fetch(client, &format!("{}{path}", started.1)).await;
        assert_eq!(n, bytes);
        via_node.push(secs);
        node = Some(started);
    }
    (
        median(via_node),
        median(direct),
        node.expect("at least one round"),
    )
}

fn start_node(dir: &Path, upstream: &str) -> (Proc, String) {
    let (port, admin) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["--log", "warn", "node"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--upstream", &format!("docker.io={upstream}")]);
    let p = Proc::spawn(cmd);
    wait_http(&format!("127.0.0.1:{admin}"));
    (p, format!("http://127.0.0.1:{port}"))
}

/// Writes `mib` MiB of pseudo-random bytes and returns the file and its digest.
fn make_blob(dir: &Path, mib: u64, seed: u64) -> (PathBuf, String) {
    let path = dir.join(format!("blob-{seed}"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_mut(8) {
            // xorshift64: fast, incompressible enough for a registry that does not compress.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    (path, format!("sha256:{}", hex::encode(hasher.finalize())))
}

async fn push(client: &reqwest::Client, registry: &str, repo: &str, file: &Path, digest: &str) {
    let start = client
        .post(format!("{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202, "upload start");
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let len = std::fs::metadata(file).unwrap().len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::open(file).await.unwrap(),
        1 << 20,
    ));
    let done = client
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201, "upload of {digest}");
}

/// GETs `url`, discards the body, and returns (seconds, bytes).
async fn fetch(client: &reqwest::Client, url: &str) -> (f64, u64) {
    let t = Instant::now();
    let mut resp = client.get(url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        n += chunk.len() as u64;
    }
    (t.elapsed().as_secs_f64(), n)
}

/// Samples the node's RSS every 10 ms while `f` runs; returns f's result and the peak (KiB).
async fn with_peak_rss<T>(node: &Proc, f: impl std::future::Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(Mutex::new(node.rss_kib()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = node.child.id();
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kib);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = f.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let p = *peak.lock().unwrap();
    (out, p)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn blob_gets(registry: &Proc, digest: &str) -> usize {
    std::thread::sleep(Duration::from_millis(500));
    registry
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
        .count()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    shoal::oci::install_crypto_provider();
    let work = tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir()
        .unwrap();
    let storage = work.path().join("registry-data");
    let (registry, registry_url) = start_registry(work.path(), &storage, "127.0.0.1", None);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mib = |b: u64, s: f64| b as f64 / s / (1024.0 * 1024.0);

    println!("preparing a {} MiB blob …", args.size_mib);
    let (file, digest) = make_blob(work.path(), args.size_mib, 1);
    push(&client, &registry_url, "bench/big", &file, &digest).await;
    std::fs::remove_file(&file).unwrap();
    let direct_url = format!("{registry_url}/v2/bench/big/blobs/{digest}");

    // Idle footprint of a freshly started node.
    let fresh_idle_kib = {
        let (fresh, _) = start_node(&work.path().join("node-idle"), &registry_url);
        std::thread::sleep(Duration::from_millis(300));
        fresh.rss_kib()
    };

    // Cold, over loopback: CPU and disk bound on a small machine.
    let blob_path = format!("/v2/bench/big/blobs/{digest}");
    let size = args.size_mib << 20;
    let (kn, kd, (node, node_url)) = cold_rounds(
        &client,
        work.path(),
        &registry_url,
        &blob_path,
        size,
        args.rounds,
        "loopback",
    )
    .await;

    // Cold, with the upstream behind a capped link (as a registry in another network is).
    let capped = match CappedLink::create(args.upstream_mbit) {
        Some(link) => {
            let (registry, url) =
                start_registry(work.path(), &storage, CappedLink::NS_IP, Some(&link.ns));
            let (n, d, _) = cold_rounds(
                &client,
                work.path(),
                &url,
                &blob_path,
                size,
                args.rounds,
                "capped",
            )
            .await;
            drop(registry);
            Some((n, d))
        }
        None => None,
    };

    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = node.rss_kib();

    // Cached: the same node now serves from its store.
    let cached_url = format!("{node_url}/v2/bench/big/blobs/{digest}");
    let (mut cached_node, mut cached_direct) = (Vec::new(), Vec::new());
    let mut peak_kib = 0;
    for _ in 0..args.rounds {
        cached_direct.push(fetch(&client, &direct_url).await.0);
        let ((secs, n), peak) = with_peak_rss(&node, fetch(&client, &cached_url)).await;
        assert_eq!(n, args.size_mib << 20);
        cached_node.push(secs);
        peak_kib = peak_kib.max(peak);
    }

    // Many concurrent requests for one cold blob.
    let (file, small) = make_blob(work.path(), args.concurrent_size_mib, 2);
    push(&client, &registry_url, "bench/hot", &file, &small).await;
    let many = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrent)
        .build()
        .unwrap();
    let hot_url = format!("{node_url}/v2/bench/hot/blobs/{small}");
    let t = Instant::now();
    let tasks: Vec<_> = (0..args.concurrent)
        .map(|_| {
            let (c, u) = (many.clone(), hot_url.clone());
            tokio::spawn(async move { fetch(&c, &u).await.1 })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), args.concurrent_size_mib << 20);
    }
    let concurrent_secs = t.elapsed().as_secs_f64();
    let upstream_fetches = blob_gets(&registry, &small);

    let (cn, cd) = (median(cached_node), median(cached_direct));
    println!();
    println!(
        "shoal mirror benchmark ({} MiB blob, median of {} rounds)",
        args.size_mib, args.rounds
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}  goal",
        "measure", "shoal node", "registry", "ratio"
    );
    println!(
        "{:<44} {:>8.0} MiB/s {:>6.0} MiB/s {:>7.2}x  >= 1.5x",
        "cached blob throughput",
        mib(size, cn),
        mib(size, cd),
        cd / cn
    );
    println!(
        "{:<44} {:>10.2} s {:>10.2} s {:>7.2}x  <= 1.1x",
        "cold blob time, upstream on loopback",
        kn,
        kd,
        kn / kd
    );
    match capped {
        Some((n, d)) => println!(
            "{:<44} {:>10.2} s {:>10.2} s {:>7.2}x  <= 1.1x",
            format!(
                "cold blob time, upstream link {} Mbit/s",
                args.upstream_mbit
            ),
            n,
            d,
            n / d
        ),
        None => {
            println!("cold blob time, capped upstream link: not measured (needs root and iproute2)")
        }
    }
    println!(
        "{:<44} {:>8.1} MiB {:>12} {:>8}  <= 64 MiB",
        "node peak RSS while serving",
        peak_kib as f64 / 1024.0,
        "",
        ""
    );
    println!(
        "{:<44} {:>8.1} MiB {:>12} {:>8}  <= 40 MiB",
        "node idle RSS (freshly started)",
        fresh_idle_kib as f64 / 1024.0,
        "",
        ""
    );
    println!(
        "{:<44} {:>8.1} MiB {:>12} {:>8}  <= 40 MiB",
        "node idle RSS (after transfers)",
        idle_kib as f64 / 1024.0,
        "",
        ""
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}  == 1",
        format!("upstream fetches, {} concurrent cold GETs", args.concurrent),
        upstream_fetches,
        "",
        ""
    );
    println!(
        "{:<44} {:>10.2} s",
        format!(
            "  ({} x {} MiB delivered in)",
            args.concurrent, args.concurrent_size_mib
        ),
        concurrent_secs
    );
}
