//! The `shoal` command line: parse, load config, wire the parts, run. Each subcommand is thin;
//! the work happens in the library modules.

use std::path::PathBuf;

pub mod client;
pub mod get;
pub mod manager;
pub mod preheat;
pub mod runtime_config;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigError, NodeConfig, split_host_url};

pub use runtime_config::{
    ContainerdConfigArgs, DockerConfigArgs, RegistriesConfigArgs, docker_fragment,
};

/// shoal: peer-to-peer distribution of container images and files.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SHOAL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `shoal=debug`.
    #[arg(long, global = true, default_value = "info", env = "SHOAL_LOG")]
    pub log: String,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the registry mirror every host pulls through.
    Node(Box<NodeArgs>),
    /// Run a seed: a node that fetches from the upstream for its zone (`node --seed`).
    Seed(Box<NodeArgs>),
    /// Everything in one process for a first try: a node that is also its own seed, on the
    /// default ports.
    Up(UpArgs),
    /// Print or write containerd `hosts.toml` files that send pulls through the node (with
    /// --dry-run to see the diff, --restore to undo).
    ContainerdConfig(ContainerdConfigArgs),
    /// Print the Docker daemon.json fragment that sends pulls through the node, or merge it
    /// into daemon.json (with --dry-run to see the diff, --restore to undo).
    DockerConfig(DockerConfigArgs),
    /// Print or write the registries.conf drop-in that sends Podman's and CRI-O's pulls of each
    /// --registry through the node (with --dry-run, --restore).
    RegistriesConfig(RegistriesConfigArgs),
    /// Fetch an image ahead of need into the seeds, a zone or every node, and follow progress.
    Preheat(PreheatArgs),
    /// Download a file (any http/https URL) through the node and the swarm.
    Get(GetArgs),
    /// Print a new swarm key (give the same file to every node with --swarm-key).
    SwarmKey,
    /// Run the manager: REST API, scheduler and console.
    Manager(manager::ManagerArgs),
    /// The manager's client: login, logout, user, role, cluster, task, file, tenant, token,
    /// audit, stats (and `node list|show|remove`).
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Flags of `shoal node`. Each overrides the same key of the config file; each also reads a
/// `SHOAL_…` environment variable (flags win over the environment).
#[derive(Debug, Args, Default)]
pub struct NodeArgs {
    /// TOML config file.
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Registry mirror address [default: 127.0.0.1:65001].
    #[arg(long, env = "SHOAL_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin address for /healthz, /readyz, /status, /metrics [default: 127.0.0.1:65003].
    #[arg(long, env = "SHOAL_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Store and state directory [default: ./shoal-data].
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where requests for registry HOST go (HOST=URL, repeatable).
    #[arg(
        long,
        value_name = "HOST=URL",
        env = "SHOAL_UPSTREAM",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,
    /// A standby mirror for HOST, tried in order when the upstream fails (HOST=URL, repeatable).
    #[arg(
        long,
        value_name = "HOST=URL",
        env = "SHOAL_FALLBACK",
        value_delimiter = ','
    )]
    pub fallback: Vec<String>,
    /// The registry a request without `?ns=` means (Docker's mirror requests), unless its path
    /// starts with a registry host [default: docker.io].
    #[arg(long, env = "SHOAL_DEFAULT_REGISTRY")]
    pub default_registry: Option<String>,
    /// Run as a seed.
    #[arg(long, env = "SHOAL_SEED")]
    pub seed: bool,
    /// Locality zone [default: default].
    #[arg(long, env = "SHOAL_ZONE")]
    pub zone: Option<String>,
    /// libp2p listen address (repeatable) [default: /ip4/0.0.0.0/tcp/65002].
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "SHOAL_P2P_LISTEN",
        value_delimiter = ','
    )]
    pub p2p_listen: Vec<String>,
    /// A peer to dial at start (repeatable): /ip4/10.0.0.5/tcp/65002[/p2p/ID], or dns:NAME:PORT
    /// (resolved again every 30 s, e.g. a headless Service).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "SHOAL_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<String>,
    /// The swarm's pre-shared key (`shoal swarm-key` makes one) [default: DATA_DIR/swarm.key,
    /// created if missing].
    #[arg(long, value_name = "FILE", env = "SHOAL_SWARM_KEY")]
    pub swarm_key: Option<PathBuf>,
    /// Limit on piece bytes sent to peers, e.g. 32MiB/s or 200Mbit/s.
    #[arg(long, value_name = "RATE", env = "SHOAL_UPLOAD_LIMIT")]
    pub upload_limit: Option<crate::fetch::limit::ByteRate>,
    /// Limit on all bytes downloaded (upstream and peers), e.g. 100MiB/s.
    #[arg(long, value_name = "RATE", env = "SHOAL_DOWNLOAD_LIMIT")]
    pub download_limit: Option<crate::fetch::limit::ByteRate>,
    /// The store's disk quota, e.g. 50GiB: least recently used blobs are evicted past 95% of it.
    #[arg(long, value_name = "SIZE", env = "SHOAL_MAX_DISK")]
    pub max_disk: Option<crate::fetch::limit::ByteSize>,
    /// Piece size for blobs this node fetches first, e.g. 8MiB (a power of two, 256KiB to
    /// 64MiB) [default: from the blob's size, 4MiB up to 8GiB].
    #[arg(long, value_name = "SIZE", env = "SHOAL_PIECE_SIZE")]
    pub piece_size: Option<crate::fetch::limit::ByteSize>,
    /// Seconds a peer may deliver nothing before a download drops it and goes on from its
    /// verified pieces with the next source [default: 10].
    #[arg(long, value_name = "SECS", env = "SHOAL_STALL_TIMEOUT")]
    pub stall_timeout: Option<u64>,
    /// Seeds also exchange pieces with seeds of other zones, so a blob enters the cluster once.
    #[arg(long, env = "SHOAL_ZONE_PEERING")]
    pub zone_peering: bool,
    /// A query parameter of file URLs that does not change the content, left out of a file's
    /// identity (repeatable; adds to the defaults: S3 and GCS presigned-URL signatures).
    #[arg(
        long,
        value_name = "NAME",
        env = "SHOAL_FILE_IGNORE_PARAM",
        value_delimiter = ','
    )]
    pub file_ignore_param: Vec<String>,
    /// A standby file origin: file URLs starting with PREFIX are also fetched from URL
    /// (PREFIX=URL, repeatable).
    #[arg(
        long,
        value_name = "PREFIX=URL",
        env = "SHOAL_FILE_FALLBACK",
        value_delimiter = ','
    )]
    pub file_fallback: Vec<String>,
    /// The manager to join, e.g. https://shoal-manager:8080 (needs --token-file).
    #[arg(long, value_name = "URL", env = "SHOAL_MANAGER")]
    pub manager: Option<String>,
    /// The file holding the cluster's join token (a mounted Secret; never logged).
    #[arg(long, value_name = "FILE", env = "SHOAL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The node's name at the manager [default: the host name].
    #[arg(long, value_name = "NAME", env = "SHOAL_NODE_NAME")]
    pub node_name: Option<String>,
    /// `shoal node list|show|remove`: the manager's client for its nodes (without a
    /// subcommand, `shoal node` runs a node).
    #[command(subcommand)]
    pub manage: Option<client::NodeCommand>,
}

