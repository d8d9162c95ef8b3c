//! The admin port: `/healthz` (the process is alive), `/readyz` (the store is usable),
//! `/status` (JSON for people and tools) and `/metrics` (Prometheus text format).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
    // Ready when the store's temporary directory accepts a file.
    let probe = state.fetcher.store().root().join("tmp").join(".ready");
    match tokio::fs::write(&probe, b"").await {
        Ok(()) => {
            let _ = tokio::fs::remove_file(&probe).await;
            (StatusCode::OK, "ready\n".to_owned())
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not writable: {e}\n"),
        ),
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
    downloads_in_flight: usize,
    data_dir: String,
}

async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    let (peer_id, listen_addrs, peers) = match state.fetcher.p2p() {
        Some(p) => (
            Some(p.peer_id().to_string()),
            p.listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            p.peers().await.len(),
        ),
        None => (None, Vec::new(), 0),
    };
    axum::Json(
        serde_json::to_value(Status {
            info: &state.info,
            peer_id,
            listen_addrs,
            peers,
            downloads_in_flight: state.fetcher.downloads_in_flight(),
            data_dir: state.fetcher.store().root().display().to_string(),
        })
        .expect("status serializes"),
    )
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
