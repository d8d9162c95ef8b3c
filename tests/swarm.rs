//! Nodes that share a swarm key fetch blobs from each other instead of the upstream; a node with
//! another key is kept out.

mod common;

use std::path::Path;
use std::time::Duration;

use common::peer::{FakePeer, Pieces, member_config};
use common::{
    Registry, RegistryOpts, ShoalNode, http_request, push_blob, sha256_hex, write_swarm_key,
};

fn start(registry: &Registry, key: &Path, bootstrap: Option<&str>) -> ShoalNode {
    start_at(&registry.url(), key, bootstrap)
}

fn start_at(registry_url: &str, key: &Path, bootstrap: Option<&str>) -> ShoalNode {
    let upstream = format!("docker.io={registry_url}");
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

/// A registry holding one blob of pseudo-random bytes, and a swarm key.
struct Fixture {
    registry: Registry,
    data: Vec<u8>,
    digest: String,
    key: std::path::PathBuf,
    dir: tempfile::TempDir,
}

/// `len` bytes made from `mul` and `shift`, pushed to a fresh registry.
fn fixture(len: u32, mul: u32, shift: u32) -> Fixture {
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(mul) >> shift) as u8)
        .collect();
    let digest = push_blob(&registry.url(), "library/shared", &data);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    write_swarm_key(&key);
    Fixture {
        registry,
        data,
        digest,
        key,
        dir,
    }
}

#[test]
fn peers_serve_each_other_and_outsiders_are_kept_out() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let Fixture {
        registry,
        data,
        digest,
        key,
        dir,
    } = fixture(24 << 20, 2654435761, 13);

    let a = start(&registry, &key, None);
    let a_status = a.status();
    let a_addr = a_status["listen_addrs"][0].as_str().unwrap().to_owned();
    assert!(a_addr.ends_with(a_status["peer_id"].as_str().unwrap()));
    let b = start(&registry, &key, Some(&a_addr));
    let c = start(&registry, &key, Some(&a_addr));
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            b.status()["peers"].as_u64() >= Some(1) && c.status()["peers"].as_u64() >= Some(1)
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
    assert!(
        nodes
            .iter()
            .all(|n| n.metric("shoal_peers_connected", &[]) >= 1.0)
    );
    assert_eq!(total("shoal_p2p_received_bytes_total", &[]), 2.0 * size);

    // A node with another key cannot join, and so goes to the upstream itself.
    let other_key = dir.path().join("other.key");
    write_swarm_key(&other_key);
    let outsider = start(&registry, &other_key, Some(&a_addr));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(outsider.status()["peers"], 0);
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
    let Fixture {
        registry,
        data,
        digest,
        key,
        dir: _dir,
    } = fixture(64 << 20, 2246822519, 11);

    let first = start(&registry, &key, None);
    let addr = first.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut nodes = vec![first];
    for _ in 1..8 {
        nodes.push(start(&registry, &key, Some(&addr)));
    }
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            nodes
                .iter()
                .all(|n| n.status()["peers"].as_u64() >= Some(7))
        }),
        "the swarm did not form a mesh: {:?}",
        nodes
            .iter()
            .map(|n| n.status()["peers"].clone())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_corrupt_pieces_is_caught_and_banned() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let (registry, digests, key, dir) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start(RegistryOpts::default());
        let digests: Vec<String> = (0..2u32)
            .map(|n| {
                let data: Vec<u8> = (0..(20 << 20) as u32)
                    .map(|i| (i.wrapping_mul(2654435761 + n) >> 9) as u8)
                    .collect();
                push_blob(&registry.url(), "library/shared", &data)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("swarm.key");
        write_swarm_key(&key);
        (registry, digests, key, dir)
    })
    .await
    .unwrap();
    let blocking = |f: Box<dyn FnOnce() -> ShoalNode + Send>| tokio::task::spawn_blocking(f);

    // An honest node holds both blobs.
    let (registry_url, key_path) = (registry.url(), key.clone());
    let a = {
        let digests = digests.clone();
        let key = key.clone();
        let r = registry_url.clone();
        blocking(Box::new(move || {
            let a = start_at(&r, &key, None);
            for d in &digests {
                assert_eq!(sha256_hex(&get(&a, d)), *d);
            }
            a
        }))
        .await
        .unwrap()
    };
    let a_addr: shoal::p2p::Multiaddr = a.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let a_id: shoal::p2p::PeerId = a.status()["peer_id"].as_str().unwrap().parse().unwrap();

    // The liar joins with the swarm key, learns the real maps, and provides both blobs.
    let config = member_config(&key_path, a_addr.clone(), Duration::from_secs(10));
    let liar = |maps| {
        std::sync::Arc::new(FakePeer {
            maps,
            pieces: Pieces::Garbage,
        })
    };
    let probe = shoal::p2p::P2p::start(
        shoal::p2p::P2pConfig {
            keypair: shoal::p2p::Keypair::generate_ed25519(),
            ..config.clone()
        },
        liar(Default::default()),
    )
    .await
    .unwrap();
    let mut maps = std::collections::HashMap::new();
    for d in &digests {
        let digest: shoal::oci::Digest = d.parse().unwrap();
        let mut tries = 0;
        let map = loop {
            match probe.piece_map(a_id, &digest, None).await {
                Ok(m) => break m,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no map from the honest node: {e}"),
            }
        };
        maps.insert(d.clone(), map);
    }
    // The probe only fetched maps; it leaves the swarm.
    drop(probe);
    let liar = shoal::p2p::P2p::start(config, liar(maps)).await.unwrap();
    for d in &digests {
        liar.provide(&d.parse().unwrap()).await;
    }

    // A new node fetches both blobs from the swarm: every bad piece is caught, the liar is
    // banned, and the blobs arrive intact.
    let b = blocking(Box::new(move || {
        start_at(&registry_url.clone(), &key, Some(&a_addr.to_string()))
    }))
    .await
    .unwrap();
    let b = std::sync::Arc::new(b);
    let ready = {
        let b = b.clone();
        tokio::task::spawn_blocking(move || {
            common::wait_until(Duration::from_secs(20), || {
                b.status()["peers"].as_u64() >= Some(2)
            })
        })
        .await
        .unwrap()
    };
    assert!(ready, "the new node did not meet both peers");
    for d in &digests {
        let (b, d) = (b.clone(), d.clone());
        tokio::task::spawn_blocking(move || {
            assert_eq!(sha256_hex(&get(&b, &d)), d, "{}", b.log_tail(40));
        })
        .await
        .unwrap();
    }
    let failures = b.metric("shoal_piece_verify_failures_total", &[]);
    assert!(
        failures >= 2.0,
        "bad pieces caught: {failures}\n{}",
        b.log_tail(40)
    );
    assert_eq!(b.metric("shoal_peer_bans_total", &[]), 1.0);
    assert_eq!(
        registry.blob_gets(&digests[0]) + registry.blob_gets(&digests[1]),
        2,
        "{}",
        b.log_tail(60)
    );
    drop((liar, dir));
}

