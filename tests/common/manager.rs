//! A manager run in process on a database of the test's choice, with a manual clock, and a
//! small JSON client for its API.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal::manager::{Manager, ManagerSettings, ManualClock};

/// The first administrator's password in tests.
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A manager serving on 127.0.0.1:PORT until dropped.
pub struct TestManager {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// Its state (database access for assertions).
    pub state: shoal::manager::ManagerState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestManager {
    /// A manager on a fresh SQLite database.
    pub async fn sqlite() -> TestManager {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("manager.db").display());
        let mut m = TestManager::start(&url, Arc::new(ManualClock::new(now_ms()))).await;
        m._dir = Some(dir);
        m
    }

    /// A manager on `database`, with `clock`. Tests move the clock by hours while their fake
    /// nodes stay quiet, so silent nodes keep their assignments (see [`TestManager::with`]).
    pub async fn start(database: &str, clock: Arc<ManualClock>) -> TestManager {
        TestManager::with(database, clock, |s| {
            s.node_gone = Duration::from_secs(365 * 86_400)
        })
        .await
    }

    /// A manager on `database`, with `clock` and settings changed by `adjust`.
    pub async fn with(
        database: &str,
        clock: Arc<ManualClock>,
        adjust: impl FnOnce(&mut ManagerSettings),
    ) -> TestManager {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("shoal=warn")
            .with_test_writer()
            .try_init();
        let mut settings = ManagerSettings::new(std::path::Path::new("."));
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.database = database.to_string();
        settings.admin_password = Some(ADMIN_PASSWORD.into());
        settings.tick = Duration::from_millis(200);
        adjust(&mut settings);
        let manager = Manager::bind(settings, clock.clone()).await.unwrap();
        let url = format!("http://{}", manager.addr());
        let state = manager.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            manager
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestManager {
            url,
            clock,
            state,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// A client signed in as the first administrator.
    pub async fn admin(&self) -> Api {
        Api::login(&self.url, "admin", ADMIN_PASSWORD).await
    }

    /// A client without credentials.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, None)
    }

    /// Stops serving and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Now in Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A JSON client of the API.
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    /// Bearer token.
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// A client with `token`.
    pub fn new(base: &str, token: Option<String>) -> Api {
        shoal::oci::install_crypto_provider();
        Api {
            base: base.to_string(),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .unwrap(),
        }
    }

    /// Signs in; panics on failure.
    pub async fn login(base: &str, name: &str, password: &str) -> Api {
        let api = Api::new(base, None);
        let (status, body) = api
            .post(
                "/api/v1/auth/login",
                json!({"name": name, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login as {name}: {body}");
        Api::new(base, Some(body["token"].as_str().unwrap().to_string()))
    }

    /// Sends a request with an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a raw body over a plain socket, reading the answer even when the server answers
    /// (e.g. 413) and closes before the whole body is written.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let host = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\n\
             content-length: {}\r\n{auth}connection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// POST with JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// PUT with JSON.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    /// PATCH with JSON.
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// POST that must answer `want`; returns the body.
    pub async fn post_ok(&self, path: &str, body: Value, want: u16) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, want, "POST {path}: {v}");
        v
    }

    /// GET that must answer 200; returns the body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, v) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }
}

/// A node's side of the protocol, driven by the test.
#[derive(Clone)]
pub struct FakeAgent {
    /// The node's id.
    pub id: i64,
    /// Its API client (node token).
    pub api: Api,
}

impl FakeAgent {
    /// Registers `name` with `join_token`.
    pub async fn register(base: &str, join_token: &str, name: &str) -> FakeAgent {
        let api = Api::new(base, Some(join_token.to_string()));
        let body = api
            .post_ok(
                "/api/v1/agent/register",
                json!({"name": name, "peer_id": format!("peer-{name}"), "address": format!("{name}:65001"),
                       "version": "0.1.0", "role": "node", "zone": "z1"}),
                200,
            )
            .await;
        FakeAgent {
            id: body["node_id"].as_i64().unwrap(),
            api: Api::new(base, Some(body["node_token"].as_str().unwrap().to_string())),
        }
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&self) {
        let (s, v) = self
            .api
            .post(
                "/api/v1/agent/heartbeat",
                json!({"version": "0.1.0", "role": "node", "zone": "z1", "peer_id": "p", "address": "a:1",
                       "disk_total": 1000, "disk_free": 500, "peers": 2, "downloads": 0, "load": 0.5, "ready": true}),
            )
            .await;
        assert_eq!(s, 204, "heartbeat: {v}");
    }

    /// Polls for work: the task ids assigned.
    pub async fn work(&self, have: &[i64], wait: u64) -> Vec<i64> {
        let have = have
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let v = self
            .api
            .get_ok(&format!("/api/v1/agent/work?wait={wait}&have={have}"))
            .await;
        v["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["task_id"].as_i64().unwrap())
            .collect()
    }

    /// Reports progress; returns `proceed`.
    pub async fn report(
        &self,
        task: i64,
        state: &str,
        done: u64,
        peer: u64,
        upstream: u64,
    ) -> bool {
        let v = self
            .api
            .post_ok(
                "/api/v1/agent/progress",
                json!({"task_id": task, "state": state, "blobs_total": 2, "blobs_done": 1,
                       "bytes_total": 1000, "bytes_done": done, "bytes_peer": peer, "bytes_upstream": upstream,
                       "error": if state == "failed" { Some("boom") } else { None },
                       "logs": [{"at": now_ms(), "level": "info", "message": format!("{state} on node")}]}),
                200,
            )
            .await;
        v["proceed"].as_bool().unwrap()
    }
}
