//! Faults on the pull path, against a real `shoal node`: lying, truncating, slow and dead
//! upstreams, standby mirrors, stale tags, malformed requests and kill -9 mid-download.
//!
//! Bad sources are [`FakeRegistry`]s; the good source, where one is needed, is a real
//! `docker-registry` (those tests are skipped without it).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fake::{FakeRegistry, Reply};
use common::image::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use common::{
    HttpResponse, Registry, RegistryOpts, ShoalNode, free_port, http_request, http_status,
    push_blob, sha256_hex, wait_until,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// How long the node gets to finish background work (a download, cleaning tmp/).
const SETTLE: Duration = Duration::from_secs(15);

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A node whose docker.io upstream is `upstream`, with these standby mirrors.
fn node_for(upstream: &str, fallbacks: &[&str]) -> ShoalNode {
    let mut args = vec!["--upstream".to_owned(), format!("docker.io={upstream}")];
    for f in fallbacks {
        args.extend(["--fallback".to_owned(), format!("docker.io={f}")]);
    }
    ShoalNode::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn request(
    node: &ShoalNode,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_request(method, &format!("{}{path}", node.url()), headers, &[])
}

/// A request that must get a complete HTTP response.
fn must(node: &ShoalNode, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(node, method, path, headers).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: no complete response ({e})\nnode log:\n{}",
            node.log_tail(60)
        )
    })
}

/// Asserts status and distribution error envelope `code`.
fn assert_error(node: &ShoalNode, resp: &HttpResponse, status: u16, code: &str, what: &str) {
    let body = String::from_utf8_lossy(&resp.body);
    assert_eq!(
        resp.status,
        status,
        "{what}: status (body {body})\nnode log:\n{}",
        node.log_tail(60)
    );
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    assert_eq!(v["errors"][0]["code"], code, "{what}: envelope {body}");
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: no message in {body}");
}

/// Asserts a 200 carrying exactly `data` with its digest header.
fn assert_body(node: &ShoalNode, resp: &HttpResponse, data: &[u8], what: &str) {
    assert_eq!(
        resp.status,
        200,
        "{what}: status\nnode log:\n{}",
        node.log_tail(60)
    );
    assert_eq!(resp.body.len(), data.len(), "{what}: length");
    assert!(resp.body == data, "{what}: bytes differ");
    let digest = sha256_hex(data);
    assert_eq!(resp.header("docker-content-digest"), Some(digest.as_str()));
}

/// The client must not get the blob: either a 502/503 envelope or a body cut short.
fn assert_refused(node: &ShoalNode, result: std::io::Result<HttpResponse>, what: &str) {
    if let Ok(resp) = result {
        assert!(
            matches!(resp.status, 502 | 503),
            "{what}: a complete {} response came through\nnode log:\n{}",
            resp.status,
            node.log_tail(60)
        );
        assert_error(node, &resp, resp.status, "UNAVAILABLE", what);
    }
}

/// Waits for the blob in the store and checks its bytes against the digest.
fn assert_stored(node: &ShoalNode, digest: &str, len: usize) {
    let file = node.blob_file(digest);
    assert!(
        wait_until(SETTLE, || file.exists()),
        "{digest} never stored\nnode log:\n{}",
        node.log_tail(60)
    );
    let stored = std::fs::read(&file).unwrap();
    assert_eq!(stored.len(), len, "stored length");
    assert_eq!(sha256_hex(&stored), digest, "stored bytes");
}

