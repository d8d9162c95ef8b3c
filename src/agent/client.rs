//! The agent's HTTP client for the manager's four agent calls, and the retry pace.
//!
//! Tokens travel in the `Authorization` header only, never in a URL, and no error message
//! carries them.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::manager::protocol::{Heartbeat, Progress, ProgressAck, Registered, Registration, Work};

/// How long a call other than the long poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past its `wait` a long poll may take before it counts as failed.
const POLL_GRACE: Duration = Duration::from_secs(15);
/// The first pause after a failed call; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a call to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The token was refused (401): a join token that is wrong, or a node token the manager no
    /// longer knows.
    #[error("the manager refused the token")]
    Unauthorized,
    /// The manager does not know what the call is about (404): a task deleted meanwhile.
    #[error("the manager does not know it (404)")]
    NotFound,
    /// Another error status.
    #[error("the manager answered {status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The manager's message, if it sent one.
        message: String,
    },
    /// The manager could not be reached, or the call timed out.
    #[error("the manager is unreachable: {0}")]
    Transport(String),
    /// The answer is not what the protocol says.
    #[error("the manager's answer is not understood: {0}")]
    Decode(String),
}

impl CallError {
    /// Whether trying again later may help (the manager is down or overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Transport(_) | CallError::Decode(_) => true,
            CallError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            CallError::Unauthorized | CallError::NotFound => false,
        }
    }
}

/// The manager's agent API.
#[derive(Debug, Clone)]
pub struct ManagerClient {
    http: reqwest::Client,
    /// The base URL, ending in `/`.
    base: Url,
}

impl ManagerClient {
    /// A client for the manager at `base` (`http(s)://host[:port][/prefix]`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &Url) -> Result<ManagerClient, reqwest::Error> {
        crate::oci::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .user_agent(concat!("shoal-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(ManagerClient { http, base })
    }

    /// `POST /api/v1/agent/register` with the cluster's join token.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn register(
        &self,
        join_token: &str,
        registration: &Registration,
    ) -> Result<Registered, CallError> {
        let body = self
            .call(
                Method::POST,
                "api/v1/agent/register",
                join_token,
                Some(registration),
                CALL_TIMEOUT,
            )
            .await?;
        decode(&body)
    }

    /// `POST /api/v1/agent/heartbeat`.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn heartbeat(&self, token: &str, heartbeat: &Heartbeat) -> Result<(), CallError> {
        self.call(
            Method::POST,
            "api/v1/agent/heartbeat",
            token,
            Some(heartbeat),
            CALL_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `GET /api/v1/agent/work?wait=SECS&have=…`: the assignments to run now, once they differ
    /// from `have` or after `wait` seconds.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn work(&self, token: &str, wait: u64, have: &[i64]) -> Result<Work, CallError> {
        let have: Vec<String> = have.iter().map(i64::to_string).collect();
        let path = format!("api/v1/agent/work?wait={wait}&have={}", have.join(","));
        let timeout = Duration::from_secs(wait) + POLL_GRACE;
        let body = self
            .call(Method::GET, &path, token, None::<&()>, timeout)
            .await?;
        decode(&body)
    }

    /// `POST /api/v1/agent/progress`.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn progress(
        &self,
        token: &str,
        progress: &Progress,
    ) -> Result<ProgressAck, CallError> {
        let body = self
            .call(
                Method::POST,
                "api/v1/agent/progress",
                token,
                Some(progress),
                CALL_TIMEOUT,
            )
            .await?;
        decode(&body)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, CallError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .timeout(timeout);
        if let Some(body) = body {
            let json = serde_json::to_vec(body).expect("protocol messages serialize");
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(json);
        }
        let transport = |e: reqwest::Error| CallError::Transport(e.without_url().to_string());
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        match status {
            s if s.is_success() => Ok(bytes),
            StatusCode::UNAUTHORIZED => Err(CallError::Unauthorized),
            StatusCode::NOT_FOUND => Err(CallError::NotFound),
            status => Err(CallError::Status {
                status,
                message: error_message(&bytes),
            }),
        }
    }
}

/// The `message` of the manager's JSON error, else the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Decode(e.to_string()))
}

/// The pause before the next attempt after failures: 1 s, doubling up to 30 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Records a failure: the pause to take now.
    pub fn fail(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }

    /// Records a success: the next failure pauses [`FIRST_BACKOFF`] again.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    /// Whether the last call failed.
    pub fn failing(&self) -> bool {
        self.next > FIRST_BACKOFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets() {
        let mut b = Backoff::default();
        assert!(!b.failing());
        let pauses: Vec<u64> = (0..7).map(|_| b.fail().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert!(b.failing());
        b.reset();
        assert_eq!(b.fail().as_secs(), 1);
    }

    #[test]
    fn errors_keep_the_message_and_say_whether_to_retry() {
        assert_eq!(
            error_message(br#"{"code":"invalid","message":"bad name"}"#),
            "bad name"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
        assert!(CallError::Transport("refused".into()).is_transient());
        assert!(!CallError::Unauthorized.is_transient());
        let busy = CallError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: String::new(),
        };
        assert!(busy.is_transient());
        let bad = CallError::Status {
            status: StatusCode::BAD_REQUEST,
            message: String::new(),
        };
        assert!(!bad.is_transient());
    }

    #[test]
    fn the_base_url_keeps_its_prefix() {
        let c = ManagerClient::new(&Url::parse("http://m.example:8080/shoal").unwrap()).unwrap();
        assert_eq!(
            c.base.join("api/v1/agent/work").unwrap().as_str(),
            "http://m.example:8080/shoal/api/v1/agent/work"
        );
    }
}
