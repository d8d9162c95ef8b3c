//! Preheat: an image fetched ahead of need into the seeds, or onto every node of a zone or of
//! the cluster.
//!
//! The node that receives the order (`POST /api/v1/preheat` on its admin port, which
//! `shoal preheat` calls) resolves the image first, so that a bad reference, an unknown image,
//! refused credentials or an unreachable registry is answered at once, and nothing is started.
//! It then publishes the order on the cluster's task topic. Every node the scope names
//! resolves the reference itself (so that its own store holds the manifests and its
//! authorization cache the upstream's answers, for pulls while the upstream is down), then
//! fetches each blob through the usual chain (peers, seeds, upstream, fallbacks) and reports
//! its progress on the same topic; the ordering node collects the reports for its status.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::fetch::Fetcher;
use crate::oci::{Digest, ErrorCode, ImageRef, RegistryError};
use crate::p2p::{P2p, PeerId, PreheatOrder, PreheatProgress, Task, TaskKind};

mod image;

pub use image::{Platform, Resolved, fetch_blobs, resolve};

/// The shortest time between two progress reports of one node.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Orders remembered (to ignore repeats) and kept for status.
const MAX_ORDERS: usize = 1024;

/// Which nodes fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The seeds (of one zone, or of every zone).
    Seeds,
    /// Every node of one zone.
    Zone,
    /// Every node.
    All,
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seeds" => Ok(Scope::Seeds),
            "zone" => Ok(Scope::Zone),
            "all" => Ok(Scope::All),
            other => Err(format!("unknown scope {other:?} (seeds, zone or all)")),
        }
    }
}

impl Scope {
    /// Whether an order of this scope for `zone` names a node of `node_zone` and `role`.
    fn names(self, zone: &str, node_zone: &str, role: &str) -> bool {
        match self {
            Scope::Seeds => role == "seed" && (zone.is_empty() || zone == node_zone),
            Scope::Zone => zone == node_zone,
            Scope::All => true,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Seeds => "seeds",
            Scope::Zone => "zone",
            Scope::All => "all",
        }
    }
}

/// One node's progress on an order, as `/api/v1/preheat/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProgress {
    /// The node's peer id.
    pub peer_id: String,
    /// Its zone.
    pub zone: String,
    /// `node` or `seed`.
    pub role: String,
    /// `pending` (no report yet), `running`, `done` or `failed`.
    pub state: &'static str,
    /// Blobs it holds.
    pub blobs_done: u32,
    /// Blobs to fetch.
    pub blobs_total: u32,
    /// Bytes of the blobs it holds.
    pub bytes_done: u64,
    /// Bytes of all the blobs.
    pub bytes_total: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl NodeProgress {
    fn from_report(peer: PeerId, p: &PreheatProgress) -> NodeProgress {
        let state = match (p.finished, p.error.is_empty()) {
            (false, _) => "running",
            (true, true) => "done",
            (true, false) => "failed",
        };
        NodeProgress {
            peer_id: peer.to_string(),
            zone: p.zone.clone(),
            role: p.role.clone(),
            state,
            blobs_done: p.blobs_done,
            blobs_total: p.blobs_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            error: p.error.clone(),
        }
    }
}

/// An order this node gave, with what the nodes reported.
#[derive(Debug, Clone, Serialize)]
pub struct OrderStatus {
    /// The order's id.
    pub id: String,
    /// The image, normalized.
    pub image: String,
    /// Platforms asked for (empty: all).
    pub platforms: Vec<String>,
    /// Who fetches.
    pub scope: Scope,
    /// The zone (`seeds`: empty for every zone).
    pub zone: String,
    /// When it was given (seconds since the Unix epoch).
    pub created: u64,
    /// `running`, `done` (every node reported success) or `failed` (some node failed).
    pub state: &'static str,
    /// What the ordering node resolved.
    pub resolved: Resolved,
    /// Per node: the nodes expected when the order was given, and any other that reported.
    pub nodes: Vec<NodeProgress>,
}

struct Order {
    status: OrderStatus,
    /// Nodes known to be in scope when the order was given.
    expected: Vec<(PeerId, String, String)>,
    reports: HashMap<PeerId, PreheatProgress>,
}

