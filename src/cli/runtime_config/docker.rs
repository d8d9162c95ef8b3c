//! `shoal docker-config`: the node as Docker's first `registry-mirrors` entry, merged into an
//! existing `daemon.json` without losing any other key (their order kept). Docker sends mirror
//! requests without `ns`, so the node answers them as its `--default-registry` (`docker.io`);
//! Docker uses mirrors for Docker Hub only.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};

use super::{ApplyFlags, NodeUrl, RuntimeConfigError, carry_out, managed, plan_files};

/// Flags of `shoal docker-config`.
#[derive(Debug, Args)]
pub struct DockerConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: NodeUrl,
    /// Merge into this daemon.json instead of printing the fragment (created when missing; the
    /// original is kept as daemon.json.shoal-backup); dockerd reloads it on SIGHUP. [default
    /// with no value: /etc/docker/daemon.json].
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = "/etc/docker/daemon.json"
    )]
    pub write: Option<PathBuf>,
    /// --dry-run, --restore.
    #[command(flatten)]
    pub apply: ApplyFlags,
}

/// The daemon.json fragment for Docker.
pub fn docker_fragment(node: &str) -> Value {
    let host = node
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let mut v = serde_json::json!({ "registry-mirrors": [node] });
    if node.starts_with("http://") {
        v["insecure-registries"] = serde_json::json!([host]);
    }
    v
}

/// A list of strings at `key` of `map` (empty when absent).
fn strings(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match map.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("`{key}` is not a list of strings")),
        Some(_) => Err(format!("`{key}` is not a list of strings")),
    }
}

/// `existing` (a daemon.json's bytes; `None` or blank: no file) with the node as the first
/// registry mirror, the other mirrors after it (each once), and for an `http://` node its
/// `host:port` among `insecure-registries`. Every other key keeps its value and place.
/// `Ok(None)`: the file says that already.
///
/// # Errors
/// When `existing` is not a JSON object, or its mirror lists are not lists of strings.
pub fn merge_daemon_json(
    existing: Option<&[u8]>,
    node: &NodeUrl,
) -> Result<Option<Vec<u8>>, String> {
    let old = match existing {
        Some(b) if !b.trim_ascii().is_empty() => {
            Some(serde_json::from_slice::<Value>(b).map_err(|e| format!("not valid JSON: {e}"))?)
        }
        _ => None,
    };
    let mut map = match &old {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("not a JSON object".into()),
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let mut mirrors = vec![node.as_str().to_owned()];
    for m in strings(&map, "registry-mirrors")? {
        if !mirrors.iter().any(|have| same(have, &m)) {
            mirrors.push(m);
        }
    }
    map.insert("registry-mirrors".into(), mirrors.into());
    if node.is_http() {
        let mut insecure = strings(&map, "insecure-registries")?;
        if !insecure.contains(&node.host_port()) {
            insecure.push(node.host_port());
            map.insert("insecure-registries".into(), insecure.into());
        }
    }
    let new = Value::Object(map);
    if old.as_ref() == Some(&new) {
        return Ok(None);
    }
    let mut bytes = serde_json::to_vec_pretty(&new).expect("a JSON value serializes");
    bytes.push(b'\n');
    Ok(Some(bytes))
}

/// Runs `shoal docker-config`, printing to `out`.
///
/// # Errors
/// When daemon.json is malformed (it is left as it is) or on an I/O failure.
pub fn run(args: &DockerConfigArgs, out: &mut dyn Write) -> Result<(), RuntimeConfigError> {
    let Some(path) = &args.write else {
        let fragment = docker_fragment(args.node.as_str());
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&fragment).expect("a JSON value serializes")
        )?;
        return Ok(());
    };
    let changes = if args.apply.restore {
        managed::plan_restore(std::slice::from_ref(path))?
    } else {
        plan_files(merged(path, &args.node)?.into_iter().collect())?
    };
    carry_out(&changes, args.apply, out)
}

