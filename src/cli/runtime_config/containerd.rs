//! `shoal containerd-config`: `hosts.toml` files under containerd's `config_path`
//! (`/etc/containerd/certs.d`), one for `_default` (every registry) and one per named registry.
//! The node comes first; each registry's own server stays as `server`, the last fallback.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{ApplyFlags, NodeUrl, RuntimeConfigError, carry_out, managed, plan_files};
use crate::fetch::sources::default_upstream;
use crate::oci::RegistryHost;

/// Flags of `shoal containerd-config`.
#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: NodeUrl,
    /// Registries to write a file for, besides `_default` (repeatable).
    #[arg(long = "registry", value_name = "HOST", default_values_t = vec!["docker.io".to_string()])]
    pub registries: Vec<String>,
    /// Write `DIR/<host>/hosts.toml` files (containerd's `config_path`) instead of printing
    /// them; a file that was there is kept as `hosts.toml.shoal-backup`. [default
    /// with no value: /etc/containerd/certs.d].
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = "/etc/containerd/certs.d"
    )]
    pub write: Option<PathBuf>,
    /// --dry-run, --restore.
    #[command(flatten)]
    pub apply: ApplyFlags,
}

/// The `hosts.toml` for `registry` (`None`: the `_default` file for every other registry).
/// The node comes first; the registry itself stays as `server`, so containerd still pulls when
/// the node is down.
pub fn hosts_toml(node: &NodeUrl, registry: Option<&RegistryHost>) -> String {
    let mut out = format!(
        "{}: pulls go through the local shoal node first.\n",
        managed::HEADER
    );
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

/// Every file `shoal containerd-config` produces: (directory name, content), one per registry
/// however often it is named.
///
/// # Errors
/// When a registry name is invalid.
pub fn containerd_files(
    args: &ContainerdConfigArgs,
) -> Result<Vec<(String, String)>, RuntimeConfigError> {
    let mut files = vec![("_default".to_owned(), hosts_toml(&args.node, None))];
    for r in &args.registries {
        let host: RegistryHost = r
            .parse()
            .map_err(|e| RuntimeConfigError::Invalid(format!("--registry: {e}")))?;
        let name = host.to_string();
        if files.iter().all(|(have, _)| *have != name) {
            files.push((name, hosts_toml(&args.node, Some(&host))));
        }
    }
    Ok(files)
}

/// Every `DIR/<host>/hosts.toml` that has a record of what was there before shoal, whichever
/// registries it was written for.
fn recorded_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RuntimeConfigError::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let file = entry
            .map_err(|e| RuntimeConfigError::io(dir, e))?
            .path()
            .join("hosts.toml");
        if managed::has_record(&file)? {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `shoal containerd-config`, printing to `out`.
///
/// # Errors
/// On a bad registry name or an I/O failure.
pub fn run(args: &ContainerdConfigArgs, out: &mut dyn Write) -> Result<(), RuntimeConfigError> {
    let files = containerd_files(args)?;
    let Some(dir) = &args.write else {
        for (name, content) in &files {
            writeln!(out, "# {name}/hosts.toml\n{content}")?;
        }
        return Ok(());
    };
    let changes = if args.apply.restore {
        managed::plan_restore(&recorded_files(dir)?)?
    } else {
        plan_files(
            files
                .into_iter()
                .map(|(name, content)| (dir.join(name).join("hosts.toml"), content.into_bytes()))
                .collect(),
        )?
    };
    carry_out(&changes, args.apply, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(registries: &[&str], write: Option<&Path>) -> ContainerdConfigArgs {
        ContainerdConfigArgs {
            node: "http://127.0.0.1:65001".parse().unwrap(),
            registries: registries.iter().map(|r| r.to_string()).collect(),
            write: write.map(Path::to_owned),
            apply: ApplyFlags::default(),
        }
    }

    #[test]
    fn hosts_files() {
        let args = args(&["docker.io", "ghcr.io"], None);
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
    fn a_registry_named_twice_is_one_file() {
        let files = containerd_files(&args(&["ghcr.io", "docker.io", "ghcr.io"], None)).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["_default", "ghcr.io", "docker.io"]);
    }

    #[test]
    fn write_dry_run_and_restore_a_certs_dir() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path();
        let hub = certs.join("docker.io/hosts.toml");
        std::fs::create_dir_all(hub.parent().unwrap()).unwrap();
        std::fs::write(&hub, "server = \"https://mirror.example\"\n").unwrap();
        std::fs::write(certs.join("docker.io/ca.crt"), "cert").unwrap();

        let mut a = args(&["docker.io", "ghcr.io"], Some(certs));
        a.apply.dry_run = true;
        let mut out = Vec::new();
        run(&a, &mut out).unwrap();
        let diff = String::from_utf8(out).unwrap();
        assert!(
            diff.contains("-server = \"https://mirror.example\""),
            "{diff}"
        );
        assert!(diff.contains("--- /dev/null"), "{diff}");
        assert!(!certs.join("_default").exists());

        a.apply.dry_run = false;
        run(&a, &mut Vec::new()).unwrap();
        assert!(certs.join("ghcr.io/hosts.toml").exists());
        let mut again = Vec::new();
        run(&a, &mut again).unwrap();
        assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
        assert_eq!(recorded_files(certs).unwrap().len(), 3);

        a.apply.restore = true;
        run(&a, &mut Vec::new()).unwrap();
        let mut left: Vec<_> = walk(certs);
        left.sort();
        assert_eq!(
            left,
            [
                certs.join("docker.io/ca.crt"),
                certs.join("docker.io/hosts.toml")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&hub).unwrap(),
            "server = \"https://mirror.example\"\n"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .flat_map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    vec![e.path()]
                }
            })
            .collect()
    }
}