impl Order {
    fn view(&self) -> OrderStatus {
        let mut status = self.status.clone();
        status.nodes = self
            .expected
            .iter()
            .filter(|(p, _, _)| !self.reports.contains_key(p))
            .map(|(p, zone, role)| NodeProgress {
                peer_id: p.to_string(),
                zone: zone.clone(),
                role: role.clone(),
                state: "pending",
                blobs_done: 0,
                blobs_total: status.resolved.blobs.len() as u32,
                bytes_done: 0,
                bytes_total: status.resolved.bytes(),
                error: String::new(),
            })
            .chain(
                self.reports
                    .iter()
                    .map(|(p, r)| NodeProgress::from_report(*p, r)),
            )
            .collect();
        status
            .nodes
            .sort_by(|a, b| (&a.zone, &a.peer_id).cmp(&(&b.zone, &b.peer_id)));
        status.state = if status.nodes.iter().any(|n| n.state == "failed") {
            "failed"
        } else if !status.nodes.is_empty() && status.nodes.iter().all(|n| n.state == "done") {
            "done"
        } else {
            "running"
        };
        status
    }
}

/// What a client asks for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreheatRequest {
    /// The image reference.
    pub image: String,
    /// Platforms of an index (`os/arch[/variant]`); empty: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `seeds` (default), `zone` or `all`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The zone: for `zone` the default is this node's; for `seeds` every zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// For a file (`image` is then an http or https URL): its digest, if known.
    #[serde(default)]
    pub digest: Option<String>,
}

/// Runs preheats: gives orders, follows them, and carries out those meant for this node.
pub struct Preheater {
    fetcher: Arc<Fetcher>,
    files: Arc<crate::files::Files>,
    role: String,
    zone: String,
    orders: Mutex<HashMap<String, Order>>,
    seen: Mutex<HashSet<String>>,
}

impl Preheater {
    /// A preheater for this node; [`Preheater::listen`] starts following the task topic.
    pub fn new(
        fetcher: Arc<Fetcher>,
        files: Arc<crate::files::Files>,
        role: &str,
        zone: &str,
    ) -> Arc<Preheater> {
        Arc::new(Preheater {
            fetcher,
            files,
            role: role.into(),
            zone: zone.into(),
            orders: Mutex::default(),
            seen: Mutex::default(),
        })
    }

