//! Cluster member discovery: which hosts belong to a cluster. A [`ClusterSpec`] says where the
//! members come from — a fixed host list, the nodes of a Kubernetes cluster selected by labels
//! ([`kubernetes`]), or the agents of a Mesos cluster ([`mesos`]) — and [`discover`] reads them
//! now. The manager stores the spec as JSON and uses [`ClusterSpec::is_member`] to decide whether
//! a registering node belongs to the cluster.
//!
//! Every remote read has one deadline ([`DEFAULT_TIMEOUT`]) and a cap on the bytes it accepts;
//! errors name the endpoint that failed and never carry the bearer token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod kubernetes;
pub mod mesos;

#[cfg(test)]
mod tests;

/// How long one discovery may take, end to end (configuration, connection, every page).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most hosts a static cluster may list, and most members a discovery accepts.
pub const MAX_MEMBERS: usize = 10_000;

/// What [`ClusterSpec::redacted`] puts in place of a secret.
pub const REDACTED: &str = "********";

/// Longest label selector accepted (the API server's own limits are far above what a sane
/// selector needs; this only keeps stored specs small).
const MAX_SELECTOR_LEN: usize = 4096;

/// A cluster's kind and where its members come from. Stored as JSON in the database, received
/// in API bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClusterSpec {
    /// A fixed list of hosts (host names or IP addresses; the node registers under its host
    /// name).
    Static {
        /// The hosts, each a host name or an IP address (no scheme, no port).
        hosts: Vec<String>,
    },
    /// Nodes of a Kubernetes cluster selected by labels.
    Kubernetes {
        /// API server URL; `None` = in-cluster config / kubeconfig (kube's `Config::infer`).
        #[serde(default)]
        api_server: Option<String>,
        /// Bearer token (a secret: never logged, never returned by the API — see
        /// [`ClusterSpec::redacted`]).
        #[serde(default)]
        token: Option<String>,
        /// PEM CA bundle for the API server.
        #[serde(default)]
        ca_cert: Option<String>,
        /// Label selector, e.g. `shoal.io/node=true` (empty = all nodes).
        #[serde(default)]
        label_selector: String,
        /// Accept any server certificate (test clusters only).
        #[serde(default)]
        insecure_skip_tls_verify: bool,
    },
    /// Agents of a Mesos cluster, read from the master's API.
    Mesos {
        /// The master's URL, e.g. `http://mesos-master:5050`.
        master: String,
        /// Optional `key=value` attribute filter the agent must carry.
        #[serde(default)]
        attribute: Option<String>,
    },
}

/// One discovered member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// The name the node registers under: the host (static), the Node name (Kubernetes), the
    /// agent's host name (Mesos).
    pub name: String,
    /// An IP address of the member, when the source tells one (Kubernetes `InternalIP`, the
    /// Mesos agent's pid address, a static host that is an IP literal).
    pub address: Option<String>,
    /// The member's zone, when the source tells one.
    pub zone: Option<String>,
    /// Whether the source considers the member able to work (Kubernetes `Ready`, Mesos
    /// `active`; always true for static hosts).
    pub ready: bool,
}

