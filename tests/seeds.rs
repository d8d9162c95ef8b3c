//! Seeds, zones, preheat and the source chain under faults: a real `docker-registry` as the
//! upstream (and as the standby mirror), `shoal node`s on loopback.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::peer::{FakePeer, Pieces, member_config};
use common::{
    Containerd, Registry, RegistryOpts, ShoalNode, TestImage, http_request, make_image, push_blob,
    push_image, sha256_hex, write_swarm_key,
};

const MIB: usize = 1024 * 1024;

fn get_blob(node: &ShoalNode, repo: &str, digest: &str) -> Vec<u8> {
    let url = format!("{}/v2/{repo}/blobs/{digest}", node.url());
    let resp = http_request("GET", &url, &[], &[]).unwrap();
    assert_eq!(
        resp.status,
        200,
        "{digest}: {}\n{}",
        String::from_utf8_lossy(&resp.body),
        node.log_tail(30)
    );
    resp.body
}

/// Every node pulls the image (manifest by tag, then every blob) at once.
fn pull_everywhere(nodes: &[ShoalNode], image: &TestImage, repo: &str, tag: &str) {
    std::thread::scope(|s| {
        for node in nodes {
            s.spawn(move || {
                let url = format!("{}/v2/{repo}/manifests/{tag}", node.url());
                let accept = "application/vnd.oci.image.manifest.v1+json";
                let m = http_request("GET", &url, &[("Accept", accept)], &[]).unwrap();
                assert_eq!(m.status, 200, "{}", String::from_utf8_lossy(&m.body));
                assert_eq!(sha256_hex(&m.body), image.manifests[0].digest);
                for (digest, _) in image.blobs() {
                    assert_eq!(sha256_hex(&get_blob(node, repo, &digest)), digest);
                }
            });
        }
    });
}

