//! Files through the node and the swarm: `shoal get`, `/api/v1/files` and proxy mode, with
//! Debian's nginx as the origin.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::Cluster;
use common::fake::{FakeRegistry, Reply};
use common::nginx::Nginx;
use common::{ShoalNode, sha256_hex};

const MIB: usize = 1024 * 1024;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761 ^ seed) >> 7) as u8)
        .collect()
}

fn get_cmd(node: &ShoalNode, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(["get", url, "--node", &node.url(), "-q"])
        .args(extra);
    cmd
}

fn get(node: &ShoalNode, url: &str, extra: &[&str]) -> Output {
    get_cmd(node, url, extra).output().unwrap()
}

/// Every node `shoal get`s `url` at once (with `extra` flags) into `dir/out-I`; all succeed.
fn get_everywhere(nodes: &[ShoalNode], url: &str, extra: &[&str], dir: &Path) {
    let children: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let out = out_path(dir, &format!("out-{i}"));
            let mut args = extra.to_vec();
            args.extend(["-o", &out]);
            get_cmd(node, url, &args).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

fn out_path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

/// Files in `dir` (recursively), relative paths.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(
                tree(&p)
                    .into_iter()
                    .map(|q| Path::new(&e.file_name()).join(q)),
            );
        } else {
            out.push(PathBuf::from(e.file_name()));
        }
    }
    out.sort();
    out
}

#[test]
fn eight_nodes_get_one_file_and_the_origin_sends_about_one_copy() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let content = data(128 * MIB, 1);
    nginx.put("big.bin", &content);
    let digest = sha256_hex(&content);
    let cluster = Cluster::start("", &[("z", false); 8], &[]);
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}/big.bin", nginx.url());
    get_everywhere(&cluster.nodes, &url, &["--digest", &digest], work.path());
    for i in 0..8 {
        let got = std::fs::read(work.path().join(format!("out-{i}"))).unwrap();
        assert_eq!(sha256_hex(&got), digest, "output {i}");
    }
    let sent = nginx.bytes_sent("/big.bin");
    assert!(
        sent as f64 <= 1.1 * content.len() as f64,
        "the origin sent {sent} bytes for a {} byte file to 8 nodes",
        content.len()
    );
    let from_peers: f64 = cluster
        .nodes
        .iter()
        .map(|n| n.metric("shoal_served_bytes_total", &[("source", "peer")]))
        .sum();
    assert!(from_peers >= 6.0 * content.len() as f64, "{from_peers}");
}

#[test]
fn a_changed_file_is_never_served_stale_and_signatures_do_not_split_it() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let node = ShoalNode::start(&[]);
    let work = tempfile::tempdir().unwrap();
    nginx.put("f.txt", b"version one\n");
    let url = format!("{}/f.txt", nginx.url());
    let out = out_path(work.path(), "f.txt");
    common::check_output("first get", &get(&node, &url, &["-o", &out]));
    assert_eq!(std::fs::read(&out).unwrap(), b"version one\n");
    // Served from the node's store the second time: the origin is asked (HEAD), not read.
    common::check_output("second get", &get(&node, &url, &["-o", &out]));
    let gets = |path: &str| {
        nginx
            .access_log()
            .iter()
            .filter(|s| s.method == "GET" && s.path.starts_with(path))
            .count()
    };
    assert_eq!(gets("/f.txt"), 1);

    nginx.put("f.txt", b"version two, longer\n");
    common::check_output("get after the change", &get(&node, &url, &["-o", &out]));
    assert_eq!(std::fs::read(&out).unwrap(), b"version two, longer\n");
    assert_eq!(gets("/f.txt"), 2);

    // Presigned-style URLs that differ only in their signature share one download.
    nginx.put("signed.bin", &data(3 * MIB, 2));
    for sig in ["aaa", "bbb", "ccc"] {
        let signed = format!(
            "{}/signed.bin?X-Amz-Date=2026&X-Amz-Signature={sig}",
            nginx.url()
        );
        common::check_output(
            "presigned get",
            &get(&node, &signed, &["-o", &out_path(work.path(), sig)]),
        );
        assert_eq!(
            std::fs::read(work.path().join(sig)).unwrap(),
            data(3 * MIB, 2)
        );
    }
    assert_eq!(gets("/signed.bin"), 1);

    // Proxy mode: curl -x.
    let proxied = work.path().join("proxied");
    let out = Command::new("curl")
        .args(["-s", "-f", "--noproxy", "", "-x", &node.url(), "-o"])
        .arg(&proxied)
        .arg(format!("{}/signed.bin", nginx.url()))
        .output()
        .unwrap();
    common::check_output("curl -x", &out);
    assert_eq!(std::fs::read(&proxied).unwrap(), data(3 * MIB, 2));
    assert_eq!(gets("/signed.bin"), 1, "the proxy served the stored copy");
}

