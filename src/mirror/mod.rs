//! The node's HTTP front: the registry-mirror API (`/v2/…`) that Docker, containerd, Podman
//! and CRI-O pull through, files (`/api/v1/files`, and `http://` URLs in proxy form), and the admin endpoints
//! (`/healthz`, `/readyz`, `/status`, `/metrics`).

pub mod admin;
mod blobs;
mod files;
mod manifests;
pub mod route;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::fetch::Fetcher;
use crate::oci::{Credentials, ErrorCode, RegistryError, RegistryHost};
use route::V2Route;

/// What the mirror's handlers share.
#[derive(Clone)]
pub struct MirrorState {
    /// The download engine (and through it the store and metrics).
    pub fetcher: Arc<Fetcher>,
    /// The registry a request without `?ns=` means (Docker's mirror requests), unless its path
    /// names one (see [`route::path_registry`]).
    pub default_registry: RegistryHost,
    /// Files (any HTTP URL).
    pub files: Arc<crate::files::Files>,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.envelope())).into_response();
        if let Some(challenge) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

/// The mirror's routes.
pub fn router(state: MirrorState) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*rest}", any(v2))
        .route("/api/v1/files", get(files::endpoint))
        .fallback(|| async {
            RegistryError::new(ErrorCode::NameUnknown, "not a registry API path")
                .with_status(StatusCode::NOT_FOUND)
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            files::proxy,
        ))
        .with_state(state)
        // Outermost, so every request (including rejected ones) gets a span with its method and
        // path; headers are not recorded, so credentials never reach the logs.
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
}

/// Serves the mirror on `listener` until `shutdown` resolves.
///
/// # Errors
/// When accepting connections fails fatally.
pub async fn serve(
    listener: TcpListener,
    state: MirrorState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn base() -> impl IntoResponse {
    (
        [("docker-distribution-api-version", "registry/2.0")],
        axum::Json(serde_json::json!({})),
    )
}

#[derive(Deserialize)]
struct MirrorQuery {
    ns: Option<String>,
}

async fn v2(
    State(state): State<MirrorState>,
    method: Method,
    uri: Uri,
    query: Result<Query<MirrorQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match handle(state, method, uri, query, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: MirrorState,
    method: Method,
    uri: Uri,
    query: Result<Query<MirrorQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, RegistryError> {
    let Query(query) = query.map_err(|e| {
        RegistryError::new(ErrorCode::NameInvalid, format!("bad query string: {e}"))
    })?;
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    // Without `ns`, the path may name the registry (Podman's and CRI-O's mirrors with a path).
    let request = route::parse_v2(rest, query.ns.is_none())?;
    let head = match method {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "shoal is a pull-only mirror",
            ));
        }
    };
    let registry = match (query.ns, request.registry) {
        (Some(ns), _) => ns.parse::<RegistryHost>().map_err(|e| {
            RegistryError::new(ErrorCode::NameInvalid, format!("bad ns parameter: {e}"))
        })?,
        (None, Some(in_path)) => in_path,
        (None, None) => state.default_registry.clone(),
    };
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(Credentials::from_header);
    let ctx = RequestContext {
        state,
        registry,
        credentials,
        head,
        headers,
    };
    match request.route {
        V2Route::Blob { repo, digest } => blobs::get(ctx, repo, digest).await,
        V2Route::Manifest { repo, reference } => manifests::get(ctx, repo, reference).await,
        V2Route::TagsList { .. } | V2Route::Upload => Err(RegistryError::new(
            ErrorCode::Unsupported,
            "shoal is a pull-only mirror",
        )),
    }
}

/// One request's parsed context.
struct RequestContext {
    state: MirrorState,
    registry: RegistryHost,
    credentials: Option<Credentials>,
    head: bool,
    headers: HeaderMap,
}
