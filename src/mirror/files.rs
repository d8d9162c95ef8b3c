//! Files through the node: `GET`/`HEAD /api/v1/files?url=URL[&digest=sha256:…]`, and the same
//! for `http://` URLs asked of the node as an HTTP proxy (`curl -x`, `wget` with `http_proxy`).

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::MirrorState;
use crate::oci::{Digest, ErrorCode, RegistryError};

/// The query of `/api/v1/files`.
#[derive(Debug, Deserialize)]
pub(super) struct FileQuery {
    url: Option<String>,
    digest: Option<String>,
}

pub(super) async fn endpoint(
    State(state): State<MirrorState>,
    Query(q): Query<FileQuery>,
    method: Method,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(url) = q.url else {
        return RegistryError::new(ErrorCode::Unsupported, "the url parameter is missing")
            .into_response();
    };
    serve(&state, &url, q.digest.as_deref(), &method, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Requests whose target is an absolute `http://` URL (proxy form) are files; everything else
/// goes on to the registry API.
pub(super) async fn proxy(State(state): State<MirrorState>, req: Request, next: Next) -> Response {
    if req.uri().scheme().is_none() {
        return next.run(req).await;
    }
    let url = req.uri().to_string();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return RegistryError::new(
            ErrorCode::Unsupported,
            "the proxy serves GET and HEAD of http:// URLs (no CONNECT: use the files endpoint for https)",
        )
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
        .into_response();
    }
    serve(&state, &url, None, &req.method().clone(), req.headers())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: &MirrorState,
    url: &str,
    digest: Option<&str>,
    method: &Method,
    headers: &axum::http::HeaderMap,
) -> Result<Response, RegistryError> {
    let url = crate::files::parse_url(url)?;
    let digest = digest
        .map(|d| {
            d.parse::<Digest>().map_err(|e| {
                RegistryError::new(ErrorCode::DigestInvalid, format!("digest {d:?}: {e}"))
            })
        })
        .transpose()?;
    let head = method == Method::HEAD;
    if let Some(e) = digest.as_ref().and_then(|d| state.files.mismatch(d)) {
        return Err(e);
    }
    let resolved = state
        .files
        .resolve(&url, digest, crate::files::forwarded(headers))
        .await?;
    let fetcher = &state.fetcher;
    let held = if head {
        fetcher.held_blob(&resolved.blob.digest)
    } else {
        Some(fetcher.blob(&resolved.blob)?)
    };
    // One watcher per download: the request that started it.
    if let Some(crate::fetch::Blob::Downloading {
        download,
        leader: true,
    }) = &held
    {
        state.files.watch(download.clone());
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let content_type = resolved
        .content_type
        .and_then(|t| HeaderValue::from_str(&t).ok());
    // The origin answered this client's request just now: that is the permission.
    super::blobs::respond(
        fetcher,
        &resolved.blob,
        held,
        range,
        head,
        || async { Ok(()) },
        content_type,
    )
    .await
}
