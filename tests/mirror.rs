//! The mirror node with real clients: containerd, Docker and skopeo pull through `shoal node`
//! from a real `docker-registry` upstream; single flight; private repositories.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Containerd, Dockerd, Registry, RegistryOpts, ShoalNode, http_request, make_image, push_blob,
    push_image, sha256_hex, write_hosts_toml,
};

const MIB: usize = 1024 * 1024;

use common::tools;

fn node_for(registry: &Registry, extra: &[&str]) -> ShoalNode {
    let upstream = format!("docker.io={}", registry.url());
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(extra);
    ShoalNode::start(&args)
}

/// Whether the node's store holds `digest` (waiting briefly: a client has its last byte once
/// the blob is verified, and the rename into the store follows).
fn stored(node: &ShoalNode, digest: &str) -> bool {
    let file = node.blob_file(digest);
    common::wait_until(Duration::from_secs(5), || file.exists())
}

/// Blob GETs the upstream served for `digest` (waiting briefly for log lines to land).
fn upstream_gets(registry: &Registry, digest: &str) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    registry.blob_gets(digest)
}

#[test]
fn containerd_pulls_through_the_node_and_a_second_pull_comes_from_its_store() {
    if !tools(&["docker-registry", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(
        &work.path().join("layout"),
        &[3 * MIB, 2 * MIB],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "library/app", "v1", None);
    let node = node_for(&registry, &[]);

    // The runtime configuration comes from `shoal containerd-config` itself.
    let hosts = work.path().join("hosts");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["containerd-config", "--node", &node.url(), "--write"])
        .arg(&hosts)
        .output()
        .unwrap();
    common::check_output("shoal containerd-config", &output);
    assert!(hosts.join("_default/hosts.toml").exists());
    let reference = "docker.io/library/app:v1";
    let amd64 = image.manifest_for("linux", "amd64");

    let first = Containerd::start();
    common::check_output("first ctr pull", &first.pull(reference, &hosts, None));
    first
        .check_layers_unpacked(reference, &amd64.layers)
        .unwrap();
    for layer in &amd64.layers {
        assert_eq!(
            upstream_gets(&registry, &layer.digest),
            1,
            "{}",
            layer.digest
        );
        assert!(stored(&node, &layer.digest));
    }
    let upstream_bytes = node.metric("shoal_served_bytes_total", &[("source", "upstream")]);
    assert!(upstream_bytes >= (5 * MIB) as f64, "{upstream_bytes}");

    // A fresh containerd (empty content store) pulls again: every blob comes from the node.
    drop(first);
    let second = Containerd::start();
    common::check_output("second ctr pull", &second.pull(reference, &hosts, None));
    second
        .check_layers_unpacked(reference, &amd64.layers)
        .unwrap();
    for layer in &amd64.layers {
        assert_eq!(
            upstream_gets(&registry, &layer.digest),
            1,
            "second pull fetched {} from the upstream again",
            layer.digest
        );
    }
    assert_eq!(upstream_gets(&registry, &amd64.config_digest), 1);
    let cached = node.metric("shoal_served_bytes_total", &[("source", "cache")]);
    assert!(
        cached >= (5 * MIB) as f64,
        "cache served only {cached} bytes"
    );
    // The other platform's layers were never fetched.
    for layer in &image.manifest_for("linux", "arm64").layers {
        assert_eq!(registry.blob_gets(&layer.digest), 0);
    }
}

#[test]
fn docker_pulls_through_the_node_without_ns() {
    if !tools(&[
        "docker-registry",
        "skopeo",
        "containerd",
        "dockerd",
        "docker",
    ]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[2 * MIB, MIB], &[]);
    push_image(&image, &registry, "library/web", "1.0", None);
    let node = node_for(&registry, &[]);

    let containerd = Containerd::start();
    let docker = Dockerd::start(&containerd, &node.url());
    common::check_output("docker pull", &docker.pull("library/web:1.0"));
    let diff_ids: Vec<String> = image.manifests[0]
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    assert_eq!(docker.image_diff_ids("library/web:1.0"), diff_ids);
    for layer in &image.manifests[0].layers {
        assert_eq!(upstream_gets(&registry, &layer.digest), 1);
        assert!(stored(&node, &layer.digest));
    }
}

#[test]
fn skopeo_copies_through_the_node() {
    if !tools(&["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(
        &work.path().join("layout"),
        &[MIB],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "tools/cli", "2", None);
    let node = node_for(&registry, &[]);

    let dest = work.path().join("copy");
    let output = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
        .args(["--src-tls-verify=false"])
        .arg(format!("docker://{}/tools/cli:2", node.host()))
        .arg(format!("oci:{}:2", dest.display()))
        .output()
        .unwrap();
    common::check_output("skopeo copy", &output);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        image.index_digest.as_deref()
    );
    for digest in image.layer_digests() {
        let (_, hex) = digest.split_once(':').unwrap();
        let copied = std::fs::read(dest.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&copied), digest);
    }
}

