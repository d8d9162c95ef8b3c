//! Helpers of the fault tests: nodes wired to fakes and registries, and assertions on what a
//! client received and what the node kept on disk.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::image::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use super::common::{
    HttpResponse, Registry, ShoalNode, http_request, http_status, push_blob, sha256_hex, wait_until,
};

/// One KiB.
pub const KIB: usize = 1024;
/// One MiB.
pub const MIB: usize = 1024 * 1024;
/// How long the node gets to finish background work (a download, cleaning tmp/).
pub const SETTLE: Duration = Duration::from_secs(15);

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
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
pub fn node_for(upstream: &str, fallbacks: &[&str]) -> ShoalNode {
    let mut args = vec!["--upstream".to_owned(), format!("docker.io={upstream}")];
    for f in fallbacks {
        args.extend(["--fallback".to_owned(), format!("docker.io={f}")]);
    }
    ShoalNode::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `n` clients GET `path` at the same moment.
pub fn concurrent_gets(
    node: &ShoalNode,
    path: &str,
    n: usize,
) -> Vec<std::io::Result<HttpResponse>> {
    let url = format!("{}{path}", node.url());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                http_request("GET", &url, &[], &[])
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

/// `method path` on the node's mirror port.
pub fn request(
    node: &ShoalNode,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_request(method, &format!("{}{path}", node.url()), headers, &[])
}

/// A request that must get a complete HTTP response.
pub fn must(node: &ShoalNode, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(node, method, path, headers).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: no complete response ({e})\nnode log:\n{}",
            node.log_tail(60)
        )
    })
}

/// Asserts status and distribution error envelope `code`.
pub fn assert_error(node: &ShoalNode, resp: &HttpResponse, status: u16, code: &str, what: &str) {
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
pub fn assert_body(node: &ShoalNode, resp: &HttpResponse, data: &[u8], what: &str) {
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

/// The client must not get the blob, a source having sent bad content: either a 502
/// `UNAVAILABLE` envelope (the download failed before the response began) or a body cut short.
pub fn assert_refused(node: &ShoalNode, result: std::io::Result<HttpResponse>, what: &str) {
    if let Ok(resp) = result {
        assert_error(node, &resp, 502, "UNAVAILABLE", what);
    }
}

/// Waits for the blob in the store and checks its bytes against the digest.
pub fn assert_stored(node: &ShoalNode, digest: &str, len: usize) {
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
pub fn assert_clean(node: &ShoalNode, what: &str) {
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

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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
pub fn push_manifest(registry: &Registry, repo: &str, tag: &str) -> (Vec<u8>, String) {
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

/// What a client sends to get an OCI image manifest.
pub const ACCEPT_OCI: (&str, &str) = ("Accept", OCI_MANIFEST);

/// `HEAD path` on a raw connection, read to EOF: status, headers, and how many bytes followed
/// the header block (must be none).
pub fn raw_head(node: &ShoalNode, path: &str) -> (u16, HashMap<String, String>, usize) {
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