/// The file's new content, `None` when it needs none.
fn merged(path: &Path, node: &NodeUrl) -> Result<Option<(PathBuf, Vec<u8>)>, RuntimeConfigError> {
    let existing = managed::read_current(path)?;
    let new = merge_daemon_json(existing.as_deref(), node).map_err(|reason| {
        RuntimeConfigError::Malformed {
            path: path.to_owned(),
            reason,
        }
    })?;
    Ok(new.map(|n| (path.to_owned(), n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(url: &str) -> NodeUrl {
        url.parse().unwrap()
    }

    fn merge(existing: &str, url: &str) -> Option<Value> {
        merge_daemon_json(Some(existing.as_bytes()), &node(url))
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn docker_fragment_marks_http_mirrors_insecure() {
        let v = docker_fragment("http://127.0.0.1:65001");
        assert_eq!(v["registry-mirrors"][0], "http://127.0.0.1:65001");
        assert_eq!(v["insecure-registries"][0], "127.0.0.1:65001");
        assert!(docker_fragment("https://n:1")["insecure-registries"].is_null());
    }

    #[test]
    fn merge_keeps_every_key_in_its_place() {
        let existing = r#"{"log-level": "warn",
            "registry-mirrors": ["https://m.example/", "http://127.0.0.1:65001/", "https://m.example"],
            "features": {"z": true, "a": false},
            "insecure-registries": ["10.0.0.0/8"], "data-root": "/d"}"#;
        let v = merge(existing, "http://127.0.0.1:65001").unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "log-level",
                "registry-mirrors",
                "features",
                "insecure-registries",
                "data-root"
            ]
        );
        assert_eq!(
            v["registry-mirrors"],
            serde_json::json!(["http://127.0.0.1:65001", "https://m.example/"])
        );
        assert_eq!(
            v["insecure-registries"],
            serde_json::json!(["10.0.0.0/8", "127.0.0.1:65001"])
        );
        let inner: Vec<&String> = v["features"].as_object().unwrap().keys().collect();
        assert_eq!(inner, ["z", "a"]);
        assert_eq!(v["data-root"], "/d");

        // Merged once, there is nothing more to do.
        let once = serde_json::to_string(&v).unwrap();
        assert_eq!(merge(&once, "http://127.0.0.1:65001"), None);
        // New keys go last; an https node is not insecure.
        let v = merge(r#"{"debug": true}"#, "https://node.example:8443").unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"debug":true,"registry-mirrors":["https://node.example:8443"]}"#
        );
        assert!(
            merge_daemon_json(None, &node("http://n:1"))
                .unwrap()
                .is_some()
        );
        assert!(
            merge_daemon_json(Some(b"  \n"), &node("http://n:1"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn malformed_files_are_refused_and_left_alone() {
        let n = node("http://127.0.0.1:65001");
        for bad in [
            "{\"log-level\": ",
            "[]",
            r#"{"registry-mirrors": "http://x"}"#,
            r#"{"insecure-registries": [1]}"#,
        ] {
            assert!(
                merge_daemon_json(Some(bad.as_bytes()), &n).is_err(),
                "{bad}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(&path, "{\"log-level\": ").unwrap();
        let args = DockerConfigArgs {
            node: n,
            write: Some(path.clone()),
            apply: ApplyFlags::default(),
        };
        let err = run(&args, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(err.contains("daemon.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"log-level\": ");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_and_restore_daemon_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let original =
            "{\n    \"log-level\": \"info\",\n    \"registry-mirrors\": [\"https://m\"]\n}";
        std::fs::write(&path, original).unwrap();
        let mut args = DockerConfigArgs {
            node: node("http://127.0.0.1:65001"),
            write: Some(path.clone()),
            apply: ApplyFlags::default(),
        };
        run(&args, &mut Vec::new()).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["registry-mirrors"][1], "https://m");
        args.node = node("http://127.0.0.1:65002");
        run(&args, &mut Vec::new()).unwrap();
        args.apply.restore = true;
        run(&args, &mut Vec::new()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn node_urls_are_scheme_host_and_port() {
        let n = node("http://127.0.0.1:65001/");
        assert_eq!(n.as_str(), "http://127.0.0.1:65001");
        assert_eq!(n.host_port(), "127.0.0.1:65001");
        assert_eq!(node("http://[::1]:5").host_port(), "[::1]:5");
        assert!(!node("https://n").is_http());
        for bad in [
            "127.0.0.1:65001",
            "ftp://n",
            "http://n/v2",
            "http://u:p@n",
            "http://n?x=1",
        ] {
            assert!(bad.parse::<NodeUrl>().is_err(), "{bad}");
        }
    }
}