/// Nothing under blobs/, tmp/ emptied, node healthy.
fn assert_clean(node: &ShoalNode, what: &str) {
    let blobs = files_under(&node.data_dir().join("blobs"));
    assert!(blobs.is_empty(), "{what}: blobs stored: {blobs:?}");
    assert!(
        wait_until(SETTLE, || node.temp_files().is_empty()),
        "{what}: tmp/ not emptied: {:?}\nnode log:\n{}",
        node.temp_files(),
        node.log_tail(60)
    );
    assert_eq!(
        http_status(&node.admin_url("/healthz")),
        Some(200),
        "{what}"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Pushes a small OCI image manifest as `repo:tag` to a real registry; its bytes and digest.
fn push_manifest(registry: &Registry, repo: &str, tag: &str) -> (Vec<u8>, String) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = bytes(4 * KIB, 99);
    let config_digest = push_blob(&registry.url(), repo, config);
    let layer_digest = push_blob(&registry.url(), repo, &layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let url = format!("{}/v2/{repo}/manifests/{tag}", registry.url());
    let put = http_request("PUT", &url, &[("Content-Type", OCI_MANIFEST)], &manifest).unwrap();
    assert_eq!(put.status, 201, "PUT manifest: {put:?}");
    let digest = sha256_hex(&manifest);
    (manifest, digest)
}

const ACCEPT_OCI: (&str, &str) = ("Accept", OCI_MANIFEST);

#[test]
fn lying_upstream_is_caught_and_fallback_serves() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let data = bytes(2 * MIB + 17, 1);
    let digest = push_blob(&registry.url(), "test/lie", &data);
    let path = format!("/v2/test/lie/blobs/{digest}");
    let mut lie = data.clone();
    lie[MIB] ^= 0xff; // same length, one wrong byte in the middle
    let fake = FakeRegistry::start(move |_| Reply::bytes(lie.clone()));
    let node = node_for(&fake.url(), &[&registry.url()]);

    let first = request(&node, "GET", &path, &[]);
    if let Ok(resp) = &first {
        // A complete body is only acceptable if it is the right one (from the fallback).
        assert_body(&node, resp, &data, "first GET");
    }
    assert_stored(&node, &digest, data.len());
    assert!(
        node.metric(
            "shoal_blob_verify_failures_total",
            &[("source", "upstream")]
        ) >= 1.0
    );
    assert_eq!(
        node.metric(
            "shoal_blob_verify_failures_total",
            &[("source", "fallback")]
        ),
        0.0
    );

    let second = must(&node, "GET", &path, &[]);
    assert_body(&node, &second, &data, "second GET");
    assert_eq!(
        fake.count("GET", &path),
        1,
        "the lying upstream was asked again"
    );
    assert!(node.metric("shoal_served_bytes_total", &[("source", "cache")]) >= data.len() as f64);
    assert!(
        wait_until(SETTLE, || node.temp_files().is_empty()),
        "tmp/ not emptied: {:?}",
        node.temp_files()
    );
}

#[test]
fn lying_upstream_without_fallback_stores_nothing() {
    let data = bytes(MIB + 5, 2);
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/lie/blobs/{digest}");
    let mut lie = data.clone();
    lie[10] ^= 0x01;
    let fake = FakeRegistry::start(move |_| Reply::bytes(lie.clone()));
    let node = node_for(&fake.url(), &[]);

    assert_refused(&node, request(&node, "GET", &path, &[]), "first GET");
    assert_clean(&node, "after the lie");
    assert!(
        node.metric(
            "shoal_blob_verify_failures_total",
            &[("source", "upstream")]
        ) >= 1.0
    );
    // The bad content was not kept: a second client is refused again, after a new download.
    assert_refused(&node, request(&node, "GET", &path, &[]), "second GET");
    assert_eq!(fake.count("GET", &path), 2);
    assert_clean(&node, "after the second lie");
}

#[test]
fn dead_upstream_uses_fallback_and_all_dead_is_503() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let data = bytes(MIB + 3, 3);
    let digest = push_blob(&registry.url(), "test/app", &data);
    let other = push_blob(&registry.url(), "test/app", &bytes(1000, 4));
    let (manifest, manifest_digest) = push_manifest(&registry, "test/app", "v1");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let node = node_for(&dead, &[&registry.url()]);

    let blob = must(&node, "GET", &format!("/v2/test/app/blobs/{digest}"), &[]);
    assert_body(&node, &blob, &data, "blob via fallback");
    assert_stored(&node, &digest, data.len());
    assert!(
        node.metric("shoal_served_bytes_total", &[("source", "fallback")]) >= data.len() as f64
    );
    let m = must(&node, "GET", "/v2/test/app/manifests/v1", &[ACCEPT_OCI]);
    assert_body(&node, &m, &manifest, "manifest by tag via fallback");
    assert_eq!(m.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        m.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );

    registry.stop();
    let resp = must(&node, "GET", &format!("/v2/test/app/blobs/{other}"), &[]);
    assert_error(&node, &resp, 503, "UNAVAILABLE", "blob, all sources down");
    let resp = must(&node, "GET", "/v2/test/app/manifests/v2", &[ACCEPT_OCI]);
    assert_error(
        &node,
        &resp,
        503,
        "UNAVAILABLE",
        "manifest, all sources down",
    );
    assert_eq!(http_status(&node.admin_url("/healthz")), Some(200));
    assert!(!node.blob_file(&other).exists());
}

