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

    // The first node fetches from the upstream; the others from it (and each other).
    assert_eq!(sha256_hex(&get(&a, &digest)), digest);
    std::thread::sleep(Duration::from_millis(500));
    for node in [&b, &c] {
        assert_eq!(sha256_hex(&get(node, &digest)), digest);
        assert!(node.blob_file(&digest).exists());
        assert_eq!(
            node.metric("shoal_served_bytes_total", &[("source", "peer")]),
            data.len() as f64,
            "{}",
            node.log_tail(30)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry.blob_gets(&digest),
        1,
        "the upstream sent the blob more than once"
    );
    let sent =
        a.metric("shoal_p2p_sent_bytes_total", &[]) + b.metric("shoal_p2p_sent_bytes_total", &[]);
    assert_eq!(sent, 2.0 * data.len() as f64);

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
    assert_eq!(
        a.metric("shoal_p2p_sent_bytes_total", &[]) + b.metric("shoal_p2p_sent_bytes_total", &[]),
        sent
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(registry.blob_gets(&digest), 2);
}
