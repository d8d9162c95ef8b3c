//! Kubernetes members: the Nodes matching a label selector, listed through the API server with
//! the `kube` client. Lists are read in pages of [`PAGE_SIZE`], each page's body capped at
//! [`MAX_PAGE_BYTES`], so that a huge or hostile answer cannot exhaust the manager's memory.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use kube::Resource;
use kube::api::ListParams;
use kube::core::ObjectList;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;

use super::{DiscoveryError, MAX_MEMBERS, Member, shorten};

/// Nodes asked for per request.
pub const PAGE_SIZE: u32 = 500;

/// Largest list page accepted (500 Nodes with long image lists stay well below).
pub const MAX_PAGE_BYTES: usize = 64 << 20;

/// Largest error body read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// Most pages followed before giving up on a server that keeps handing out continue tokens.
const MAX_PAGES: usize = MAX_MEMBERS / PAGE_SIZE as usize + 1;

/// The well-known zone label, and the deprecated one older clusters still set.
const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

const KIND: &str = "kubernetes";

/// The Kubernetes fields of a [`super::ClusterSpec`], borrowed.
pub(super) struct Target<'a> {
    pub api_server: Option<&'a str>,
    pub token: Option<&'a str>,
    pub ca_cert: Option<&'a str>,
    pub label_selector: &'a str,
    pub insecure_skip_tls_verify: bool,
}

/// The DER certificates of a PEM bundle.
///
/// # Errors
/// When the text is not PEM or holds no certificate.
pub(super) fn parse_ca_bundle(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| cert.map(|cert| cert.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Lists the Nodes of `target` within `timeout`.
pub(super) async fn discover(
    target: &Target<'_>,
    timeout: Duration,
) -> Result<Vec<Member>, DiscoveryError> {
    let deadline = Instant::now() + timeout;
    let config = match tokio::time::timeout_at(deadline, config(target, timeout)).await {
        Ok(config) => config?,
        Err(_) => {
            return Err(DiscoveryError::Timeout {
                endpoint: "Kubernetes configuration (kubeconfig or service account)".into(),
                after: timeout,
            });
        }
    };
    let endpoint = endpoint(&config.cluster_url);
    match tokio::time::timeout_at(deadline, list_nodes(config, target, &endpoint)).await {
        Ok(members) => members,
        Err(_) => Err(DiscoveryError::Timeout {
            endpoint,
            after: timeout,
        }),
    }
}

/// The client configuration: the given API server, or the inferred one (kubeconfig, then the
/// pod's service account), with the spec's token, CA bundle and TLS choice applied over it.
async fn config(target: &Target<'_>, timeout: Duration) -> Result<kube::Config, DiscoveryError> {
    let config_error = |message: String| DiscoveryError::Config {
        kind: KIND,
        message,
    };
    let mut config = match target.api_server {
        Some(url) => kube::Config::new(
            url.parse::<http::Uri>()
                .map_err(|e| config_error(format!("api_server: {e}")))?,
        ),
        None => kube::Config::infer().await.map_err(|e| {
            config_error(format!(
                "no api_server given, and none found in a kubeconfig or a service account: {e}"
            ))
        })?,
    };
    if let Some(token) = target.token {
        // An explicit token replaces whatever the kubeconfig would have authenticated with.
        config.auth_info = kube::config::AuthInfo {
            token: Some(secrecy::SecretString::from(token.to_string())),
            ..Default::default()
        };
    }
    if let Some(pem) = target.ca_cert {
        config.root_cert =
            Some(parse_ca_bundle(pem).map_err(|e| config_error(format!("ca_cert: {e}")))?);
        // A CA file (set by the in-cluster config) would take precedence over the given bundle.
        config.root_cert_file = None;
    }
    config.accept_invalid_certs |= target.insecure_skip_tls_verify;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Ok(config)
}

/// `Kubernetes API server https://host:port`, without credentials or path.
fn endpoint(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("Kubernetes API server {scheme}://{host}:{port}"),
        None => format!("Kubernetes API server {scheme}://{host}"),
    }
}

async fn list_nodes(
    config: kube::Config,
    target: &Target<'_>,
    endpoint: &str,
) -> Result<Vec<Member>, DiscoveryError> {
    // kube builds its TLS configuration from the process-wide rustls provider; several clients
    // may be built in one process, and only the first install counts.
    crate::oci::install_crypto_provider();
    let client = kube::Client::try_from(config).map_err(|e| DiscoveryError::Config {
        kind: KIND,
        message: format!("cannot build a client: {}", error_chain(&e, target.token)),
    })?;
    let selector = target.label_selector.trim();
    let mut members = Vec::new();
    let mut continue_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if !selector.is_empty() {
            params = params.labels(selector);
        }
        if let Some(token) = &continue_token {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(Node::url_path(&(), None))
            .list(&params)
            .map_err(|e| DiscoveryError::Config {
                kind: KIND,
                message: format!("cannot build the list request: {e}"),
            })?;
        let response = client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(|e| send_error(e, endpoint, target.token))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, response.into_body(), endpoint, target.token).await);
        }
        let body = read_body(response.into_body(), MAX_PAGE_BYTES, endpoint, target.token).await?;
        let page: ObjectList<Node> =
            serde_json::from_slice(&body).map_err(|e| DiscoveryError::BadAnswer {
                endpoint: endpoint.to_string(),
                message: format!("not a NodeList: {e}"),
            })?;
        for node in page.items {
            members.push(member(node).ok_or_else(|| DiscoveryError::BadAnswer {
                endpoint: endpoint.to_string(),
                message: "a Node without a name".into(),
            })?);
        }
        if members.len() > MAX_MEMBERS {
            return Err(DiscoveryError::BadAnswer {
                endpoint: endpoint.to_string(),
                message: format!("more than {MAX_MEMBERS} nodes match; narrow the label selector"),
            });
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => continue_token = Some(token),
            None => return Ok(members),
        }
    }
    Err(DiscoveryError::BadAnswer {
        endpoint: endpoint.to_string(),
        message: format!("still continuing after {MAX_PAGES} pages"),
    })
}

