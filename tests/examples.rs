//! The files in examples/ stay true: the Grafana dashboard charts only metrics shoal exports
//! (and every one of them), and `local-swarm.sh` brings up a manager, a seed and three nodes
//! that serve a pull and stop when it does.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::Daemon;
use common::{Registry, RegistryOpts, check_output, http_request, make_image, push_image, tools};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_grafana_dashboard_charts_every_exported_metric_and_no_other() {
    let text = std::fs::read_to_string(repo().join("examples/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let exported = exported_metrics(&repo().join("src"));
    for name in [
        "shoal_served_bytes_total",
        "shoal_manager_http_requests_total",
    ] {
        assert!(exported.contains(name), "{name} not found in src/");
    }

    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut ids = BTreeSet::new();
    let mut charted = BTreeSet::new();
    for panel in &panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{}",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for var in variables_in(expr) {
                let defined = var.starts_with("__")
                    || dashboard["templating"]["list"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v["name"] == var.as_str());
                assert!(defined, "${var} in {expr:?} is not a dashboard variable");
            }
            for name in metric_names_in(expr) {
                let exported_name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(exported_name),
                    "panel {}: {name} is not a metric shoal exports ({exported:?})",
                    panel["title"]
                );
                charted.insert(exported_name.to_owned());
            }
        }
    }
    let missing: Vec<_> = exported.difference(&charted).collect();
    assert!(
        missing.is_empty(),
        "metrics not on the dashboard: {missing:?}"
    );
}

/// Every panel, rows' nested panels included.
fn collect_panels<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in list.as_array().into_iter().flatten() {
        out.push(panel);
        collect_panels(&panel["panels"], out);
    }
}

/// The metric names registered in the code: `"shoal_…"` string literals under `dir`.
fn exported_metrics(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            names.extend(exported_metrics(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            for (i, _) in source.match_indices("\"shoal_") {
                let rest = &source[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                if rest[end..].starts_with('"') {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
    }
    names
}

/// `shoal_…` identifiers in a PromQL expression.
fn metric_names_in(expr: &str) -> Vec<String> {
    expr.match_indices("shoal_")
        .filter(|(i, _)| {
            !expr[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// `$name` variables in an expression.
fn variables_in(expr: &str) -> Vec<String> {
    expr.match_indices('$')
        .map(|(i, _)| {
            expr[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn local_swarm_script_runs_a_swarm_that_serves_a_pull_and_stops_it() {
    if !tools(&["bash", "curl", "docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let work = tempfile::tempdir().unwrap();
    let image = make_image(&work.path().join("layout"), &[2 * MIB, MIB], &[]);
    push_image(&image, &registry, "library/app", "v1", None);

    let base = free_port_block();
    let swarm_dir = work.path().join("swarm");
    // Dropped before `work`: whatever the outcome, no process of the swarm outlives the test
    // (the script's own stop() does not run when bash is killed).
    let _swarm_guard = KillSwarmOnDrop(swarm_dir.clone());
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("examples/local-swarm.sh"))
        .env("SHOAL_BIN", env!("CARGO_BIN_EXE_shoal"))
        .env("BASE_PORT", base.to_string())
        .env("UPSTREAM", format!("docker.io={}", registry.url()))
        .env("SWARM_DIR", &swarm_dir)
        .env("ADMIN_PASSWORD", "local-swarm-test")
        .env_remove("SHOAL_CONFIG")
        .env_remove("SHOAL_MANAGER_URL")
        .env_remove("SHOAL_TOKEN");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut script = Daemon::spawn("local-swarm.sh", cmd, log.clone());
    let ready = common::wait_until(Duration::from_secs(120), || {
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("shoal swarm ready"))
            || !script.is_running()
    });
    assert!(
        ready && script.is_running(),
        "local-swarm.sh did not get ready:\n{}",
        script.log_tail(60)
    );

    // A pull through node-2: the manifest by tag, then the config and layers, intact.
    let node = |i: u16| format!("http://127.0.0.1:{}", base + i * 10 + 1);
    let manifest = &image.manifests[0];
    let resp = http_request(
        "GET",
        &format!("{}/v2/library/app/manifests/v1", node(2)),
        &[("Accept", common::image::OCI_MANIFEST)],
        &[],
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(common::sha256_hex(&resp.body), manifest.digest);
    // Then the same blobs through node-3 and node-1: from the swarm, the upstream sends each once.
    for n in [2, 3, 1] {
        for (digest, _) in image.blobs() {
            let url = format!("{}/v2/library/app/blobs/{digest}", node(n));
            let resp = http_request("GET", &url, &[], &[]).unwrap();
            assert_eq!(resp.status, 200, "{url}");
            assert_eq!(common::sha256_hex(&resp.body), digest, "{url}");
        }
    }
    for layer in &manifest.layers {
        assert_eq!(registry.blob_gets(&layer.digest), 1, "{}", layer.digest);
    }

    // The manager lists the seed and the three nodes of cluster `local`.
    let list = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_CONFIG_DIR", swarm_dir.join("cli"))
        .args(["node", "list", "--cluster", "local", "--output", "json"])
        .output()
        .unwrap();
    check_output("shoal node list", &list);
    let text = String::from_utf8_lossy(&list.stdout);
    for name in ["seed-1", "node-1", "node-2", "node-3"] {
        assert!(
            text.contains(&format!("\"{name}\"")),
            "{name} missing: {text}"
        );
    }

    // SIGTERM stops the script and everything it started.
    script.terminate(Duration::from_secs(30));
    assert!(
        script.log_tail(5).contains("stopping the swarm"),
        "{}",
        script.log_tail(20)
    );
    let left = processes_mentioning(&swarm_dir);
    assert!(left.is_empty(), "still running: {left:?}");
}

/// Kills every process whose command line mentions the swarm's directory (the manager, seed
/// and nodes all name it in `--data-dir`), for a test that fails half-way.
struct KillSwarmOnDrop(PathBuf);

impl Drop for KillSwarmOnDrop {
    fn drop(&mut self) {
        common::process::kill_processes_mentioning(&self.0);
    }
}

/// A base port B such that B+1…B+33 and B+80 are free on 127.0.0.1 (the script's ports).
fn free_port_block() -> u16 {
    let offsets = [1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33, 80];
    for _ in 0..200 {
        let base = 20000 + rand::random::<u16>() % 30000;
        let free = offsets
            .iter()
            .all(|o| TcpListener::bind((Ipv4Addr::LOCALHOST, base + o)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of ports");
}

/// Command lines of running processes that mention `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}
