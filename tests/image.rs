//! The container image: the repository's Dockerfile builds with the real Docker engine from
//! Debian (legacy builder) and the image runs as a node that serves a pull.
//!
//! No image can be pulled here, so the test makes both stages' images from Debian packages with
//! `debootstrap` and `docker import`: the final stage's base is a minbase Debian, and the
//! builder is a minbase Debian with a C toolchain plus this machine's Rust toolchain and the
//! crates already downloaded here (offline). Only build arguments differ from a plain
//! `docker build`. debootstrap fetches from deb.debian.org unless `DEBIAN_MIRROR` names another
//! mirror.
//!
//! A cold build took 9 to 15 minutes here (2 cores shared with other builds), nearly all of it
//! compiling the dependencies in release mode; shoal itself takes 2 to 3. So what does not
//! change between runs is kept under `target/image-test/`: the debootstrap trees, and the
//! dockerd's data root with the two imported images and the legacy builder's layer cache,
//! keyed by what they were made from (the Debian recipe, the toolchain, Cargo.lock). A rerun
//! then compiles only what Docker's own cache rules say changed: nothing if the sources did
//! not, shoal alone if they did. The test's container and final image are removed when it
//! ends, and stale cached layers pruned.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    Containerd, Dockerd, Registry, RegistryOpts, check_output, free_port, http_request, make_image,
    push_image, sha256_hex, tools,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const MIB: usize = 1024 * 1024;
/// The Debian release both images are made from (the final stage's glibc must be at least the
/// one the binary was linked against, i.e. the builder's).
const SUITE: &str = "bookworm";
/// Where debootstrap fetches Debian from, unless the `DEBIAN_MIRROR` environment variable names
/// another one (a local mirror or proxy).
const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// The builder stage's packages on top of minbase: a C compiler and headers for ring and
/// SQLite, and the CA bundle the Dockerfile copies into the final image.
const BUILDER_PACKAGES: &[&str] = &["gcc", "libc6-dev", "ca-certificates", "pkg-config"];
/// The user the image runs as (distroless's `nonroot`).
const IMAGE_USER: &str = "65532:65532";