#[test]
fn nodes_killed_mid_transfer_do_not_stop_the_others() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let Fixture {
        registry,
        data: _,
        digest,
        key,
        dir: _dir,
    } = fixture(48 << 20, 2654435761, 5);
    let upstream = format!("docker.io={}", registry.url());
    // Slow uploads, so that the transfer is still running when nodes die.
    let node = |bootstrap: Option<&str>| {
        let mut args = vec![
            "--upstream",
            &upstream,
            "--swarm-key",
            key.to_str().unwrap(),
            "--upload-limit",
            "16MiB/s",
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        ShoalNode::start(&args)
    };
    let first = node(None);
    let addr = first.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut nodes = vec![first];
    for _ in 1..8 {
        nodes.push(node(Some(&addr)));
    }
    assert!(common::wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| n.status()["peers"].as_u64() >= Some(7))
    }));

    let (mut doomed, survivors): (Vec<_>, Vec<_>) = nodes
        .into_iter()
        .enumerate()
        .partition(|(i, _)| *i == 2 || *i == 5);
    let survivors: Vec<ShoalNode> = survivors.into_iter().map(|(_, n)| n).collect();
    let doomed_clients: Vec<_> = doomed
        .iter()
        .map(|(_, n)| {
            let url = format!("{}/v2/library/shared/blobs/{digest}", n.url());
            std::thread::spawn(move || http_request("GET", &url, &[], &[]))
        })
        .collect();
    std::thread::scope(|s| {
        for node in &survivors {
            let digest = &digest;
            s.spawn(move || {
                let url = format!("{}/v2/library/shared/blobs/{digest}", node.url());
                let body = http_request("GET", &url, &[], &[])
                    .unwrap_or_else(|e| panic!("{e}: {}", node.log_tail(40)))
                    .body;
                assert_eq!(sha256_hex(&body), *digest, "{}", node.log_tail(40));
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        for (_, n) in &mut doomed {
            n.kill9();
        }
    });
    for c in doomed_clients {
        let _ = c.join();
    }
    for node in &survivors {
        let file = node.blob_file(&digest);
        assert!(common::wait_until(Duration::from_secs(5), || file.exists()));
    }
}

#[test]
fn pieces_stay_inside_their_zone() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let Fixture {
        registry,
        data,
        digest,
        key,
        dir: _dir,
    } = fixture(24 << 20, 2246822519, 3);
    let upstream = format!("docker.io={}", registry.url());
    let node = |zone: &str, bootstrap: Option<&str>| {
        let mut args = vec![
            "--upstream",
            &upstream,
            "--swarm-key",
            key.to_str().unwrap(),
            "--zone",
            zone,
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        ShoalNode::start(&args)
    };
    let first = node("east", None);
    let addr = first.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut east = vec![first];
    let mut west = Vec::new();
    for _ in 0..2 {
        east.push(node("east", Some(&addr)));
    }
    for _ in 0..3 {
        west.push(node("west", Some(&addr)));
    }
    assert!(common::wait_until(Duration::from_secs(30), || {
        east.iter()
            .chain(&west)
            .all(|n| n.status()["peers"].as_u64() >= Some(5))
    }));
    std::thread::scope(|s| {
        for node in east.iter().chain(&west) {
            let digest = &digest;
            s.spawn(move || assert_eq!(sha256_hex(&get(node, digest)), *digest));
        }
    });
    // One copy entered each zone; what a zone's nodes received, its nodes sent.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(registry.blob_gets(&digest), 2);
    for zone in [&east, &west] {
        let sum = |name: &str| -> f64 { zone.iter().map(|n| n.metric(name, &[])).sum() };
        let received = sum("shoal_p2p_received_bytes_total");
        assert_eq!(received, 2.0 * data.len() as f64);
        assert_eq!(sum("shoal_p2p_sent_bytes_total"), received);
    }
}

#[test]
fn nodes_find_each_other_through_a_dns_name() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    write_swarm_key(&key);
    let first = start(&registry, &key, None);
    let addr = first.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let port = addr
        .split("/tcp/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    // `localhost` resolves through the system's configuration (the hosts file).
    let second = start(&registry, &key, Some(&format!("dns:localhost:{port}")));
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            second.status()["peers"].as_u64() >= Some(1)
                && first.status()["peers"].as_u64() >= Some(1)
        }),
        "{}",
        second.log_tail(20)
    );
}

