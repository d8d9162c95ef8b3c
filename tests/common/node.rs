//! A `shoal node` process built from this crate, on ports and a data directory of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::process::Daemon;
use super::{free_port, http_request, wait_for_http};

/// A running `shoal node`; killed on drop.
pub struct ShoalNode {
    /// Mirror port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    args: Vec<String>,
    data_dir: PathBuf,
    _dir: Option<TempDir>,
    daemon: Option<Daemon>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ShoalNode {
    /// Starts a node with a fresh data directory and these extra flags
    /// (e.g. `["--upstream", "docker.io=http://127.0.0.1:5000"]`).
    pub fn start(extra: &[&str]) -> ShoalNode {
        let dir = tempfile::Builder::new()
            .prefix("shoal-node-")
            .tempdir()
            .unwrap();
        let data_dir = dir.path().join("data");
        let mut node = ShoalNode {
            port: free_port(),
            admin_port: free_port(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            data_dir,
            _dir: Some(dir),
            daemon: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        node.spawn();
        node
    }

    /// Starts a node of the swarm of `key` pulling docker.io from `upstream`, that joins the
    /// manager at `manager` with `token_file` as `name`, bootstrapping from `first` when given.
    pub fn start_joined(
        key: &Path,
        upstream: &str,
        manager: &str,
        token_file: &Path,
        name: &str,
        first: Option<&ShoalNode>,
    ) -> ShoalNode {
        let key = key.display().to_string();
        let token = token_file.display().to_string();
        let upstream = format!("docker.io={upstream}");
        let mut args = vec![
            "--swarm-key",
            &key,
            "--upstream",
            &upstream,
            "--manager",
            manager,
            "--token-file",
            &token,
            "--node-name",
            name,
        ];
        let bootstrap;
        if let Some(first) = first {
            bootstrap = first.status()["listen_addrs"][0]
                .as_str()
                .unwrap()
                .to_owned();
            args.extend(["--bootstrap", &bootstrap]);
        }
        ShoalNode::start(&args)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(["--log", "shoal=debug,info", "node"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", self.admin_port)])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&self.args)
            .env_remove("SHOAL_CONFIG");
        self.daemon = Some(Daemon::spawn("shoal node", cmd, self.log.clone()));
        if !wait_for_http(&self.admin_url("/healthz"), Duration::from_secs(20)) {
            panic!("shoal node did not start:\n{}", self.log_tail(40));
        }
    }

    /// The mirror's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT` of the mirror.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An admin URL.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the node stores a complete blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap();
        self.data_dir.join("blobs").join(alg).join(hex)
    }

    /// Files in the node's temporary directory (downloads in progress).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// The admin port's `/status` JSON.
    pub fn status(&self) -> serde_json::Value {
        let resp = http_request("GET", &self.admin_url("/status"), &[], &[]).unwrap();
        serde_json::from_slice(&resp.body).unwrap()
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair (`k="v"`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = http_request("GET", &self.admin_url("/metrics"), &[], &[])
            .expect("metrics endpoint answers")
            .body;
        let text = String::from_utf8(text).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                let ok = n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                ok.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// Kills the process with SIGKILL (no cleanup), keeping the data directory.
    pub fn kill9(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Starts the process again with the same ports, flags and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.is_running())
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ShoalNode {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate(Duration::from_secs(5));
        }
    }
}

/// Writes a new swarm key, made by `shoal swarm-key`, to `path`.
pub fn write_swarm_key(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("swarm-key")
        .output()
        .unwrap();
    super::check_output("shoal swarm-key", &out);
    std::fs::write(path, out.stdout).unwrap();
}