#[test]
fn the_image_builds_with_debian_docker_and_runs_as_a_node_that_serves_pulls() {
    if !tools(&[
        "debootstrap",
        "tar",
        "rustc",
        "dockerd",
        "docker",
        "containerd",
        "docker-registry",
        "skopeo",
    ]) || !running_as_root()
    {
        return;
    }
    let cache = target_dir().join("image-test");
    std::fs::create_dir_all(&cache).unwrap();
    // One run at a time owns the cached trees and data root.
    let lock = File::create(cache.join("lock")).unwrap();
    lock.lock().unwrap();
    let started = Instant::now();
    let (base_root, base_key) = debootstrap_cached(&cache, "base", &[]);
    let (builder_root, deb_key) = debootstrap_cached(&cache, "builder", BUILDER_PACKAGES);
    eprintln!("debootstrap trees ready in {:.1?}", started.elapsed());
    let (sysroot, cargo_home) = (rust_sysroot(), cargo_home());
    let builder_key = key(&[
        deb_key.as_bytes(),
        command_stdout(Command::new(sysroot.join("bin/rustc")).arg("-vV")).as_bytes(),
        command_stdout(Command::new(sysroot.join("bin/cargo")).arg("-V")).as_bytes(),
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap(),
    ]);
    let data_root = cached_dir(
        &cache,
        "docker-data",
        &key(&[base_key.as_bytes(), builder_key.as_bytes()]),
    );
    let _unmount = UnmountOnDrop(data_root.clone());

    // The upstream and its image; the node will run in the container on these ports, and the
    // test's dockerd pulls through it.
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[2 * MIB, MIB], &[]);
    push_image(&image, &registry, "library/web", "1.0", None);
    let (mirror_port, admin_port, p2p_port) = (free_port(), free_port(), free_port());
    let mirror = format!("http://127.0.0.1:{mirror_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");

    let containerd = Containerd::start();
    let docker = Dockerd::start_with_config(&containerd, |mut config, dir| {
        config["registry-mirrors"] = json!([mirror]);
        config["insecure-registries"] = json!([format!("127.0.0.1:{mirror_port}")]);
        config["data-root"] = json!(data_root);
        let path = dir.join("daemon.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    });
    let tag = format!("{:08x}", rand::random::<u32>());
    let mut made = Made {
        docker: &docker,
        containers: Vec::new(),
        images: Vec::new(),
    };

    let base_image = format!("local/shoal-test-base:{base_key}");
    if !docker.image_inspect(&base_image).status.success() {
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(&base_root).args(["-c", "."]);
        import(&docker, tar, &[], &base_image);
    }
    let builder_image = format!("local/shoal-test-builder:{builder_key}");
    if !docker.image_inspect(&builder_image).status.success() {
        let started = Instant::now();
        import(
            &docker,
            builder_tar(&builder_root, &sysroot, &cargo_home),
            &[
                "ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV CARGO_HOME=/usr/local/cargo",
                "ENV CARGO_NET_OFFLINE=true",
            ],
            &builder_image,
        );
        eprintln!("builder image imported in {:.1?}", started.elapsed());
    }

    // The build: the repository's Dockerfile and context; only the build arguments differ.
    let shoal_image = format!("local/shoal-test:{tag}");
    made.images.push(shoal_image.clone());
    let started = Instant::now();
    let output = docker_command(&docker)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--force-rm", "-t", &shoal_image])
        .args(["--build-arg", &format!("BASE_IMAGE={base_image}")])
        .args(["--build-arg", &format!("BUILDER_IMAGE={builder_image}")])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    check_output("docker build", &output);
    let build_time = started.elapsed();
    let log = String::from_utf8_lossy(&output.stdout);
    // The builder stage's last layer keeps a tag, so that its layers stay cached for the next
    // run (and the previous run's, untagged now, are pruned at the end).
    let stage = builder_stage_image(&log).expect("the builder stage's image in the build output");
    let stage_tag = format!("local/shoal-test-stage:{builder_key}");
    check_output("docker tag", &docker.docker(&["tag", &stage, &stage_tag]));
    let inspect = image_inspect(&docker, &shoal_image);
    let size = inspect["Size"].as_u64().unwrap();
    let base_size = image_inspect(&docker, &base_image)["Size"]
        .as_u64()
        .unwrap();
    eprintln!(
        "docker build: {build_time:.0?} ({} of {} steps cached); image {:.1} MiB, {:.1} MiB \
         above its base",
        log.matches("Using cache").count(),
        log.matches("Step ").count(),
        size as f64 / MIB as f64,
        (size - base_size) as f64 / MIB as f64,
    );

    // What the image declares: a non-root user, the binary as entrypoint, the data volume.
    let config = &inspect["Config"];
    assert_eq!(config["User"], IMAGE_USER);
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/shoal"])
    );
    assert!(
        config["Volumes"].get("/var/lib/shoal").is_some(),
        "{config}"
    );

    // Run it as a node on the host's network, with a read-only root filesystem: only the data
    // volume (owned by the image's user) is writable.
    let container = format!("shoal-test-node-{tag}");
    // Listed before it exists: a `docker run` that fails after creating it (or a panic before
    // the next line) still leaves nothing behind; removing a missing container is harmless.
    made.containers.push(container.clone());
    let upstream = format!("docker.io={}", registry.url());
    let run = docker.docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "--network",
        "host",
        "--read-only",
        &shoal_image,
        "--log",
        "shoal=debug,info",
        "node",
        "--listen",
        &format!("127.0.0.1:{mirror_port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--p2p-listen",
        &format!("/ip4/127.0.0.1/tcp/{p2p_port}"),
        "--upstream",
        &upstream,
    ]);
    check_output("docker run", &run);
    let healthy = common::wait_until(Duration::from_secs(30), || {
        common::http_status(&format!("{admin}/healthz")) == Some(200)
    });
    assert!(
        healthy,
        "the node in the container did not answer /healthz:\n{}",
        container_logs(&docker, &container)
    );

    // The process in the container runs as the image's user, not as root.
    let state = container_inspect(&docker, &container);
    let pid = state["State"]["Pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uids}"
    );

    // Docker pulls through the node in the container: every layer arrives intact (Docker checks
    // the digests, and the diff IDs are the image's), each fetched from the upstream once.
    check_output("docker pull", &docker.pull("library/web:1.0"));
    let manifest = &image.manifests[0];
    let diff_ids: Vec<String> = manifest.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(docker.image_diff_ids("library/web:1.0"), diff_ids);
    for layer in &manifest.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", layer.digest);
    }

    // Asked again, the node answers from its store on the data volume, with the right bytes.
    for layer in &manifest.layers {
        let url = format!("{mirror}/v2/library/web/blobs/{}", layer.digest);
        let resp = http_request("GET", &url, &[], &[]).unwrap();
        assert_eq!(resp.status, 200, "{url}");
        assert_eq!(sha256_hex(&resp.body), layer.digest);
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", layer.digest);
    }
    let metrics = http_request("GET", &format!("{admin}/metrics"), &[], &[]).unwrap();
    let metrics = String::from_utf8(metrics.body).unwrap();
    let cache_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_served_bytes_total{source=\"cache\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let layer_bytes: u64 = manifest.layers.iter().map(|l| l.size).sum();
    assert!(cache_bytes >= layer_bytes as f64, "{metrics}");

    drop(made);
}

