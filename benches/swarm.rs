//! Swarm benchmark: one real `docker-registry` as the origin and N `shoal node`s, every host in
//! its own network namespace on one bridge, every host's upload and download capped at the same
//! rate B by `tc tbf` (the network's cap, not shoal's limiter). All nodes pull one S-byte blob at
//! once; the run prints the time until all hold it against the Kumar–Ross lower bound
//! max(S/B, N·S/((N+1)·B)), the origin's egress / S and each node's CPU time.
//!
//! Baseline in the same run: the same N clients pulling the blob at once through ONE
//! `docker-registry` in pull-through-cache mode (`proxy.remoteurl`) behind the same cap.
//!
//! With `--zones Z --seeds-per-zone K` the nodes form Z zones, the first K nodes of each a seed;
//! the run then also reports the origin's egress per zone and, when there are seeds, the time of
//! a pull after `shoal preheat --scope seeds` against the cold one.
//!
//! `cargo bench --bench swarm -- [--nodes 16] [--size-mib 256] [--mbit 200] [--zones 1]
//! [--seeds-per-zone 0]` (needs root, iproute2, curl and docker-registry; without them it says
//! so and exits 0).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const REGISTRY_PORT: u16 = 5000;
const REPO: &str = "bench/blob";

struct Args {
    nodes: usize,
    size_mib: u64,
    mbit: u64,
    /// Skip the pull-through baseline (for quick iterations on the swarm alone).
    no_baseline: bool,
    /// Keep each node's log (at this level) in `DIR/node-I.log`.
    log_dir: Option<(PathBuf, String)>,
    /// Print each node's traffic counters after the pull.
    per_node: bool,
    /// Zones the nodes are split into.
    zones: usize,
    /// Seeds in each zone (its first nodes).
    seeds_per_zone: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 16,
        size_mib: 256,
        mbit: 200,
        no_baseline: false,
        log_dir: None,
        per_node: false,
        zones: 1,
        seeds_per_zone: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match argv[i].as_str() {
            "--nodes" => a.nodes = value().expect("--nodes N") as usize,
            "--size-mib" => a.size_mib = value().expect("--size-mib S"),
            "--mbit" => a.mbit = value().expect("--mbit B"),
            "--zones" => a.zones = value().expect("--zones Z") as usize,
            "--seeds-per-zone" => a.seeds_per_zone = value().expect("--seeds-per-zone K") as usize,
            "--no-baseline" => {
                a.no_baseline = true;
                i += 1;
                continue;
            }
            "--per-node" => {
                a.per_node = true;
                i += 1;
                continue;
            }
            "--log-dir" => {
                let dir = argv.get(i + 1).expect("--log-dir DIR LEVEL");
                let level = argv.get(i + 2).expect("--log-dir DIR LEVEL");
                a.log_dir = Some((dir.into(), level.clone()));
                i += 3;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(
        a.nodes >= 1 && a.size_mib >= 1 && a.mbit >= 1 && a.zones >= 1,
        "flags must be >= 1"
    );
    assert!(
        a.zones * a.seeds_per_zone <= a.nodes,
        "more seeds than nodes"
    );
    a
}

/// Runs a command, returning whether it succeeded (its output discarded).
fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// What the benchmark needs from the machine; `Err` says what is missing.
fn preflight() -> Result<(), String> {
    if output(&["id", "-u"]).trim() != "0" {
        return Err("needs root (network namespaces and tc)".into());
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("tc", "-V"),
        ("curl", "--version"),
        ("docker-registry", "--version"),
    ] {
        if !run(&[tool, arg]) {
            return Err(format!("needs `{tool}` on PATH"));
        }
    }
    Ok(())
}

/// A child process killed on drop, its stdout lines collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(cmd: Command) -> Proc {
        Proc::spawn_logging(cmd, Stdio::null())
    }

    fn spawn_logging(mut cmd: Command, stderr: Stdio) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
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

    /// Bytes the process wrote and read through syscalls (`wchar`, `rchar`).
    fn io_chars(&self) -> (u64, u64) {
        let io =
            std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("wchar:"), field("rchar:"))
    }

    /// utime + stime in clock ticks (`ip netns exec` execs its command, so the pid is shoal's).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hosts: a bridge in the root namespace and one namespace per host, each joined to the