impl NodeArgs {
    /// The config file (or defaults) with these flags applied.
    ///
    /// # Errors
    /// When the file cannot be read or a flag value is malformed.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => NodeConfig::load(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.admin_listen {
            cfg.admin_listen = v;
        }
        if let Some(v) = &self.data_dir {
            cfg.data_dir = v.clone();
        }
        for value in &self.upstream {
            let (host, url) = split_host_url("--upstream", value)?;
            cfg.upstream.insert(host, url);
        }
        // Fallbacks given as flags replace the file's list for that registry, in flag order.
        let mut replaced = std::collections::BTreeSet::new();
        for value in &self.fallback {
            let (host, url) = split_host_url("--fallback", value)?;
            if replaced.insert(host.clone()) {
                cfg.fallback.insert(host.clone(), Vec::new());
            }
            cfg.fallback.entry(host).or_default().push(url);
        }
        if let Some(v) = &self.default_registry {
            cfg.default_registry = v.clone();
        }
        if self.seed {
            cfg.seed = true;
        }
        if let Some(v) = &self.zone {
            cfg.zone = v.clone();
        }
        if !self.p2p_listen.is_empty() {
            cfg.p2p_listen = self.p2p_listen.clone();
        }
        cfg.bootstrap.extend(self.bootstrap.iter().cloned());
        if let Some(v) = &self.swarm_key {
            cfg.swarm_key = Some(v.clone());
        }
        if self.upload_limit.is_some() {
            cfg.upload_limit = self.upload_limit;
        }
        if self.download_limit.is_some() {
            cfg.download_limit = self.download_limit;
        }
        if self.piece_size.is_some() {
            cfg.piece_size = self.piece_size;
        }
        if let Some(secs) = self.stall_timeout {
            cfg.stall_timeout_secs = secs;
        }
        if self.zone_peering {
            cfg.zone_peering = true;
        }
        cfg.file_ignore_params
            .extend(self.file_ignore_param.iter().cloned());
        for f in &self.file_fallback {
            let (prefix, url) = split_host_url("file_fallback", f)?;
            cfg.file_fallback.insert(prefix, url);
        }
        if self.max_disk.is_some() {
            cfg.max_disk = self.max_disk;
        }
        if let Some(v) = &self.manager {
            cfg.manager = Some(v.clone());
        }
        if let Some(v) = &self.token_file {
            cfg.token_file = Some(v.clone());
        }
        if let Some(v) = &self.node_name {
            cfg.node_name = Some(v.clone());
        }
        Ok(cfg)
    }
}

