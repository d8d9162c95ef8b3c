//! Debian's podman (rootful, pull only) with its own storage, state, home and registries.conf,
//! so the host's containers configuration and images are neither used nor touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// A private podman setup, removed on drop (with any mount under it).
#[derive(Debug)]
pub struct Podman {
    dir: TempDir,
    registries_conf: PathBuf,
}

impl Podman {
    /// A podman whose registries.conf is `registries_conf` (CONTAINERS_REGISTRIES_CONF). Drop-ins
    /// of the host's `/etc/containers/registries.conf.d` are still read after it: podman has no
    /// switch for that directory.
    pub fn new(registries_conf: &Path) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("shoal-podman-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Podman {
            dir,
            registries_conf: registries_conf.to_owned(),
        }
    }

    /// Runs `podman ARGS…` with the private root, runroot, home and registries.conf; vfs
    /// storage (nothing mounted), no cgroups or events.
    pub fn podman(&self, args: &[&str]) -> Output {
        let path = |name: &str| self.dir.path().join(name);
        Command::new("podman")
            .env("HOME", path("home"))
            .env("TMPDIR", path("tmp"))
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .env_remove("CONTAINERS_CONF")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .arg("--root")
            .arg(path("root"))
            .arg("--runroot")
            .arg(path("run"))
            .arg("--tmpdir")
            .arg(path("libpod-tmp"))
            .arg("--network-config-dir")
            .arg(path("networks"))
            .arg("--volumepath")
            .arg(path("volumes"))
            .args(["--storage-driver", "vfs"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("run podman")
    }

    /// `podman pull REF`.
    pub fn pull(&self, reference: &str) -> Output {
        self.podman(&["pull", reference])
    }

    /// The `RootFS.Layers` (diff IDs) of local image `reference`; panics if it is not there.
    pub fn image_diff_ids(&self, reference: &str) -> Vec<String> {
        super::docker::rootfs_layers(
            &format!("podman image inspect {reference}"),
            &self.podman(&["image", "inspect", reference]),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        super::unmount_under(self.dir.path());
    }
}