#[test]
fn two_zones_pull_at_once_and_the_upstream_sends_one_copy_per_zone() {
    if !common::tools(&["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[6 * MIB, 3 * MIB], &[]);
    push_image(&image, &registry, "library/app", "v1", None);
    let upstream = format!("docker.io={}", registry.url());
    let mut members = Vec::new();
    for zone in ["a", "b"] {
        members.extend([(zone, true), (zone, true)]);
        members.extend([(zone, false); 4]);
    }
    let cluster = Cluster::start(&upstream, &members, &[]);

    pull_everywhere(&cluster.nodes, &image, "library/app", "v1");

    std::thread::sleep(Duration::from_millis(500));
    let blobs = image.blobs();
    let size: u64 = blobs.iter().map(|(_, s)| s).sum();
    let egress: u64 = blobs.iter().map(|(d, _)| registry.blob_bytes_sent(d)).sum();
    assert!(
        egress as f64 <= 2.2 * size as f64,
        "the upstream sent {egress} bytes for a {size}-byte image to 2 zones"
    );
    for (d, _) in &blobs {
        assert!(
            registry.blob_gets(d) <= 2,
            "{d}: {} GETs",
            registry.blob_gets(d)
        );
    }
    // Pieces stay in their zone: what a zone's nodes received from peers, they sent.
    for zone in ["a", "b"] {
        let sent = cluster.zone_total(zone, "shoal_p2p_sent_bytes_total");
        let received = cluster.zone_total(zone, "shoal_p2p_received_bytes_total");
        assert_eq!(sent, received, "zone {zone}");
        assert!(
            received >= (4 * size) as f64,
            "zone {zone} received {received}"
        );
    }
    // Only seeds fetched from the upstream: the other nodes' blobs came from peers.
    for (node, (_, seed)) in cluster.nodes.iter().zip(&members) {
        if !seed {
            assert_eq!(
                node.metric("shoal_served_bytes_total", &[("source", "peer")]),
                size as f64,
                "{}",
                node.log_tail(20)
            );
        }
    }
}

#[test]
fn the_other_seed_takes_over_when_the_serving_seed_dies() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..(40 * MIB) as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let digest = push_blob(&registry.url(), "library/shared", &data);
    let upstream = format!("docker.io={}", registry.url());
    let members = [
        ("z", true),
        ("z", true),
        ("z", false),
        ("z", false),
        ("z", false),
    ];
    // Slow seeds, so that the transfer is still running when one dies.
    let mut cluster = Cluster::start(&upstream, &members, &["--upload-limit", "6MiB/s"]);
    let mut seeds: Vec<ShoalNode> = cluster.nodes.drain(..2).collect();
    let nodes = &cluster.nodes;

    let bodies = std::thread::scope(|s| {
        let pulls: Vec<_> = nodes
            .iter()
            .map(|node| s.spawn(|| get_blob(node, "library/shared", &digest)))
            .collect();
        let started = common::wait_until(Duration::from_secs(30), || {
            nodes
                .iter()
                .map(|n| n.metric("shoal_p2p_received_bytes_total", &[]))
                .sum::<f64>()
                >= (8 * MIB) as f64
        });
        assert!(started, "no pieces moved");
        // The seed that fetched for the zone is the one sending pieces: kill it.
        let serving = seeds
            .iter()
            .position(|n| n.metric("shoal_p2p_sent_bytes_total", &[]) > 0.0)
            .expect("a seed serves the zone");
        seeds[serving].kill9();
        pulls
            .into_iter()
            .map(|p| p.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (node, body) in nodes.iter().zip(&bodies) {
        assert_eq!(sha256_hex(body), digest);
        // Verified pieces were kept: every byte came from peers, once.
        assert_eq!(
            node.metric("shoal_p2p_received_bytes_total", &[]),
            data.len() as f64,
            "{}",
            node.log_tail(30)
        );
    }
    // The dead seed and the one that took over each fetched it once.
    assert!(
        registry.blob_gets(&digest) <= 2,
        "{}",
        registry.blob_gets(&digest)
    );
}

#[test]
fn after_a_zone_preheat_the_zone_pulls_with_the_upstream_down() {
    if !common::tools(&["docker-registry", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(
        &work.path().join("layout"),
        &[3 * MIB, 2 * MIB],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "library/app", "v1", None);
    let upstream = format!("docker.io={}", registry.url());
    let members = [("z", true), ("z", false), ("z", false), ("other", false)];
    let cluster = Cluster::start(&upstream, &members, &[]);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "preheat",
            "app:v1",
            "--scope",
            "zone",
            "--platform",
            "linux/amd64",
        ])
        .args(["--node", &cluster.nodes[1].admin_url("")])
        .args(["--timeout", "120"])
        .output()
        .unwrap();
    common::check_output("shoal preheat", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done: 3 node(s)"), "{stdout}");
    let amd64 = image.manifest_for("linux", "amd64");
    for (node, zone) in cluster.nodes.iter().zip(&cluster.zones) {
        for layer in &amd64.layers {
            let held = node.blob_file(&layer.digest).exists();
            assert_eq!(
                held,
                zone == "z",
                "{} on a node of zone {zone}",
                layer.digest
            );
        }
        // The other platform was not asked for.
        for layer in &image.manifest_for("linux", "arm64").layers {
            assert!(!node.blob_file(&layer.digest).exists());
        }
    }
    for layer in &amd64.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", layer.digest);
    }

    registry.stop();
    let reference = "docker.io/library/app:v1";
    for (i, node) in cluster.nodes[..3].iter().enumerate() {
        let hosts = work.path().join(format!("hosts-{i}"));
        common::write_hosts_toml(&hosts, "docker.io", &registry.url(), &node.url());
        let containerd = Containerd::start();
        common::check_output(
            &format!("ctr pull through node {i}"),
            &containerd.pull(reference, &hosts, None),
        );
        containerd
            .check_layers_unpacked(reference, &amd64.layers)
            .unwrap();
    }
}

#[test]
fn the_standby_mirror_serves_when_the_upstream_is_down() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let standby = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..(9 * MIB) as u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 9) as u8)
        .collect();
    let digest = push_blob(&standby.url(), "library/shared", &data);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let upstream = format!("docker.io={dead}");
    let fallback = format!("docker.io={}", standby.url());
    let cluster = Cluster::start(
        &upstream,
        &[("z", true), ("z", false)],
        &["--fallback", &fallback],
    );
    let node = &cluster.nodes[1];
    assert_eq!(
        sha256_hex(&get_blob(node, "library/shared", &digest)),
        digest
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        standby.blob_gets(&digest),
        1,
        "the seed fetched it once for the zone"
    );
    assert_eq!(
        node.metric("shoal_served_bytes_total", &[("source", "peer")]),
        data.len() as f64
    );

    // Nothing holds this one, and both the upstream and the standby are down.
    let missing = sha256_hex(b"nowhere");
    let dead_fallback = format!("docker.io=http://127.0.0.1:{}", common::free_port());
    let lonely = Cluster::start(
        &upstream,
        &[("y", true), ("y", false)],
        &["--fallback", &dead_fallback],
    );
    for node in &lonely.nodes {
        let url = format!("{}/v2/library/shared/blobs/{missing}", node.url());
        let t = Instant::now();
        let resp = http_request("GET", &url, &[], &[]).unwrap();
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(resp.status == 502 || resp.status == 503, "{}", resp.status);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
        let health = http_request("GET", &node.admin_url("/healthz"), &[], &[]).unwrap();
        assert_eq!(health.status, 200);
    }
}

#[test]
fn bad_preheat_input_is_refused_and_leaves_nothing() {
    if !common::tools(&["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(
        &work.path().join("layout"),
        &[MIB],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "library/app", "v1", None);
    let private = Registry::start(RegistryOpts {
        htpasswd: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    push_image(
        &image,
        &private,
        "team/app",
        "v1",
        Some(("alice", "s3cret")),
    );
    let config = work.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\n\"docker.io\" = \"{}\"\n\"{}\" = \"{}\"\n\"unreachable.example:5000\" = \"http://127.0.0.1:{}\"\n[credentials.\"{}\"]\nusername = \"alice\"\npassword = \"wrong\"\n",
            registry.url(),
            private.host(),
            private.url(),
            common::free_port(),
            private.host(),
        ),
    )
    .unwrap();
    let node = ShoalNode::start(&["--config", config.to_str().unwrap(), "--seed"]);
    let preheat = |image: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["preheat", image, "--node", &node.admin_url("")])
            .args(extra)
            .output()
            .unwrap()
    };
    for (image, extra, want) in [
        ("app:nope", &[][..], "unknown"),
        ("UPPER/case:v1", &[][..], "invalid"),
        ("app:v1", &["--scope", "everywhere"][..], "scope"),
        ("app:v1", &["--platform", "linux"][..], "platform"),
        (
            "app:v1",
            &["--platform", "windows/amd64"][..],
            "windows/amd64",
        ),
        ("unreachable.example:5000/app:v1", &[][..], "unreachable"),
        (
            &format!("{}/team/app:v1", private.host()),
            &[][..],
            "authentication required",
        ),
    ] {
        let out = preheat(image, extra);
        assert_eq!(out.status.code(), Some(2), "{image} {extra:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains(want), "{image} {extra:?}: {err}");
    }
    // Malformed bodies on the admin API: the error envelope, a 4xx status.
    for body in [
        &b"{not json"[..],
        br#"{"image":"app:v1","colour":"red"}"#,
        br#"{"scope":"zone"}"#,
    ] {
        let resp = http_request(
            "POST",
            &node.admin_url("/api/v1/preheat"),
            &[("Content-Type", "application/json")],
            body,
        )
        .unwrap();
        assert!((400..500).contains(&resp.status), "{}", resp.status);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert!(v["errors"][0]["message"].is_string(), "{v}");
    }
    // Nothing was fetched or left behind.
    let blobs = node.data_dir().join("blobs/sha256");
    let held = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(held, 0, "blobs were stored");
    let list = http_request("GET", &node.admin_url("/api/v1/preheat"), &[], &[]).unwrap();
    assert_eq!(list.body, b"[]");
    assert!(node.status()["downloads"].as_array().unwrap().is_empty());

    // And a good order on the same node works.
    let out = preheat("app:v1", &[]);
    common::check_output("shoal preheat app:v1", &out);
    for (digest, _) in image.blobs() {
        assert!(node.blob_file(&digest).exists(), "{digest}");
    }

    // A private image preheats with the node's configured credentials.
    std::fs::write(
        &config,
        format!(
            "[upstream]\n\"{}\" = \"{}\"\n[credentials.\"{}\"]\nusername = \"alice\"\npassword = \"s3cret\"\n",
            private.host(),
            private.url(),
            private.host(),
        ),
    )
    .unwrap();
    let trusted = ShoalNode::start(&["--config", config.to_str().unwrap(), "--seed"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["preheat", &format!("{}/team/app:v1", private.host())])
        .args(["--node", &trusted.admin_url("")])
        .output()
        .unwrap();
    common::check_output("shoal preheat of a private image", &out);
    for (digest, _) in image.blobs() {
        assert!(trusted.blob_file(&digest).exists(), "{digest}");
    }
}

/// The honest map of `data`: 4 MiB pieces, all held.
fn full_map(digest: &str, data: &[u8]) -> shoal::p2p::PieceMap {
    use sha2::Digest as _;
    let piece = 4 * MIB;
    let hashes: Vec<Vec<u8>> = data
        .chunks(piece)
        .map(|c| sha2::Sha256::digest(c).to_vec())
        .collect();
    shoal::p2p::PieceMap {
        digest: digest.into(),
        size: data.len() as u64,
        piece_size: piece as u32,
        have: vec![0xff; hashes.len().div_ceil(8)],
        hashes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_peer_delays_a_pull_by_at_most_the_stall_deadline() {
    if !common::require_tool("docker-registry") {
        return;
    }
    const STALL_SECS: u64 = 2;
    let (registry, data, digest, dir, node) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start(RegistryOpts::default());
        let data: Vec<u8> = (0..(16 * MIB) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 3) as u8)
            .collect();
        let digest = push_blob(&registry.url(), "library/shared", &data);
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("swarm.key");
        write_swarm_key(&key);
        let upstream = format!("docker.io={}", registry.url());
        let node = ShoalNode::start(&[
            "--upstream",
            &upstream,
            "--swarm-key",
            key.to_str().unwrap(),
            "--stall-timeout",
            &STALL_SECS.to_string(),
        ]);
        (registry, data, digest, dir, node)
    })
    .await
    .unwrap();
    let node_addr: shoal::p2p::Multiaddr = node.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let maps = [(digest.clone(), full_map(&digest, &data))].into();
    let staller = shoal::p2p::P2p::start(
        member_config(
            &dir.path().join("swarm.key"),
            node_addr,
            Duration::from_secs(60),
        ),
        std::sync::Arc::new(FakePeer {
            maps,
            pieces: Pieces::Never,
        }),
    )
    .await
    .unwrap();
    staller.provide(&digest.parse().unwrap()).await;
    let node = std::sync::Arc::new(node);
    let joined = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            common::wait_until(Duration::from_secs(20), || {
                node.status()["peers_by_zone"]["default"].as_u64() == Some(1)
            })
        })
        .await
        .unwrap()
    };
    assert!(joined, "the stalling peer did not join");

    let (body, elapsed) = {
        let node = node.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let body = get_blob(&node, "library/shared", &digest);
            (body, t.elapsed())
        })
        .await
        .unwrap()
    };
    assert_eq!(sha256_hex(&body), digest);
    // The stalling peer was asked (the pull waited for its deadline), and no longer than that.
    assert!(
        elapsed >= Duration::from_secs(STALL_SECS) && elapsed < Duration::from_secs(STALL_SECS + 3),
        "the pull took {elapsed:?} with a {STALL_SECS} s stall deadline\n{}",
        node.log_tail(30)
    );
    // It was asked (and gave nothing); the upstream served the blob.
    assert_eq!(
        node.metric("shoal_served_bytes_total", &[("source", "peer")]),
        0.0
    );
    assert_eq!(registry.blob_gets(&digest), 1);
    drop(staller);
}

