//! A real dockerd (Debian 20.10) on a [`Containerd`] of the harness, with a registry mirror.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::Containerd;
use super::process::{Daemon, kill_processes_mentioning};

/// How long [`Dockerd::start`] waits for `docker version` to succeed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running dockerd, stopped on drop (SIGTERM, then SIGKILL) with its mounts removed.
#[derive(Debug)]
pub struct Dockerd {
    daemon: Daemon,
    dir: TempDir,
}

impl Dockerd {
    /// Starts dockerd on `containerd` with `mirror_url` (`http://127.0.0.1:PORT`) as its
    /// Docker Hub mirror (also listed as insecure); no iptables, no bridge.
    pub fn start(containerd: &Containerd, mirror_url: &str) -> Dockerd {
        let mirror_host = mirror_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        Dockerd::start_with_config(containerd, |mut config, dir| {
            config["registry-mirrors"] = json!([mirror_url]);
            config["insecure-registries"] = json!([mirror_host]);
            let path = dir.join("daemon.json");
            std::fs::write(&path, config.to_string()).unwrap();
            path
        })
    }

    /// Starts dockerd on `containerd` with the daemon.json that `write_config` writes and
    /// returns, given the keys this dockerd needs (its own directories, socket and containerd
    /// namespace; no iptables, no bridge) and its directory.
    pub fn start_with_config(
        containerd: &Containerd,
        write_config: impl FnOnce(serde_json::Value, &Path) -> PathBuf,
    ) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("shoal-dockerd-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        // A namespace of its own, so several dockerds can share one containerd.
        let namespace = format!("moby-{}", hex::encode(rand::random::<[u8; 4]>()));
        let config = json!({
            "iptables": false,
            "ip6tables": false,
            "bridge": "none",
            "data-root": path("data"),
            "exec-root": path("exec"),
            "pidfile": path("pid"),
            "hosts": [format!("unix://{}", path("sock"))],
            "containerd": containerd.socket(),
            "containerd-namespace": namespace,
            "containerd-plugins-namespace": format!("plugins.{namespace}"),
        });
        let config_path = write_config(config, dir.path());

        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file").arg(&config_path);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut dockerd = Dockerd {
            daemon: Daemon::spawn("dockerd", cmd, log),
            dir,
        };
        let ready = super::wait_until(START_TIMEOUT, || {
            dockerd.daemon.assert_running();
            dockerd.docker(&["version"]).status.success()
        });
        assert!(
            ready,
            "dockerd did not come up in {START_TIMEOUT:?}:\n{}",
            dockerd.daemon.log_tail(40)
        );
        dockerd
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Last `n` lines of dockerd's log, for diagnostics.
    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }

    /// Runs `docker -H unix://SOCK ARGS…` (with a private client config dir).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// `docker pull NAME`.
    pub fn pull(&self, name: &str) -> Output {
        self.docker(&["pull", name])
    }

    /// `docker image inspect NAME`.
    pub fn image_inspect(&self, name: &str) -> Output {
        self.docker(&["image", "inspect", name])
    }

    /// The `RootFS.Layers` (diff IDs) of local image `name`; panics if it is not there.
    pub fn image_diff_ids(&self, name: &str) -> Vec<String> {
        rootfs_layers(
            &format!("docker image inspect {name}"),
            &self.image_inspect(name),
        )
    }
}

/// The `RootFS.Layers` of the first image in `image inspect` output (Docker's and Podman's);
/// panics with the output unless the command succeeded.
pub fn rootfs_layers(what: &str, output: &Output) -> Vec<String> {
    super::check_output(what, output);
    let inspect: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    inspect[0]["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.daemon.terminate(Duration::from_secs(10));
        kill_processes_mentioning(self.dir.path());
        super::unmount_under(self.dir.path());
    }
}