/// The first node to fetch a blob cuts it with its `--piece-size`; peers take that layout.
#[test]
fn the_first_fetcher_chooses_the_piece_size() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let Fixture {
        registry,
        data,
        digest,
        key,
        dir,
    } = fixture((5 << 20) + 123, 2246822519, 11);

    let upstream = format!("docker.io={}", registry.url());
    let key_arg = key.to_str().unwrap();
    let a = ShoalNode::start(&[
        "--upstream",
        &upstream,
        "--swarm-key",
        key_arg,
        "--piece-size",
        "1MiB",
    ]);
    // Alone, a fetches from the upstream and cuts the blob into 1 MiB pieces.
    assert_eq!(sha256_hex(&get(&a, &digest)), digest);
    let a_addr = a.status()["listen_addrs"][0].as_str().unwrap().to_owned();
    let b = start(&registry, &key, Some(&a_addr));
    assert!(common::wait_until(Duration::from_secs(20), || {
        b.status()["peers"].as_u64() >= Some(1)
    }));
    assert_eq!(sha256_hex(&get(&b, &digest)), digest);
    assert_eq!(
        b.metric("shoal_served_bytes_total", &[("source", "peer")]),
        data.len() as f64
    );
    assert_eq!(registry.blob_gets(&digest), 1);
    let map_file = b
        .data_dir()
        .join("pieces/sha256")
        .join(format!("{}.json", digest.trim_start_matches("sha256:")));
    assert!(common::wait_until(Duration::from_secs(5), || map_file.exists()));
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&map_file).unwrap()).unwrap();
    assert_eq!(map["piece_size"], 1 << 20, "{map}");
    assert_eq!(map["hashes"].as_array().unwrap().len(), 6);

    // A size that is not a power of two is refused at start, naming the flag's key.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["node", "--piece-size", "3MiB", "--data-dir"])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("piece_size"), "{err}");
}