#[test]
fn with_zone_peering_a_blob_enters_the_cluster_once() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..(12 * MIB) as u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 5) as u8)
        .collect();
    let digest = push_blob(&registry.url(), "library/shared", &data);
    let upstream = format!("docker.io={}", registry.url());
    let members = [("a", true), ("a", false), ("b", true), ("b", false)];
    let cluster = Cluster::start(&upstream, &members, &["--zone-peering"]);
    std::thread::scope(|s| {
        for node in &cluster.nodes {
            s.spawn(|| {
                assert_eq!(
                    sha256_hex(&get_blob(node, "library/shared", &digest)),
                    digest
                )
            });
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry.blob_gets(&digest),
        1,
        "one seed fetched for both zones"
    );
    // Across zones, only the seeds traded: each zone's node got everything from its own zone.
    for (node, (_, seed)) in cluster.nodes.iter().zip(&members) {
        let from_peers = node.metric("shoal_p2p_received_bytes_total", &[]);
        if !seed {
            assert_eq!(from_peers, data.len() as f64);
        }
    }
    let seeds_received: f64 = [0, 2]
        .iter()
        .map(|&i| cluster.nodes[i].metric("shoal_p2p_received_bytes_total", &[]))
        .sum();
    assert_eq!(
        seeds_received,
        data.len() as f64,
        "one seed took it from the other"
    );
}
