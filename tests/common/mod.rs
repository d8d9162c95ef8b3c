//! Shared integration-test harness: real registries, containerd and dockerd on loopback,
//! plus generated OCI test images.
//!
//! Every component runs on 127.0.0.1 with a port from [`free_port`] and a temporary directory
//! of its own, and is stopped (and its mounts removed) when dropped. Test files use it with
//! `mod common;`:
//!
//! ```ignore
//! if !common::require_tool("skopeo") { return; }
//! let registry = Registry::start(RegistryOpts::default());
//! let image = make_image(&dir.join("layout"), &[1 << 20], &[("linux", "amd64"), ("linux", "arm64")]);
//! push_image(&image, &registry, "library/app", "v1", None);
//! let containerd = Containerd::start();
//! write_hosts_toml(&hosts, "docker.io", "https://registry-1.docker.io", &mirror_url);
//! check_output("pull", &containerd.pull("docker.io/library/app:v1", &hosts, None));
//! containerd.check_layers_unpacked("docker.io/library/app:v1", &image.manifest_for("linux", "amd64").layers).unwrap();
//! assert_eq!(registry.blob_gets(&image.layer_digests()[0]), 1);
//! ```

// Each test file compiles this module separately and uses only part of it.
#![allow(dead_code, unused_imports)]

/// Several nodes in one swarm.
pub mod cluster;
/// containerd and `ctr`, plus hosts.toml for registry mirrors.
pub mod containerd;
/// dockerd with a registry mirror.
pub mod docker;
/// A fake upstream registry whose answers (lies, cuts, slowness) a test decides.
pub mod fake;
/// A tiny blocking HTTP/1.1 client.
pub mod http;
/// Generated OCI test images and pushing them.
pub mod image;
/// A manager in process and a client of its API.
pub mod manager;
/// Debian's nginx as a file origin.
pub mod nginx;
/// A `shoal node` process.
pub mod node;
/// In-process swarm members that misbehave on purpose.
pub mod peer;
/// Debian's podman with storage and configuration of its own.
pub mod podman;
/// Debian's PostgreSQL server with a fresh database per test.
pub mod postgres;
/// Background processes with collected output.
pub mod process;
/// The upstream `docker-registry`.
pub mod registry;

pub use containerd::{Containerd, write_hosts_toml};
pub use docker::Dockerd;
pub use http::{HttpResponse, http_request, http_status, wait_for_http};
pub use image::{LayerInfo, ManifestInfo, TestImage, make_image, push_blob, push_image};
pub use node::{ShoalNode, write_swarm_key};
pub use podman::Podman;
pub use postgres::{Postgres, postgres_available};
pub use registry::{AccessLine, Registry, RegistryOpts};

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// True if `name` is an executable on PATH; otherwise panics under `CI=true`, else prints SKIP.
pub fn require_tool(name: &str) -> bool {
    if find_on_path(name).is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI: required tool {name} is missing");
    }
    eprintln!(
        "########## SKIP: required tool `{name}` is not on PATH; skipping this test ##########"
    );
    false
}

/// Full path of executable `name` found on PATH, if any.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// [`require_tool`] for each of `names`.
pub fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n))
}

/// A currently free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `"sha256:<hex>"` digest of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Polls `cond` every 20 ms until it returns true or `timeout` elapses; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lazily unmounts every mount point at or under `root`, deepest first.
pub fn unmount_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // Field 5 is the mount point, with spaces etc. octal-escaped.
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&point)
            .output();
    }
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Last `n` lines of `text`, for panic messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Panics with the command's output unless it exited successfully.
pub fn check_output(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stdout), 40),
        tail(&String::from_utf8_lossy(&output.stderr), 40),
    );
}
