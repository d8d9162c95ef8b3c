//! `shoal containerd-config`, `docker-config` and `registries-config` on files with content of
//! their own, then real containerd, dockerd and podman pulling through the node with what they
//! wrote; `--dry-run` changes nothing and `--restore` brings every byte back.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Containerd, Dockerd, LayerInfo, Podman, Registry, RegistryOpts, ShoalNode, tools};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// Runs `shoal ARGS…` and returns its stdout; panics with its output unless it succeeded.
fn shoal(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap();
    common::check_output(&format!("shoal {}", args.join(" ")), &output);
    String::from_utf8(output.stdout).unwrap()
}

/// `args` followed by `extra`.
fn with<'a>(args: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    args.iter().chain(extra).copied().collect()
}

/// Every file and directory under `dir`: its mode and, for files, its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let mode = entry.metadata().unwrap().permissions().mode();
        if path.is_dir() {
            out.insert(path.clone(), (mode, None));
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), (mode, Some(std::fs::read(&path).unwrap())));
        }
    }
    out
}

/// A registry holding `REPO:TAG` (one linux/amd64 manifest of two layers) and a node whose
/// upstream it is for `docker.io` and for its own `127.0.0.1:PORT` (a second registry).
fn registry_and_node(work: &Path, repo: &str, tag: &str) -> (Registry, Vec<LayerInfo>, ShoalNode) {
    let registry = Registry::start(RegistryOpts::default());
    let image = common::make_image(&work.join("layout"), &[2 * MIB, MIB], &[]);
    common::push_image(&image, &registry, repo, tag, None);
    let node = ShoalNode::start(&[
        "--upstream",
        &format!("docker.io={}", registry.url()),
        "--upstream",
        &format!("{}={}", registry.host(), registry.url()),
    ]);
    (registry, image.manifests[0].layers.clone(), node)
}

/// The node fetched each layer once from the upstream, holds it and delivered its bytes.
fn assert_node_served(node: &ShoalNode, registry: &Registry, layers: &[LayerInfo]) {
    for layer in layers {
        let digest = &layer.digest;
        assert!(
            common::wait_until(Duration::from_secs(5), || registry.blob_gets(digest) == 1),
            "upstream GETs of {digest}: {}",
            registry.blob_gets(digest)
        );
        let stored = node.blob_file(digest);
        assert!(
            common::wait_until(Duration::from_secs(5), || stored.exists()),
            "the node does not hold {digest}"
        );
    }
    let total: u64 = layers.iter().map(|l| l.size).sum();
    let served = node.metric("shoal_served_bytes_total", &[("source", "upstream")]);
    assert!(
        served >= total as f64,
        "the node served {served} of {total} bytes"
    );
}

fn diff_ids(layers: &[LayerInfo]) -> Vec<String> {
    layers.iter().map(|l| l.diff_id.clone()).collect()
}

