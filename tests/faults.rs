//! Faults on the pull path, against a real `shoal node`: lying, truncating, slow and dead
//! upstreams, standby mirrors, stale tags, malformed requests and kill -9 mid-download.
//!
//! Bad sources are [`FakeRegistry`]s; the good source, where one is needed, is a real
//! `docker-registry` (those tests are skipped without it).

mod common;
#[path = "faults/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fake::{FakeRegistry, Reply};
use common::image::OCI_MANIFEST;
use common::{
    Registry, RegistryOpts, free_port, http_request, http_status, push_blob, sha256_hex, wait_until,
};
use support::*;

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
    // Whole MiBs, then a pause, then the tail: readers wait right behind the download when the
    // last bytes arrive and the lie is found.
    let fake = FakeRegistry::start(move |_| {
        Reply::bytes(lie.clone()).throttle(MIB, Duration::from_millis(150))
    });
    let node = node_for(&fake.url(), &[&registry.url()]);

    // Several clients, so that one reading right behind the download would be caught taking
    // the lie's last byte. Each is cut short or gets the right bytes (from the fallback).
    for (i, result) in concurrent_gets(&node, &path, 4).iter().enumerate() {
        if let Ok(resp) = result {
            assert_body(&node, resp, &data, &format!("client {i}"));
        }
    }
    assert_stored(&node, &digest, data.len());
    let failures = |source| node.metric("shoal_blob_verify_failures_total", &[("source", source)]);
    assert!(failures("upstream") >= 1.0, "upstream verify failures");
    assert_eq!(failures("fallback"), 0.0, "fallback verify failures");

    let again = must(&node, "GET", &path, &[]);
    assert_body(&node, &again, &data, "GET after the download");
    assert_eq!(
        fake.count("GET", &path),
        1,
        "the lying upstream was asked again"
    );
    let cached = node.metric("shoal_served_bytes_total", &[("source", "cache")]);
    assert!(cached >= data.len() as f64, "served from cache: {cached}");
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
    let fake = FakeRegistry::start(move |_| {
        Reply::bytes(lie.clone()).throttle(MIB, Duration::from_millis(150))
    });
    let node = node_for(&fake.url(), &[]);

    // Each round starts after the last download failed: the bad bytes were not kept.
    for round in 0..3 {
        for (i, result) in concurrent_gets(&node, &path, 4).into_iter().enumerate() {
            assert_refused(&node, result, &format!("round {round}, client {i}"));
        }
        assert_clean(&node, &format!("after round {round}"));
    }
    let failures = node.metric(
        "shoal_blob_verify_failures_total",
        &[("source", "upstream")],
    );
    assert!(failures >= 2.0, "upstream verify failures: {failures}");
    assert!(fake.count("GET", &path) >= 2, "bad content was reused");
}

#[test]
fn lying_content_length_is_caught() {
    let short = bytes(MIB, 10);
    let long = bytes(MIB, 11);
    let (short_path, long_path) = (
        format!("/v2/test/len/blobs/{}", sha256_hex(&short)),
        format!("/v2/test/len/blobs/{}", sha256_hex(&long)),
    );
    let (s2, mut l2, sp) = (short.clone(), long.clone(), short_path.clone());
    l2.extend(bytes(4 * KIB, 12));
    let fake = FakeRegistry::start(move |req| {
        if req.path == sp {
            // Announces 100 bytes fewer than the blob has: the announced body cannot match.
            Reply::bytes(s2.clone()).announce(s2.len() - 100)
        } else {
            // Announces the right length, then sends garbage after it: not part of the blob.
            Reply::bytes(l2.clone()).announce(MIB)
        }
    });
    let node = node_for(&fake.url(), &[]);

    assert_refused(
        &node,
        request(&node, "GET", &short_path, &[]),
        "short length",
    );
    assert_clean(&node, "after a short length");
    let resp = must(&node, "GET", &long_path, &[]);
    assert_body(&node, &resp, &long, "extra bytes after the body");
    assert_stored(&node, &sha256_hex(&long), long.len());
}

#[test]
fn a_body_without_content_length_streams_whole_and_is_stored() {
    let data = bytes(3 * MIB, 13);
    let path = format!("/v2/test/close_delimited/blobs/{}", sha256_hex(&data));
    let body = data.clone();
    let fake = FakeRegistry::start(move |_| Reply::bytes(body.clone()).close_delimited());
    let node = node_for(&fake.url(), &[]);
    let resp = must(&node, "GET", &path, &[]);
    assert_body(&node, &resp, &data, "a body delimited by the connection");
    assert_stored(&node, &sha256_hex(&data), data.len());
    let again = must(&node, "GET", &path, &[]);
    assert_body(&node, &again, &data, "the stored copy");
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
    // METHOD PATH STATUS CODE; {d} is a valid digest, {hex} its hex part.
    let cases = "
        GET    /v2/UPPER/manifests/x                 400 NAME_INVALID
        GET    /v2/a..b/blobs/{d}                    400 NAME_INVALID
        GET    /v2/a/%2e%2e/b/manifests/latest       400 NAME_INVALID
        GET    /v2/%2e%2e/%2e%2e/blobs/{d}           400 NAME_INVALID
        GET    /v2/../etc/manifests/latest           400 NAME_INVALID
        GET    /v2/a/-b/blobs/{d}                    400 NAME_INVALID
        GET    /v2/a/blobs/sha256:zz                 400 DIGEST_INVALID
        GET    /v2/a/blobs/sha256:abc                400 DIGEST_INVALID
        GET    /v2/a/blobs/sha256:{hex}0             400 DIGEST_INVALID
        GET    /v2/a/blobs/sha256:{HEX}              400 DIGEST_INVALID
        GET    /v2/a/blobs/md5:{hex}                 400 DIGEST_INVALID
        GET    /v2/a/blobs/{hex}                     400 DIGEST_INVALID
        GET    /v2/a/manifests/sha256:12             400 DIGEST_INVALID
        GET    /v2/a/manifests/.bad                  400 NAME_INVALID
        GET    /v2/a/manifests/-bad                  400 NAME_INVALID
        GET    /v2/a/manifests/{long}                400 NAME_INVALID
        GET    /v2/a/manifests/bad%20tag             400 NAME_INVALID
        GET    /v2/a/manifests/latest?ns=bad%20host! 400 NAME_INVALID
        GET    /v2/a/manifests/latest?ns=..%2Fetc    400 NAME_INVALID
        PUT    /v2/a/manifests/latest                405 UNSUPPORTED
        DELETE /v2/a/manifests/{d}                   405 UNSUPPORTED
        DELETE /v2/a/blobs/{d}                       405 UNSUPPORTED
        POST   /v2/a/blobs/uploads/                  405 UNSUPPORTED
        PATCH  /v2/a/blobs/uploads/some-id           405 UNSUPPORTED
    "
    .replace("{d}", &d)
    .replace("{hex}", hex)
    .replace("{HEX}", &hex.to_ascii_uppercase())
    .replace("{long}", &"t".repeat(129));
    let mut failures = Vec::new();
    for case in cases.lines().filter(|l| !l.trim().is_empty()) {
        let [method, path, status, code] = case.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("bad case {case:?}");
        };
        let resp = must(&node, method, path, &[]);
        let got = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned));
        if resp.status.to_string() != status || got.as_deref() != Some(code) {
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
