//! The HTTP side of the client: which manager and token a command uses, the calls, and how an
//! answer becomes a [`ClientError`] with its exit status.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use super::credentials::{self, Credentials};
use super::{ClientOpts, DEFAULT_MANAGER, OutputFormat};

/// Exit status: the request or its arguments are wrong (4xx, usage).
pub const EXIT_USAGE: i32 = 1;
/// Exit status: the manager is unreachable or failed (5xx); retrying may help.
pub const EXIT_UNAVAILABLE: i32 = 2;

/// Why a command failed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command's arguments or input are wrong.
    #[error("{0}")]
    Usage(String),
    /// 401: no token, or the token is unknown, expired or revoked.
    #[error("not signed in or session expired: run shoal login")]
    SignIn,
    /// The manager answered an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's `code` (empty when the body was not the API's error shape).
        code: String,
        /// The API's `message`.
        message: String,
    },
    /// The manager could not be reached, or its answer not read.
    #[error("cannot reach the manager at {url}: {reason}")]
    Unreachable {
        /// The manager's URL.
        url: String,
        /// What failed (connection refused, timeout, …).
        reason: String,
    },
    /// Something on this machine failed (the credentials file).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The process exit status this failure means.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api { status, .. } if *status >= 500 => EXIT_UNAVAILABLE,
            ClientError::Unreachable { .. } => EXIT_UNAVAILABLE,
            _ => EXIT_USAGE,
        }
    }
}

/// A successful answer: its status and body as sent.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The body, unchanged (empty for 204).
    pub text: String,
}

impl Reply {
    /// The body as JSON (`null` when empty).
    ///
    /// # Errors
    /// When the body is not JSON.
    pub fn value(&self) -> Result<Value, ClientError> {
        if self.text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.text).map_err(|e| ClientError::Api {
            status: self.status,
            code: String::new(),
            message: format!("the manager's answer is not JSON: {e}"),
        })
    }
}

/// A client of one manager, with the token it signs with.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// How the command prints its result.
    pub output: OutputFormat,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: debug output ends up in logs.
        f.debug_struct("Client")
            .field("manager", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "********"))
            .field("output", &self.output)
            .finish()
    }
}

/// `url` without a trailing slash, so that stored and given URLs compare equal.
pub fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

impl Client {
    /// A client of `manager` signing with `token`.
    ///
    /// # Errors
    /// When `manager` is not an http(s) URL.
    pub fn new(
        manager: &str,
        token: Option<String>,
        output: OutputFormat,
    ) -> Result<Client, ClientError> {
        let manager = normalize(manager);
        let base = Url::parse(&format!("{manager}/"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "invalid manager URL {manager:?}: write e.g. https://shoal-manager:8080"
                ))
            })?;
        // reqwest is built without a default crypto provider; the first install wins.
        crate::oci::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Local(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            output,
        })
    }

    /// The client a command's flags, the environment and the stored sign-in give: the manager
    /// from `--manager`/`SHOAL_MANAGER_URL`, else `fallback_manager`, else the one signed in
    /// to, else [`DEFAULT_MANAGER`]; the token from `--token`/`SHOAL_TOKEN`, else the stored
    /// session — only when it belongs to that manager, so a session never travels to another
    /// host.
    ///
    /// # Errors
    /// A damaged credentials file, an invalid URL.
    pub fn from_opts(
        opts: &ClientOpts,
        fallback_manager: Option<&str>,
    ) -> Result<Client, ClientError> {
        let stored: Option<Credentials> = credentials::load()?;
        let manager = opts
            .manager
            .as_deref()
            .or(fallback_manager)
            .map(normalize)
            .or_else(|| stored.as_ref().map(|c| normalize(&c.manager)))
            .unwrap_or_else(|| DEFAULT_MANAGER.to_string());
        let token = opts.token.clone().or_else(|| {
            stored
                .filter(|c| normalize(&c.manager) == manager)
                .map(|c| c.token)
        });
        Client::new(&manager, token, opts.output)
    }

    /// The manager's URL (without a trailing slash).
    pub fn manager(&self) -> String {
        normalize(self.base.as_str())
    }

    /// Whether the command prints JSON.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// GET `path` (e.g. `/api/v1/tasks`) with query parameters.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, ClientError> {
        self.call(Method::GET, path, query, None).await
    }

    /// POST `body` to `path`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// PATCH `path` with `body`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.call(Method::PATCH, path, &[], Some(body)).await
    }

    /// DELETE `path`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.call(Method::DELETE, path, &[], None).await
    }

    /// GET `path` and parse the JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get_value(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ClientError> {
        self.get(path, query).await?.value()
    }

    /// The id of what `arg` names among the objects listed at `collection` (e.g.
    /// `/api/v1/clusters`): `arg` itself when it is a number, else the one whose `name` it is.
    ///
    /// # Errors
    /// [`ClientError::Usage`] when no object or several have that name; see [`ClientError`].
    pub async fn resolve(
        &self,
        collection: &str,
        what: &str,
        arg: &str,
    ) -> Result<i64, ClientError> {
        if let Ok(id) = arg.trim().parse::<i64>() {
            return Ok(id);
        }
        let list = self.get_value(collection, &[]).await?;
        let ids: Vec<i64> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["name"] == arg)
            .filter_map(|o| o["id"].as_i64())
            .collect();
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => Err(ClientError::Usage(format!("no {what} is named {arg:?}"))),
            many => Err(ClientError::Usage(format!(
                "{} {what}s are named {arg:?} (ids {}): give the id",
                many.len(),
                many.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Sends a request; a 2xx answer is a [`Reply`], anything else an error. A 401 is
    /// [`ClientError::SignIn`] except on the sign-in call itself, whose message (wrong name or
    /// password) is the one to show.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::Usage(format!("invalid path {path:?}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: self.manager(),
            reason: reason(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            return Ok(Reply { status, text });
        }
        if status == 401 && path != "/api/v1/auth/login" {
            return Err(ClientError::SignIn);
        }
        Err(api_error(status, &text))
    }
}

/// The error an answer with `status` and `text` means: the API's `{"code","message"}`, or the
/// start of whatever else came (a proxy's page).
fn api_error(status: u16, text: &str) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(b) => ClientError::Api {
            status,
            code: b.code,
            message: b.message,
        },
        Err(_) => {
            let snippet: String = text.trim().chars().take(200).collect();
            ClientError::Api {
                status,
                code: String::new(),
                message: if snippet.is_empty() {
                    format!("the manager answered HTTP {status}")
                } else {
                    format!("the manager answered HTTP {status}: {snippet}")
                },
            }
        }
    }
}

/// A transport error with its causes (reqwest's own message names only the request).
fn reason(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    if e.is_timeout() {
        parts.push("timed out".into());
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_exit_statuses() {
        let e = api_error(400, r#"{"code":"INVALID","message":"bad cron"}"#);
        assert_eq!(e.to_string(), "bad cron");
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = api_error(503, "<html>down</html>");
        assert_eq!(
            e.to_string(),
            "the manager answered HTTP 503: <html>down</html>"
        );
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(ClientError::SignIn.exit_code(), EXIT_USAGE);
        let e = ClientError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        };
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE);
    }

    #[test]
    fn manager_urls_are_checked_and_normalized() {
        let c = Client::new("http://127.0.0.1:8080/", None, OutputFormat::Table).unwrap();
        assert_eq!(c.manager(), "http://127.0.0.1:8080");
        assert!(Client::new("ftp://x", None, OutputFormat::Table).is_err());
        assert!(Client::new("localhost:8080", None, OutputFormat::Table).is_err());
    }
}
