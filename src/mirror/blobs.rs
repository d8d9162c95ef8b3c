//! `GET`/`HEAD /v2/<name>/blobs/<digest>`: from the store, or joined to the download of it.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::RequestContext;
use super::route::{ByteRange, parse_range};
use crate::fetch::{Blob, BlobRequest, ObjectKind};
use crate::metrics::Source;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName};
use crate::store::read::file_stream;

pub(super) async fn get(
    ctx: RequestContext,
    repo: RepoName,
    digest: Digest,
) -> Result<Response, RegistryError> {
    let fetcher = ctx.state.fetcher.clone();
    let req = BlobRequest {
        registry: ctx.registry.clone(),
        repo,
        digest,
        credentials: ctx.credentials.clone(),
        file: None,
        meter: None,
    };
    let held = if ctx.head {
        fetcher.held_blob(&req.digest)
    } else {
        Some(fetcher.blob(&req)?)
    };
    let authorize = || {
        fetcher.authorizer().check(
            &req.registry,
            &req.repo,
            ObjectKind::Blob,
            &req.digest,
            req.credentials.as_ref(),
        )
    };
    let range_header = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    respond(
        &fetcher,
        &req,
        held,
        range_header,
        ctx.head,
        authorize,
        None,
    )
    .await
}

/// The response for a blob the node holds or is downloading (`held`), or, for `HEAD` of one it
/// does not, the chain's answer. `authorize` runs before anything held is served to a client
/// that was not itself vouched for by the source; `content_type` replaces the blob's.
pub(super) async fn respond<F, Fut>(
    fetcher: &std::sync::Arc<crate::fetch::Fetcher>,
    req: &BlobRequest,
    held: Option<Blob>,
    range_header: Option<&str>,
    head: bool,
    authorize: F,
    content_type: Option<HeaderValue>,
) -> Result<Response, RegistryError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), RegistryError>>,
{
    let typed = |mut resp: Response| {
        if let Some(t) = &content_type {
            resp.headers_mut().insert(header::CONTENT_TYPE, t.clone());
        }
        resp
    };
    let ctx_head = head;
    match held {
        None => {
            // HEAD of a blob the node does not hold: ask the chain, do not download.
            let size = fetcher.head_blob(req).await?;
            Ok(typed(headers_only(&req.digest, StatusCode::OK, size, None)))
        }
        Some(Blob::Stored { size }) => {
            authorize().await?;
            let range = parse_range(range_header, size)?;
            if ctx_head {
                return Ok(typed(headers_only(&req.digest, StatusCode::OK, size, None)));
            }
            let metrics = fetcher.metrics().clone();
            let path = fetcher.store().blob_path(&req.digest);
            // Not evicted while this response streams.
            let reading = fetcher.reading(&req.digest);
            serve_file(&path, &req.digest, size, range, move |n| {
                let _ = &reading;
                metrics.served(Source::Cache, n)
            })
            .await
            .map(typed)
        }
        Some(Blob::Downloading { download, leader }) => {
            let progress = download.ready().await?;
            // Only a leader whose bytes come from the upstream was vouched for by it.
            if !leader || progress.source == Source::Peer {
                authorize().await?;
            }
            let Some(size) = progress.size else {
                // The source did not announce a length: stream it all, chunked.
                let body =
                    Body::from_stream(download.reader(0, u64::MAX, fetcher.metrics().clone()));
                return Ok(typed(with_blob_headers(
                    Response::new(body),
                    &req.digest,
                    None,
                )));
            };
            let range = parse_range(range_header, size)?;
            if ctx_head {
                return Ok(typed(headers_only(&req.digest, StatusCode::OK, size, None)));
            }
            let (start, end) = range.map_or((0, size), |r| (r.start, r.end));
            let stream = download.reader(start, end, fetcher.metrics().clone());
            let mut resp = Response::new(Body::from_stream(stream));
            set_extent(&mut resp, size, range);
            Ok(typed(with_blob_headers(
                resp,
                &req.digest,
                Some(end - start),
            )))
        }
    }
}

/// Streams a stored blob (or a range of it) from its file.
async fn serve_file(
    path: &std::path::Path,
    digest: &Digest,
    size: u64,
    range: Option<ByteRange>,
    count: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Response, RegistryError> {
    // Fail before the headers if the file is gone (evicted, or removed by hand).
    std::fs::metadata(path).map_err(|e| {
        RegistryError::new(ErrorCode::Unknown, format!("cannot open stored blob: {e}"))
    })?;
    let (start, end) = range.map_or((0, size), |r| (r.start, r.end));
    let stream = file_stream(path, start, end).map(move |r| {
        if let Ok(b) = &r {
            count(b.len() as u64);
        }
        r
    });
    let mut resp = Response::new(Body::from_stream(stream));
    set_extent(&mut resp, size, range);
    Ok(with_blob_headers(resp, digest, Some(end - start)))
}

/// 206 and `Content-Range` for a range response.
fn set_extent(resp: &mut Response, size: u64, range: Option<ByteRange>) {
    if let Some(r) = range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&v).expect("ascii"),
        );
    }
}

fn headers_only(
    digest: &Digest,
    status: StatusCode,
    size: u64,
    range: Option<ByteRange>,
) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    set_extent(&mut resp, size, range);
    with_blob_headers(resp, digest, Some(size))
}

/// The headers distribution sends with a blob.
fn with_blob_headers(mut resp: Response, digest: &Digest, length: Option<u64>) -> Response {
    let h = resp.headers_mut();
    let d = HeaderValue::from_str(&digest.to_string()).expect("digest is ascii");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", d.clone());
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if let Some(n) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}
