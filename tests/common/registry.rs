//! A real upstream registry: Debian's `docker-registry` (distribution 2.8).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{Daemon, SharedLog};

/// How long [`Registry::start`] waits for `/v2/` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`Registry::start`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOpts {
    /// Require this user and password (htpasswd/bcrypt basic auth) for every request.
    pub htpasswd: Option<(String, String)>,
    /// Run as a pull-through cache of this upstream URL (pushes are then refused).
    pub proxy_remote: Option<String>,
}

/// One request from the registry's combined-format access log (written to its stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target, with query string.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Response body bytes the registry wrote.
    pub bytes: u64,
}

impl AccessLine {
    /// Parses `IP - USER [DATE] "METHOD PATH PROTO" STATUS BYTES "REFERER" "UA"`.
    pub fn parse(line: &str) -> Option<AccessLine> {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut request = request.split(' ');
        let (method, path) = (request.next()?, request.next()?);
        let mut fields = rest.split_whitespace();
        let status = fields.next()?.parse().ok()?;
        let bytes = fields.next()?.parse().unwrap_or(0);
        Some(AccessLine {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            bytes,
        })
    }

    /// True for a GET of blob `digest` (any status).
    pub fn is_blob_get(&self, digest: &str) -> bool {
        self.method == "GET" && self.path.contains(&format!("/blobs/{digest}"))
    }
}

/// A running `docker-registry serve` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Registry {
    /// Listening port (kept across [`Registry::restart`]).
    pub port: u16,
    daemon: Option<Daemon>,
    log: SharedLog,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry with its own storage and waits until `GET /v2/` answers 200 or 401.
    pub fn start(opts: RegistryOpts) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()
            .unwrap();
        let port = super::free_port();
        let config = config_yaml(dir.path(), port, &opts);
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Registry {
            port,
            daemon: None,
            log: Arc::new(Mutex::new(Vec::new())),
            dir,
        };
        registry.spawn();
        registry
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's temporary directory (config.yml, htpasswd, data/).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Root of the registry's filesystem storage.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every access-log line so far (across restarts).
    pub fn access_log(&self) -> Vec<AccessLine> {
        let log = self.log.lock().unwrap();
        log.iter().filter_map(|l| AccessLine::parse(l)).collect()
    }

    /// Waits until `pred` holds for the access log. A line is written when its response
    /// ends, so a client may finish reading slightly before the line appears.
    pub fn wait_access_log(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[AccessLine]) -> bool,
    ) -> bool {
        super::wait_until(timeout, || pred(&self.access_log()))
    }

    /// Number of GET requests for blob `digest` (`sha256:…`), whatever their status.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.access_log()
            .iter()
            .filter(|l| l.is_blob_get(digest))
            .count()
    }

    /// Total body bytes sent in answer to GETs of blob `digest`.
    pub fn blob_bytes_sent(&self, digest: &str) -> u64 {
        self.access_log()
            .iter()
            .filter(|l| l.is_blob_get(digest))
            .map(|l| l.bytes)
            .sum()
    }

    /// Number of requests with `method` whose path contains `fragment`.
    pub fn count_requests(&self, method: &str, fragment: &str) -> usize {
        self.access_log()
            .iter()
            .filter(|l| l.method == method && l.path.contains(fragment))
            .count()
    }

    /// Last `n` lines of the registry's output (access log and its own log), for diagnostics.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// True while the registry process runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    /// Kills the registry (simulating an outage); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(self.dir.path().join("config.yml"));
        let mut daemon = Daemon::spawn("docker-registry", cmd, self.log.clone());
        let url = format!("{}/v2/", self.url());
        let ready = super::wait_until(START_TIMEOUT, || {
            daemon.assert_running();
            matches!(super::http_status(&url), Some(200 | 401))
        });
        assert!(
            ready,
            "registry on {} did not answer /v2/ in {START_TIMEOUT:?}:\n{}",
            self.port,
            daemon.log_tail(40)
        );
        self.daemon = Some(daemon);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_yaml(dir: &Path, port: u16, opts: &RegistryOpts) -> String {
    // JSON strings are valid YAML flow scalars, which takes care of quoting.
    let quote = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    let mut yaml = format!(
        "version: 0.1\n\
         log: {{level: info}}\n\
         storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
         http: {{addr: 127.0.0.1:{port}, secret: shoal-test-secret}}\n",
        quote(&dir.join("data"))
    );
    if let Some((user, pass)) = &opts.htpasswd {
        let htpasswd = dir.join("htpasswd");
        let output = Command::new("htpasswd")
            .args(["-Bbn", user, pass])
            .output()
            .expect("run htpasswd (apache2-utils)");
        super::check_output("htpasswd -Bbn", &output);
        std::fs::write(&htpasswd, &output.stdout).unwrap();
        yaml += &format!(
            "auth: {{htpasswd: {{realm: shoal-test, path: {}}}}}\n",
            quote(&htpasswd)
        );
    }
    if let Some(remote) = &opts.proxy_remote {
        yaml += &format!(
            "proxy: {{remoteurl: {}}}\n",
            serde_json::to_string(remote).unwrap()
        );
    }
    yaml
}