/// Why a discovery failed. Messages say who failed (the endpoint, without credentials) and never
/// include tokens.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The spec is invalid, or the client could not be configured from it (no kubeconfig, bad CA
    /// bundle). Retrying does not help until the spec or the environment changes.
    #[error("{kind} cluster configuration: {message}")]
    Config {
        /// The cluster kind (`static`, `kubernetes`, `mesos`).
        kind: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// No connection could be made or it broke (refused, DNS, TLS handshake, reset).
    #[error("{endpoint} is unreachable: {message}")]
    Unreachable {
        /// Who we tried to reach, e.g. `Kubernetes API server https://10.0.0.1:6443`.
        endpoint: String,
        /// The transport's reason.
        message: String,
    },
    /// The endpoint refused our credentials (HTTP 401 or 403).
    #[error("{endpoint} refused the credentials (HTTP {status})")]
    Unauthorized {
        /// Who refused.
        endpoint: String,
        /// 401 or 403.
        status: u16,
    },
    /// The endpoint answered with another error status.
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Status {
        /// Who answered.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The endpoint's own message, shortened.
        message: String,
    },
    /// The answer could not be used: malformed JSON, unexpected shape, too large, too many
    /// members.
    #[error("{endpoint} sent an unusable answer: {message}")]
    BadAnswer {
        /// Who answered.
        endpoint: String,
        /// What is wrong with the answer.
        message: String,
    },
    /// The deadline passed before the discovery finished.
    #[error("{endpoint} did not answer within {after:?}")]
    Timeout {
        /// Who did not answer in time.
        endpoint: String,
        /// The deadline that passed.
        after: Duration,
    },
}

impl DiscoveryError {
    /// Whether trying again later may succeed without changing the spec: transport failures,
    /// timeouts, 5xx and 429 answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            DiscoveryError::Unreachable { .. } | DiscoveryError::Timeout { .. } => true,
            DiscoveryError::Status { status, .. } => *status >= 500 || *status == 429,
            DiscoveryError::Config { .. }
            | DiscoveryError::Unauthorized { .. }
            | DiscoveryError::BadAnswer { .. } => false,
        }
    }
}