#[test]
fn upstream_500_falls_back_but_404_is_final() {
    let data = bytes(300 * KIB, 5);
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/app/blobs/{digest}");
    let missing = format!("/v2/test/app/blobs/{}", sha256_hex(b"missing"));
    let missing2 = missing.clone();
    let upstream = FakeRegistry::start(move |req| {
        if req.path == missing2 {
            Reply::status(404)
        } else {
            Reply::status(500)
        }
    });
    let good = data.clone();
    let fallback = FakeRegistry::start(move |_| Reply::bytes(good.clone()));
    let node = node_for(&upstream.url(), &[&fallback.url()]);

    let resp = must(&node, "GET", &path, &[]);
    assert_body(&node, &resp, &data, "blob after upstream 500");
    assert_eq!(
        (upstream.count("GET", &path), fallback.count("GET", &path)),
        (1, 1)
    );
    assert!(
        node.metric(
            "shoal_upstream_requests_total",
            &[("kind", "blob"), ("status", "500")]
        ) >= 1.0
    );
    let resp = must(&node, "GET", &missing, &[]);
    assert_error(&node, &resp, 404, "BLOB_UNKNOWN", "upstream 404");
    assert_eq!(
        fallback.count("GET", &missing),
        0,
        "fallback asked after a 404"
    );
}

