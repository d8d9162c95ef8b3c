//! Wiring of one node: store, upstream client, download engine, metrics, and the two HTTP
//! servers. `Node::bind` takes the ports; `Node::run` serves until the shutdown future fires.
//! The CLI and the tests (which bind port 0 and run nodes in process) both use it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::NodeSettings;
use crate::fetch::Fetcher;
use crate::metrics::NodeMetrics;
use crate::mirror::{self, MirrorState, admin};
use crate::oci::RegistryClient;
use crate::store::{Store, StoreError};

/// How long open requests may run after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("cannot build the upstream client: {0}")]
    Client(#[from] reqwest::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A server failed.
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// A key file could not be loaded or created.
    #[error(transparent)]
    Key(#[from] crate::p2p::keys::KeyError),
    /// The swarm could not start.
    #[error("cannot start the swarm: {0}")]
    P2p(#[from] crate::p2p::P2pError),
    /// The agent could not start.
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
}

fn role(settings: &NodeSettings) -> &'static str {
    if settings.seed { "seed" } else { "node" }
}

/// Loads (or creates) the node's identity and the swarm key, and starts the swarm.
async fn start_swarm(
    settings: &NodeSettings,
    fetcher: &Arc<Fetcher>,
) -> Result<crate::p2p::P2p, NodeError> {
    use crate::p2p::keys;
    let identity = keys::load_or_create_identity(&settings.data_dir.join("identity.key"))?;
    if !settings.swarm_key.exists() {
        // A private swarm of one until the operator gives every node the same key file.
        tracing::warn!(path = %settings.swarm_key.display(), "no swarm key: generating one; give this file to every node (--swarm-key)");
        std::fs::write(&settings.swarm_key, keys::generate_swarm_key())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&settings.swarm_key, std::fs::Permissions::from_mode(0o600))?;
    }
    let swarm_key = keys::load_swarm_key(&settings.swarm_key)?;
    let config = crate::p2p::P2pConfig {
        keypair: identity,
        listen: settings.p2p_listen.clone(),
        bootstrap: settings.bootstrap.clone(),
        swarm_key: Some(swarm_key),
        zone: settings.zone.clone(),
        role: role(settings).into(),
        request_timeout: settings.stall_timeout,
        zone_peering: settings.zone_peering,
    };
    let p2p =
        crate::p2p::P2p::start(config, crate::fetch::pieces::StorePieces::new(fetcher)).await?;
    crate::p2p::dns::spawn(p2p.clone(), settings.bootstrap_dns.clone());
    Ok(p2p)
}

/// A node with its ports bound, ready to run.
pub struct Node {
    mirror_listener: TcpListener,
    admin_listener: TcpListener,
    mirror_state: MirrorState,
    admin_state: admin::AdminState,
    /// With `--manager`: the agent to start with the servers.
    agent: Option<crate::agent::AgentConfig>,
}

impl Node {
    /// Opens the store and binds both ports.
    ///
    /// # Errors
    /// See [`NodeError`].
    pub async fn bind(settings: NodeSettings) -> Result<Node, NodeError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })
        };
        let mirror_listener = bind(settings.listen).await?;
        let admin_listener = bind(settings.admin_listen).await?;
        let store = Arc::new(Store::open(&settings.data_dir)?);
        let registry = prometheus::Registry::new();
        let metrics = NodeMetrics::register(&registry)?;
        let client = Arc::new(RegistryClient::new(settings.timeouts)?);
        let fetcher = Fetcher::with_limits(
            Fetcher::new(
                store,
                client,
                Arc::new(settings.registries.clone()),
                metrics,
            ),
            settings.download_limit,
            settings.upload_limit,
            settings.max_disk,
        )
        .with_swarm(settings.piece_size, settings.stall_timeout);
        fetcher.spawn_quota_loop();
        let p2p = start_swarm(&settings, &fetcher).await?;
        let files = crate::files::Files::new(fetcher.clone(), settings.files.clone());
        let preheater = crate::preheat::Preheater::new(
            fetcher.clone(),
            files.clone(),
            role(&settings),
            &settings.zone,
        );
        preheater.listen(&p2p);
        fetcher.attach_p2p(p2p);
        let mirror_addr = mirror_listener.local_addr()?;
        let agent = settings
            .manager
            .as_ref()
            .map(|m| crate::agent::AgentConfig {
                manager: m.url.clone(),
                token_file: m.token_file.clone(),
                node_name: m.node_name.clone(),
                data_dir: settings.data_dir.clone(),
                role: role(&settings).into(),
                zone: settings.zone.clone(),
                mirror_addr,
            });
        let info = admin::NodeInfo {
            role: role(&settings).into(),
            zone: settings.zone,
            mirror_addr: mirror_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        Ok(Node {
            mirror_listener,
            admin_listener,
            mirror_state: MirrorState {
                files,
                fetcher: fetcher.clone(),
                default_registry: settings.default_registry,
            },
            admin_state: admin::AdminState {
                fetcher,
                registry,
                info: Arc::new(info),
                preheater,
            },
            agent,
        })
    }

    /// The mirror's bound address.
    pub fn mirror_addr(&self) -> SocketAddr {
        self.mirror_listener.local_addr().expect("bound listener")
    }

    /// The admin port's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener")
    }

    /// Serves (and, with a manager, runs the agent) until `shutdown` resolves, then stops
    /// accepting and lets open requests finish.
    ///
    /// # Errors
    /// When a server fails, or the agent cannot start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let agent = match self.agent {
            Some(config) => Some(crate::agent::Agent::spawn(
                config,
                self.admin_state.fetcher.clone(),
                self.mirror_state.files.clone(),
            )?),
            None => None,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let signal = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let mirror = tokio::spawn(mirror::serve(
            self.mirror_listener,
            self.mirror_state,
            signal(),
        ));
        let admin = tokio::spawn(admin::serve(
            self.admin_listener,
            self.admin_state,
            signal(),
        ));
        shutdown.await;
        // Assignments in progress stop without a report: the manager gives them again when
        // the node is back.
        if let Some(agent) = agent {
            agent.stop();
        }
        let _ = tx.send(true);
        // Open requests get a grace period; a long blob transfer does not hold the exit.
        let drain = async {
            for server in [mirror, admin] {
                server.await.expect("server task does not panic")?;
            }
            Ok::<_, NodeError>(())
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, drain).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("requests still open after the grace period; exiting anyway");
                Ok(())
            }
        }
    }
}
