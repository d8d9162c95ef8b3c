//! `shoal registries-config`: a containers-registries.conf(5) (version 2) drop-in for Podman,
//! CRI-O, Buildah and Skopeo, which all read `/etc/containers/registries.conf.d/*.conf`.
//!
//! These clients send no `ns` parameter to a mirror, so the node answers every request as its
//! `--default-registry` (`docker.io` unless set). A drop-in therefore mirrors one registry, the
//! node's default one: pointing another registry's entry at the node would make the node fetch
//! that registry's repositories from the default registry instead. To mirror another registry
//! for these clients, run a second node with `--default-registry` set to it (on its own port)
//! and write a second drop-in for it.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{ApplyFlags, NodeUrl, RuntimeConfigError, carry_out, managed, plan_files};
use crate::oci::RegistryHost;

/// Flags of `shoal registries-config`.
#[derive(Debug, Args)]
pub struct RegistriesConfigArgs {
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001")]
    pub node: NodeUrl,
    /// The registry pulled through the node: it must be the node's --default-registry, since
    /// Podman and CRI-O do not tell the node which registry they mean.
    #[arg(long, value_name = "HOST", default_value = "docker.io")]
    pub registry: RegistryHost,
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

/// The drop-in: one `[[registry]]` for `registry` with the node as its mirror (`insecure` for
/// an `http://` node). The registry itself stays its `location`, which clients try when the
/// node fails. It replaces any entry with the same prefix in registries.conf.
pub fn registries_conf(node: &NodeUrl, registry: &RegistryHost) -> String {
    let mut out = format!(
        "{header}: Podman and CRI-O pull {registry} through the local shoal node first,\n\
         # and from {registry} itself when the node fails. The node must run with\n\
         # --default-registry {registry} (these clients do not say which registry they mean).\n\
         [[registry]]\n\
         prefix = \"{registry}\"\n\
         location = \"{registry}\"\n\
         \n\
         [[registry.mirror]]\n\
         location = \"{mirror}\"\n",
        header = managed::HEADER,
        mirror = node.host_port(),
    );
    if node.is_http() {
        out.push_str("insecure = true\n");
    }
    out
}

/// Runs `shoal registries-config`, printing to `out`.
///
/// # Errors
/// On an I/O failure.
pub fn run(args: &RegistriesConfigArgs, out: &mut dyn Write) -> Result<(), RuntimeConfigError> {
    let content = registries_conf(&args.node, &args.registry);
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

    #[test]
    fn one_registry_with_the_node_as_mirror() {
        let node: NodeUrl = "http://127.0.0.1:65001".parse().unwrap();
        let text = registries_conf(&node, &"docker.io".parse().unwrap());
        let conf: toml::Table = toml::from_str(&text).unwrap();
        let reg = &conf["registry"][0];
        assert_eq!(reg["prefix"].as_str(), Some("docker.io"));
        assert_eq!(reg["location"].as_str(), Some("docker.io"));
        assert_eq!(
            reg["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:65001")
        );
        assert_eq!(reg["mirror"][0]["insecure"].as_bool(), Some(true));
        assert_eq!(
            conf.len(),
            1,
            "no top-level keys: the drop-in can follow any file"
        );

        let tls: NodeUrl = "https://node.example".parse().unwrap();
        let text = registries_conf(&tls, &"quay.io".parse().unwrap());
        let conf: toml::Table = toml::from_str(&text).unwrap();
        let mirror = &conf["registry"][0]["mirror"][0];
        assert_eq!(mirror["location"].as_str(), Some("node.example"));
        assert!(mirror.get("insecure").is_none());
    }

    #[test]
    fn the_example_is_what_the_command_writes() {
        let example: toml::Table =
            toml::from_str(include_str!("../../../examples/podman-registries.conf")).unwrap();
        let written = registries_conf(
            &"http://127.0.0.1:65001".parse().unwrap(),
            &"docker.io".parse().unwrap(),
        );
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
            registry: "docker.io".parse().unwrap(),
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
