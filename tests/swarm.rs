//! Nodes that share a swarm key fetch blobs from each other instead of the upstream; a node with
//! another key is kept out.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Registry, RegistryOpts, ShoalNode, http_request, push_blob, sha256_hex};

fn swarm_key(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("swarm-key")
        .output()
        .unwrap();
    common::check_output("shoal swarm-key", &out);
    std::fs::write(path, out.stdout).unwrap();
}

fn status(node: &ShoalNode) -> serde_json::Value {
    let resp = http_request("GET", &node.admin_url("/status"), &[], &[]).unwrap();
    serde_json::from_slice(&resp.body).unwrap()
}

fn start(registry: &Registry, key: &Path, bootstrap: Option<&str>) -> ShoalNode {
    let upstream = format!("docker.io={}", registry.url());
    let key = key.to_str().unwrap();
    let mut args = vec!["--upstream", &upstream, "--swarm-key", key];
    if let Some(b) = bootstrap {
        args.extend(["--bootstrap", b]);
    }
    ShoalNode::start(&args)
}

fn get(node: &ShoalNode, digest: &str) -> Vec<u8> {
    let url = format!("{}/v2/library/shared/blobs/{digest}", node.url());
    let resp = http_request("GET", &url, &[], &[]).unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.body
}

#[test]
fn peers_serve_each_other_and_outsiders_are_kept_out() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..(24 << 20) as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = push_blob(&registry.url(), "library/shared", &data);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    swarm_key(&key);

    let a = start(&registry, &key, None);
    let a_status = status(&a);
    let a_addr = a_status["listen_addrs"][0].as_str().unwrap().to_owned();
    assert!(a_addr.ends_with(a_status["peer_id"].as_str().unwrap()));
    let b = start(&registry, &key, Some(&a_addr));
    let c = start(&registry, &key, Some(&a_addr));
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            status(&b)["peers"].as_u64() >= Some(1) && status(&c)["peers"].as_u64() >= Some(1)
        }),
        "nodes did not connect"
    );

    // One node (the zone's fetcher for this digest, whichever it is) fetches from the upstream;
    // the others take the blob from peers.
    let nodes = [&a, &b, &c];
    for node in nodes {
        assert_eq!(sha256_hex(&get(node, &digest)), digest);
        // The client has its last byte once the blob is verified; the rename follows.
        let file = node.blob_file(&digest);
        assert!(common::wait_until(Duration::from_secs(5), || file.exists()));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry.blob_gets(&digest),
        1,
        "the upstream sent the blob more than once"
    );
    let total = |name: &str, labels: &[(&str, &str)]| -> f64 {
        nodes.iter().map(|n| n.metric(name, labels)).sum()
    };
    let size = data.len() as f64;
    assert_eq!(
        total("shoal_served_bytes_total", &[("source", "peer")]),
        2.0 * size,
        "{}",
        b.log_tail(30)
    );
    let sent = total("shoal_p2p_sent_bytes_total", &[]);
    assert_eq!(sent, 2.0 * size);
    assert_eq!(total("shoal_p2p_received_bytes_total", &[]), 2.0 * size);

    // A node with another key cannot join, and so goes to the upstream itself.
    let other_key = dir.path().join("other.key");
    swarm_key(&other_key);
    let outsider = start(&registry, &other_key, Some(&a_addr));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&outsider)["peers"], 0);
    assert_eq!(sha256_hex(&get(&outsider, &digest)), digest);
    assert_eq!(
        outsider.metric("shoal_served_bytes_total", &[("source", "peer")]),
        0.0
    );
    assert_eq!(total("shoal_p2p_sent_bytes_total", &[]), sent);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(registry.blob_gets(&digest), 2);
}

#[test]
fn eight_nodes_pulling_at_once_cost_the_upstream_about_one_copy() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..(64 << 20) as u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let digest = push_blob(&registry.url(), "library/shared", &data);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    swarm_key(&key);

    let first = start(&registry, &key, None);
    let addr = status(&first)["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut nodes = vec![first];
    for _ in 1..8 {
        nodes.push(start(&registry, &key, Some(&addr)));
    }
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            nodes.iter().all(|n| status(n)["peers"].as_u64() >= Some(7))
        }),
        "the swarm did not form a mesh: {:?}",
        nodes
            .iter()
            .map(|n| status(n)["peers"].clone())
            .collect::<Vec<_>>()
    );

    let barrier = std::sync::Barrier::new(nodes.len());
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for node in &nodes {
            let (barrier, digest) = (&barrier, &digest);
            s.spawn(move || {
                barrier.wait();
                assert_eq!(
                    sha256_hex(&get(node, digest)),
                    *digest,
                    "{}",
                    node.log_tail(40)
                );
            });
        }
    });
    eprintln!("8 nodes held the blob after {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let sent = registry.blob_bytes_sent(&digest);
    assert!(
        sent as f64 <= 1.1 * data.len() as f64,
        "the upstream sent {sent} bytes for a blob of {}",
        data.len()
    );
    let from_peers: f64 = nodes
        .iter()
        .map(|n| n.metric("shoal_served_bytes_total", &[("source", "peer")]))
        .sum();
    assert!(from_peers >= 6.0 * data.len() as f64, "{from_peers}");
}