/// The member a Node stands for; `None` for a Node without a name.
fn member(node: Node) -> Option<Member> {
    let name = node.metadata.name.filter(|name| !name.is_empty())?;
    let labels = node.metadata.labels.unwrap_or_default();
    let zone = ZONE_LABELS
        .iter()
        .find_map(|label| labels.get(*label))
        .filter(|zone| !zone.is_empty())
        .cloned();
    let status = node.status.unwrap_or_default();
    let address = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address);
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    Some(Member {
        name,
        address,
        zone,
        ready,
    })
}

/// Reads a body of at most `limit` bytes.
async fn read_body(
    body: kube::client::Body,
    limit: usize,
    endpoint: &str,
    secret: Option<&str>,
) -> Result<bytes::Bytes, DiscoveryError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(DiscoveryError::BadAnswer {
            endpoint: endpoint.to_string(),
            message: format!("answer larger than {limit} bytes"),
        }),
        Err(e) => Err(DiscoveryError::Unreachable {
            endpoint: endpoint.to_string(),
            message: format!("answer broke off: {}", error_chain(&*e, secret)),
        }),
    }
}

/// The error for a non-success status; the message is the `Status` object's, or the body's text.
async fn status_error(
    status: http::StatusCode,
    body: kube::client::Body,
    endpoint: &str,
    secret: Option<&str>,
) -> DiscoveryError {
    let endpoint = endpoint.to_string();
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return DiscoveryError::Unauthorized {
            endpoint,
            status: status.as_u16(),
        };
    }
    let body = http_body_util::Limited::new(body, MAX_ERROR_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let message = match serde_json::from_slice::<kube::core::Status>(&body) {
        Ok(status) if !status.message.is_empty() => status.message,
        _ => String::from_utf8_lossy(&body).into_owned(),
    };
    DiscoveryError::Status {
        endpoint,
        status: status.as_u16(),
        message: shorten(&message, secret),
    }
}

fn send_error(error: kube::Error, endpoint: &str, secret: Option<&str>) -> DiscoveryError {
    let message = error_chain(&error, secret);
    if let kube::Error::Auth(_) = error {
        return DiscoveryError::Config {
            kind: KIND,
            message: format!("credentials for {endpoint}: {message}"),
        };
    }
    DiscoveryError::Unreachable {
        endpoint: endpoint.to_string(),
        message,
    }
}

/// An error and its sources, `: `-separated, repeated texts left out, `secret` removed.
fn error_chain(error: &(dyn std::error::Error + 'static), secret: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    shorten(&parts.join(": "), secret)
}