    /// Follows the task topic: carries out orders for this node, collects reports on its own.
    pub fn listen(self: &Arc<Self>, p2p: &P2p) {
        let mut tasks = p2p.subscribe_tasks();
        let this = Arc::downgrade(self);
        let p2p = p2p.clone();
        tokio::spawn(async move {
            loop {
                let (from, task) = match tasks.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "task messages missed");
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(this) = this.upgrade() else { return };
                match task.kind {
                    Some(TaskKind::Preheat(order)) => this.take(&p2p, order),
                    Some(TaskKind::Progress(p)) => this.record(from, p),
                    None => {}
                }
            }
        });
    }

    fn record(&self, from: PeerId, progress: PreheatProgress) {
        if let Some(order) = self.orders.lock().unwrap().get_mut(&progress.id) {
            order.reports.insert(from, progress);
        }
    }

    /// Whether an order names this node.
    fn in_scope(&self, scope: Scope, zone: &str) -> bool {
        scope.names(zone, &self.zone, &self.role)
    }

    /// Carries out an order if it names this node (once per order).
    fn take(self: &Arc<Self>, p2p: &P2p, order: PreheatOrder) {
        {
            let mut seen = self.seen.lock().unwrap();
            if seen.len() >= MAX_ORDERS {
                seen.clear();
            }
            if !seen.insert(order.id.clone()) {
                return;
            }
        }
        let Ok(scope) = order.scope.parse::<Scope>() else {
            tracing::warn!(id = %order.id, scope = %order.scope, "preheat order with an unknown scope");
            return;
        };
        if !self.in_scope(scope, &order.zone) {
            return;
        }
        let this = self.clone();
        let p2p = p2p.clone();
        tokio::spawn(async move { this.carry_out(&p2p, order).await });
    }

    /// Resolves and fetches an order's image on this node, reporting progress.
    async fn carry_out(&self, p2p: &P2p, order: PreheatOrder) {
        let report = |p: PreheatProgress| {
            let p2p = p2p.clone();
            // The ordering node may be this one: record directly, too.
            self.record(p2p.peer_id(), p.clone());
            async move {
                p2p.publish_task(Task {
                    kind: Some(TaskKind::Progress(p)),
                })
                .await
            }
        };
        let mut progress = PreheatProgress {
            id: order.id.clone(),
            zone: self.zone.clone(),
            role: self.role.clone(),
            ..Default::default()
        };
        let image = format!(
            "{}/{}@{}",
            order.registry, order.repository, order.reference
        );
        if !order.url.is_empty() {
            let result = async {
                let url = crate::files::parse_url(&order.url)?;
                let digest: Digest = order.digest.parse().map_err(bad_order)?;
                progress.blobs_total = 1;
                report(progress.clone()).await;
                self.files.fetch_known(&url, digest, None).await
            }
            .await;
            progress.finished = true;
            match result {
                Ok(size) => {
                    progress.blobs_done = 1;
                    progress.bytes_done = size;
                    progress.bytes_total = size;
                }
                Err(e) => progress.error = e.message,
            }
            report(progress).await;
            return;
        }
        let result = async {
            let image = ImageRef {
                registry: order.registry.parse().map_err(bad_order)?,
                repo: order.repository.parse().map_err(bad_order)?,
                reference: order.reference.parse().map_err(bad_order)?,
            };
            let platforms = order
                .platforms
                .iter()
                .map(|p| p.parse::<Platform>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad_order)?;
            let resolved = resolve(&self.fetcher, &image, &platforms).await?;
            progress.blobs_total = resolved.blobs.len() as u32;
            progress.bytes_total = resolved.bytes();
            report(progress.clone()).await;
            let mut fetches =
                std::pin::pin!(fetch_blobs(&self.fetcher, &image, &resolved.blobs, None));
            let mut last_report = tokio::time::Instant::now();
            while let Some(done) = fetches.next().await {
                let (_, size) = done?;
                progress.blobs_done += 1;
                progress.bytes_done += size;
                if last_report.elapsed() >= REPORT_EVERY {
                    last_report = tokio::time::Instant::now();
                    report(progress.clone()).await;
                }
            }
            Ok::<(), RegistryError>(())
        }
        .await;
        progress.finished = true;
        match result {
            Ok(()) => {
                tracing::info!(id = %order.id, %image, blobs = progress.blobs_done, "preheated")
            }
            Err(e) => {
                tracing::warn!(id = %order.id, %image, error = %e.message, "preheat failed");
                progress.error = e.message;
            }
        }
        report(progress).await;
    }

    /// Checks a request, resolves its image on this node and publishes the order.
    ///
    /// # Errors
    /// A malformed request (`NAME_INVALID`, `UNSUPPORTED`), or what resolving the image met.
    pub async fn order(
        self: &Arc<Self>,
        req: PreheatRequest,
    ) -> Result<OrderStatus, RegistryError> {
        let invalid = |m: String| RegistryError::new(ErrorCode::NameInvalid, m);
        let is_file = req.image.starts_with("http://") || req.image.starts_with("https://");
        if is_file {
            return self.order_file(req).await;
        }
        if req.digest.is_some() {
            return Err(invalid(
                "a digest goes with a file URL, not an image".into(),
            ));
        }
        let image: ImageRef = req
            .image
            .parse()
            .map_err(|e| invalid(format!("image {:?}: {e}", req.image)))?;
        let platforms = req
            .platforms
            .iter()
            .map(|p| p.parse::<Platform>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let (scope, zone) = self.scope_and_zone(req.scope.as_deref(), req.zone)?;
        let resolved = resolve(&self.fetcher, &image, &platforms)
            .await
            .map_err(|mut e| {
                e.message = format!("{image}: {}", e.message);
                e
            })?;
        // Nodes resolve the reference themselves, a tag included: each records the tag, so
        // that it can answer for it while the upstream is down.
        let wire = PreheatOrder {
            id: String::new(),
            registry: image.registry.to_string(),
            repository: image.repo.to_string(),
            reference: image.reference.to_string(),
            platforms: platforms.iter().map(Platform::to_string).collect(),
            scope: scope.as_str().into(),
            zone,
            url: String::new(),
            digest: String::new(),
        };
        self.give(wire, image.to_string(), scope, resolved).await
    }

    /// The order's scope (default `seeds`) and zone (for `zone`, this node's by default; for
    /// `seeds`, every zone; none for `all`).
    fn scope_and_zone(
        &self,
        scope: Option<&str>,
        zone: Option<String>,
    ) -> Result<(Scope, String), RegistryError> {
        let scope: Scope = scope
            .unwrap_or("seeds")
            .parse()
            .map_err(|m| RegistryError::new(ErrorCode::NameInvalid, m))?;
        let zone = match (scope, zone) {
            (Scope::All, _) => String::new(),
            (Scope::Zone, None) => self.zone.clone(),
            (_, z) => z.unwrap_or_default(),
        };
        Ok((scope, zone))
    }

    /// A preheat of a file: the ordering node resolves it (fetching it when no digest is
    /// given, to learn it), and the order names the digest, so that every node fetches it
    /// through the swarm and verifies it.
    async fn order_file(
        self: &Arc<Self>,
        req: PreheatRequest,
    ) -> Result<OrderStatus, RegistryError> {
        let invalid = |m: String| RegistryError::new(ErrorCode::NameInvalid, m);
        let url = crate::files::parse_url(&req.image)?;
        if !req.platforms.is_empty() {
            return Err(invalid("platforms go with images, not files".into()));
        }
        let digest = req
            .digest
            .as_deref()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| invalid(format!("digest {d:?}: {e}")))
            })
            .transpose()?;
        let (scope, zone) = self.scope_and_zone(req.scope.as_deref(), req.zone)?;
        let host = url.host_str().unwrap_or("?").to_owned();
        let r = self
            .files
            .resolve(&url, digest, http::HeaderMap::new())
            .await
            .map_err(|mut e| {
                e.message = format!("a file on {host}: {}", e.message);
                e
            })?;
        let resolved = Resolved {
            manifests: Vec::new(),
            blobs: vec![(r.blob.digest.clone(), r.size.unwrap_or(0))],
        };
        let wire = PreheatOrder {
            id: String::new(),
            registry: String::new(),
            repository: String::new(),
            reference: String::new(),
            platforms: Vec::new(),
            scope: scope.as_str().into(),
            zone,
            url: url.to_string(),
            digest: r.blob.digest.to_string(),
        };
        // The URL may carry a signature: the status names the host only.
        self.give(
            wire,
            format!("file on {host} ({})", r.blob.digest),
            scope,
            resolved,
        )
        .await
    }

    /// Records an order, publishes it, and carries it out here if this node is in scope.
    async fn give(
        self: &Arc<Self>,
        mut wire: PreheatOrder,
        image: String,
        scope: Scope,
        resolved: Resolved,
    ) -> Result<OrderStatus, RegistryError> {
        let zone = wire.zone.clone();
        let platforms = wire.platforms.clone();
        let p2p = self.fetcher.p2p().cloned();
        let id = format!("{:016x}", rand::random::<u64>());
        wire.id = id.clone();
        let me = p2p.as_ref().map(P2p::peer_id);
        let mut expected = Vec::new();
        if let Some(p2p) = &p2p {
            for p in p2p.known_peers().await {
                let (pz, role) = (
                    p.zone.clone().unwrap_or_default(),
                    p.role.clone().unwrap_or_default(),
                );
                if scope.names(&zone, &pz, &role) {
                    expected.push((p.id, pz, role));
                }
            }
        }
        if let Some(me) = me
            && self.in_scope(scope, &zone)
        {
            expected.push((me, self.zone.clone(), self.role.clone()));
        }
        if expected.is_empty() {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("no node is in scope {} (zone {zone:?})", scope.as_str()),
            ));
        }
        let status = OrderStatus {
            id: id.clone(),
            image,
            platforms,
            scope,
            zone: zone.clone(),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            state: "running",
            resolved,
            nodes: Vec::new(),
        };
        {
            let mut orders = self.orders.lock().unwrap();
            if orders.len() >= MAX_ORDERS {
                let oldest = orders
                    .iter()
                    .min_by_key(|(_, o)| o.status.created)
                    .map(|(k, _)| k.clone());
                oldest.map(|k| orders.remove(&k));
            }
            orders.insert(
                id.clone(),
                Order {
                    status,
                    expected,
                    reports: HashMap::new(),
                },
            );
        }
        if let Some(p2p) = &p2p {
            p2p.publish_task(Task {
                kind: Some(TaskKind::Preheat(wire.clone())),
            })
            .await;
            // Gossip does not bring a node its own messages: carry it out here if in scope.
            self.take(p2p, wire);
        }
        Ok(self.status(&id).expect("just stored"))
    }

    /// An order's status.
    pub fn status(&self, id: &str) -> Option<OrderStatus> {
        self.orders.lock().unwrap().get(id).map(Order::view)
    }

    /// Every order this node gave, newest first.
    pub fn list(&self) -> Vec<OrderStatus> {
        let mut all: Vec<OrderStatus> = self
            .orders
            .lock()
            .unwrap()
            .values()
            .map(Order::view)
            .collect();
        all.sort_by_key(|o| std::cmp::Reverse(o.created));
        all
    }
}

fn bad_order(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameInvalid,
        format!("malformed preheat order: {e}"),
    )
}