#[test]
fn a_wrong_digest_fails_and_leaves_nothing() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let node = ShoalNode::start(&[]);
    let work = tempfile::tempdir().unwrap();
    nginx.put("f.bin", &data(5 * MIB, 3));
    let wrong = sha256_hex(b"something else");
    let out = out_path(work.path(), "f.bin");
    let res = get(
        &node,
        &format!("{}/f.bin", nginx.url()),
        &["--digest", &wrong, "-o", &out],
    );
    assert_eq!(res.status.code(), Some(3), "{res:?}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("does not match") && err.contains(&wrong),
        "{err}"
    );
    assert!(tree(work.path()).is_empty(), "{:?}", tree(work.path()));
    assert!(
        tree(&node.data_dir().join("blobs")).is_empty(),
        "stored as complete"
    );
}

#[test]
fn an_interrupted_get_resumes() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let node = ShoalNode::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let content = data(64 * MIB, 4);
    nginx.put("f.bin", &content);
    let url = format!("{}/f.bin", nginx.url());
    let out = out_path(work.path(), "f.bin");
    let part = work.path().join(".f.bin.shoal-part");
    let mut child = get_cmd(&node, &url, &["--limit", "16MiB/s", "-o", &out])
        .spawn()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(20), || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 16 * MIB as u64)
    }));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!Path::new(&out).exists(), "a partial file at the output");
    let kept = std::fs::metadata(&part).unwrap().len();
    let served = |n: &ShoalNode| -> f64 {
        ["cache", "upstream", "peer", "fallback"]
            .iter()
            .map(|s| n.metric("shoal_served_bytes_total", &[("source", s)]))
            .sum()
    };
    let before = served(&node);
    common::check_output("resumed get", &get(&node, &url, &["-o", &out]));
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&content)
    );
    assert!(!part.exists());
    let again = served(&node) - before;
    assert!(
        again <= (content.len() as u64 - kept) as f64,
        "the second run fetched {again} bytes, {kept} were kept"
    );
    assert!(nginx.bytes_sent("/f.bin") as f64 <= 1.1 * content.len() as f64);

    // Bytes left by something else (no record of which content they were) are not resumed.
    let other = out_path(work.path(), "g.bin");
    std::fs::write(work.path().join(".g.bin.shoal-part"), vec![0u8; MIB]).unwrap();
    common::check_output(
        "get over a stray part file",
        &get(&node, &url, &["-o", &other]),
    );
    assert_eq!(
        sha256_hex(&std::fs::read(&other).unwrap()),
        sha256_hex(&content)
    );
}

#[test]
fn bad_input_gets_clear_errors_and_nothing_half_written() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let node = ShoalNode::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let out = out_path(work.path(), "x");
    let dead = format!("http://127.0.0.1:{}/x", common::free_port());
    let short = FakeRegistry::start(|_| Reply::bytes(vec![7u8; 1000]).announce(5000));
    let broken = FakeRegistry::start(|_| Reply::status(500));
    for (url, code, want) in [
        ("ftp://example.org/x".to_owned(), 2, "unsupported scheme"),
        ("not a url".to_owned(), 2, "invalid url"),
        (dead.clone(), 1, "cannot reach"),
        (format!("{}/missing", nginx.url()), 1, "404"),
        (format!("{}/x", broken.url()), 1, "500"),
        (format!("{}/short", short.url()), 1, "announced"),
    ] {
        let res = get(&node, &url, &["-o", &out]);
        assert_eq!(res.status.code(), Some(code), "{url}: {res:?}");
        let err = String::from_utf8_lossy(&res.stderr).to_lowercase();
        assert!(err.contains(want), "{url}: {err}");
        assert!(!Path::new(&out).exists(), "{url}: something at the output");
    }
    // The node stays up.
    assert_eq!(common::http_status(&node.admin_url("/healthz")), Some(200));

    // --recursive over an nginx listing, and a hostile listing whose links try to escape.
    nginx.put("tree/a.txt", b"a");
    nginx.put("tree/sub/b.txt", b"b");
    let dir = work.path().join("tree");
    common::check_output(
        "get -r",
        &get(
            &node,
            &format!("{}/tree/", nginx.url()),
            &["-r", "-o", dir.to_str().unwrap()],
        ),
    );
    assert_eq!(
        tree(&dir),
        vec![PathBuf::from("a.txt"), PathBuf::from("sub/b.txt")]
    );
    let hostile = FakeRegistry::start(|req| {
        if req.path.ends_with("/list/") {
            Reply::bytes(
                r#"<a href="../../escape">x</a><a href="/abs">y</a><a href="%2e%2e/z">z</a>
                   <a href="sub%2f..%2f..%2fw">w</a><a href="ok.txt">ok</a>"#,
            )
            .header("ETag", "\"l\"")
        } else {
            Reply::bytes("fine").header("ETag", "\"f\"")
        }
    });
    let jail = work.path().join("jail").join("in");
    common::check_output(
        "get -r of a hostile listing",
        &get(
            &node,
            &format!("{}/list/", hostile.url()),
            &["-r", "-o", jail.to_str().unwrap()],
        ),
    );
    assert_eq!(
        tree(&work.path().join("jail")),
        vec![PathBuf::from("in/ok.txt")]
    );
}

