//! Configuration: plain serde structs read from TOML, overridden by flags and `SHOAL_*`
//! environment variables (the CLI applies those), then validated into typed settings. A bad
//! value is reported with the key that holds it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use reqwest::Url;
use serde::Deserialize;

use crate::fetch::Registries;
use crate::fetch::limit::{ByteRate, ByteSize};
use crate::oci::{Credentials, RegistryHost, Timeouts};

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and key).
        message: String,
    },
    /// A value is invalid.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key, as written in the config file.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

/// Credentials for one registry, as written in the config file.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// User name.
    pub username: String,
    /// Password, inline (prefer `password_file`).
    pub password: Option<String>,
    /// A file holding the password (a mounted Secret).
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `shoal node` configuration, as in the TOML file (keys match the flags with `-` → `_`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Registry mirror address.
    pub listen: SocketAddr,
    /// Admin (health, status, metrics) address.
    pub admin_listen: SocketAddr,
    /// Store and state directory.
    pub data_dir: PathBuf,
    /// Registry host → upstream URL.
    pub upstream: BTreeMap<String, String>,
    /// Registry host → standby mirrors, tried in order.
    pub fallback: BTreeMap<String, Vec<String>>,
    /// The registry meant by requests without `?ns=`.
    pub default_registry: String,
    /// Registry host → credentials used when a client sends none.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Whether this node is a seed.
    pub seed: bool,
    /// Locality zone.
    pub zone: String,
    /// Seconds to wait for an upstream connection.
    pub upstream_connect_timeout_secs: u64,
    /// Seconds an upstream may go silent mid-response before it is dropped.
    pub upstream_read_timeout_secs: u64,
    /// libp2p listen addresses.
    pub p2p_listen: Vec<String>,
    /// Peers to dial at start: multiaddrs, with or without `/p2p/ID`.
    pub bootstrap: Vec<String>,
    /// The swarm's pre-shared key file; default `DATA_DIR/swarm.key`, created if missing.
    pub swarm_key: Option<PathBuf>,
    /// Limit on piece bytes sent to peers, e.g. `32MiB/s`.
    pub upload_limit: Option<ByteRate>,
    /// Limit on all bytes downloaded (upstream and peers), e.g. `100MiB/s`.
    pub download_limit: Option<ByteRate>,
    /// The store's disk quota, e.g. `50GiB`; least recently used blobs are evicted past it.
    pub max_disk: Option<ByteSize>,
    /// Piece size for blobs this node cuts first, e.g. `8MiB` (a power of two from 256 KiB to
    /// 64 MiB); default chosen from the blob's size (4 MiB up to 8 GiB).
    pub piece_size: Option<ByteSize>,
    /// Seconds a peer may deliver nothing (a piece request unanswered, or no piece at all)
    /// before the download drops it and goes on from its verified pieces.
    pub stall_timeout_secs: u64,
    /// Seeds also fetch from seeds of other zones (and serve them), so a blob enters the
    /// cluster once instead of once per zone.
    pub zone_peering: bool,
    /// Query parameters of file URLs that do not change the content (presigned URLs'
    /// signatures), left out of a file's identity.
    pub file_ignore_params: Vec<String>,
    /// Standby file origins: `"PREFIX" = "REPLACEMENT"`; a file URL starting with PREFIX is
    /// also fetched with it replaced.
    pub file_fallback: BTreeMap<String, String>,
    /// The manager to join, e.g. `https://shoal-manager.example:8080`.
    pub manager: Option<String>,
    /// The file holding the cluster's join token (required with `manager`).
    pub token_file: Option<PathBuf>,
    /// The node's name at the manager; default the host name.
    pub node_name: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: ([127, 0, 0, 1], 65001).into(),
            admin_listen: ([127, 0, 0, 1], 65003).into(),
            data_dir: PathBuf::from("./shoal-data"),
            upstream: BTreeMap::new(),
            fallback: BTreeMap::new(),
            default_registry: "docker.io".into(),
            credentials: BTreeMap::new(),
            seed: false,
            zone: "default".into(),
            upstream_connect_timeout_secs: 5,
            upstream_read_timeout_secs: 30,
            p2p_listen: vec!["/ip4/0.0.0.0/tcp/65002".into()],
            bootstrap: Vec::new(),
            swarm_key: None,
            upload_limit: None,
            download_limit: None,
            max_disk: None,
            piece_size: None,
            stall_timeout_secs: 10,
            zone_peering: false,
            file_ignore_params: crate::files::DEFAULT_IGNORED_PARAMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            file_fallback: BTreeMap::new(),
            manager: None,
            token_file: None,
            node_name: None,
        }
    }
}