/// Flags of `shoal get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file's URL (http or https); a directory URL ending in / with --recursive.
    pub url: String,
    /// Where to write it (a directory, existing or ending in /, gets the URL's file name).
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write it under the URL's file name in the current directory.
    #[arg(short = 'O', long)]
    pub remote_name: bool,
    /// The content's digest (sha256:…): every byte is verified against it.
    #[arg(long)]
    pub digest: Option<String>,
    /// The node's mirror URL.
    #[arg(long, default_value = "http://127.0.0.1:65001", env = "SHOAL_NODE")]
    pub node: String,
    /// Limit this download's rate, e.g. 20MiB/s.
    #[arg(long, value_name = "RATE")]
    pub limit: Option<crate::fetch::limit::ByteRate>,
    /// A header for the origin, e.g. "Authorization: Bearer …" (repeatable; never logged).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// Download every file under a directory listing (-o DIR).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// No progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Flags of `shoal preheat`.
#[derive(Debug, Args)]
pub struct PreheatArgs {
    /// The image, e.g. `nginx:1.27` or `registry.example.com/team/app@sha256:…`, or a file's
    /// http(s) URL.
    pub image: String,
    /// For a file: its digest (sha256:…), which every node verifies.
    #[arg(long)]
    pub digest: Option<String>,
    /// A platform of a multi-platform image to fetch (repeatable) [default: all].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
    /// Which nodes fetch it: `seeds`, `zone` (every node of the zone) or `all`.
    #[arg(long, default_value = "seeds")]
    pub scope: String,
    /// The zone [default: for `zone`, the node's; for `seeds`, every zone].
    #[arg(long)]
    pub zone: Option<String>,
    /// The admin URL of the node that gives the order.
    #[arg(
        long,
        default_value = "http://127.0.0.1:65003",
        env = "SHOAL_NODE_ADMIN"
    )]
    pub node: String,
    /// Return once the order is given, without following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (exit status 1).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// Flags of `shoal up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Store and state directory.
    #[arg(long, default_value = "./shoal-data", env = "SHOAL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where requests for registry HOST go (HOST=URL, repeatable).
    #[arg(
        long,
        value_name = "HOST=URL",
        env = "SHOAL_UPSTREAM",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,
    /// The manager's API and console address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SHOAL_MANAGER_LISTEN")]
    pub manager_listen: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_name_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nzone = \"a\"\n[fallback]\n\"docker.io\" = [\"http://f1\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "shoal",
            "node",
            "--config",
            file.to_str().unwrap(),
            "--zone",
            "b",
            "--upstream",
            "docker.io=http://127.0.0.1:9",
            "--fallback",
            "docker.io=http://f2",
        ])
        .unwrap();
        let Command::Node(args) = cli.command else {
            panic!()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.zone, "b");
        assert_eq!(cfg.upstream["docker.io"], "http://127.0.0.1:9");
        assert_eq!(cfg.fallback["docker.io"], ["http://f2"]);
        assert_eq!(cfg.manager, None);

        let cli = Cli::try_parse_from([
            "shoal",
            "seed",
            "--manager",
            "http://127.0.0.1:8080",
            "--token-file",
            "/run/secrets/join",
            "--node-name",
            "host-1",
        ])
        .unwrap();
        let Command::Seed(args) = cli.command else {
            panic!()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.manager.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            cfg.token_file.as_deref(),
            Some(std::path::Path::new("/run/secrets/join"))
        );
        assert_eq!(cfg.node_name.as_deref(), Some("host-1"));

        let args = NodeArgs {
            upstream: vec!["no-equals-sign".into()],
            ..Default::default()
        };
        assert!(
            args.resolve()
                .unwrap_err()
                .to_string()
                .contains("--upstream")
        );
    }
}
