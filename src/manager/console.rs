//! The web console: the built assets of `console/` (its `dist/` folder), embedded in the binary
//! and served at `/`. Every path that is not a file of the build gets `index.html`, so the
//! console's own routes (`/tasks/12`) load on a reload or from a bookmark. The console talks to
//! the manager only through `/api/v1`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "console/dist"]
struct Assets;

/// What the console's pages may load: only the manager itself (scripts, styles, the API).
/// The pages set styles through the DOM (progress bars, chart sizes), which needs no inline
/// allowance.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Serves a console file, or `index.html` for a console route. Unknown `/api/…` paths keep the
/// API's JSON 404, and other methods than GET and HEAD get it too.
pub async fn serve(req: Request<Body>) -> Response {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::not_found("route").into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return ApiError::not_found("route").into_response();
    }
    let name = path.trim_start_matches('/');
    if let Some(file) = (!name.is_empty()).then(|| Assets::get(name)).flatten() {
        // Files under assets/ carry their content hash in their name: cached for good.
        let cache = if name.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return asset(&req, file, cache);
    }
    // A missing asset (an old hashed name after an upgrade) is a 404, not the page.
    if name.starts_with("assets/") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match Assets::get("index.html") {
        Some(index) => asset(&req, index, "no-cache"),
        None => (
            StatusCode::NOT_FOUND,
            "this build of shoal has no console (build console/ with npm first)",
        )
            .into_response(),
    }
}

/// The file with its type, caching and security headers; `304` when the client has it.
fn asset(req: &Request<Body>, file: rust_embed::EmbeddedFile, cache: &'static str) -> Response {
    let mime = file.metadata.mimetype().to_owned();
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut res = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}