/// How a node joins a manager.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// The manager's base URL.
    pub url: Url,
    /// The file holding the cluster's join token.
    pub token_file: PathBuf,
    /// The node's name at the manager.
    pub node_name: String,
}

/// Validated node settings, ready to wire.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Registry mirror address.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin_listen: SocketAddr,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Upstreams, fallbacks and credentials per registry.
    pub registries: Registries,
    /// The registry for requests without `?ns=`.
    pub default_registry: RegistryHost,
    /// Whether this node is a seed.
    pub seed: bool,
    /// Locality zone.
    pub zone: String,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// libp2p listen addresses.
    pub p2p_listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Names resolved (again and again) to peers to dial.
    pub bootstrap_dns: Vec<crate::p2p::dns::DnsSeed>,
    /// The swarm key file.
    pub swarm_key: PathBuf,
    /// Upload limit for pieces sent to peers.
    pub upload_limit: Option<ByteRate>,
    /// Download limit for everything fetched.
    pub download_limit: Option<ByteRate>,
    /// The store's disk quota.
    pub max_disk: Option<ByteSize>,
    /// Configured piece size (validated).
    pub piece_size: Option<u32>,
    /// How long a peer may deliver nothing before it is dropped from a download.
    pub stall_timeout: Duration,
    /// Whether seeds exchange pieces with seeds of other zones.
    pub zone_peering: bool,
    /// How files are identified and where else they come from.
    pub files: crate::files::FileSettings,
    /// The manager to join, if any.
    pub manager: Option<ManagerSettings>,
}