#[test]
fn stale_tag_served_when_upstream_is_down() {
    if !common::require_tool("docker-registry") {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let (manifest, digest) = push_manifest(&registry, "test/stale", "v1");
    let node = node_for(&registry.url(), &[]);

    let fresh = must(&node, "GET", "/v2/test/stale/manifests/v1", &[ACCEPT_OCI]);
    assert_body(&node, &fresh, &manifest, "fresh tag");
    assert_eq!(node.metric("shoal_stale_manifests_served_total", &[]), 0.0);

    registry.stop();
    let stale = must(&node, "GET", "/v2/test/stale/manifests/v1", &[ACCEPT_OCI]);
    assert_body(&node, &stale, &manifest, "stale tag");
    assert_eq!(stale.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(stale.header("content-type"), Some(OCI_MANIFEST));
    assert!(node.metric("shoal_stale_manifests_served_total", &[]) >= 1.0);

    let unknown = must(&node, "GET", "/v2/test/stale/manifests/v2", &[ACCEPT_OCI]);
    assert_error(
        &node,
        &unknown,
        503,
        "UNAVAILABLE",
        "unknown tag, upstream down",
    );
}

#[test]
fn malformed_requests_get_error_envelopes() {
    let fake = FakeRegistry::start(|_| Reply::status(500));
    let node = node_for(&fake.url(), &[]);
    let d = sha256_hex(b"x");
    let hex = &d["sha256:".len()..];
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/v2/UPPER/manifests/x".into(), 400, "NAME_INVALID"),
        ("GET", format!("/v2/a..b/blobs/{d}"), 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/a/%2e%2e/b/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            format!("/v2/%2e%2e/%2e%2e/blobs/{d}"),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/../etc/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        ("GET", format!("/v2/a/-b/blobs/{d}"), 400, "NAME_INVALID"),
        ("GET", "/v2/a/blobs/sha256:zz".into(), 400, "DIGEST_INVALID"),
        (
            "GET",
            format!("/v2/a/blobs/sha256:{}", &hex[1..]),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            format!("/v2/a/blobs/sha256:{}", hex.to_ascii_uppercase()),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            format!("/v2/a/blobs/md5:{}", &hex[..32]),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", format!("/v2/a/blobs/{hex}"), 400, "DIGEST_INVALID"),
        (
            "GET",
            "/v2/a/manifests/sha256:12".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/a/manifests/.bad".into(), 400, "NAME_INVALID"),
        ("GET", "/v2/a/manifests/-bad".into(), 400, "NAME_INVALID"),
        (
            "GET",
            format!("/v2/a/manifests/{}", "t".repeat(129)),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a/manifests/bad%20tag".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a/manifests/latest?ns=bad%20host!".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/a/manifests/latest?ns=..%2Fetc".into(),
            400,
            "NAME_INVALID",
        ),
        ("PUT", "/v2/a/manifests/latest".into(), 405, "UNSUPPORTED"),
        ("DELETE", format!("/v2/a/manifests/{d}"), 405, "UNSUPPORTED"),
        ("DELETE", format!("/v2/a/blobs/{d}"), 405, "UNSUPPORTED"),
        ("POST", "/v2/a/blobs/uploads/".into(), 405, "UNSUPPORTED"),
        (
            "PATCH",
            "/v2/a/blobs/uploads/some-id".into(),
            405,
            "UNSUPPORTED",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, status, code) in &cases {
        let resp = must(&node, method, path, &[]);
        let got = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned));
        if resp.status != *status || got.as_deref() != Some(code) {
            failures.push(format!(
                "{method} {path}: got {} {got:?}, want {status} {code} (body {})",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // None of these reached the upstream.
    let asked: Vec<_> = fake.requests().into_iter().map(|r| r.path).collect();
    assert!(
        asked.iter().all(|p| p == "/v2/"),
        "upstream asked: {asked:?}"
    );
}

#[test]
fn oversized_and_foreign_manifests_are_rejected() {
    let big = {
        let mut m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":""#.to_vec();
        m.extend(std::iter::repeat_n(b'a', 5 * MIB));
        m.extend(br#""}}"#);
        m
    };
    let big_digest = sha256_hex(&big);
    let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec();
    let (big2, json2) = (big.clone(), json.clone());
    let fake = FakeRegistry::start(move |req| match req.path.rsplit('/').next() {
        Some("big") => Reply::manifest(OCI_MANIFEST, big2.clone()),
        Some(r) if r.starts_with("sha256:") => Reply::manifest(OCI_MANIFEST, big2.clone()),
        Some("html") => Reply::manifest("text/html", b"<html><body>login</body></html>".to_vec()),
        Some("htmljson") => Reply::manifest("text/html; charset=utf-8", json2.clone()),
        _ => Reply::status(404),
    });
    let node = node_for(&fake.url(), &[]);

    for path in [
        "/v2/test/m/manifests/big".to_owned(),
        format!("/v2/test/m/manifests/{big_digest}"),
        "/v2/test/m/manifests/html".to_owned(),
        "/v2/test/m/manifests/htmljson".to_owned(),
    ] {
        let resp = must(&node, "GET", &path, &[ACCEPT_OCI]);
        assert_error(&node, &resp, 502, "UNAVAILABLE", &path);
    }
    let stored = files_under(&node.data_dir().join("manifests"));
    assert!(stored.is_empty(), "manifests stored: {stored:?}");
    assert!(files_under(&node.data_dir().join("tags")).is_empty());
}

#[test]
fn truncated_blob_cut_again_on_resume_is_refused() {
    let data = bytes(MIB, 6);
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/cut/blobs/{digest}");
    let body = data.clone();
    // Every answer announces 1 MiB, sends 300 KiB and closes (a resume gets the same).
    let fake =
        FakeRegistry::start(move |req| Reply::bytes(body.clone()).ranged(req).truncate(300 * KIB));
    let node = node_for(&fake.url(), &[]);

    assert_refused(
        &node,
        request(&node, "GET", &path, &[]),
        "GET of a cut blob",
    );
    assert_clean(&node, "after two cuts");
    let asked = fake.requests();
    let ranges: Vec<_> = asked
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={}-", 300 * KIB))],
        "one resume from where the body was cut"
    );
}

#[test]
fn truncated_blob_is_resumed_with_range() {
    let data = bytes(MIB + 1234, 7);
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/cut/blobs/{digest}");
    let body = data.clone();
    let fake = FakeRegistry::start(move |req| match req.nth {
        0 => Reply::bytes(body.clone()).truncate(300 * KIB),
        _ => Reply::bytes(body.clone()).ranged(req),
    });
    let node = node_for(&fake.url(), &[]);

    let resp = must(&node, "GET", &path, &[]);
    assert_body(&node, &resp, &data, "resumed blob");
    assert_stored(&node, &digest, data.len());
    let ranges: Vec<_> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(ranges, [None, Some(format!("bytes={}-", 300 * KIB))]);
    assert!(wait_until(SETTLE, || node.temp_files().is_empty()));
}

#[test]
fn kill9_mid_download_leaves_no_partial_blob() {
    let data = bytes(4 * MIB, 8);
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/slow/blobs/{digest}");
    let slow = Arc::new(AtomicBool::new(true));
    let (body, slow2) = (data.clone(), slow.clone());
    let fake = FakeRegistry::start(move |_| {
        let reply = Reply::bytes(body.clone());
        if slow2.load(Ordering::SeqCst) {
            reply.throttle(64 * KIB, Duration::from_millis(100))
        } else {
            reply
        }
    });
    let mut node = node_for(&fake.url(), &[]);

    let url = format!("{}{path}", node.url());
    let client = std::thread::spawn(move || http_request("GET", &url, &[], &[]));
    let wrote_some = wait_until(Duration::from_secs(20), || {
        node.temp_files()
            .iter()
            .any(|f| f.metadata().is_ok_and(|m| m.len() > 0))
    });
    assert!(
        wrote_some,
        "no bytes written to tmp/\n{}",
        node.log_tail(60)
    );
    node.kill9();
    let result = client.join().unwrap();
    assert!(
        result.is_err(),
        "client got a complete response: {:?}",
        result.map(|r| r.status)
    );
    assert!(
        !node.blob_file(&digest).exists(),
        "partial blob in the store"
    );
    assert!(
        !node.temp_files().is_empty(),
        "the partial download should still be in tmp/"
    );

    node.restart();
    assert!(
        node.temp_files().is_empty(),
        "tmp/ not cleared at start: {:?}",
        node.temp_files()
    );
    assert!(!node.blob_file(&digest).exists());
    slow.store(false, Ordering::SeqCst);
    let resp = must(&node, "GET", &path, &[]);
    assert_body(&node, &resp, &data, "GET after restart");
    assert_stored(&node, &digest, data.len());
}

#[test]
fn ranges_and_head_on_stored_content() {
    let data = bytes(MIB + 123, 9);
    let size = data.len();
    let digest = sha256_hex(&data);
    let path = format!("/v2/test/r/blobs/{digest}");
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec();
    let manifest_digest = sha256_hex(&manifest);
    let (body, m) = (data.clone(), manifest.clone());
    let fake = FakeRegistry::start(move |req| {
        if req.path.contains("/manifests/") {
            Reply::manifest(OCI_MANIFEST, m.clone())
        } else {
            Reply::bytes(body.clone())
        }
    });
    let node = node_for(&fake.url(), &[]);
    assert_body(&node, &must(&node, "GET", &path, &[]), &data, "first GET");
    assert_stored(&node, &digest, size);

    let ranges: Vec<(String, usize, usize)> = vec![
        ("bytes=100-199".into(), 100, 200),
        ("bytes=0-0".into(), 0, 1),
        (format!("bytes={}-", size - 10), size - 10, size),
        ("bytes=-500".into(), size - 500, size),
        (format!("bytes=-{}", size + 9), 0, size),
        (format!("bytes=5-{}", size + 100), 5, size),
    ];
    for (range, start, end) in &ranges {
        let (start, end) = (*start, *end);
        let resp = must(&node, "GET", &path, &[("Range", range)]);
        assert_eq!(resp.status, 206, "{range}");
        let want = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(resp.header("content-range"), Some(want.as_str()), "{range}");
        let len = (end - start).to_string();
        assert_eq!(resp.header("content-length"), Some(len.as_str()), "{range}");
        assert!(resp.body == data[start..end], "{range}: bytes differ");
    }
    let bad_ranges = [
        "bytes=5-2".to_owned(),
        "bytes=abc".to_owned(),
        "bytes=-0".to_owned(),
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 10, size + 20),
    ];
    for range in &bad_ranges {
        let resp = must(&node, "GET", &path, &[("Range", range)]);
        assert_error(&node, &resp, 416, "RANGE_INVALID", range);
    }

    // HEAD: headers, no body.
    let head = raw_head(&node, &path);
    assert_eq!(head.0, 200);
    assert_eq!(head.1.get("content-length"), Some(&size.to_string()));
    assert_eq!(head.1.get("docker-content-digest"), Some(&digest));
    assert_eq!(head.2, 0, "HEAD of a blob sent body bytes");
    for reference in ["v1", manifest_digest.as_str()] {
        let mpath = format!("/v2/test/r/manifests/{reference}");
        let got = must(&node, "GET", &mpath, &[ACCEPT_OCI]);
        assert_body(&node, &got, &manifest, &mpath);
        let head = raw_head(&node, &mpath);
        assert_eq!(head.0, 200, "HEAD {mpath}");
        assert_eq!(
            head.1.get("content-length"),
            Some(&manifest.len().to_string())
        );
        assert_eq!(head.1.get("docker-content-digest"), Some(&manifest_digest));
        assert_eq!(
            head.1.get("content-type").map(String::as_str),
            Some(OCI_MANIFEST)
        );
        assert_eq!(head.2, 0, "HEAD {mpath} sent body bytes");
    }
}

/// `HEAD path` on a raw connection, read to EOF: status, headers, and how many bytes followed
/// the header block (must be none).
fn raw_head(
    node: &ShoalNode,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, usize) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(node.host()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: {}\r\nAccept: {OCI_MANIFEST}\r\nConnection: close\r\n\r\n",
        node.host()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header block");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw.len() - end - 4)
}
