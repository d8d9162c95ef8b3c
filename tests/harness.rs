//! Exercises the shared harness against the real tools, without shoal.

mod common;

use std::time::Duration;

use common::{
    Containerd, Dockerd, Registry, RegistryOpts, http_request, make_image, push_blob, push_image,
    sha256_hex, write_hosts_toml,
};

const MIB: usize = 1024 * 1024;
const LOG_WAIT: Duration = Duration::from_secs(5);

use common::tools;

/// GETs `url` with `accept`, panicking unless it answers 200; returns the body digest.
fn get_digest(url: &str, accept: &str) -> String {
    let response = http_request("GET", url, &[("Accept", accept)], &[]).unwrap();
    assert_eq!(response.status, 200, "GET {url}");
    let digest = sha256_hex(&response.body);
    assert_eq!(
        response.header("docker-content-digest"),
        Some(digest.as_str())
    );
    digest
}

#[test]
fn helpers() {
    assert_eq!(
        sha256_hex(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_ne!(common::free_port(), 0);
    assert!(common::require_tool("sh"));
    let line = r#"127.0.0.1 - - [26/Nov/2026:06:50:56 +0000] "GET /v2/foo/blobs/sha256:ab HTTP/1.1" 200 157 "" "curl/7.88.1""#;
    let parsed = common::AccessLine::parse(line).unwrap();
    assert_eq!(
        (parsed.method.as_str(), parsed.status, parsed.bytes),
        ("GET", 200, 157)
    );
    assert!(parsed.is_blob_get("sha256:ab"));
    assert!(common::AccessLine::parse("time=\"…\" level=info msg=\"listening\"").is_none());
}

#[test]
fn push_multi_platform_image_and_pull_with_containerd() {
    if !tools(&["docker-registry", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(
        &work.path().join("layout"),
        &[MIB, MIB],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "test/multi", "v1", None);

    // The registry holds exactly the layout's bytes.
    let base = format!("{}/v2/test/multi", registry.url());
    let index = get_digest(&format!("{base}/manifests/v1"), common::image::OCI_INDEX);
    assert_eq!(Some(index), image.index_digest);
    for manifest in &image.manifests {
        let url = format!("{base}/manifests/{}", manifest.digest);
        assert_eq!(
            get_digest(&url, common::image::OCI_MANIFEST),
            manifest.digest
        );
    }

    let hosts = work.path().join("hosts");
    write_hosts_toml(&hosts, &registry.host(), &registry.url(), &registry.url());
    let containerd = Containerd::start();
    let reference = format!("{}/test/multi:v1", registry.host());
    let output = containerd.pull(&reference, &hosts, None);
    common::check_output("ctr pull", &output);

    let amd64 = image.manifest_for("linux", "amd64");
    containerd
        .check_layers_unpacked(&reference, &amd64.layers)
        .unwrap();

    // One GET per amd64 layer, none for arm64's.
    assert!(registry.wait_access_log(LOG_WAIT, |_| {
        amd64
            .layers
            .iter()
            .all(|l| registry.blob_gets(&l.digest) == 1)
    }));
    for layer in &amd64.layers {
        assert_eq!(registry.blob_bytes_sent(&layer.digest), layer.size);
    }
    for layer in &image.manifest_for("linux", "arm64").layers {
        assert_eq!(registry.blob_gets(&layer.digest), 0);
    }
}

#[test]
fn htpasswd_registry_requires_credentials() {
    if !tools(&["docker-registry", "htpasswd", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts {
        htpasswd: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    let v2 = format!("{}/v2/", registry.url());
    assert_eq!(common::http_status(&v2), Some(401));
    // alice:s3cret
    let auth = [("Authorization", "Basic YWxpY2U6czNjcmV0")];
    assert_eq!(http_request("GET", &v2, &auth, &[]).unwrap().status, 200);

    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[64 * 1024], &[]);
    push_image(
        &image,
        &registry,
        "private/img",
        "v1",
        Some(("alice", "s3cret")),
    );

    let hosts = work.path().join("hosts");
    write_hosts_toml(&hosts, &registry.host(), &registry.url(), &registry.url());
    let containerd = Containerd::start();
    let reference = format!("{}/private/img:v1", registry.host());
    let anonymous = containerd.pull(&reference, &hosts, None);
    assert!(!anonymous.status.success(), "anonymous pull must fail");
    let output = containerd.pull(&reference, &hosts, Some("alice:s3cret"));
    common::check_output("ctr pull --user", &output);
    containerd
        .check_layers_unpacked(&reference, &image.manifests[0].layers)
        .unwrap();
}

#[test]
fn registry_restart_keeps_port_and_blobs() {
    if !tools(&["docker-registry"]) {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let data = b"hello blob".repeat(1000);
    let digest = push_blob(&registry.url(), "test/blob", &data);
    assert_eq!(digest, sha256_hex(&data));
    let url = format!("{}/v2/test/blob/blobs/{digest}", registry.url());

    registry.stop();
    registry.stop();
    assert_eq!(common::http_status(&url), None);
    registry.restart();
    let response = http_request("GET", &url, &[], &[]).unwrap();
    assert_eq!((response.status, response.body), (200, data.clone()));
    assert!(registry.wait_access_log(LOG_WAIT, |_| registry.blob_gets(&digest) == 1));
    assert_eq!(registry.blob_bytes_sent(&digest), data.len() as u64);
}

#[test]
fn proxy_registry_caches_upstream_blobs() {
    if !tools(&["docker-registry"]) {
        return;
    }
    let upstream = Registry::start(RegistryOpts::default());
    let data = vec![7u8; 100_000];
    let digest = push_blob(&upstream.url(), "library/cached", &data);
    let proxy = Registry::start(RegistryOpts {
        proxy_remote: Some(upstream.url()),
        ..Default::default()
    });
    let url = format!("{}/v2/library/cached/blobs/{digest}", proxy.url());
    let get = || {
        let response = http_request("GET", &url, &[], &[]).unwrap();
        assert_eq!((response.status, response.body.len()), (200, data.len()));
    };

    // distribution 2.8 streams a miss to the client and fetches it a second time to store it.
    get();
    let hex = &digest["sha256:".len()..];
    let stored = proxy
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    assert!(common::wait_until(LOG_WAIT, || stored.exists()));
    assert!(upstream.wait_access_log(LOG_WAIT, |_| upstream.blob_gets(&digest) == 2));
    get();
    get();
    assert!(proxy.wait_access_log(LOG_WAIT, |_| proxy.blob_gets(&digest) == 3));
    assert_eq!(upstream.blob_gets(&digest), 2);
}

#[test]
fn docker_pulls_through_mirror() {
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
    let image = make_image(
        &work.path().join("layout"),
        &[MIB, 256 * 1024],
        &[("linux", "amd64"), ("linux", "arm64")],
    );
    push_image(&image, &registry, "library/harness", "v1", None);

    let containerd = Containerd::start();
    let dockerd = Dockerd::start(&containerd, &registry.url());
    let output = dockerd.pull("library/harness:v1");
    common::check_output("docker pull", &output);

    let amd64 = image.manifest_for("linux", "amd64");
    let diff_ids: Vec<String> = amd64.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(dockerd.image_diff_ids("harness:v1"), diff_ids);
    assert!(registry.wait_access_log(LOG_WAIT, |_| {
        amd64
            .layers
            .iter()
            .all(|l| registry.blob_gets(&l.digest) == 1)
    }));
    assert_eq!(
        registry.count_requests("GET", "/v2/library/harness/manifests/"),
        2
    );
    // Docker sends mirror requests without `ns`.
    assert!(
        registry
            .access_log()
            .iter()
            .all(|l| !l.path.contains("ns="))
    );
}

#[test]
fn containerd_pulls_docker_io_through_mirror() {
    if !tools(&["docker-registry", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[300 * 1024, 10], &[]);
    push_image(&image, &registry, "library/mirrored", "v1", None);

    // The mirror setup shoal's node uses: Docker Hub as server, the mirror as a pull host.
    let hosts = work.path().join("hosts");
    write_hosts_toml(
        &hosts,
        "docker.io",
        "https://registry-1.docker.io",
        &registry.url(),
    );
    let containerd = Containerd::start();
    let reference = "docker.io/library/mirrored:v1";
    common::check_output("ctr pull", &containerd.pull(reference, &hosts, None));
    containerd
        .check_layers_unpacked(reference, &image.manifests[0].layers)
        .unwrap();
    // containerd names the upstream in `ns`; distribution ignores it.
    assert!(registry.wait_access_log(LOG_WAIT, |log| {
        log.iter().any(|l| {
            l.is_blob_get(&image.manifests[0].layers[0].digest) && l.path.ends_with("?ns=docker.io")
        })
    }));
}