impl ClusterSpec {
    /// The kind as stored and shown: `"static"`, `"kubernetes"` or `"mesos"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterSpec::Static { .. } => "static",
            ClusterSpec::Kubernetes { .. } => "kubernetes",
            ClusterSpec::Mesos { .. } => "mesos",
        }
    }

    /// Checks the spec; the message names the bad field (`hosts[2]: ...`, `api_server: ...`).
    ///
    /// # Errors
    /// Static: no hosts, more than [`MAX_MEMBERS`], a host that is empty, has spaces, a scheme,
    /// a port or a path, is longer than 253 characters or is listed twice (case-insensitive).
    /// Kubernetes: an API server URL that does not parse, is not http/https or carries
    /// credentials; an empty or non-printable token; a CA bundle without a PEM certificate; a
    /// label selector that is not `key`, `!key`, `key=value`, `key==value`, `key!=value`,
    /// `key in (a,b)` or `key notin (a,b)` requirements joined by commas. Mesos: a master URL
    /// as above; an attribute that is not `key=value`.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ClusterSpec::Static { hosts } => validate_hosts(hosts),
            ClusterSpec::Kubernetes {
                api_server,
                token,
                ca_cert,
                label_selector,
                insecure_skip_tls_verify: _,
            } => {
                if let Some(url) = api_server {
                    validate_url("api_server", url)?;
                }
                if let Some(token) = token {
                    if token.is_empty() {
                        return Err("token: must not be empty (leave it out instead)".into());
                    }
                    if !token.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err("token: must be printable ASCII without spaces".into());
                    }
                }
                if let Some(pem) = ca_cert {
                    kubernetes::parse_ca_bundle(pem).map_err(|e| format!("ca_cert: {e}"))?;
                }
                validate_label_selector(label_selector).map_err(|e| format!("label_selector: {e}"))
            }
            ClusterSpec::Mesos { master, attribute } => {
                validate_url("master", master)?;
                if let Some(attribute) = attribute {
                    parse_attribute(attribute).map_err(|e| format!("attribute: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// The spec as it may be shown: the Kubernetes token, when set, becomes `"********"`.
    pub fn redacted(&self) -> ClusterSpec {
        let mut spec = self.clone();
        if let ClusterSpec::Kubernetes {
            token: Some(token), ..
        } = &mut spec
        {
            *token = REDACTED.to_string();
        }
        spec
    }

    /// Whether a node registering as `name` from `address_host` (the host part of its address)
    /// belongs to the cluster. Static: `name` or `address_host` is one of the hosts (host names
    /// compare case-insensitively, IP addresses by value). Kubernetes and Mesos: `name` is among
    /// the discovered `members`.
    pub fn is_member(&self, members: &[Member], name: &str, address_host: &str) -> bool {
        match self {
            ClusterSpec::Static { hosts } => hosts
                .iter()
                .any(|host| same_host(host, name) || same_host(host, address_host)),
            ClusterSpec::Kubernetes { .. } | ClusterSpec::Mesos { .. } => {
                !name.is_empty() && members.iter().any(|m| m.name.eq_ignore_ascii_case(name))
            }
        }
    }
}

/// Reads the cluster's members now, within [`DEFAULT_TIMEOUT`]. Static: the host list itself.
/// Kubernetes: the Nodes matching the label selector. Mesos: the master's agents carrying the
/// attribute.
///
/// Cancel-safe: it holds no state between calls; dropping the future drops the connection.
///
/// # Errors
/// [`DiscoveryError::Config`] for an invalid spec (see [`ClusterSpec::validate`]) or an
/// unusable client configuration; otherwise the endpoint's failure as described on
/// [`DiscoveryError`].
pub async fn discover(spec: &ClusterSpec) -> Result<Vec<Member>, DiscoveryError> {
    discover_with_timeout(spec, DEFAULT_TIMEOUT).await
}

/// [`discover`] with another deadline (tests use short ones).
pub(crate) async fn discover_with_timeout(
    spec: &ClusterSpec,
    timeout: Duration,
) -> Result<Vec<Member>, DiscoveryError> {
    spec.validate().map_err(|message| DiscoveryError::Config {
        kind: spec.kind(),
        message,
    })?;
    let members = match spec {
        ClusterSpec::Static { hosts } => Ok(static_members(hosts)),
        ClusterSpec::Kubernetes {
            api_server,
            token,
            ca_cert,
            label_selector,
            insecure_skip_tls_verify,
        } => {
            let target = kubernetes::Target {
                api_server: api_server.as_deref(),
                token: token.as_deref(),
                ca_cert: ca_cert.as_deref(),
                label_selector,
                insecure_skip_tls_verify: *insecure_skip_tls_verify,
            };
            kubernetes::discover(&target, timeout).await
        }
        ClusterSpec::Mesos { master, attribute } => {
            mesos::discover(master, attribute.as_deref(), timeout).await
        }
    };
    match &members {
        Ok(members) => tracing::debug!(kind = spec.kind(), members = members.len(), "discovered"),
        Err(error) => tracing::debug!(kind = spec.kind(), %error, "discovery failed"),
    }
    members
}

fn static_members(hosts: &[String]) -> Vec<Member> {
    hosts
        .iter()
        .map(|host| Member {
            name: host.clone(),
            address: host.parse::<IpAddr>().ok().map(|_| host.clone()),
            zone: None,
            ready: true,
        })
        .collect()
}

/// Host names compare case-insensitively; IP addresses by value (`[::1]` = `0::1`).
fn same_host(listed: &str, candidate: &str) -> bool {
    let candidate = candidate.trim_start_matches('[').trim_end_matches(']');
    if candidate.is_empty() {
        return false;
    }
    match (listed.parse::<IpAddr>(), candidate.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => listed.eq_ignore_ascii_case(candidate),
    }
}

fn validate_hosts(hosts: &[String]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("hosts: must list at least one host".into());
    }
    if hosts.len() > MAX_MEMBERS {
        return Err(format!(
            "hosts: {} hosts listed, at most {MAX_MEMBERS} allowed",
            hosts.len()
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        validate_host(host).map_err(|e| format!("hosts[{i}]: {e}"))?;
        let key = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        if let Some(first) = seen.insert(key, i) {
            return Err(format!(
                "hosts[{i}]: {host:?} is already listed as hosts[{first}]"
            ));
        }
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".into());
    }
    if host.chars().any(char::is_whitespace) {
        return Err(format!("{host:?} contains whitespace"));
    }
    if host.contains("://") {
        return Err(format!(
            "{host:?} is a URL; give the host name or IP address only"
        ));
    }
    if host.len() > 253 {
        return Err(format!("longer than 253 characters ({})", host.len()));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') || host.contains('/') {
        return Err(format!("{host:?} has a port or a path; give the host only"));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "{host:?} is not a host name (labels of 1-63 letters, digits, '-' or '_', \
                 separated by dots) nor an IP address"
            ));
        }
    }
    Ok(())
}

/// URLs of API servers and masters: http or https, with a host, without credentials (the token
/// has its own field, so that it can be redacted) and without query or fragment.
fn validate_url(field: &str, url: &str) -> Result<reqwest::Url, String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{field}: {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{field}: scheme must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{field}: {url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{field}: must not carry credentials"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{field}: must not have a query or a fragment"));
    }
    Ok(parsed)
}

