//! Runtime configuration that points container runtimes at the node: containerd's
//! `hosts.toml` files and Docker's `registry-mirrors`.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::fetch::sources::default_upstream;
use crate::oci::RegistryHost;

/// Flags of `shoal containerd-config`.
#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: String,
    /// Registries to write a file for, besides `_default` (repeatable).
    #[arg(long = "registry", value_name = "HOST", default_values_t = vec!["docker.io".to_string()])]
    pub registries: Vec<String>,
    /// Write `DIR/<host>/hosts.toml` files (containerd's `config_path`, usually
    /// /etc/containerd/certs.d) instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub write: Option<PathBuf>,
}

/// Flags of `shoal docker-config`.
#[derive(Debug, Args)]
pub struct DockerConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: String,
}

/// The `hosts.toml` for `registry` (`None`: the `_default` file for every other registry).
/// The node comes first; the registry itself stays as `server`, so containerd still pulls when
/// the node is down.
pub fn hosts_toml(node: &str, registry: Option<&RegistryHost>) -> String {
    let mut out =
        String::from("# Written by shoal: pulls go through the local shoal node first.\n");
    if let Some(r) = registry {
        let server = default_upstream(r);
        out.push_str(&format!(
            "server = \"{}\"\n",
            server.as_str().trim_end_matches('/')
        ));
    }
    out.push_str(&format!(
        "\n[host.\"{node}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    ));
    out
}

/// Every file `shoal containerd-config` produces: (directory name, content).
///
/// # Errors
/// When a registry name is invalid.
pub fn containerd_files(args: &ContainerdConfigArgs) -> Result<Vec<(String, String)>, String> {
    let mut files = vec![("_default".to_owned(), hosts_toml(&args.node, None))];
    for r in &args.registries {
        let host: RegistryHost = r.parse().map_err(|e| format!("--registry: {e}"))?;
        files.push((host.to_string(), hosts_toml(&args.node, Some(&host))));
    }
    Ok(files)
}

/// Writes the files under `dir`, each through a temporary file and a rename.
///
/// # Errors
/// On I/O failure.
pub fn write_containerd_files(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    for (name, content) in files {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)?;
        let tmp = sub.join(".hosts.toml.shoal-tmp");
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, sub.join("hosts.toml"))?;
    }
    Ok(())
}

/// The daemon.json fragment for Docker.
pub fn docker_fragment(node: &str) -> serde_json::Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files() {
        let args = ContainerdConfigArgs {
            node: "http://127.0.0.1:65001".into(),
            registries: vec!["docker.io".into(), "ghcr.io".into()],
            write: None,
        };
        let files = containerd_files(&args).unwrap();
        assert_eq!(files.len(), 3);
        assert!(!files[0].1.contains("server"));
        assert!(
            files[1]
                .1
                .contains("server = \"https://registry-1.docker.io\"")
        );
        assert!(files[2].1.contains("server = \"https://ghcr.io\""));
        for (_, f) in &files {
            let parsed: toml::Table = toml::from_str(f).unwrap();
            assert_eq!(
                parsed["host"]["http://127.0.0.1:65001"]["capabilities"][0].as_str(),
                Some("pull")
            );
        }
        let bad = ContainerdConfigArgs {
            registries: vec!["../x".into()],
            ..args
        };
        assert!(containerd_files(&bad).is_err());
    }

    #[test]
    fn docker_fragment_marks_http_mirrors_insecure() {
        let v = docker_fragment("http://127.0.0.1:65001");
        assert_eq!(v["registry-mirrors"][0], "http://127.0.0.1:65001");
        assert_eq!(v["insecure-registries"][0], "127.0.0.1:65001");
        assert!(docker_fragment("https://n:1")["insecure-registries"].is_null());
    }
}
