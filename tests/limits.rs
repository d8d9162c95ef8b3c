//! Bandwidth limits hold over real transfers, and a node restarted in the middle of a download
//! from peers resumes from the pieces it had verified.

mod common;

use std::time::{Duration, Instant};

use common::{
    Registry, RegistryOpts, ShoalNode, http_request, push_blob, sha256_hex, write_swarm_key,
};

const MIB: usize = 1 << 20;

fn blob(mib: usize, seed: u32) -> Vec<u8> {
    (0..(mib * MIB) as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
        .collect()
}

fn get(node: &ShoalNode, digest: &str) -> std::io::Result<Vec<u8>> {
    let url = format!("{}/v2/library/limited/blobs/{digest}", node.url());
    let resp = http_request("GET", &url, &[], &[])?;
    assert_eq!(resp.status, 200);
    Ok(resp.body)
}

fn peer_addr(node: &ShoalNode) -> String {
    node.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Seconds a transfer of `bytes` took against what `rate` allows: within 10% either way.
fn assert_rate(elapsed: Duration, bytes: usize, rate: usize) {
    let expected = bytes as f64 / rate as f64;
    let ratio = elapsed.as_secs_f64() / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{bytes} bytes at {rate} B/s took {elapsed:?} ({ratio:.2} of the expected {expected:.1} s)"
    );
}

#[test]
fn the_download_limit_holds_for_upstream_transfers() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data = blob(40, 1);
    let digest = push_blob(&registry.url(), "library/limited", &data);
    let upstream = format!("docker.io={}", registry.url());
    let node = ShoalNode::start(&["--upstream", &upstream, "--download-limit", "4MiB/s"]);
    let start = Instant::now();
    assert_eq!(sha256_hex(&get(&node, &digest).unwrap()), digest);
    assert_rate(start.elapsed(), data.len(), 4 * MIB);
}

#[test]
fn the_upload_limit_holds_and_a_restarted_download_resumes() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data = blob(40, 2);
    let digest = push_blob(&registry.url(), "library/limited", &data);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    write_swarm_key(&key);
    let key = key.to_str().unwrap();
    let upstream = format!("docker.io={}", registry.url());

    // The seed of this test holds the blob and sends at most 4 MiB/s to peers.
    let holder = ShoalNode::start(&[
        "--upstream",
        &upstream,
        "--swarm-key",
        key,
        "--upload-limit",
        "4MiB/s",
    ]);
    // Warm it without a peer in sight, so it fetches from the upstream itself.
    assert_eq!(sha256_hex(&get(&holder, &digest).unwrap()), digest);
    let addr = peer_addr(&holder);

    let start_peer = || {
        ShoalNode::start(&[
            "--upstream",
            &upstream,
            "--swarm-key",
            key,
            "--bootstrap",
            &addr,
        ])
    };
    let wait_connected = |n: &ShoalNode| {
        assert!(common::wait_until(Duration::from_secs(20), || {
            n.status()["peers"].as_u64() >= Some(1)
        }));
    };

    // A whole transfer from the holder runs at its upload limit.
    let first = start_peer();
    wait_connected(&first);
    let start = Instant::now();
    assert_eq!(sha256_hex(&get(&first, &digest).unwrap()), digest);
    assert_rate(start.elapsed(), data.len(), 4 * MIB);
    assert_eq!(
        first.metric("shoal_served_bytes_total", &[("source", "peer")]),
        data.len() as f64
    );
    drop(first);

    // Another peer is killed half way, restarted, and fetches only what it lacked.
    let mut second = start_peer();
    wait_connected(&second);
    let url = format!("{}/v2/library/limited/blobs/{digest}", second.url());
    let client = std::thread::spawn(move || http_request("GET", &url, &[], &[]));
    std::thread::sleep(Duration::from_secs(5));
    second.kill9();
    assert!(
        client.join().unwrap().is_err(),
        "the first client got a whole body"
    );
    second.restart();
    wait_connected(&second);
    assert_eq!(sha256_hex(&get(&second, &digest).unwrap()), digest);
    let refetched = second.metric("shoal_p2p_received_bytes_total", &[]);
    assert!(
        refetched > 0.0 && refetched <= 0.75 * data.len() as f64,
        "after the restart {refetched} of {} bytes were fetched again",
        data.len()
    );
    assert_eq!(registry.blob_gets(&digest), 1);
}

#[test]
fn the_disk_quota_evicts_the_least_recently_used_blobs() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let digests: Vec<String> = (0..3)
        .map(|n| push_blob(&registry.url(), "library/limited", &blob(7, 10 + n)))
        .collect();
    let upstream = format!("docker.io={}", registry.url());
    let node = ShoalNode::start(&["--upstream", &upstream, "--max-disk", "20MiB"]);
    let held = |d: &str| node.blob_file(d).exists();
    for d in &digests {
        assert_eq!(sha256_hex(&get(&node, d).unwrap()), *d);
        let file = node.blob_file(d);
        assert!(common::wait_until(Duration::from_secs(5), || file.exists()));
        std::thread::sleep(Duration::from_millis(50));
    }
    // 21 MiB is over 95% of 20 MiB: the oldest blob went, down to 85%.
    assert!(common::wait_until(Duration::from_secs(5), || !held(
        &digests[0]
    )));
    assert!(held(&digests[1]) && held(&digests[2]));
    let evictions = |n: f64| {
        // Counted just after the file is gone.
        common::wait_until(Duration::from_secs(5), || {
            node.metric("shoal_evictions_total", &[]) == n
        })
    };
    assert!(evictions(1.0));

    // Asked again, it comes back from the upstream, and the next oldest makes room.
    assert_eq!(sha256_hex(&get(&node, &digests[0]).unwrap()), digests[0]);
    assert!(common::wait_until(Duration::from_secs(5), || held(
        &digests[0]
    ) && !held(
        &digests[1]
    )));
    assert!(held(&digests[2]));
    assert!(common::wait_until(Duration::from_secs(5), || registry
        .blob_gets(&digests[0])
        == 2));
    assert!(evictions(2.0));
}
