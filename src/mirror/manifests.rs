//! `GET`/`HEAD /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::RequestContext;
use crate::fetch::{Manifest, ManifestRequest, ObjectKind};
use crate::metrics::Source;
use crate::oci::{Reference, RegistryError, RepoName};

pub(super) async fn get(
    ctx: RequestContext,
    repo: RepoName,
    reference: Reference,
) -> Result<Response, RegistryError> {
    let fetcher = &ctx.state.fetcher;
    let stored = match &reference {
        Reference::Digest(d) => fetcher.stored_manifest(d),
        Reference::Tag(_) => None,
    };
    let req = ManifestRequest {
        registry: ctx.registry.clone(),
        repo,
        reference,
        accept: ctx
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .cloned()
            .collect(),
        credentials: ctx.credentials.clone(),
        head: ctx.head,
    };
    let manifest = match stored {
        Some(m) => m,
        None => fetcher.fetch_manifest(&req).await?,
    };
    // Content this request did not itself obtain from the upstream needs the upstream's word
    // that this client may read it.
    if manifest.source == Source::Cache || manifest.stale {
        fetcher
            .authorizer()
            .check(
                &req.registry,
                &req.repo,
                ObjectKind::Manifest,
                &manifest.digest,
                req.credentials.as_ref(),
            )
            .await?;
    }
    Ok(respond(manifest, ctx.head, fetcher.metrics()))
}

fn respond(m: Manifest, head: bool, metrics: &crate::metrics::NodeMetrics) -> Response {
    let body = match (head, m.body) {
        (false, Some(b)) => {
            metrics.served(m.source, b.len() as u64);
            Body::from(b)
        }
        _ => Body::empty(),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(m.media_type.as_str()).expect("known media type is ascii"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.size));
    let digest = HeaderValue::from_str(&m.digest.to_string()).expect("digest is ascii");
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", m.digest)).expect("ascii"),
    );
    h.insert("docker-content-digest", digest);
    resp
}