#[test]
fn fifty_concurrent_cold_requests_make_one_upstream_fetch() {
    if !tools(&["docker-registry"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data: Vec<u8> = (0..16 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    let digest = push_blob(&registry.url(), "library/big", &data);
    let node = node_for(&registry, &[]);

    let url = Arc::new(format!("{}/v2/library/big/blobs/{digest}", node.url()));
    let barrier = Arc::new(std::sync::Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                http_request("GET", &url, &[], &[]).unwrap()
            })
        })
        .collect();
    for h in handles {
        let resp = h.join().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), data.len());
        assert_eq!(sha256_hex(&resp.body), digest);
        assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
    }
    assert_eq!(upstream_gets(&registry, &digest), 1);
    let served = node.metric("shoal_served_bytes_total", &[]);
    assert_eq!(served, (50 * data.len()) as f64);
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[test]
fn private_repository_content_is_served_only_to_clients_the_upstream_accepts() {
    if !tools(&["docker-registry", "skopeo", "containerd", "ctr", "htpasswd"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts {
        htpasswd: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[MIB], &[]);
    push_image(
        &image,
        &registry,
        "team/private",
        "v1",
        Some(("alice", "s3cret")),
    );
    let node = node_for(&registry, &[]);
    let hosts = work.path().join("hosts");
    write_hosts_toml(
        &hosts,
        "docker.io",
        "https://registry-1.docker.io",
        &node.url(),
    );
    let reference = "docker.io/team/private:v1";

    // Without credentials containerd is refused; with them the pull works.
    let containerd = Containerd::start();
    let refused = containerd.pull(reference, &hosts, None);
    assert!(
        !refused.status.success(),
        "anonymous pull of a private image succeeded"
    );
    common::check_output(
        "ctr pull --user",
        &containerd.pull(reference, &hosts, Some("alice:s3cret")),
    );
    let manifest = &image.manifests[0];
    containerd
        .check_layers_unpacked(reference, &manifest.layers)
        .unwrap();
    let layer = &manifest.layers[0].digest;
    assert!(stored(&node, layer), "the layer is cached now");

    // The cached manifest and layer: no credentials and wrong credentials get 401, the right
    // ones get the bytes.
    let base = format!("{}/v2/team/private", node.url());
    let wrong = basic("alice", "wrong");
    let right = basic("alice", "s3cret");
    // distribution answers 404 for an OCI manifest the client does not say it accepts.
    let accept = ("Accept", common::image::OCI_MANIFEST);
    for path in [
        format!("{base}/blobs/{layer}"),
        format!("{base}/manifests/{}", manifest.digest),
        format!("{base}/manifests/v1"),
    ] {
        for (who, headers) in [
            ("anonymous", vec![accept]),
            (
                "wrong password",
                vec![accept, ("Authorization", wrong.as_str())],
            ),
        ] {
            for method in ["GET", "HEAD"] {
                let resp = http_request(method, &path, &headers, &[]).unwrap();
                assert_eq!(resp.status, 401, "{who} {method} {path}");
                assert!(resp.header("www-authenticate").is_some());
                if method == "GET" {
                    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
                    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{who} {path}");
                }
            }
        }
        let ok = http_request(
            "GET",
            &path,
            &[accept, ("Authorization", right.as_str())],
            &[],
        )
        .unwrap();
        assert_eq!(ok.status, 200, "{path}");
    }
    let layer_body = http_request(
        "GET",
        &format!("{base}/blobs/{layer}"),
        &[("Authorization", right.as_str())],
        &[],
    )
    .unwrap()
    .body;
    assert_eq!(sha256_hex(&layer_body), *layer);
    // It came from the node's store, not the upstream again.
    assert_eq!(upstream_gets(&registry, layer), 1);

    // A private layer cannot be read by naming it under another repository.
    let other = format!("{}/v2/team/other/blobs/{layer}", node.url());
    let resp = http_request("GET", &other, &[("Authorization", right.as_str())], &[]).unwrap();
    assert_eq!(resp.status, 404);
}

#[test]
fn admin_endpoints_report_status_and_metrics() {
    let upstream = common::fake::FakeRegistry::start(|_| common::fake::Reply::status(401));
    let up = format!("docker.io={}", upstream.url());
    let node = ShoalNode::start(&["--zone", "z1", "--upstream", &up]);
    let status = http_request("GET", &node.admin_url("/status"), &[], &[]).unwrap();
    assert_eq!(status.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["role"], "node");
    assert_eq!(v["zone"], "z1");
    assert_eq!(v["peers"], 0);
    assert!(v.get("peer_id").is_some() && v.get("listen_addrs").is_some());
    assert_eq!(v["seeds"], serde_json::json!([]));
    assert_eq!(v["served_bytes"]["upstream"], 0);
    assert_eq!(v["downloads"], serde_json::json!([]));
    // Ready: the store is writable and the upstream answers (any status counts).
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http_request("GET", &node.admin_url(path), &[], &[])
                .unwrap()
                .status,
            200
        );
    }
    assert!(upstream.count("GET", "/v2/") >= 1);
    // With no peer and no source that answers, the node is alive but not ready.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let lonely = ShoalNode::start(&["--upstream", &format!("docker.io={dead}")]);
    assert_eq!(
        http_request("GET", &lonely.admin_url("/healthz"), &[], &[])
            .unwrap()
            .status,
        200
    );
    let not_ready = http_request("GET", &lonely.admin_url("/readyz"), &[], &[]).unwrap();
    assert_eq!(not_ready.status, 503);
    assert!(String::from_utf8_lossy(&not_ready.body).contains("no source reachable"));
    let metrics = http_request("GET", &node.admin_url("/metrics"), &[], &[]).unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    for name in [
        "shoal_served_bytes_total{source=\"cache\"}",
        "shoal_served_bytes_total{source=\"upstream\"}",
        "shoal_served_bytes_total{source=\"fallback\"}",
        "shoal_piece_verify_failures_total",
        "shoal_stale_manifests_served_total",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let base = http_request("GET", &format!("{}/v2/", node.url()), &[], &[]).unwrap();
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

#[test]
fn ns_less_requests_name_their_registry_in_the_path_or_mean_the_default() {
    if !tools(&["docker-registry", "skopeo"]) {
        return;
    }
    // Two registries holding `library/app:v1`, each a different image: Docker Hub's stand-in
    // and a second registry the requests name by its `127.0.0.1:PORT`.
    let hub = Registry::start(RegistryOpts::default());
    let other = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let hub_image = make_image(&work.path().join("hub"), &[MIB], &[]);
    let other_image = make_image(&work.path().join("other"), &[MIB / 2], &[]);
    push_image(&hub_image, &hub, "library/app", "v1", None);
    push_image(&other_image, &other, "library/app", "v1", None);
    let second = format!("{}={}", other.host(), other.url());
    let node = node_for(&hub, &["--upstream", &second]);
    let accept = [("Accept", common::image::OCI_MANIFEST)];
    let get = |path: &str| http_request("GET", &format!("{}{path}", node.url()), &accept, &[]);

    // Docker's request for Docker Hub: no ns, no host in the path, the default registry.
    let resp = get("/v2/library/app/manifests/v1").unwrap();
    assert_eq!(resp.status, 200);
    let hub_manifest = &hub_image.manifests[0];
    assert_eq!(
        resp.header("docker-content-digest"),
        Some(hub_manifest.digest.as_str())
    );
    assert_eq!(other.count_requests("GET", "/manifests/"), 0);

    // The registry named in the path, as `host:port` and as `host_port` (the form a
    // registries.conf mirror location can carry).
    let other_manifest = &other_image.manifests[0];
    let other_layer = &other_manifest.layers[0].digest;
    for host in [other.host(), other.host().replace(':', "_")] {
        let resp = get(&format!("/v2/{host}/library/app/manifests/v1")).unwrap();
        assert_eq!(resp.status, 200, "{host}");
        assert_eq!(
            resp.header("docker-content-digest"),
            Some(other_manifest.digest.as_str()),
            "{host}"
        );
    }
    let hub_manifests = hub.count_requests("GET", "/manifests/");
    let resp = get(&format!(
        "/v2/{}/library/app/blobs/{other_layer}",
        other.host()
    ))
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(sha256_hex(&resp.body), *other_layer);
    assert_eq!(upstream_gets(&other, other_layer), 1);
    assert_eq!(hub.count_requests("GET", "/blobs/"), 0);
    assert_eq!(hub.count_requests("GET", "/manifests/"), hub_manifests);

    // `ns` still wins: the path is then all repository name.
    let resp = get(&format!(
        "/v2/{}/library/app/manifests/v1?ns=docker.io",
        other.host()
    ))
    .unwrap();
    assert_eq!(resp.status, 400);

    // A registry host with no repository after it.
    for path in [
        "/v2/ghcr.io/manifests/v1".to_owned(),
        format!("/v2/{}/blobs/{other_layer}", other.host()),
    ] {
        let resp = get(&path).unwrap();
        assert_eq!(resp.status, 400, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID", "{path}");
    }
}