#[test]
fn containerd_config_keeps_backups_pulls_through_the_node_and_restores() {
    if !tools(&["docker-registry", "skopeo", "containerd", "ctr"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (registry, layers, node) = registry_and_node(work.path(), "library/app", "v1");

    // An operator's certs.d: a default, a Docker Hub file (private mode) beside a certificate,
    // and a registry shoal is not asked about.
    let certs = work.path().join("certs.d");
    let put = |rel: &str, text: &str| {
        let path = certs.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    put(
        "_default/hosts.toml",
        "[host.\"https://cache.example\"]\n  capabilities = [\"pull\"]\n",
    );
    put(
        "docker.io/hosts.toml",
        "server = \"https://registry-1.docker.io\"\n\n\
         [host.\"http://127.0.0.1:9\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
    );
    std::fs::set_permissions(
        certs.join("docker.io/hosts.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    put("docker.io/ca.crt", "not shoal's\n");
    put("quay.io/hosts.toml", "server = \"https://quay.io\"\n");
    let before = snapshot(&certs);

    let certs_arg = certs.to_str().unwrap();
    let node_url = node.url();
    let args = [
        "containerd-config",
        "--node",
        &node_url,
        "--registry",
        "docker.io",
        "--registry",
        "ghcr.io",
        "--write",
        certs_arg,
    ];
    let diff = shoal(&with(&args, &["--dry-run"]));
    for expected in [
        format!("--- {certs_arg}/docker.io/hosts.toml\n+++ {certs_arg}/docker.io/hosts.toml\n"),
        "-[host.\"http://127.0.0.1:9\"]\n".to_owned(),
        format!("+[host.\"{node_url}\"]\n"),
        format!("--- /dev/null\n+++ {certs_arg}/ghcr.io/hosts.toml\n"),
        "-[host.\"https://cache.example\"]\n".to_owned(),
    ] {
        assert!(diff.contains(&expected), "{expected:?} not in:\n{diff}");
    }
    assert_eq!(snapshot(&certs), before, "--dry-run changed files");

    shoal(&args);
    let backup = |rel: &str| std::fs::read(certs.join(format!("{rel}.shoal-backup"))).unwrap();
    for rel in ["_default/hosts.toml", "docker.io/hosts.toml"] {
        assert_eq!(Some(backup(rel)), before[&certs.join(rel)].1, "{rel}");
    }
    assert!(certs.join("ghcr.io/hosts.toml.shoal-created").exists());
    // Again: nothing changes, and the backups still hold the originals.
    let written = snapshot(&certs);
    shoal(&args);
    assert_eq!(snapshot(&certs), written);

    let containerd = Containerd::start();
    let reference = "docker.io/library/app:v1";
    common::check_output("ctr pull", &containerd.pull(reference, &certs, None));
    containerd
        .check_layers_unpacked(reference, &layers)
        .unwrap();
    assert_node_served(&node, &registry, &layers);

    let diff = shoal(&with(&args, &["--restore", "--dry-run"]));
    assert!(
        diff.contains(&format!(
            "--- {certs_arg}/ghcr.io/hosts.toml\n+++ /dev/null\n"
        )),
        "{diff}"
    );
    assert!(diff.contains("+[host.\"http://127.0.0.1:9\"]\n"), "{diff}");
    assert_eq!(
        snapshot(&certs),
        written,
        "--restore --dry-run changed files"
    );
    // Restoring needs only the directory: the records say what shoal changed.
    let out = shoal(&["containerd-config", "--write", certs_arg, "--restore"]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(snapshot(&certs), before, "not restored byte for byte");
}

#[test]
fn docker_config_merges_into_daemon_json_and_dockerd_pulls_through_the_node() {
    if !tools(&[
        "docker-registry",
        "skopeo",
        "containerd",
        "dockerd",
        "docker",
    ]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (registry, layers, node) = registry_and_node(work.path(), "library/web", "1.0");
    let daemon_json = work.path().join("daemon.json");
    let path_arg = daemon_json.to_str().unwrap().to_owned();
    let node_url = node.url();
    let args = ["docker-config", "--node", &node_url, "--write", &path_arg];

    let containerd = Containerd::start();
    let mut original = Vec::new();
    let docker = Dockerd::start_with_config(&containerd, |harness, _| {
        // The operator's daemon.json: keys of their own (and an old mirror), then what this
        // dockerd needs to run beside others.
        let mut config = json!({
            "log-level": "warn",
            "features": {"buildkit": false},
            "max-concurrent-downloads": 2,
            "registry-mirrors": ["http://127.0.0.1:9"],
        });
        for (key, value) in harness.as_object().unwrap() {
            config[key] = value.clone();
        }
        original = serde_json::to_vec_pretty(&config).unwrap();
        std::fs::write(&daemon_json, &original).unwrap();

        let diff = shoal(&with(&args, &["--dry-run"]));
        assert!(diff.contains(&format!("+    \"{node_url}\",\n")), "{diff}");
        assert_eq!(std::fs::read(&daemon_json).unwrap(), original);

        shoal(&args);
        assert_eq!(
            std::fs::read(format!("{path_arg}.shoal-backup")).unwrap(),
            original
        );
        let merged: Value = serde_json::from_slice(&std::fs::read(&daemon_json).unwrap()).unwrap();
        let (old, new) = (config.as_object().unwrap(), merged.as_object().unwrap());
        for (key, value) in old {
            if key != "registry-mirrors" {
                assert_eq!(&new[key], value, "{key}");
            }
        }
        // Every key in its place; the one new key last.
        let mut keys: Vec<&str> = old.keys().map(String::as_str).collect();
        keys.push("insecure-registries");
        assert_eq!(new.keys().map(String::as_str).collect::<Vec<_>>(), keys);
        assert_eq!(
            merged["registry-mirrors"],
            json!([node_url, "http://127.0.0.1:9"])
        );
        assert_eq!(merged["insecure-registries"], json!([node.host()]));
        daemon_json.clone()
    });
    common::check_output("docker pull", &docker.pull("library/web:1.0"));
    assert_eq!(docker.image_diff_ids("library/web:1.0"), diff_ids(&layers));
    assert_node_served(&node, &registry, &layers);
    drop(docker);

    let out = shoal(&with(&args, &["--restore"]));
    assert!(out.contains("restored"), "{out}");
    assert_eq!(std::fs::read(&daemon_json).unwrap(), original);
    assert!(!Path::new(&format!("{path_arg}.shoal-backup")).exists());
}

#[test]
fn registries_config_drop_in_sends_podman_pulls_of_two_registries_through_the_node() {
    if !tools(&["docker-registry", "skopeo", "podman"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (registry, layers, node) = registry_and_node(work.path(), "library/tool", "2");
    // The same registry is also a second one, named by its own `127.0.0.1:PORT`, holding
    // another image.
    let second = common::make_image(&work.path().join("second"), &[MIB, MIB / 2], &[]);
    common::push_image(&second, &registry, "team/app", "v1", None);
    let second_layers = second.manifests[0].layers.clone();
    let host = registry.host();
    let drop_in = work.path().join("registries.conf.d/shoal.conf");
    let drop_in_arg = drop_in.to_str().unwrap();
    let node_url = node.url();
    let args = [
        "registries-config",
        "--node",
        &node_url,
        "--registry",
        "docker.io",
        "--registry",
        &host,
        "--write",
        drop_in_arg,
    ];

    let diff = shoal(&with(&args, &["--dry-run"]));
    assert!(
        diff.starts_with(&format!("--- /dev/null\n+++ {drop_in_arg}\n")),
        "{diff}"
    );
    for location in [
        format!("{}/docker.io", node.host()),
        format!("{}/{}", node.host(), host.replace(':', "_")),
    ] {
        assert!(
            diff.contains(&format!("+location = \"{location}\"\n")),
            "{location} not in {diff}"
        );
    }
    assert!(!drop_in.parent().unwrap().exists(), "--dry-run wrote files");
    shoal(&args);

    // CONTAINERS_REGISTRIES_CONF names one file (podman still reads the host's drop-in
    // directory after it, which the test leaves alone): the operator's registries.conf
    // followed by shoal's drop-in.
    let conf = work.path().join("registries.conf");
    let mut text = b"unqualified-search-registries = [\"docker.io\"]\n\n".to_vec();
    text.extend(std::fs::read(&drop_in).unwrap());
    std::fs::write(&conf, text).unwrap();
    let podman = Podman::new(&conf);
    let reference = "docker.io/library/tool:2";
    common::check_output("podman pull", &podman.pull(reference));
    assert_eq!(podman.image_diff_ids(reference), diff_ids(&layers));
    // The second registry: its only location is https, which it does not speak, so the
    // image can only have come through the node.
    let reference = format!("{host}/team/app:v1");
    common::check_output("podman pull (second registry)", &podman.pull(&reference));
    assert_eq!(podman.image_diff_ids(&reference), diff_ids(&second_layers));
    let all: Vec<LayerInfo> = layers.iter().chain(&second_layers).cloned().collect();
    assert_node_served(&node, &registry, &all);

    shoal(&with(&args, &["--restore"]));
    assert!(
        !drop_in.parent().unwrap().exists(),
        "the drop-in directory shoal made is not removed"
    );
}