/// What the test made in its dockerd, removed on drop (before the daemon stops): its
/// containers and final image, and the layers no tag keeps any more (the previous builder
/// stage's, once this run's took its tag).
struct Made<'a> {
    docker: &'a Dockerd,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = self.docker.docker(&["rm", "-f", "-v", container]);
        }
        for image in &self.images {
            let _ = self.docker.docker(&["rmi", "-f", image]);
        }
        let _ = self.docker.docker(&["image", "prune", "-f"]);
        let _ = self.docker.docker(&["volume", "prune", "-f"]);
    }
}

/// Unmounts whatever is left mounted under the cached data root (after a daemon that died).
struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        common::unmount_under(&self.0);
    }
}

/// `docker -H unix://SOCK` for the harness's daemon, for what [`Dockerd::docker`] cannot do
/// (an environment variable, a piped stdin).
fn docker_command(docker: &Dockerd) -> Command {
    let mut cmd = Command::new("docker");
    cmd.arg("-H")
        .arg(format!("unix://{}", docker.socket().display()));
    cmd
}

/// The image the builder stage ended with, from the legacy builder's output: the last
/// `---> ID` before the second `FROM` step.
fn builder_stage_image(log: &str) -> Option<String> {
    let mut froms = 0;
    let mut last = None;
    for line in log.lines() {
        let line = line.trim();
        if line.starts_with("Step ") && line.contains(" : FROM ") {
            froms += 1;
            if froms == 2 {
                return last;
            }
        } else if let Some(id) = line.strip_prefix("---> ")
            && id.len() >= 12
            && id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            last = Some(id.to_owned());
        }
    }
    None
}

/// `tar … | docker import [-c CHANGE]… - NAME`.
fn import(docker: &Dockerd, mut tar: Command, changes: &[&str], name: &str) {
    let mut tar = tar.stdout(Stdio::piped()).spawn().expect("run tar");
    let mut import = docker_command(docker);
    import.arg("import");
    for change in changes {
        import.args(["-c", change]);
    }
    let output = import
        .args(["-", name])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    let tar_status = tar.wait().unwrap();
    assert!(tar_status.success(), "tar for {name}: {tar_status}");
    check_output(&format!("docker import {name}"), &output);
}

/// The builder image's tar: the debootstrap tree, this machine's Rust toolchain under
/// /usr/local/rust (rustc finds its libraries relative to itself) and the crates downloaded
/// here under /usr/local/cargo/registry (the index cache and the .crate files; cargo unpacks
/// them again), so `cargo build --locked` works offline.
fn builder_tar(root: &Path, sysroot: &Path, cargo_home: &Path) -> Command {
    let mut tar = Command::new("tar");
    // Members from the toolchain and CARGO_HOME are renamed; the tree's own start with `./`.
    // `flags=rh`: rename members and hard-link targets, never symbolic-link targets.
    tar.arg("-c")
        .arg("--transform=flags=rh;s,^\\(bin\\|lib\\)\\(/\\|$\\),usr/local/rust/\\1\\2,")
        .arg("--transform=flags=rh;s,^registry\\(/\\|$\\),usr/local/cargo/registry\\1,")
        .arg("-C")
        .arg(root)
        .arg(".")
        .arg("-C")
        .arg(sysroot)
        .args(["bin/cargo", "bin/rustc", "lib"])
        .arg("-C")
        .arg(cargo_home)
        .args(["registry/index", "registry/cache"]);
    tar
}