/// bridge by a veth pair capped in both directions. Everything is deleted on drop (also when
/// unwinding from a panic).
struct Net {
    bridge: String,
    hosts: usize,
}

impl Net {
    fn ns_name(pid: u32, i: usize) -> String {
        format!("sb-{pid}-{i}")
    }

    fn ns(&self, i: usize) -> String {
        Net::ns_name(std::process::id(), i)
    }

    fn ip(i: usize) -> String {
        format!("10.232.{}.{}", i / 250, i % 250 + 1)
    }

    /// Deletes namespaces (and their bridges) left by an earlier run whose process is gone.
    fn remove_leftovers() {
        for line in output(&["ip", "netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(pid) = name
                .strip_prefix("sb-")
                .and_then(|r| r.split_once('-'))
                .and_then(|(p, _)| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                run(&["ip", "netns", "del", name]);
                run(&["ip", "link", "del", &format!("sbr{}", pid % 10_000)]);
            }
        }
    }

    fn create(hosts: usize, mbit: u64) -> Result<Net, String> {
        Net::remove_leftovers();
        let id = std::process::id() % 10_000;
        let mut net = Net {
            bridge: format!("sbr{id}"),
            hosts: 0,
        };
        run(&["ip", "link", "del", &net.bridge]);
        let step = |args: &[&str]| -> Result<(), String> {
            if run(args) {
                Ok(())
            } else {
                Err(args.join(" "))
            }
        };
        let br = net.bridge.clone();
        step(&["ip", "link", "add", &br, "type", "bridge"])?;
        step(&["ip", "addr", "add", "10.232.255.254/16", "dev", &br])?;
        step(&["ip", "link", "set", &br, "up"])?;
        // The bucket must hold at least one timer tick's worth of bytes at the rate.
        let burst = (256 * 1024).max(mbit * 1_000_000 / 8 / 250).to_string();
        for i in 0..hosts {
            let ns = net.ns(i);
            let (host_if, ns_if) = (format!("sbh{id}-{i}"), format!("sbn{id}-{i}"));
            let addr = format!("{}/16", Net::ip(i));
            let tbf = |dev: &str| {
                format!(
                    "tc qdisc add dev {dev} root tbf rate {mbit}mbit burst {burst} latency 100ms"
                )
            };
            step(&["ip", "netns", "add", &ns])?;
            net.hosts = i + 1;
            step(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ])?;
            step(&["ip", "link", "set", &ns_if, "netns", &ns])?;
            step(&["ip", "link", "set", &host_if, "master", &br])?;
            step(&["ip", "link", "set", &host_if, "up"])?;
            let inns = |args: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(args);
                step(&v)
            };
            inns(&["ip", "addr", "add", &addr, "dev", &ns_if])?;
            inns(&["ip", "link", "set", &ns_if, "up"])?;
            inns(&["ip", "link", "set", "lo", "up"])?;
            // Namespace side: the host's upload. Bridge side: its download.
            inns(&tbf(&ns_if).split(' ').collect::<Vec<_>>())?;
            step(&tbf(&host_if).split(' ').collect::<Vec<_>>())?;
        }
        Ok(net)
    }

    /// A command run inside host `i`'s namespace.
    fn cmd(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i), program]);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a veth end deletes the pair at once (a namespace's devices go asynchronously).
        let id = std::process::id() % 10_000;
        for i in 0..self.hosts {
            run(&["ip", "link", "del", &format!("sbh{id}-{i}")]);
            run(&["ip", "netns", "del", &self.ns(i)]);
        }
        run(&["ip", "link", "del", &self.bridge]);
    }
}

fn wait_tcp(addr: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} did not come up");
}

