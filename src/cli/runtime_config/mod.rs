//! Runtime configuration that points container runtimes at the node: containerd's `hosts.toml`
//! files ([`containerd`]), Docker's `daemon.json` ([`docker`]) and the `registries.conf` drop-in
//! of Podman and CRI-O ([`registries`]).
//!
//! Each command prints its configuration, or with `--write` changes the runtime's files in
//! place: `--dry-run` prints the unified diff of what would change, and `--restore` brings back
//! what was there before (see [`managed`] for the backups).

pub mod containerd;
pub mod docker;
pub mod managed;
pub mod registries;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use reqwest::Url;

pub use containerd::{ContainerdConfigArgs, containerd_files, hosts_toml};
pub use docker::{DockerConfigArgs, docker_fragment, merge_daemon_json};
pub use registries::{RegistriesConfigArgs, registries_conf};

use managed::Change;

/// Why a runtime configuration command failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An existing file shoal would merge into is not what the runtime accepts.
    #[error("{}: {reason}; nothing was changed", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file shoal would change, or its record beside it, is not a regular file (a symlink, a
    /// directory): shoal neither follows nor replaces it.
    #[error("{}: {reason}; nothing was changed", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// What it is instead, and what to do.
        reason: String,
    },
    /// A change of several files failed after `done` of them were changed (each one whole).
    #[error("{done} of {total} files {what}; {next}")]
    Partial {
        /// How many files were changed.
        done: usize,
        /// How many there were to change.
        total: usize,
        /// "changed" or "restored".
        what: &'static str,
        /// What the operator can run next.
        next: &'static str,
        /// The failure.
        source: Box<RuntimeConfigError>,
    },
    /// A flag's value is not usable.
    #[error("{0}")]
    Invalid(String),
    /// Standard output failed.
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
}

impl RuntimeConfigError {
    fn io(path: &Path, source: io::Error) -> Self {
        RuntimeConfigError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The node's mirror URL as runtimes are given it: `http://` or `https://`, a host and maybe a
/// port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl(Url);

impl NodeUrl {
    /// `http://host:port`, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// `host:port` (or `host` when the URL has no port), as Docker's `insecure-registries` and
    /// the `location` of a `registries.conf` mirror take it.
    pub fn host_port(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Whether the node speaks plain HTTP (runtimes must be told it is insecure).
    pub fn is_http(&self) -> bool {
        self.0.scheme() == "http"
    }
}

impl FromStr for NodeUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{s:?} is not an http(s) URL with a host"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{s:?}: the node's URL is scheme, host and port only (no path)"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?}: the node's URL carries no credentials"));
        }
        Ok(NodeUrl(url))
    }
}

impl std::fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--dry-run` and `--restore`, common to the three commands (both need `--write`).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ApplyFlags {
    /// With --write, alone or with --restore: print a unified diff of what would change, and
    /// change nothing.
    #[arg(long, requires = "write")]
    pub dry_run: bool,
    /// With --write: bring back, byte for byte, what was there before shoal's first --write
    /// (kept in NAME.shoal-backup), and remove the files shoal created where there were none.
    #[arg(long, requires = "write")]
    pub restore: bool,
}

/// Prints the diff of `changes` (`--dry-run`) or carries them out, a line per file.
fn carry_out(
    changes: &[Change],
    flags: ApplyFlags,
    out: &mut dyn Write,
) -> Result<(), RuntimeConfigError> {
    let what = if flags.restore { "restore" } else { "change" };
    if changes.is_empty() {
        writeln!(io::stderr(), "nothing to {what}")?;
    } else if flags.dry_run {
        out.write_all(managed::preview(changes).as_bytes())?;
    } else {
        managed::apply(changes, out)?;
    }
    Ok(())
}

/// Plans writing each of `files` (path, new content); unchanged files plan nothing.
fn plan_files(files: Vec<(PathBuf, Vec<u8>)>) -> Result<Vec<Change>, RuntimeConfigError> {
    let mut changes = Vec::new();
    for (path, content) in files {
        let old = managed::read_current(&path)?;
        changes.extend(managed::plan_write(&path, old, content)?);
    }
    Ok(changes)
}