/// This machine's Rust toolchain (`rustc --print sysroot`), which must have cargo beside rustc
/// (a rustup toolchain has).
fn rust_sysroot() -> PathBuf {
    let sysroot = command_stdout(Command::new("rustc").args(["--print", "sysroot"]));
    let sysroot = PathBuf::from(sysroot.trim());
    assert!(
        sysroot.join("bin/cargo").is_file(),
        "no cargo beside rustc in {}: the builder image needs both",
        sysroot.display()
    );
    sysroot
}

/// `CARGO_HOME`, else `~/.cargo`: where the downloaded crates are.
fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"))
}

/// The first 16 hex digits of the SHA-256 of `parts`.
fn key(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())[..16].to_owned()
}

/// `cache/NAME-KEY`, created if missing, after removing `NAME-*` of other keys.
fn cached_dir(cache: &Path, name: &str, key: &str) -> PathBuf {
    let dir = cache.join(format!("{name}-{key}"));
    let prefix = format!("{name}-");
    for entry in std::fs::read_dir(cache).unwrap().flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(&prefix) && entry.path() != dir;
        if stale {
            common::unmount_under(&entry.path());
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `debootstrap --variant=minbase SUITE` tree with `packages` included, made once and kept
/// as `cache/rootfs-NAME-KEY` (KEY: a hash of what it is made from); returns it and KEY.
fn debootstrap_cached(cache: &Path, name: &str, packages: &[&str]) -> (PathBuf, String) {
    let mirror = debian_mirror();
    let recipe = format!("1 {SUITE} minbase {mirror} {}", packages.join(","));
    let key = key(&[recipe.as_bytes()]);
    let dir = cache.join(format!("rootfs-{name}-{key}"));
    if dir.join("etc/debian_version").is_file() {
        return (dir, key);
    }
    let dir = cached_dir(cache, &format!("rootfs-{name}"), &key);
    std::fs::remove_dir(&dir).unwrap();
    let partial = cache.join(format!("partial-rootfs-{name}"));
    let _ = std::fs::remove_dir_all(&partial);
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    let started = Instant::now();
    let output = cmd.arg(SUITE).arg(&partial).arg(&mirror).output().unwrap();
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    check_output(&format!("debootstrap {name}"), &output);
    std::fs::rename(&partial, &dir).unwrap();
    eprintln!("debootstrap {name}: {:.0?}", started.elapsed());
    (dir, key)
}

/// `DEBIAN_MIRROR` from the environment, else [`DEFAULT_DEBIAN_MIRROR`]. It is part of the
/// trees' cache key: the trees' apt sources name it.
fn debian_mirror() -> String {
    std::env::var("DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_owned())
}

/// The crate's target directory (`CARGO_TARGET_DIR`, else `target/` beside Cargo.toml).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// debootstrap and docker need root: under `CI=true` its absence fails the test, else skips it.
fn running_as_root() -> bool {
    if command_stdout(Command::new("id").arg("-u")).trim() == "0" {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI: the image test needs root (debootstrap, dockerd)");
    }
    eprintln!("########## SKIP: the image test needs root; skipping ##########");
    false
}

fn command_stdout(cmd: &mut Command) -> String {
    let output: Output = cmd.output().unwrap();
    check_output(&format!("{cmd:?}"), &output);
    String::from_utf8(output.stdout).unwrap()
}

fn image_inspect(docker: &Dockerd, name: &str) -> serde_json::Value {
    let output = docker.image_inspect(name);
    check_output(&format!("docker image inspect {name}"), &output);
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()[0].clone()
}

fn container_inspect(docker: &Dockerd, name: &str) -> serde_json::Value {
    let output = docker.docker(&["container", "inspect", name]);
    check_output(&format!("docker container inspect {name}"), &output);
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()[0].clone()
}

fn container_logs(docker: &Dockerd, name: &str) -> String {
    let output = docker.docker(&["logs", "--tail", "40", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