/// The endpoint as errors name it: scheme, host and port only.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// Splits a Mesos attribute filter `key=value`.
fn parse_attribute(attribute: &str) -> Result<(&str, &str), String> {
    let (key, value) = attribute
        .split_once('=')
        .ok_or_else(|| format!("{attribute:?} is not key=value"))?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || value.is_empty() {
        return Err(format!("{attribute:?} needs a non-empty key and value"));
    }
    if key.contains(char::is_whitespace) {
        return Err(format!("key {key:?} contains whitespace"));
    }
    Ok((key, value))
}

/// Checks the Kubernetes label selector grammar: requirements joined by commas, each `key`,
/// `!key`, `key=value`, `key==value`, `key!=value`, `key in (v,...)` or `key notin (v,...)`.
fn validate_label_selector(selector: &str) -> Result<(), String> {
    if selector.len() > MAX_SELECTOR_LEN {
        return Err(format!("longer than {MAX_SELECTOR_LEN} characters"));
    }
    if selector.trim().is_empty() {
        return Ok(());
    }
    // Split at commas outside parentheses.
    let mut requirements = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced ')'".into()),
            ',' if depth == 0 => {
                requirements.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    requirements.push(&selector[start..]);
    requirements.into_iter().try_for_each(validate_requirement)
}

fn validate_requirement(requirement: &str) -> Result<(), String> {
    let r = requirement.trim();
    if r.is_empty() {
        return Err("empty requirement (stray comma?)".into());
    }
    if let Some(key) = r.strip_prefix('!') {
        return validate_label_key(key.trim());
    }
    if let Some(open) = r.find('(') {
        let mut head = r[..open].split_whitespace();
        let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
            return Err(format!(
                "{r:?}: expected `key in (values)` or `key notin (values)`"
            ));
        };
        if op != "in" && op != "notin" {
            return Err(format!("{r:?}: unknown operator {op:?}"));
        }
        validate_label_key(key)?;
        let Some(values) = r[open + 1..].strip_suffix(')') else {
            return Err(format!("{r:?}: text after ')'"));
        };
        return values
            .split(',')
            .try_for_each(|v| validate_label_value(v.trim()));
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = r.split_once(op) {
            validate_label_key(key.trim())?;
            return validate_label_value(value.trim());
        }
    }
    validate_label_key(r)
}

fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !valid {
            return Err(format!("{key:?}: prefix must be a lowercase DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "{key:?} is not a label key (1-63 letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit, optionally after a `prefix/`)"
        ));
    }
    Ok(())
}

fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value (at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit)"
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Shortens an endpoint's own error text for a message, and removes `secret` from it should the
/// endpoint echo it back.
fn shorten(text: &str, secret: Option<&str>) -> String {
    const MAX: usize = 200;
    let mut text = text.trim().to_string();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, REDACTED);
    }
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
