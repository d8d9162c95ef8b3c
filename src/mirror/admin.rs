//! The admin port: `/healthz` (the process is alive), `/readyz` (the store is usable and some
//! source answers), `/status` (JSON for people and tools), `/metrics` (Prometheus text format)
//! and `/api/v1/preheat` (orders to fetch an image ahead of need; see [`crate::preheat`]).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::fetch::Fetcher;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    /// The download engine.
    pub fetcher: Arc<Fetcher>,
    /// The registry the metrics were registered in.
    pub registry: prometheus::Registry,
    /// Static facts about this node for `/status`.
    pub info: Arc<NodeInfo>,
    /// Preheat orders.
    pub preheater: Arc<crate::preheat::Preheater>,
}

/// Facts about the node that do not change while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// `node` or `seed`.
    pub role: String,
    /// Locality zone.
    pub zone: String,
    /// The mirror's address.
    pub mirror_addr: String,
    /// shoal's version.
    pub version: String,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/v1/preheat", post(preheat_order).get(preheat_list))
        .route("/api/v1/preheat/{id}", get(preheat_status))
        .with_state(state)
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
///
/// # Errors
/// When accepting connections fails fatally.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.fetcher.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(flatten)]
    info: &'a NodeInfo,
    /// The node's libp2p identity.
    peer_id: Option<String>,
    listen_addrs: Vec<String>,
    peers: usize,
    /// Connected peers per zone.
    peers_by_zone: std::collections::BTreeMap<String, usize>,
    /// The seeds this node sees (any zone).
    seeds: Vec<PeerView>,
    /// Bytes served to clients, by where they came from.
    served_bytes: std::collections::BTreeMap<&'static str, u64>,
    /// Piece bytes sent to and received from peers.
    p2p_sent_bytes: u64,
    p2p_received_bytes: u64,
    downloads_in_flight: usize,
    /// The downloads running now.
    downloads: Vec<DownloadView>,
    data_dir: String,
}

#[derive(Serialize)]
struct PeerView {
    peer_id: String,
    zone: String,
}

#[derive(Serialize)]
struct DownloadView {
    digest: String,
    size: Option<u64>,
    received: u64,
    source: &'static str,
    phase: &'static str,
}

async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    let (peer_id, listen_addrs, known) = match state.fetcher.p2p() {
        Some(p) => (
            Some(p.peer_id().to_string()),
            p.listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            p.peers().await,
        ),
        None => (None, Vec::new(), Vec::new()),
    };
    let peers = known.len();
    let mut peers_by_zone = std::collections::BTreeMap::new();
    for p in &known {
        *peers_by_zone
            .entry(p.zone.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    let seeds = known
        .iter()
        .filter(|p| p.is_seed())
        .map(|p| PeerView {
            peer_id: p.id.to_string(),
            zone: p.zone.clone().unwrap_or_default(),
        })
        .collect();
    let m = state.fetcher.metrics();
    let served_bytes = [
        crate::metrics::Source::Cache,
        crate::metrics::Source::Upstream,
        crate::metrics::Source::Fallback,
        crate::metrics::Source::Peer,
    ]
    .into_iter()
    .map(|s| {
        (
            s.label(),
            m.served_bytes.with_label_values(&[s.label()]).get(),
        )
    })
    .collect();
    let downloads = state
        .fetcher
        .downloads()
        .into_iter()
        .map(|(digest, p)| DownloadView {
            digest: digest.to_string(),
            size: p.size,
            received: p.written,
            source: p.source.label(),
            phase: match p.phase {
                crate::fetch::download::Phase::Connecting => "connecting",
                crate::fetch::download::Phase::Streaming => "streaming",
                crate::fetch::download::Phase::Complete => "complete",
                crate::fetch::download::Phase::Failed(_) => "failed",
            },
        })
        .collect();
    axum::Json(
        serde_json::to_value(Status {
            info: &state.info,
            peer_id,
            listen_addrs,
            peers,
            peers_by_zone,
            seeds,
            served_bytes,
            p2p_sent_bytes: m.p2p_sent_bytes.get(),
            p2p_received_bytes: m.p2p_received_bytes.get(),
            downloads_in_flight: state.fetcher.downloads_in_flight(),
            downloads,
            data_dir: state.fetcher.store().root().display().to_string(),
        })
        .expect("status serializes"),
    )
}

/// An error in the registry envelope, with its status.
fn error_response(e: &crate::oci::RegistryError) -> axum::response::Response {
    (e.status, axum::Json(e.envelope())).into_response()
}

async fn preheat_order(
    State(state): State<AdminState>,
    body: Result<
        axum::Json<crate::preheat::PreheatRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> axum::response::Response {
    let axum::Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error_response(&crate::oci::RegistryError::new(
                crate::oci::ErrorCode::Unsupported,
                format!("bad preheat request: {}", e.body_text()),
            ));
        }
    };
    match state.preheater.order(req).await {
        Ok(status) => (StatusCode::ACCEPTED, axum::Json(status)).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn preheat_list(State(state): State<AdminState>) -> impl IntoResponse {
    axum::Json(state.preheater.list())
}

async fn preheat_status(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> axum::response::Response {
    match state.preheater.status(&id) {
        Some(s) => axum::Json(s).into_response(),
        None => error_response(&crate::oci::RegistryError::new(
            crate::oci::ErrorCode::NameUnknown,
            format!("no preheat {id:?} on this node"),
        )),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    if let Some(p2p) = state.fetcher.p2p() {
        let peers = p2p.peers().await.len();
        state.fetcher.metrics().peers_connected.set(peers as i64);
    }
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&state.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        buf,
    )
        .into_response()
}
