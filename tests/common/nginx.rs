//! Debian's `nginx` as a file origin: a directory of its own, a port of its own, autoindex for
//! directory listings, and an access log that says what it sent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::process::Daemon;
use super::{free_port, wait_for_http};

/// A running nginx serving `www()`; stopped on drop.
pub struct Nginx {
    dir: TempDir,
    port: u16,
    daemon: Option<Daemon>,
}

/// One request of the access log.
#[derive(Debug, Clone)]
pub struct Served {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target.
    pub path: String,
    /// The status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

impl Nginx {
    /// Starts nginx on a free port of 127.0.0.1.
    pub fn start() -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("shoal-nginx-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        let conf = format!(
            "user root; daemon off; pid {d}/pid; error_log {d}/error.log;\n\
             events {{}}\n\
             http {{ access_log {d}/access.log; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; root {d}/www; autoindex on; }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(dir.path().join("nginx.conf"));
        let daemon = Daemon::spawn("nginx", cmd, Arc::new(Mutex::new(Vec::new())));
        let url = format!("http://127.0.0.1:{port}/");
        assert!(
            wait_for_http(&url, Duration::from_secs(10)),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        Nginx {
            dir,
            port,
            daemon: Some(daemon),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The served directory.
    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// Writes a file to serve at `/NAME`.
    pub fn put(&self, name: &str, data: &[u8]) {
        let path = self.www().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, data).unwrap();
    }

    /// Every request so far.
    pub fn access_log(&self) -> Vec<Served> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_line).collect()
    }

    /// Body bytes sent for successful GETs whose path starts with `path`.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.access_log()
            .iter()
            .filter(|s| s.method == "GET" && s.path.starts_with(path) && s.status < 300)
            .map(|s| s.bytes)
            .sum()
    }

    /// The directory nginx runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `IP - - [date] "METHOD PATH HTTP/1.1" STATUS BYTES "ref" "agent"`
fn parse_line(line: &str) -> Option<Served> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut r = request.split_whitespace();
    let method = r.next()?.to_owned();
    let path = r.next()?.to_owned();
    let mut f = rest.split_whitespace();
    let status = f.next()?.parse().ok()?;
    let bytes = f.next()?.parse().unwrap_or(0);
    Some(Served {
        method,
        path,
        status,
        bytes,
    })
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate(Duration::from_secs(5));
        }
        super::process::kill_processes_mentioning(self.dir.path());
    }
}
