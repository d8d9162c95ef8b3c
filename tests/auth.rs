//! Upstream authentication against a registry that uses the bearer-token flow and redirects
//! blob downloads to object storage (as Docker Hub, GHCR and S3-backed registries do).
//! distribution's own token auth needs a JWT issuer, so the upstream here is a small fake that
//! speaks the same protocol: 401 with a `Bearer realm=…,service=…,scope=…` challenge, a token
//! endpoint that checks Basic credentials for private repositories, and 307 redirects to a
//! storage server on another origin.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use common::{ShoalNode, http_request, sha256_hex};

const PUBLIC: &str = "lib/app";
const PRIVATE: &str = "team/secret";

#[derive(Default)]
struct Seen {
    token_requests: usize,
    storage_auth_headers: usize,
    storage_requests: usize,
}

#[derive(Clone)]
struct Fake {
    blob: Arc<Vec<u8>>,
    digest: String,
    realm: String,
    storage: String,
    seen: Arc<Mutex<Seen>>,
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = String::from_utf8(decoded).ok()?;
    (s == "alice:pw").then(|| "alice".to_owned())
}

async fn token(
    State(f): State<Fake>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    f.seen.lock().unwrap().token_requests += 1;
    let scope = q.get("scope").cloned().unwrap_or_default();
    let user = basic_user(&headers);
    let repo = scope
        .strip_prefix("repository:")
        .and_then(|s| s.strip_suffix(":pull"))
        .unwrap_or("");
    if q.get("service").map(String::as_str) != Some("fake") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match (repo, user) {
        (PUBLIC, _) | (PRIVATE, Some(_)) => {
            axum::Json(serde_json::json!({"token": format!("tok:{repo}"), "expires_in": 300}))
                .into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

fn challenge(f: &Fake, repo: &str) -> Response {
    let value = format!(
        "Bearer realm=\"{}\",service=\"fake\",scope=\"repository:{repo}:pull\"",
        f.realm
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        axum::Json(serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"auth"}]})),
    )
        .into_response()
}

async fn blob(
    State(f): State<Fake>,
    Path((ns, name, digest)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{ns}/{name}");
    let expected = format!("Bearer tok:{repo}");
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.to_str().ok() == Some(&expected));
    if !authorized {
        return challenge(&f, &repo);
    }
    if digest != f.digest {
        return StatusCode::NOT_FOUND.into_response();
    }
    // Object storage answers downloads; a HEAD is answered here.
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(
            header::LOCATION,
            format!("{}/objects/{digest}?sig=xyz", f.storage),
        )],
    )
        .into_response()
}

async fn object(State(f): State<Fake>, headers: HeaderMap) -> Response {
    {
        let mut seen = f.seen.lock().unwrap();
        seen.storage_requests += 1;
        if headers.contains_key(header::AUTHORIZATION) {
            seen.storage_auth_headers += 1;
        }
    }
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        f.blob.as_ref().clone(),
    )
        .into_response()
}

async fn serve(listener: tokio::net::TcpListener, app: Router) {
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_flow_redirects_and_private_scopes() {
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_url = format!("http://{}", registry_listener.local_addr().unwrap());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let fake = Fake {
        digest: sha256_hex(&data),
        blob: Arc::new(data),
        realm: format!("{registry_url}/token"),
        storage: format!("http://{}", storage_listener.local_addr().unwrap()),
        seen: Arc::default(),
    };
    let registry_app = Router::new()
        .route("/token", get(token))
        .route("/v2/{ns}/{name}/blobs/{digest}", get(blob))
        .with_state(fake.clone());
    let storage_app = Router::new()
        .route("/objects/{digest}", get(object))
        .with_state(fake.clone());
    tokio::spawn(serve(registry_listener, registry_app));
    tokio::spawn(serve(storage_listener, storage_app));

    let upstream = format!("docker.io={registry_url}");
    let node = tokio::task::spawn_blocking(move || ShoalNode::start(&["--upstream", &upstream]))
        .await
        .unwrap();
    let get = |repo: &str, auth: Option<String>| {
        let url = format!("{}/v2/{repo}/blobs/{}", node.url(), fake.digest);
        let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request("GET", &url, &headers, &[]).unwrap()
    };

    // Public repository, anonymous client: the node runs the anonymous token flow itself and
    // follows the redirect to storage without leaking the token there.
    let resp = tokio::task::block_in_place(|| get(PUBLIC, None));
    assert_eq!(resp.status, 200);
    assert_eq!(sha256_hex(&resp.body), fake.digest);
    {
        let seen = fake.seen.lock().unwrap();
        assert!(seen.token_requests >= 1);
        assert_eq!(seen.storage_requests, 1);
        assert_eq!(
            seen.storage_auth_headers, 0,
            "credentials leaked to storage"
        );
    }

    // Private repository: anonymous is refused with the upstream's challenge (so the client can
    // log in), wrong credentials too; the right Basic credentials work through the token flow.
    let resp = tokio::task::block_in_place(|| get(PRIVATE, None));
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(challenge.contains(&fake.realm), "{challenge}");
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:nope")
    );
    assert_eq!(
        tokio::task::block_in_place(|| get(PRIVATE, Some(wrong))).status,
        401
    );
    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    );
    let resp = tokio::task::block_in_place(|| get(PRIVATE, Some(right)));
    assert_eq!(resp.status, 200);
    assert_eq!(sha256_hex(&resp.body), fake.digest);

    // A client that ran the token flow itself sends a bearer token: forwarded as is.
    let resp = tokio::task::block_in_place(|| get(PRIVATE, Some(format!("Bearer tok:{PRIVATE}"))));
    assert_eq!(resp.status, 200);
    let resp = tokio::task::block_in_place(|| get(PRIVATE, Some("Bearer forged".into())));
    assert_eq!(resp.status, 401);
}