/// Starts a docker-registry in host `i`'s namespace on 0.0.0.0:5000 (so pushes can use the
/// namespace's uncapped loopback), optionally as a pull-through cache of `proxy`.
fn start_registry(net: &Net, i: usize, dir: &Path, proxy: Option<&str>) -> Proc {
    let storage = dir.join(format!("registry-{i}"));
    let config = dir.join(format!("registry-{i}.yml"));
    let mut yml = format!(
        "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 0.0.0.0:{REGISTRY_PORT}}}\n",
        storage.display()
    );
    if let Some(remote) = proxy {
        yml.push_str(&format!("proxy: {{remoteurl: {remote}}}\n"));
    }
    std::fs::write(&config, yml).unwrap();
    let mut cmd = net.cmd(i, "docker-registry");
    cmd.arg("serve").arg(&config);
    let p = Proc::spawn(cmd);
    wait_tcp(&format!("{}:{REGISTRY_PORT}", Net::ip(i)), 20);
    p
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

/// Pushes the blob with the registry's upload API, from inside the origin's namespace over its
/// loopback (not through the capped link).
fn push(net: &Net, origin: usize, file: &Path, digest: &str) {
    let base = format!("http://127.0.0.1:{REGISTRY_PORT}");
    let out = net
        .cmd(origin, "curl")
        .args(["-s", "-i", "-X", "POST"])
        .arg(format!("{base}/v2/{REPO}/blobs/uploads/"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout);
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("upload start gave no Location:\n{head}"));
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let out = net
        .cmd(origin, "curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", "Content-Type: application/octet-stream", "-T"])
        .arg(file)
        .arg(format!("{location}{sep}digest={digest}"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "upload of {digest}"
    );
}

/// Pushes a one-layer image `REPO:tag` whose layer is the blob `layer` of `size` bytes.
fn push_image(net: &Net, origin: usize, dir: &Path, tag: &str, layer: &str, size: u64) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
    );
    let config_file = dir.join(format!("config-{tag}.json"));
    std::fs::write(&config_file, &config).unwrap();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
    push(net, origin, &config_file, &config_digest);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{size}}}]}}"#,
        config.len()
    );
    let manifest_file = dir.join(format!("manifest-{tag}.json"));
    std::fs::write(&manifest_file, manifest).unwrap();
    let out = net
        .cmd(origin, "curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args([
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", manifest_file.display()))
        .arg(format!(
            "http://127.0.0.1:{REGISTRY_PORT}/v2/{REPO}/manifests/{tag}"
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "manifest {tag}"
    );
}

/// Every client (one per host in `clients`, inside that host's namespace) GETs `url_of(i)` at
/// once. Returns the wall time until all finished and each client's time.
fn pull_all(
    net: &Net,
    clients: &[usize],
    url_of: impl Fn(usize) -> String,
    size: u64,
) -> (f64, Vec<f64>) {
    let t = Instant::now();
    let children: Vec<(usize, Child)> = clients
        .iter()
        .map(|&i| {
            let child = net
                .cmd(i, "curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "3600"])
                .args(["-w", "%{http_code} %{size_download} %{time_total}"])
                .arg(url_of(i))
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl");
            (i, child)
        })
        .collect();
    let mut times = Vec::new();
    for (i, child) in children {
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let f: Vec<&str> = text.split_whitespace().collect();
        assert!(
            f.len() == 3 && f[0] == "200" && f[1].parse::<u64>().ok() == Some(size),
            "client on host {i}: {text:?} (want 200 and {size} bytes)"
        );
        times.push(f[2].parse().unwrap_or(0.0));
    }
    (t.elapsed().as_secs_f64(), times)
}

/// Bytes the registry's access log says it sent for GETs of `digest`, from line `from` on, per
/// client address.
fn egress_by_client(registry: &Proc, digest: &str, from: usize) -> Vec<(String, u64)> {
    std::thread::sleep(Duration::from_millis(500));
    let lines = registry.lines.lock().unwrap();
    let needle = format!("/blobs/{digest}");
    let mut out: Vec<(String, u64)> = Vec::new();
    for line in lines.iter().skip(from) {
        if !(line.contains("\"GET /v2/") && line.contains(&needle)) {
            continue;
        }
        let client = line.split_whitespace().next().unwrap_or("?").to_owned();
        let Some((_, after)) = line.split_once("HTTP/1.1\" ") else {
            continue;
        };
        let mut f = after.split_whitespace();
        let ok = f.next().is_some_and(|s| s.starts_with('2'));
        let bytes = f.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
        if ok {
            match out.iter_mut().find(|(c, _)| *c == client) {
                Some((_, b)) => *b += bytes,
                None => out.push((client, bytes)),
            }
        }
    }
    out
}

/// Bytes the registry's access log says it sent for GETs of `digest`, from line `from` on.
fn egress(registry: &Proc, digest: &str, from: usize) -> (u64, usize) {
    std::thread::sleep(Duration::from_millis(500));
    let lines = registry.lines.lock().unwrap();
    let needle = format!("/blobs/{digest}");
    let mut total = (0, 0);
    for line in lines.iter().skip(from) {
        if !(line.contains("\"GET /v2/") && line.contains(&needle)) {
            continue;
        }
        // combined log: ... "GET /v2/... HTTP/1.1" STATUS BYTES "referer" "agent"
        let Some((_, after)) = line.split_once("HTTP/1.1\" ") else {
            continue;
        };
        let mut f = after.split_whitespace();
        let status = f.next().unwrap_or("");
        let bytes = f.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
        if status.starts_with('2') {
            total.0 += bytes;
            total.1 += 1;
        }
    }
    total
}

/// The body of `GET http://ADMIN/PATH` (empty when it fails).
fn admin_get(admin: &str, path: &str) -> String {
    output(&[
        "curl",
        "-s",
        "--noproxy",
        "*",
        "--max-time",
        "2",
        &format!("http://{admin}{path}"),
    ])
}

fn peers(admin: &str) -> usize {
    let out = admin_get(admin, "/status");
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["peers"].as_u64())
        .unwrap_or(0) as usize
}

/// The sum of the samples of `metric` (any labels) on a node's `/metrics`.
fn metric(admin: &str, metric: &str) -> f64 {
    admin_get(admin, "/metrics")
        .lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn main() {
    let args = parse_args();
    if let Err(why) = preflight() {
        println!("swarm benchmark skipped: {why}");
        return;
    }
    let n = args.nodes;
    let size = args.size_mib << 20;
    let rate = args.mbit as f64 * 1e6 / 8.0; // bytes per second
    let (origin, baseline) = (0, n + 1);
    let work = tempfile::Builder::new()
        .prefix("shoal-swarm-bench-")
        .tempdir()
        .unwrap();

    // Declared first, so it is dropped last: after every process in the namespaces is gone.
    let net = match Net::create(n + 2, args.mbit) {
        Ok(net) => net,
        Err(step) => {
            println!("swarm benchmark skipped: could not set up the network ({step})");
            return;
        }
    };
    println!(
        "{} namespaces on bridge {}, every link {} Mbit/s each way",
        n + 2,
        net.bridge,
        args.mbit
    );

    let registry = start_registry(&net, origin, work.path(), None);
    let origin_url = format!("http://{}:{REGISTRY_PORT}", Net::ip(origin));
    println!("preparing a {} MiB blob …", args.size_mib);
    let (file, digest) = make_blob(work.path(), args.size_mib, 1);
    push(&net, origin, &file, &digest);
    std::fs::remove_file(&file).unwrap();
    let blob_path = format!("/v2/{REPO}/blobs/{digest}");

    // The swarm.
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let key = work.path().join("swarm.key");
    let out = Command::new(shoal).arg("swarm-key").output().unwrap();
    assert!(out.status.success(), "shoal swarm-key");
    std::fs::write(&key, &out.stdout).unwrap();
    let hosts: Vec<usize> = (1..=n).collect();
    // Host i (1..=n) is in zone (i-1)·Z/N; the first K hosts of each zone are its seeds.
    let zone_of = |i: usize| (i - 1) * args.zones / n;
    let is_seed = |i: usize| {
        let first = hosts
            .iter()
            .copied()
            .find(|&h| zone_of(h) == zone_of(i))
            .unwrap();
        i < first + args.seeds_per_zone
    };
    let mut nodes = Vec::new();
    for &i in &hosts {
        let ip = Net::ip(i);
        let mut cmd = net.cmd(i, shoal);
        let (level, stderr) = match &args.log_dir {
            Some((dir, level)) => {
                std::fs::create_dir_all(dir).expect("log dir");
                let file = std::fs::File::create(dir.join(format!("node-{i}.log"))).unwrap();
                (level.as_str(), Stdio::from(file))
            }
            None => ("warn", Stdio::null()),
        };
        cmd.args(["--log", level, "node"])
            .args(["--zone", &format!("z{}", zone_of(i))])
            .args(["--listen", &format!("{ip}:65001")])
            .args(["--admin-listen", &format!("{ip}:65003")])
            .args(["--p2p-listen", &format!("/ip4/{ip}/tcp/65002")])
            .arg("--data-dir")
            .arg(work.path().join(format!("node-{i}")))
            .arg("--swarm-key")
            .arg(&key)
            .args(["--upstream", &format!("docker.io={origin_url}")]);
        if is_seed(i) {
            cmd.arg("--seed");
        }
        if i != 1 {
            cmd.args(["--bootstrap", &format!("/ip4/{}/tcp/65002", Net::ip(1))]);
        }
        nodes.push(Proc::spawn_logging(cmd, stderr));
        wait_tcp(&format!("{ip}:65003"), 20);
    }
    let t = Instant::now();
    loop {
        let least = hosts
            .iter()
            .map(|&i| peers(&format!("{}:65003", Net::ip(i))))
            .min()
            .unwrap_or(0);
        if least + 1 >= n {
            println!(
                "swarm formed in {:.1} s (every node has >= {} peers)",
                t.elapsed().as_secs_f64(),
                n - 1
            );
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            println!(
                "warning: after 60 s some node has only {least} of {} peers",
                n - 1
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    println!("swarm: {n} nodes pull the blob at once …");
    let cpu_before: Vec<u64> = nodes.iter().map(Proc::cpu_ticks).collect();
    let (swarm_secs, swarm_times) = pull_all(
        &net,
        &hosts,
        |i| format!("http://{}:65001{blob_path}", Net::ip(i)),
        size,
    );
    let tick = output(&["getconf", "CLK_TCK"])
        .trim()
        .parse::<f64>()
        .unwrap_or(100.0);
    let cpu: Vec<f64> = nodes
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| p.cpu_ticks().saturating_sub(*before) as f64 / tick)
        .collect();
    let (swarm_egress, swarm_gets) = egress(&registry, &digest, 0);
    if args.per_node {
        let mib = |b: f64| b / f64::from(1u32 << 20);
        println!(
            "node   client s   p2p sent MiB   p2p recv MiB   upstream MiB   CPU s   write MiB    read MiB"
        );
        for (k, &i) in hosts.iter().enumerate() {
            let admin = format!("{}:65003", Net::ip(i));
            let (wchar, rchar) = nodes[k].io_chars();
            println!(
                "{i:>4} {:>10.2} {:>14.1} {:>14.1} {:>14.1} {:>7.2} {:>11.1} {:>11.1}",
                swarm_times[k],
                mib(metric(&admin, "shoal_p2p_sent_bytes_total")),
                mib(metric(&admin, "shoal_p2p_received_bytes_total")),
                mib(metric(
                    &admin,
                    "shoal_served_bytes_total{source=\"upstream\"}"
                )),
                cpu[k],
                mib(wchar as f64),
                mib(rchar as f64),
            );
        }
    }
    if args.zones > 1 || args.seeds_per_zone > 0 {
        let by_client = egress_by_client(&registry, &digest, 0);
        for z in 0..args.zones {
            let bytes: u64 = by_client
                .iter()
                .filter(|(ip, _)| hosts.iter().any(|&h| Net::ip(h) == *ip && zone_of(h) == z))
                .map(|(_, b)| b)
                .sum();
            println!(
                "origin egress to zone z{z}: {:.2} x S",
                bytes as f64 / size as f64
            );
        }
        // The origin sends each zone its copy: Z·S through its link at least.
        let kr = (size as f64 / rate).max(n as f64 * size as f64 / ((n as f64 + 1.0) * rate));
        let zoned = (args.zones as f64 * size as f64 / rate).max(kr);
        println!(
            "bound with one copy per zone max(Z·S/B, Kumar–Ross) {zoned:.2} s: swarm time / it {:.2}x",
            swarm_secs / zoned
        );
    }
    if args.seeds_per_zone > 0 {
        // A second blob, as a one-layer image preheated into the seeds, then pulled by all.
        let (file, warm) = make_blob(work.path(), args.size_mib, 2);
        push(&net, origin, &file, &warm);
        std::fs::remove_file(&file).unwrap();
        push_image(&net, origin, work.path(), "warm", &warm, size);
        let t = Instant::now();
        let out = net
            .cmd(1, shoal)
            .args([
                "preheat",
                &format!("docker.io/{REPO}:warm"),
                "--scope",
                "seeds",
            ])
            .args(["--node", &format!("http://{}:65003", Net::ip(1))])
            .args(["--timeout", "3600"])
            .output()
            .expect("shoal preheat");
        assert!(
            out.status.success(),
            "shoal preheat: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let preheat_secs = t.elapsed().as_secs_f64();
        let (warm_secs, _) = pull_all(
            &net,
            &hosts,
            |i| format!("http://{}:65001/v2/{REPO}/blobs/{warm}", Net::ip(i)),
            size,
        );
        println!(
            "preheat into the seeds took {preheat_secs:.2} s; then all pull in {warm_secs:.2} s, against {swarm_secs:.2} s cold ({:.2}x)",
            swarm_secs / warm_secs
        );
    }
    drop(nodes);
    if args.no_baseline {
        let bound = (size as f64 / rate).max(n as f64 * size as f64 / ((n as f64 + 1.0) * rate));
        println!(
            "swarm: all hold it after {swarm_secs:.2} s, bound {bound:.2} s, ratio {:.2}x, origin egress {:.2} x S",
            swarm_secs / bound,
            swarm_egress as f64 / size as f64
        );
        return;
    }

    // The baseline: one pull-through cache, the same clients.
    println!("baseline: {n} clients pull through one pull-through-cache registry …");
    let mark = registry.lines.lock().unwrap().len();
    let cache = start_registry(&net, baseline, work.path(), Some(&origin_url));
    let (base_secs, base_times) = pull_all(
        &net,
        &hosts,
        |_| format!("http://{}:{REGISTRY_PORT}{blob_path}", Net::ip(baseline)),
        size,
    );
    let (base_egress, base_gets) = egress(&registry, &digest, mark);
    drop(cache);
    drop(registry);

    let s = size as f64;
    let bound = (s / rate).max(n as f64 * s / ((n as f64 + 1.0) * rate));
    let (smin, smed, smax) = stats(&swarm_times);
    let (bmin, bmed, bmax) = stats(&base_times);
    let (cmin, cmed, cmax) = stats(&cpu);
    println!();
    println!(
        "shoal swarm benchmark: N = {n} nodes, S = {} MiB, every host's link capped at B = {} Mbit/s each way (tc tbf)",
        args.size_mib, args.mbit
    );
    println!("{:<46} {:>12} {:>12}  goal", "measure", "value", "");
    let row = |name: &str, value: String, extra: String, goal: &str| {
        println!("{name:<46} {value:>12} {extra:>12}  {goal}")
    };
    row(
        "swarm: time until all hold it",
        format!("{swarm_secs:.2} s"),
        String::new(),
        "",
    );
    row(
        "  client times min / median / max",
        format!("{smin:.2}/{smed:.2}"),
        format!("{smax:.2} s"),
        "",
    );
    row(
        "Kumar–Ross bound max(S/B, NS/((N+1)B))",
        format!("{bound:.2} s"),
        String::new(),
        "",
    );
    row(
        "swarm time / bound",
        format!("{:.2}x", swarm_secs / bound),
        String::new(),
        "<= 1.25x",
    );
    row(
        "swarm origin egress / S",
        format!("{:.2}", swarm_egress as f64 / s),
        format!("{swarm_gets} GETs"),
        "<= 1.05",
    );
    row(
        "node CPU during pull min / median / max",
        format!("{cmin:.2}/{cmed:.2}"),
        format!("{cmax:.2} s"),
        "",
    );
    row(
        "node CPU per GiB received (median)",
        format!("{:.2} s", cmed / (s / (1u64 << 30) as f64)),
        String::new(),
        "",
    );
    row(
        "baseline: pull-through cache, all hold it",
        format!("{base_secs:.2} s"),
        String::new(),
        "",
    );
    row(
        "  client times min / median / max",
        format!("{bmin:.2}/{bmed:.2}"),
        format!("{bmax:.2} s"),
        "",
    );
    row(
        "baseline origin egress / S",
        format!("{:.2}", base_egress as f64 / s),
        format!("{base_gets} GETs"),
        "",
    );
    row(
        "speedup of shoal over the baseline",
        format!("{:.2}x", base_secs / swarm_secs),
        String::new(),
        ">= 10x",
    );
    drop(net);
}