impl NodeConfig {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// When the file cannot be read or does not match the schema.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks every value and builds the typed settings.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub fn validate(&self) -> Result<NodeSettings, ConfigError> {
        let host = |key: String, h: &str| h.parse::<RegistryHost>().map_err(|e| invalid(key, e));
        let url = |key: String, u: &str| -> Result<Url, ConfigError> {
            let parsed = Url::parse(u).map_err(|e| invalid(&key, format!("{e} ({u:?})")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(key, format!("{u:?} is not an http(s) URL")));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid(
                    key,
                    "put credentials under [credentials], not in the URL",
                ));
            }
            Ok(parsed)
        };
        let mut registries = Registries::new();
        for (h, u) in &self.upstream {
            let key = format!("upstream.\"{h}\"");
            registries.set_upstream(host(key.clone(), h)?, url(key, u)?);
        }
        for (h, urls) in &self.fallback {
            let key = format!("fallback.\"{h}\"");
            let reg = host(key.clone(), h)?;
            for u in urls {
                registries.add_fallback(reg.clone(), url(key.clone(), u)?);
            }
        }
        for (h, c) in &self.credentials {
            let key = format!("credentials.\"{h}\"");
            let reg = host(key.clone(), h)?;
            let password = match (&c.password, &c.password_file) {
                (Some(p), None) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| {
                        invalid(
                            format!("{key}.password_file"),
                            format!("{}: {e}", f.display()),
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                _ => return Err(invalid(key, "give exactly one of password, password_file")),
            };
            if c.username.is_empty() || c.username.contains(':') {
                return Err(invalid(
                    format!("{key}.username"),
                    "must be non-empty and without ':'",
                ));
            }
            registries.set_credentials(
                reg,
                Credentials::Basic {
                    username: c.username.clone(),
                    password,
                },
            );
        }
        if self.zone.is_empty() || self.zone.len() > 63 {
            return Err(invalid("zone", "must be 1 to 63 characters"));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        let secs = |key: &str, v: u64| {
            if (1..=3600).contains(&v) {
                Ok(Duration::from_secs(v))
            } else {
                Err(invalid(key, "must be between 1 and 3600 seconds"))
            }
        };
        let multiaddrs = |key: &str, values: &[String]| {
            values
                .iter()
                .filter(|v| !v.starts_with("dns:"))
                .map(|v| {
                    v.parse::<Multiaddr>()
                        .map_err(|e| invalid(key, format!("{v:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let bootstrap_dns = self
            .bootstrap
            .iter()
            .filter_map(|v| crate::p2p::dns::DnsSeed::parse(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("bootstrap", e))?;
        let piece_size = match self.piece_size {
            None => None,
            Some(ByteSize(bytes)) => Some(
                u32::try_from(bytes)
                    .ok()
                    .filter(|&p| crate::store::partial::valid_piece_size(p))
                    .ok_or_else(|| {
                        invalid(
                            "piece_size",
                            format!("{bytes} bytes: must be a power of two from 256KiB to 64MiB"),
                        )
                    })?,
            ),
        };
        let mut file_fallbacks = Vec::new();
        for (prefix, replacement) in &self.file_fallback {
            let key = format!("file_fallback.{prefix:?}");
            crate::files::parse_url(prefix).map_err(|e| invalid(&key, e.message))?;
            crate::files::parse_url(replacement).map_err(|e| invalid(&key, e.message))?;
            file_fallbacks.push((prefix.clone(), replacement.clone()));
        }
        Ok(NodeSettings {
            manager: self.manager_settings(&url)?,
            files: crate::files::FileSettings {
                ignored_params: self.file_ignore_params.clone(),
                fallbacks: file_fallbacks,
            },
            piece_size,
            stall_timeout: secs("stall_timeout_secs", self.stall_timeout_secs)?,
            zone_peering: self.zone_peering,
            p2p_listen: multiaddrs("p2p_listen", &self.p2p_listen)?,
            bootstrap: multiaddrs("bootstrap", &self.bootstrap)?,
            bootstrap_dns,
            swarm_key: self
                .swarm_key
                .clone()
                .unwrap_or_else(|| self.data_dir.join("swarm.key")),
            upload_limit: self.upload_limit,
            download_limit: self.download_limit,
            max_disk: self.max_disk,
            listen: self.listen,
            admin_listen: self.admin_listen,
            data_dir: self.data_dir.clone(),
            registries,
            default_registry: host("default_registry".into(), &self.default_registry)?,
            seed: self.seed,
            zone: self.zone.clone(),
            timeouts: Timeouts {
                connect: secs(
                    "upstream_connect_timeout_secs",
                    self.upstream_connect_timeout_secs,
                )?,
                read: secs(
                    "upstream_read_timeout_secs",
                    self.upstream_read_timeout_secs,
                )?,
            },
        })
    }
}

impl NodeConfig {
    /// `manager`, `token_file` and `node_name`, checked together.
    fn manager_settings(
        &self,
        url: &dyn Fn(String, &str) -> Result<Url, ConfigError>,
    ) -> Result<Option<ManagerSettings>, ConfigError> {
        let Some(manager) = &self.manager else {
            if self.token_file.is_some() {
                return Err(invalid(
                    "token_file",
                    "goes with `manager`, which is not set",
                ));
            }
            return Ok(None);
        };
        let url = url("manager".into(), manager)?;
        let token_file = self
            .token_file
            .clone()
            .ok_or_else(|| invalid("token_file", "is required to join a manager"))?;
        // Read now so that a missing or unreadable file stops the start (its content is read
        // again at each registration, so a rotated token is picked up).
        match std::fs::read_to_string(&token_file) {
            Ok(t) if t.trim().is_empty() => {
                return Err(invalid(
                    "token_file",
                    format!("{} is empty", token_file.display()),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(invalid(
                    "token_file",
                    format!("{}: {e}", token_file.display()),
                ));
            }
        }
        let node_name = match &self.node_name {
            Some(n) => n.trim().to_owned(),
            None => crate::agent::host::hostname().ok_or_else(|| {
                invalid("node_name", "the host name is unknown: set it explicitly")
            })?,
        };
        if node_name.is_empty()
            || node_name.len() > 253
            || node_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "node_name",
                format!("{node_name:?}: 1 to 253 characters without spaces"),
            ));
        }
        Ok(Some(ManagerSettings {
            url,
            token_file,
            node_name,
        }))
    }
}

/// Splits a `HOST=URL` flag value.
///
/// # Errors
/// When there is no `=`.
pub fn split_host_url(flag: &str, value: &str) -> Result<(String, String), ConfigError> {
    value
        .split_once('=')
        .map(|(h, u)| (h.trim().to_owned(), u.trim().to_owned()))
        .ok_or_else(|| invalid(flag, format!("{value:?} is not HOST=URL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let s = NodeConfig::default().validate().unwrap();
        assert_eq!(s.listen.port(), 65001);
        assert_eq!(s.default_registry.as_str(), "docker.io");
    }

    #[test]
    fn the_example_config_is_valid() {
        let cfg: NodeConfig = toml::from_str(include_str!("../examples/node.toml")).unwrap();
        let s = cfg.validate().unwrap();
        assert_eq!(s.registries.chain(&"docker.io".parse().unwrap()).len(), 2);
    }

    #[test]
    fn file_parses_and_errors_name_the_key() {
        let cfg: NodeConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:5000"
            [upstream]
            "docker.io" = "http://127.0.0.1:6000"
            [fallback]
            "docker.io" = ["http://127.0.0.1:6001"]
            [credentials."docker.io"]
            username = "u"
            password = "p"
            "#,
        )
        .unwrap();
        let s = cfg.validate().unwrap();
        let hub = "docker.io".parse().unwrap();
        assert_eq!(s.registries.chain(&hub).len(), 2);
        assert!(format!("{:?}", cfg.credentials).contains("***"));
        assert!(!format!("{:?}", cfg.credentials).contains("\"p\""));

        let err = toml::from_str::<NodeConfig>("lissten = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lissten"), "{err}");

        let mut bad = NodeConfig::default();
        bad.upstream.insert("docker.io".into(), "ftp://x".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("upstream.\"docker.io\""), "{e}");

        let mut bad = NodeConfig::default();
        bad.fallback
            .insert("bad host!".into(), vec!["http://x".into()]);
        assert!(bad.validate().unwrap_err().to_string().contains("fallback"));

        let mut bad = NodeConfig::default();
        bad.upstream.insert("h".into(), "http://u:p@x".into());
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("credentials")
        );

        let bad = NodeConfig {
            upstream_read_timeout_secs: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("upstream_read_timeout_secs")
        );
    }

    #[test]
    fn joining_a_manager_needs_a_url_and_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "join-secret\n").unwrap();
        let with = |manager: Option<&str>, token_file: Option<&Path>, name: Option<&str>| {
            NodeConfig {
                manager: manager.map(str::to_owned),
                token_file: token_file.map(Path::to_owned),
                node_name: name.map(str::to_owned),
                ..Default::default()
            }
            .validate()
        };
        assert!(with(None, None, None).unwrap().manager.is_none());
        let m = with(Some("http://127.0.0.1:8080"), Some(&token), Some("n1"))
            .unwrap()
            .manager
            .unwrap();
        assert_eq!(m.url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(m.node_name, "n1");
        // The host name by default.
        let m = with(Some("http://m:8080"), Some(&token), None)
            .unwrap()
            .manager
            .unwrap();
        assert!(!m.node_name.is_empty());
        let err = |r: Result<NodeSettings, ConfigError>| r.unwrap_err().to_string();
        assert!(err(with(Some("ftp://m"), Some(&token), None)).contains("`manager`"));
        assert!(err(with(Some("http://m"), None, None)).contains("`token_file`"));
        assert!(err(with(None, Some(&token), None)).contains("`token_file`"));
        let missing = dir.path().join("missing");
        assert!(err(with(Some("http://m"), Some(&missing), None)).contains("`token_file`"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(err(with(Some("http://m"), Some(&empty), None)).contains("`token_file`"));
        assert!(err(with(Some("http://m"), Some(&token), Some("a b"))).contains("`node_name`"));
        // The token itself never shows in errors or debug output.
        let cfg = with(Some("http://m"), Some(&token), None).unwrap();
        assert!(!format!("{cfg:?}").contains("join-secret"));
    }

    #[test]
    fn piece_size_is_a_power_of_two_within_bounds() {
        let parse = |v: &str| {
            toml::from_str::<NodeConfig>(&format!("piece_size = \"{v}\""))
                .unwrap()
                .validate()
                .map(|s| s.piece_size)
        };
        assert_eq!(parse("8MiB").unwrap(), Some(8 << 20));
        assert_eq!(parse("256KiB").unwrap(), Some(256 << 10));
        for bad in ["3MiB", "128KiB", "128MiB", "5GiB"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("piece_size"), "{bad}: {e}");
        }
        assert_eq!(NodeConfig::default().validate().unwrap().piece_size, None);
    }
}
