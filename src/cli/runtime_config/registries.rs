//! `shoal registries-config`: a containers-registries.conf(5) (version 2) drop-in for Podman,
//! CRI-O, Buildah and Skopeo, which all read `/etc/containers/registries.conf.d/*.conf`.
//!
//! These clients send no `ns` parameter to a mirror, so each registry's mirror `location`
//! carries the registry in its path: `NODE/ghcr.io` makes them ask the node for
//! `/v2/ghcr.io/org/app/…`, which the node reads as `?ns=ghcr.io` would be
//! ([`crate::mirror::route::path_registry`]). A reference cannot hold a colon after its host,
//! so a registry with a port is written `HOST_PORT` there (`NODE/127.0.0.1_5000`). Docker Hub
//! gets the same form (`NODE/docker.io`), so it does not depend on the node's
//! `--default-registry`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{ApplyFlags, NodeUrl, RuntimeConfigError, carry_out, managed, plan_files};
use crate::mirror::route::path_registry;
use crate::oci::{RegistryHost, RepoName};

/// Flags of `shoal registries-config`.
#[derive(Debug, Args)]
pub struct RegistriesConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: NodeUrl,
    /// A registry pulled through the node (repeatable): an entry for each, whose mirror is the
    /// node with the registry in its path.
    #[arg(long = "registry", value_name = "HOST", default_values_t = vec!["docker.io".parse::<RegistryHost>().expect("valid host")])]
    pub registries: Vec<RegistryHost>,
    /// Write this drop-in instead of printing it (the original, if any, is kept as
    /// FILE.shoal-backup). CRI-O reads it on restart or SIGHUP; Podman on every command.
    /// [default with no value: /etc/containers/registries.conf.d/shoal.conf].
    #[arg(
        long,
        value_name = "FILE",
        num_args = 0..=1,
        default_missing_value = "/etc/containers/registries.conf.d/shoal.conf"
    )]
    pub write: Option<PathBuf>,
    /// --dry-run, --restore.
    #[command(flatten)]
    pub apply: ApplyFlags,
}

/// How `registry` appears as the first path component of a mirror location: the host, with
/// `_PORT` for `:PORT`. It must be a valid reference path component that the node reads back
/// as the same registry.
///
/// # Errors
/// For a registry no such component can name: an IPv6 literal, or a host with a port but
/// neither a dot nor the name `localhost` (`registry:5000`).
pub fn mirror_path(registry: &RegistryHost) -> Result<String, RuntimeConfigError> {
    let component = registry.as_str().replace(':', "_");
    let names_it = component.parse::<RepoName>().is_ok()
        && !component.contains('/')
        && path_registry(&component).ok().flatten().as_ref() == Some(registry);
    if names_it {
        Ok(component)
    } else {
        Err(RuntimeConfigError::Invalid(format!(
            "--registry {registry}: Podman and CRI-O cannot name this registry in a mirror \
             location (use a host name with a dot, or localhost)"
        )))
    }
}

/// The drop-in: a `[[registry]]` for each of `registries` (each once) with the node as its
/// mirror, the registry in the mirror's path (`insecure` for an `http://` node). Each registry
/// stays its own `location`, which clients try when the node fails. An entry replaces any
/// entry with the same prefix in registries.conf.
///
/// # Errors
/// For a registry the mirror location cannot name ([`mirror_path`]).
pub fn registries_conf(
    node: &NodeUrl,
    registries: &[RegistryHost],
) -> Result<String, RuntimeConfigError> {
    let mut out = format!(
        "{header}: Podman and CRI-O pull these registries through the local shoal\n\
         # node first, and from the registry itself when the node fails. The node finds the\n\
         # registry in the path of the mirror location (HOST_PORT stands for HOST:PORT).\n",
        header = managed::HEADER,
    );
    let mut seen = Vec::new();
    for registry in registries {
        if seen.contains(&registry) {
            continue;
        }
        seen.push(registry);
        out.push_str(&format!(
            "\n[[registry]]\n\
             prefix = \"{registry}\"\n\
             location = \"{registry}\"\n\
             \n\
             [[registry.mirror]]\n\
             location = \"{node}/{path}\"\n",
            node = node.host_port(),
            path = mirror_path(registry)?,
        ));
        if node.is_http() {
            out.push_str("insecure = true\n");
        }
    }
    Ok(out)
}

