//! A real containerd (Debian 1.6) with its own root, state and socket, driven with `ctr`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::LayerInfo;
use super::process::{Daemon, kill_processes_mentioning};

/// How long [`Containerd::start`] waits for `ctr version` to succeed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The platform pulled and mounted by [`Containerd`].
pub const PLATFORM: &str = "linux/amd64";

/// A running containerd, stopped on drop (its shims killed, its mounts removed).
#[derive(Debug)]
pub struct Containerd {
    daemon: Daemon,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd (CRI plugin disabled) and waits until `ctr version` succeeds.
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("shoal-ctrd-")
            .tempdir()
            .unwrap();
        let quote = |p: PathBuf| serde_json::to_string(&p.to_string_lossy()).unwrap();
        let config = format!(
            "version = 2\n\
             root = {}\n\
             state = {}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {}\n",
            quote(dir.path().join("root")),
            quote(dir.path().join("state")),
            quote(dir.path().join("sock")),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();

        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut containerd = Containerd {
            daemon: Daemon::spawn("containerd", cmd, log),
            dir,
        };
        let ready = super::wait_until(START_TIMEOUT, || {
            containerd.daemon.assert_running();
            containerd.ctr(&["version"]).status.success()
        });
        assert!(
            ready,
            "containerd did not come up in {START_TIMEOUT:?}:\n{}",
            containerd.daemon.log_tail(40)
        );
        containerd
    }

    /// The containerd gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// containerd's root directory (content store, snapshots).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Last `n` lines of containerd's own log, for diagnostics.
    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }

    /// Runs `ctr -a SOCK ARGS…` and returns its output.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Runs `ctr images pull --platform linux/amd64 --hosts-dir DIR [--user U:P] REF`.
    pub fn pull(&self, reference: &str, hosts_dir: &Path, user: Option<&str>) -> Output {
        let hosts_dir = hosts_dir.to_string_lossy().into_owned();
        let mut args = vec!["images", "pull", "--platform", PLATFORM];
        args.extend(["--hosts-dir", hosts_dir.as_str()]);
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.push(reference);
        self.ctr(&args)
    }

    /// True if the snapshot of the full layer chain exists, i.e. every layer was unpacked.
    pub fn is_unpacked(&self, layers: &[LayerInfo]) -> bool {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        self.ctr(&["snapshots", "info", &chain_id(&diff_ids)])
            .status
            .success()
    }

    /// Checks that `image_ref` (already pulled) is unpacked and that its mounted rootfs holds
    /// every file of `layers` with the right contents.
    pub fn check_layers_unpacked(
        &self,
        image_ref: &str,
        layers: &[LayerInfo],
    ) -> Result<(), String> {
        if !self.is_unpacked(layers) {
            let snapshots = self.ctr(&["snapshots", "ls"]);
            return Err(format!(
                "{image_ref}: layer chain not unpacked; snapshots:\n{}",
                String::from_utf8_lossy(&snapshots.stdout)
            ));
        }
        self.with_rootfs(image_ref, |rootfs| {
            for (path, expected) in layers.iter().flat_map(|l| &l.files) {
                match std::fs::read(rootfs.join(path)) {
                    Ok(actual) if actual == *expected => {}
                    Ok(actual) => {
                        return Err(format!(
                            "{image_ref}: /{path} has {} bytes, differing from the layer's {}",
                            actual.len(),
                            expected.len()
                        ));
                    }
                    Err(e) => return Err(format!("{image_ref}: /{path}: {e}")),
                }
            }
            Ok(())
        })
    }

    /// Mounts the rootfs of `image_ref` read-only (`ctr images mount`), runs `f` on it, unmounts.
    pub fn with_rootfs<T>(&self, image_ref: &str, f: impl FnOnce(&Path) -> T) -> T {
        let target = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(self.dir.path())
            .unwrap();
        let target_str = target.path().to_string_lossy().into_owned();
        let mount = self.ctr(&[
            "images",
            "mount",
            "--platform",
            PLATFORM,
            image_ref,
            &target_str,
        ]);
        super::check_output(&format!("ctr images mount {image_ref}"), &mount);
        let result = f(target.path());
        let unmount = self.ctr(&["images", "unmount", "--rm", &target_str]);
        super::unmount_under(target.path());
        super::check_output(&format!("ctr images unmount {target_str}"), &unmount);
        result
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.daemon.terminate(Duration::from_secs(5));
        kill_processes_mentioning(self.dir.path());
        super::unmount_under(self.dir.path());
    }
}

/// containerd's chain ID of a layer stack (the name of its committed snapshot).
pub fn chain_id(diff_ids: &[&str]) -> String {
    let mut ids = diff_ids.iter();
    let first = ids.next().expect("at least one layer").to_string();
    ids.fold(first, |chain, id| {
        super::sha256_hex(format!("{chain} {id}").as_bytes())
    })
}

/// Writes `DIR/REGISTRY_HOST/hosts.toml` with `server = SERVER` and MIRROR_URL as a
/// pull/resolve host (plain http works when the URLs say `http://`).
pub fn write_hosts_toml(dir: &Path, registry_host: &str, server: &str, mirror_url: &str) {
    let host_dir = dir.join(registry_host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let toml = format!(
        "server = {server:?}\n\n[host.{mirror_url:?}]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(host_dir.join("hosts.toml"), toml).unwrap();
}
