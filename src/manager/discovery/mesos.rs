//! Mesos members: the agents the master lists at `GET {master}/master/slaves`, optionally only
//! those carrying a `key=value` attribute. The answer is read with a byte cap
//! ([`MAX_ANSWER_BYTES`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{DiscoveryError, MAX_MEMBERS, Member, origin, parse_attribute, shorten, validate_url};

/// Largest `/master/slaves` answer accepted (an agent's entry is a few KiB).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Largest error body read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The agent attribute that names its zone.
const ZONE_ATTRIBUTE: &str = "zone";

const KIND: &str = "mesos";

/// The part of the master's `/master/slaves` answer we use.
#[derive(Debug, Deserialize)]
struct Slaves {
    slaves: Vec<Agent>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    hostname: String,
    /// `slave(1)@10.0.0.1:5051`
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    active: bool,
    /// Text attributes are JSON strings, scalars numbers, ranges and sets strings.
    #[serde(default)]
    attributes: serde_json::Map<String, Value>,
}

/// Reads the master's agents within `timeout`.
pub(super) async fn discover(
    master: &str,
    attribute: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Member>, DiscoveryError> {
    let config_error = |message: String| DiscoveryError::Config {
        kind: KIND,
        message,
    };
    let base = validate_url("master", master).map_err(config_error)?;
    let filter = attribute
        .map(parse_attribute)
        .transpose()
        .map_err(|e| config_error(format!("attribute: {e}")))?;
    let endpoint = format!("Mesos master {}", origin(&base));
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/master/slaves"));

    // Several clients may be built in one process; only the first install counts.
    crate::oci::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .no_proxy()
        .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| config_error(format!("cannot build a client: {e}")))?;
    let read = async {
        let response = client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(e, &endpoint, timeout))?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(DiscoveryError::Unauthorized {
                endpoint: endpoint.clone(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let body = read_body(response, MAX_ERROR_BYTES, &endpoint, timeout)
                .await
                .unwrap_or_default();
            return Err(DiscoveryError::Status {
                endpoint: endpoint.clone(),
                status: status.as_u16(),
                message: shorten(&String::from_utf8_lossy(&body), None),
            });
        }
        read_body(response, MAX_ANSWER_BYTES, &endpoint, timeout).await
    };
    let body = match tokio::time::timeout(timeout, read).await {
        Ok(body) => body?,
        Err(_) => {
            return Err(DiscoveryError::Timeout {
                endpoint,
                after: timeout,
            });
        }
    };
    let answer: Slaves = serde_json::from_slice(&body).map_err(|e| DiscoveryError::BadAnswer {
        endpoint: endpoint.clone(),
        message: format!("not a /master/slaves answer: {e}"),
    })?;
    if answer.slaves.len() > MAX_MEMBERS {
        return Err(DiscoveryError::BadAnswer {
            endpoint,
            message: format!("more than {MAX_MEMBERS} agents"),
        });
    }
    Ok(answer
        .slaves
        .into_iter()
        .filter(|agent| {
            filter.is_none_or(|(key, value)| {
                agent
                    .attributes
                    .get(key)
                    .is_some_and(|have| attribute_matches(have, value))
            })
        })
        .map(member)
        .collect())
}

fn member(agent: Agent) -> Member {
    Member {
        address: agent.pid.as_deref().and_then(pid_host).map(str::to_string),
        zone: agent
            .attributes
            .get(ZONE_ATTRIBUTE)
            .and_then(attribute_text)
            .filter(|zone| !zone.is_empty()),
        ready: agent.active,
        name: agent.hostname,
    }
}

/// The host of a libprocess pid, `slave(1)@10.0.0.1:5051` → `10.0.0.1`.
fn pid_host(pid: &str) -> Option<&str> {
    let (_, address) = pid.split_once('@')?;
    let (host, _port) = address.rsplit_once(':')?;
    (!host.is_empty()).then_some(host)
}

/// An attribute's value as text: strings as they are, scalars as numbers print.
fn attribute_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Whether an agent's attribute has the wanted value; scalars compare as numbers (`2` = `2.0`).
fn attribute_matches(have: &Value, want: &str) -> bool {
    match have {
        Value::String(text) => text == want,
        Value::Number(number) => match (number.as_f64(), want.parse::<f64>()) {
            (Some(have), Ok(want)) => have == want,
            _ => false,
        },
        _ => false,
    }
}

/// Reads at most `limit` bytes of the body.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    endpoint: &str,
    timeout: Duration,
) -> Result<Vec<u8>, DiscoveryError> {
    let too_large = || DiscoveryError::BadAnswer {
        endpoint: endpoint.to_string(),
        message: format!("answer larger than {limit} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, endpoint, timeout))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(error: reqwest::Error, endpoint: &str, timeout: Duration) -> DiscoveryError {
    if error.is_timeout() {
        return DiscoveryError::Timeout {
            endpoint: endpoint.to_string(),
            after: timeout,
        };
    }
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = e.source();
    }
    DiscoveryError::Unreachable {
        endpoint: endpoint.to_string(),
        message: shorten(&message, None),
    }
}