/// Runs `shoal registries-config`, printing to `out`.
///
/// # Errors
/// On an I/O failure.
pub fn run(args: &RegistriesConfigArgs, out: &mut dyn Write) -> Result<(), RuntimeConfigError> {
    let content = registries_conf(&args.node, &args.registries)?;
    let Some(path) = &args.write else {
        out.write_all(content.as_bytes())?;
        return Ok(());
    };
    let changes = if args.apply.restore {
        managed::plan_restore(std::slice::from_ref(path))?
    } else {
        plan_files(vec![(path.clone(), content.into_bytes())])?
    };
    carry_out(&changes, args.apply, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<RegistryHost> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn each_registry_with_the_node_and_its_path_as_mirror() {
        let node: NodeUrl = "http://127.0.0.1:65001".parse().unwrap();
        let text = registries_conf(
            &node,
            &hosts(&["docker.io", "ghcr.io", "127.0.0.1:5000", "ghcr.io"]),
        )
        .unwrap();
        let conf: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            conf.len(),
            1,
            "no top-level keys: the drop-in can follow any file"
        );
        let entries = conf["registry"].as_array().unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|reg| {
                assert_eq!(reg["mirror"][0]["insecure"].as_bool(), Some(true));
                assert_eq!(reg["prefix"], reg["location"]);
                (
                    reg["prefix"].as_str().unwrap(),
                    reg["mirror"][0]["location"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("docker.io", "127.0.0.1:65001/docker.io"),
                ("ghcr.io", "127.0.0.1:65001/ghcr.io"),
                ("127.0.0.1:5000", "127.0.0.1:65001/127.0.0.1_5000"),
            ]
        );

        let tls: NodeUrl = "https://node.example".parse().unwrap();
        let text = registries_conf(&tls, &hosts(&["quay.io"])).unwrap();
        let conf: toml::Table = toml::from_str(&text).unwrap();
        let mirror = &conf["registry"][0]["mirror"][0];
        assert_eq!(mirror["location"].as_str(), Some("node.example/quay.io"));
        assert!(mirror.get("insecure").is_none());
    }

    #[test]
    fn the_node_reads_each_mirror_path_back_as_its_registry() {
        for host in hosts(&[
            "docker.io",
            "registry.example.com:5000",
            "localhost",
            "localhost:5000",
            "my-registry.example",
        ]) {
            let path = mirror_path(&host).unwrap();
            let rest = format!("{path}/team/app/manifests/v1");
            let req = crate::mirror::route::parse_v2(&rest, true).unwrap();
            assert_eq!(req.registry.as_ref(), Some(&host), "{path}");
        }
        // No reference path component can name these.
        for host in hosts(&["[::1]:5000", "registry:5000", "registry"]) {
            let e = mirror_path(&host).unwrap_err().to_string();
            assert!(e.contains("--registry"), "{e}");
        }
    }

    #[test]
    fn the_example_is_what_the_command_writes() {
        let example: toml::Table =
            toml::from_str(include_str!("../../../examples/podman-registries.conf")).unwrap();
        let written = registries_conf(
            &"http://127.0.0.1:65001".parse().unwrap(),
            &hosts(&["docker.io", "ghcr.io", "quay.io"]),
        )
        .unwrap();
        assert_eq!(example, toml::from_str::<toml::Table>(&written).unwrap());
    }

    #[test]
    fn write_over_an_existing_drop_in_and_restore_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registries.conf.d/shoal.conf");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mine = "[[registry]]\nprefix = \"docker.io\"\nblocked = true\n";
        std::fs::write(&file, mine).unwrap();
        let mut args = RegistriesConfigArgs {
            node: "http://127.0.0.1:65001".parse().unwrap(),
            registries: hosts(&["docker.io"]),
            write: Some(file.clone()),
            apply: ApplyFlags::default(),
        };
        run(&args, &mut Vec::new()).unwrap();
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("[[registry.mirror]]")
        );
        args.apply.restore = true;
        args.apply.dry_run = true;
        let mut diff = Vec::new();
        run(&args, &mut diff).unwrap();
        assert!(String::from_utf8(diff).unwrap().contains("+blocked = true"));
        args.apply.dry_run = false;
        run(&args, &mut Vec::new()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), mine);
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