#[test]
fn a_preheated_file_is_served_by_every_node_of_the_zone_with_the_origin_down() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let content = data(6 * MIB, 5);
    nginx.put("pre.bin", &content);
    let digest = sha256_hex(&content);
    let cluster = Cluster::start("", &[("z", true), ("z", false), ("z", false)], &[]);
    let url = format!("{}/pre.bin", nginx.url());
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["preheat", &url, "--scope", "zone"])
        .args(["--node", &cluster.nodes[1].admin_url("")])
        .args(["--timeout", "60"])
        .output()
        .unwrap();
    common::check_output("shoal preheat of a file", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done: 3 node(s)"), "{stdout}");
    assert!(!stdout.contains("pre.bin?"), "{stdout}");
    for node in &cluster.nodes {
        assert!(node.blob_file(&digest).exists());
    }
    assert!(nginx.bytes_sent("/pre.bin") as f64 <= 1.1 * content.len() as f64);

    drop(nginx);
    let work = tempfile::tempdir().unwrap();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let path = out_path(work.path(), &format!("pre-{i}"));
        common::check_output(
            "get with the origin down",
            &get(node, &url, &["--digest", &digest, "-o", &path]),
        );
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}

#[test]
fn without_a_digest_the_zone_still_fetches_a_file_once() {
    if !common::require_tool("nginx") {
        return;
    }
    let nginx = Nginx::start();
    let content = data(64 * MIB, 6);
    nginx.put("plain.bin", &content);
    let cluster = Cluster::start("", &[("z", false); 8], &[]);
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}/plain.bin", nginx.url());
    get_everywhere(&cluster.nodes, &url, &[], work.path());
    for i in 0..8 {
        let got = std::fs::read(work.path().join(format!("out-{i}"))).unwrap();
        assert_eq!(got, content, "output {i}");
    }
    let sent = nginx.bytes_sent("/plain.bin");
    assert!(
        sent as f64 <= 1.1 * content.len() as f64,
        "the origin sent {sent} bytes for a {} byte file to 8 nodes",
        content.len()
    );
}

#[test]
fn a_standby_file_server_serves_when_the_origin_is_down() {
    if !common::require_tool("nginx") {
        return;
    }
    let standby = Nginx::start();
    let content = data(2 * MIB, 7);
    standby.put("dist/tool.tgz", &content);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let fallback = format!("{dead}/={}/", standby.url());
    let node = ShoalNode::start(&["--file-fallback", &fallback]);
    let work = tempfile::tempdir().unwrap();
    let out = out_path(work.path(), "tool.tgz");
    common::check_output(
        "get through the standby",
        &get(&node, &format!("{dead}/dist/tool.tgz"), &["-o", &out]),
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
    assert_eq!(standby.bytes_sent("/dist/tool.tgz"), content.len() as u64);
}

#[test]
fn registry_content_is_not_handed_out_through_the_file_endpoint() {
    if !common::tools(&["nginx", "docker-registry"]) {
        return;
    }
    let registry = common::Registry::start(common::RegistryOpts::default());
    let layer = data(MIB, 8);
    let digest = common::push_blob(&registry.url(), "team/private", &layer);
    let node = ShoalNode::start(&["--upstream", &format!("docker.io={}", registry.url())]);
    let blob = common::http_request(
        "GET",
        &format!("{}/v2/team/private/blobs/{digest}", node.url()),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(blob.status, 200);
    // Neither an unreachable origin nor one that answers for anything makes it a file.
    let nginx = Nginx::start();
    nginx.put("anything", b"x");
    let dead = format!("http://127.0.0.1:{}/x", common::free_port());
    for url in [dead, format!("{}/anything", nginx.url())] {
        let q = format!(
            "{}/api/v1/files?url={}&digest={digest}",
            node.url(),
            url.replace(':', "%3A").replace('/', "%2F")
        );
        let resp = common::http_request("GET", &q, &[], &[]).unwrap();
        assert!(
            resp.status == 403 || resp.status == 503,
            "{url}: {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        assert_ne!(sha256_hex(&resp.body), digest);
    }
}
