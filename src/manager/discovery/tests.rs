//! Discovery against fake Kubernetes API servers and Mesos masters run in process on
//! `127.0.0.1:0`, plus the spec's validation, redaction, membership and serde rules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::*;

/// Deadline for calls that should finish at once: generous, so a slow machine does not flake.
const DEADLINE: Duration = Duration::from_secs(5);

const TOKEN: &str = "s3cr3t-t0ken";

/// Serves `router` on an ephemeral loopback port until the test's runtime ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// An address where nothing listens.
fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and never answers.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// One request as a fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    accept: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, path: &str, query: HashMap<String, String>, headers: &HeaderMap) {
    let header =
        |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    log.lock().unwrap().push(Seen {
        path: path.to_string(),
        query,
        authorization: header(header::AUTHORIZATION),
        accept: header(header::ACCEPT),
    });
}

/// A fake API server whose `GET /api/v1/nodes` answers `status` with `body` and logs requests.
async fn kube_server(status: StatusCode, body: String) -> (SocketAddr, Log) {
    let log = Log::default();
    let router = Router::new()
        .route(
            "/api/v1/nodes",
            get(
                move |State(log): State<Log>,
                      Query(query): Query<HashMap<String, String>>,
                      headers: HeaderMap| async move {
                    record(&log, "/api/v1/nodes", query, &headers);
                    (status, [(header::CONTENT_TYPE, "application/json")], body)
                },
            ),
        )
        .with_state(log.clone());
    (serve(router).await, log)
}

fn kube_spec(addr: SocketAddr, token: Option<&str>, selector: &str) -> ClusterSpec {
    ClusterSpec::Kubernetes {
        api_server: Some(format!("http://{addr}")),
        token: token.map(str::to_string),
        ca_cert: None,
        label_selector: selector.to_string(),
        insecure_skip_tls_verify: false,
    }
}

fn node(name: &str, addresses: &[(&str, &str)], labels: Value, ready: Option<&str>) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(kind, address)| json!({"type": kind, "address": address}))
        .collect();
    let mut conditions = vec![json!({"type": "MemoryPressure", "status": "False"})];
    if let Some(ready) = ready {
        conditions.push(json!({"type": "Ready", "status": ready, "reason": "KubeletReady"}));
    }
    json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": addresses,
            "conditions": conditions,
            "capacity": {"cpu": "4", "memory": "16Gi"},
        },
    })
}

fn node_list(items: Vec<Value>, continue_token: Option<&str>) -> String {
    let mut metadata = json!({"resourceVersion": "4711"});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items})
        .to_string()
}

fn k8s_status(code: u16, message: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Whatever", "code": code,
    })
    .to_string()
}

#[tokio::test]
async fn kubernetes_lists_nodes_with_selector_and_token() {
    let items = vec![
        node(
            "node-a",
            &[
                ("Hostname", "node-a"),
                ("InternalIP", "10.0.0.1"),
                ("ExternalIP", "203.0.113.1"),
            ],
            json!({"shoal.io/node": "true", "topology.kubernetes.io/zone": "zone-a"}),
            Some("True"),
        ),
        node(
            "node-b",
            &[("ExternalIP", "203.0.113.2")],
            json!({"failure-domain.beta.kubernetes.io/zone": "zone-b"}),
            Some("False"),
        ),
        node("node-c", &[("InternalIP", "10.0.0.3")], json!({}), None),
    ];
    let (addr, log) = kube_server(StatusCode::OK, node_list(items, None)).await;
    let spec = kube_spec(addr, Some(TOKEN), "shoal.io/node=true,tier in (a, b)");

    let members = discover_with_timeout(&spec, DEADLINE).await.unwrap();

    assert_eq!(
        members,
        vec![
            Member {
                name: "node-a".into(),
                address: Some("10.0.0.1".into()),
                zone: Some("zone-a".into()),
                ready: true,
            },
            Member {
                name: "node-b".into(),
                address: None,
                zone: Some("zone-b".into()),
                ready: false,
            },
            Member {
                name: "node-c".into(),
                address: Some("10.0.0.3".into()),
                zone: None,
                ready: false,
            },
        ]
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].query.get("labelSelector").map(String::as_str),
        Some("shoal.io/node=true,tier in (a, b)")
    );
    assert_eq!(seen[0].query.get("limit").map(String::as_str), Some("500"));
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer s3cr3t-t0ken")
    );
    assert!(spec.is_member(&members, "node-b", "198.51.100.7"));
    assert!(!spec.is_member(&members, "node-z", "10.0.0.1"));
}

#[tokio::test]
async fn kubernetes_follows_continue_tokens_without_selector_or_token() {
    let log = Log::default();
    let router = Router::new()
        .route(
            "/api/v1/nodes",
            get(
                |State(log): State<Log>,
                 Query(query): Query<HashMap<String, String>>,
                 headers: HeaderMap| async move {
                    let page = match query.get("continue").map(String::as_str) {
                        None => node_list(
                            vec![node(
                                "n1",
                                &[("InternalIP", "10.1.0.1")],
                                json!({}),
                                Some("True"),
                            )],
                            Some("page-2"),
                        ),
                        Some("page-2") => node_list(
                            vec![node(
                                "n2",
                                &[("InternalIP", "10.1.0.2")],
                                json!({}),
                                Some("True"),
                            )],
                            Some(""),
                        ),
                        Some(other) => panic!("unexpected continue token {other}"),
                    };
                    record(&log, "/api/v1/nodes", query, &headers);
                    page
                },
            ),
        )
        .with_state(log.clone());
    let addr = serve(router).await;

    let members = discover_with_timeout(&kube_spec(addr, None, ""), DEADLINE)
        .await
        .unwrap();

    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(members[1].address.as_deref(), Some("10.1.0.2"));
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/api/v1/nodes");
    assert_eq!(seen[0].query.get("labelSelector"), None);
    assert_eq!(seen[0].query.get("continue"), None);
    assert_eq!(
        seen[1].query.get("continue").map(String::as_str),
        Some("page-2")
    );
    assert_eq!(seen[0].authorization, None);
}

#[tokio::test]
async fn kubernetes_refused_credentials_are_unauthorized_without_the_token() {
    for code in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
        let body = k8s_status(code.as_u16(), &format!("token {TOKEN} is not valid"));
        let (addr, _) = kube_server(code, body).await;

        let error = discover_with_timeout(&kube_spec(addr, Some(TOKEN), ""), DEADLINE)
            .await
            .unwrap_err();

        match &error {
            DiscoveryError::Unauthorized { endpoint, status } => {
                assert_eq!(*status, code.as_u16());
                assert_eq!(endpoint, &format!("Kubernetes API server http://{addr}"));
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
        assert!(!error.to_string().contains(TOKEN), "{error}");
        assert!(!format!("{error:?}").contains(TOKEN));
        assert!(!error.is_retryable());
    }
}

#[tokio::test]
async fn kubernetes_server_error_carries_status_and_message() {
    let body = k8s_status(500, &format!("etcd is down (request had {TOKEN})"));
    let (addr, _) = kube_server(StatusCode::INTERNAL_SERVER_ERROR, body).await;

    let error = discover_with_timeout(&kube_spec(addr, Some(TOKEN), ""), DEADLINE)
        .await
        .unwrap_err();

    match &error {
        DiscoveryError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(message, "etcd is down (request had ********)");
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(error.is_retryable());

    // A plain-text error body (a proxy in front of the API server) is quoted as text.
    let (addr, _) = kube_server(StatusCode::BAD_GATEWAY, "upstream gone".into()).await;
    let error = discover_with_timeout(&kube_spec(addr, None, ""), DEADLINE)
        .await
        .unwrap_err();
    match error {
        DiscoveryError::Status {
            status, message, ..
        } => assert_eq!((status, message.as_str()), (502, "upstream gone")),
        other => panic!("expected Status, got {other:?}"),
    }
}

#[tokio::test]
async fn kubernetes_malformed_answers_are_bad_answers() {
    for body in [
        r#"{"kind":"NodeList","items":[{"metadata":"#.to_string(),
        r#"{"kind":"NodeList","items":5}"#.to_string(),
        node_list(vec![json!({"metadata": {}})], None),
    ] {
        let (addr, _) = kube_server(StatusCode::OK, body.clone()).await;

        let error = discover_with_timeout(&kube_spec(addr, None, ""), DEADLINE)
            .await
            .unwrap_err();

        match &error {
            DiscoveryError::BadAnswer { endpoint, .. } => {
                assert_eq!(endpoint, &format!("Kubernetes API server http://{addr}"));
            }
            other => panic!("expected BadAnswer for {body}, got {other:?}"),
        }
        assert!(!error.is_retryable());
    }
}

#[tokio::test]
async fn kubernetes_refused_connection_is_unreachable() {
    let addr = refusing_addr();

    let error = discover_with_timeout(&kube_spec(addr, Some(TOKEN), ""), DEADLINE)
        .await
        .unwrap_err();

    match &error {
        DiscoveryError::Unreachable { endpoint, message } => {
            assert_eq!(endpoint, &format!("Kubernetes API server http://{addr}"));
            assert!(message.to_lowercase().contains("refused"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(error.is_retryable());
    assert!(!error.to_string().contains(TOKEN));
}

#[tokio::test]
async fn kubernetes_silent_server_times_out_at_the_deadline() {
    let addr = silent_server().await;
    let deadline = Duration::from_millis(300);
    let started = Instant::now();

    let error = discover_with_timeout(&kube_spec(addr, None, ""), deadline)
        .await
        .unwrap_err();

    let elapsed = started.elapsed();
    match &error {
        DiscoveryError::Timeout { endpoint, after } => {
            assert_eq!(endpoint, &format!("Kubernetes API server http://{addr}"));
            assert_eq!(*after, deadline);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn kubernetes_unusable_ca_bundle_is_a_config_error() {
    // Valid PEM framing around bytes that are no certificate: it passes `validate`, and the
    // client refuses it.
    let pem = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcI\n-----END CERTIFICATE-----\n";
    let addr = refusing_addr();
    let spec = ClusterSpec::Kubernetes {
        api_server: Some(format!("https://{addr}")),
        token: None,
        ca_cert: Some(pem.into()),
        label_selector: String::new(),
        insecure_skip_tls_verify: false,
    };
    assert_eq!(spec.validate(), Ok(()));

    let error = discover_with_timeout(&spec, DEADLINE).await.unwrap_err();

    match error {
        DiscoveryError::Config { kind, message } => {
            assert_eq!(kind, "kubernetes");
            assert!(message.contains("cannot build a client"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
}

/// A fake Mesos master at `{prefix}/master/slaves`.
async fn mesos_server(prefix: &str, status: StatusCode, body: String) -> (SocketAddr, Log) {
    let log = Log::default();
    let path = format!("{prefix}/master/slaves");
    let route_path = path.clone();
    let router = Router::new()
        .route(
            &route_path,
            get(
                move |State(log): State<Log>, headers: HeaderMap| async move {
                    record(&log, &path, HashMap::new(), &headers);
                    (status, body).into_response()
                },
            ),
        )
        .with_state(log.clone());
    (serve(router).await, log)
}

fn mesos_agents() -> String {
    json!({
        "slaves": [
            {
                "id": "a1-S0", "hostname": "agent-1", "port": 5051,
                "pid": "slave(1)@10.0.1.1:5051", "active": true,
                "attributes": {"zone": "us-east-1a", "rack": "r1", "gpus": 2},
                "resources": {"cpus": 8.0, "mem": 31000.0},
            },
            {
                "id": "a2-S1", "hostname": "agent-2", "port": 5051,
                "pid": "slave(1)@10.0.1.2:5051", "active": false,
                "attributes": {"zone": "us-east-1b", "rack": "r2"},
            },
            {"id": "a3-S2", "hostname": "agent-3", "active": true},
        ],
        "recovered_slaves": [],
    })
    .to_string()
}

fn mesos_spec(master: String, attribute: Option<&str>) -> ClusterSpec {
    ClusterSpec::Mesos {
        master,
        attribute: attribute.map(str::to_string),
    }
}

#[tokio::test]
async fn mesos_lists_agents_with_state_zone_and_address() {
    let (addr, log) = mesos_server("", StatusCode::OK, mesos_agents()).await;

    let members = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), DEADLINE)
        .await
        .unwrap();

    assert_eq!(
        members,
        vec![
            Member {
                name: "agent-1".into(),
                address: Some("10.0.1.1".into()),
                zone: Some("us-east-1a".into()),
                ready: true,
            },
            Member {
                name: "agent-2".into(),
                address: Some("10.0.1.2".into()),
                zone: Some("us-east-1b".into()),
                ready: false,
            },
            Member {
                name: "agent-3".into(),
                address: None,
                zone: None,
                ready: true,
            },
        ]
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/master/slaves");
    assert_eq!(seen[0].accept.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn mesos_attribute_filter_keeps_matching_agents() {
    let (addr, log) = mesos_server("/mesos", StatusCode::OK, mesos_agents()).await;
    let master = format!("http://{addr}/mesos/");

    assert_eq!(agents_with(&master, "rack=r2").await, ["agent-2"]);
    assert_eq!(agents_with(&master, "zone = us-east-1a").await, ["agent-1"]);
    // Scalars compare as numbers.
    assert_eq!(agents_with(&master, "gpus=2.0").await, ["agent-1"]);
    assert_eq!(agents_with(&master, "rack=r9").await, Vec::<String>::new());
    assert_eq!(log.lock().unwrap()[0].path, "/mesos/master/slaves");
}

/// The names of the agents of `master` that carry `attribute`.
async fn agents_with(master: &str, attribute: &str) -> Vec<String> {
    let spec = mesos_spec(master.to_string(), Some(attribute));
    let members = discover_with_timeout(&spec, DEADLINE).await.unwrap();
    members.into_iter().map(|m| m.name).collect()
}

#[tokio::test]
async fn mesos_error_statuses() {
    let (addr, _) = mesos_server("", StatusCode::INTERNAL_SERVER_ERROR, "no leader".into()).await;
    let error = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), DEADLINE)
        .await
        .unwrap_err();
    match &error {
        DiscoveryError::Status {
            endpoint,
            status,
            message,
        } => {
            assert_eq!(endpoint, &format!("Mesos master http://{addr}"));
            assert_eq!((*status, message.as_str()), (500, "no leader"));
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert!(error.is_retryable());

    let (addr, _) = mesos_server("", StatusCode::UNAUTHORIZED, String::new()).await;
    let error = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), DEADLINE)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DiscoveryError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn mesos_malformed_answers_are_bad_answers() {
    for body in [
        r#"{"slaves": [{"hostname": "#,
        r#"{"agents": []}"#,
        r#"{"slaves": [{"active": true}]}"#,
    ] {
        let (addr, _) = mesos_server("", StatusCode::OK, body.to_string()).await;

        let error = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), DEADLINE)
            .await
            .unwrap_err();

        match error {
            DiscoveryError::BadAnswer { endpoint, .. } => {
                assert_eq!(endpoint, format!("Mesos master http://{addr}"));
            }
            other => panic!("expected BadAnswer for {body}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn mesos_refused_and_silent_masters() {
    let addr = refusing_addr();
    let error = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), DEADLINE)
        .await
        .unwrap_err();
    match &error {
        DiscoveryError::Unreachable { endpoint, .. } => {
            assert_eq!(endpoint, &format!("Mesos master http://{addr}"));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    let addr = silent_server().await;
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let error = discover_with_timeout(&mesos_spec(format!("http://{addr}"), None), deadline)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DiscoveryError::Timeout { after, .. } if after == deadline),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn static_members_are_the_hosts() {
    let spec = ClusterSpec::Static {
        hosts: vec![
            "edge-1.example.com".into(),
            "10.2.0.7".into(),
            "fd00::7".into(),
        ],
    };

    let members = discover(&spec).await.unwrap();

    assert_eq!(
        members,
        vec![
            Member {
                name: "edge-1.example.com".into(),
                address: None,
                zone: None,
                ready: true,
            },
            Member {
                name: "10.2.0.7".into(),
                address: Some("10.2.0.7".into()),
                zone: None,
                ready: true,
            },
            Member {
                name: "fd00::7".into(),
                address: Some("fd00::7".into()),
                zone: None,
                ready: true,
            },
        ]
    );
}

#[tokio::test]
async fn discover_refuses_an_invalid_spec_before_any_request() {
    let spec = ClusterSpec::Mesos {
        master: "mesos-master:5050".into(),
        attribute: None,
    };

    let error = discover(&spec).await.unwrap_err();

    match error {
        DiscoveryError::Config { kind, message } => {
            assert_eq!(kind, "mesos");
            assert!(message.starts_with("master:"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
}

fn hosts(list: &[&str]) -> ClusterSpec {
    ClusterSpec::Static {
        hosts: list.iter().map(|h| h.to_string()).collect(),
    }
}

fn selector(s: &str) -> ClusterSpec {
    ClusterSpec::Kubernetes {
        api_server: None,
        token: None,
        ca_cert: None,
        label_selector: s.into(),
        insecure_skip_tls_verify: false,
    }
}

#[test]
fn validate_accepts_sane_specs() {
    let valid = [
        hosts(&[
            "a",
            "node-1.example.com",
            "node_2",
            "10.0.0.1",
            "::1",
            "host.example.com.",
        ]),
        selector(""),
        selector("shoal.io/node=true"),
        selector("shoal.io/node==true, !example.com/cordoned,tier in (a, b),env notin (dev),gpu"),
        selector("role!=master,empty="),
        ClusterSpec::Kubernetes {
            api_server: Some("https://10.0.0.1:6443/prefix".into()),
            token: Some(TOKEN.into()),
            ca_cert: Some(
                "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n".into(),
            ),
            label_selector: String::new(),
            insecure_skip_tls_verify: true,
        },
        mesos_spec("http://mesos-master:5050".into(), None),
        mesos_spec("https://mesos.example.com/".into(), Some("zone=us-east-1a")),
    ];
    for spec in valid {
        assert_eq!(spec.validate(), Ok(()), "{spec:?}");
    }
}

#[test]
fn validate_names_the_bad_field() {
    let long = format!("{}.com", "a".repeat(250));
    let too_many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("h{i}")).collect();
    let cases: Vec<(ClusterSpec, &str)> = vec![
        (hosts(&[]), "hosts: must list at least one host"),
        (
            ClusterSpec::Static { hosts: too_many },
            "hosts: 10001 hosts listed",
        ),
        (hosts(&["a", ""]), "hosts[1]: must not be empty"),
        (hosts(&["a b"]), "hosts[0]: \"a b\" contains whitespace"),
        (hosts(&[" a"]), "hosts[0]: \" a\" contains whitespace"),
        (hosts(&["http://a"]), "hosts[0]: \"http://a\" is a URL"),
        (
            hosts(&["a", long.as_str()]),
            "hosts[1]: longer than 253 characters",
        ),
        (
            hosts(&["a:5000"]),
            "hosts[0]: \"a:5000\" has a port or a path",
        ),
        (
            hosts(&["-a.example"]),
            "hosts[0]: \"-a.example\" is not a host name",
        ),
        (hosts(&["a..b"]), "hosts[0]: \"a..b\" is not a host name"),
        (
            hosts(&["a", "B", "A"]),
            "hosts[2]: \"A\" is already listed as hosts[0]",
        ),
        (
            hosts(&["::1", "0:0::1"]),
            "hosts[1]: \"0:0::1\" is already listed as hosts[0]",
        ),
        (selector("a=b,"), "label_selector: empty requirement"),
        (
            selector("a b"),
            "label_selector: \"a b\" is not a label key",
        ),
        (
            selector("Bad.Prefix/x=y"),
            "label_selector: \"Bad.Prefix/x\": prefix",
        ),
        (
            selector("a=-b"),
            "label_selector: \"-b\" is not a label value",
        ),
        (selector("a in (x,y"), "label_selector: unbalanced '('"),
        (selector("a in x,y)"), "label_selector: unbalanced ')'"),
        (
            selector("a within (x)"),
            "label_selector: \"a within (x)\": unknown operator",
        ),
        (
            selector("a in (x) b"),
            "label_selector: \"a in (x) b\": text after ')'",
        ),
        (
            ClusterSpec::Kubernetes {
                api_server: Some("ftp://k8s".into()),
                token: None,
                ca_cert: None,
                label_selector: String::new(),
                insecure_skip_tls_verify: false,
            },
            "api_server: scheme must be http or https",
        ),
        (
            ClusterSpec::Kubernetes {
                api_server: Some("https://admin:pw@k8s:6443".into()),
                token: None,
                ca_cert: None,
                label_selector: String::new(),
                insecure_skip_tls_verify: false,
            },
            "api_server: must not carry credentials",
        ),
        (
            ClusterSpec::Kubernetes {
                api_server: None,
                token: Some("two words".into()),
                ca_cert: None,
                label_selector: String::new(),
                insecure_skip_tls_verify: false,
            },
            "token: must be printable ASCII",
        ),
        (
            ClusterSpec::Kubernetes {
                api_server: None,
                token: None,
                ca_cert: Some("not pem".into()),
                label_selector: String::new(),
                insecure_skip_tls_verify: false,
            },
            "ca_cert: no PEM certificate found",
        ),
        (
            mesos_spec("mesos:5050".into(), None),
            "master: scheme must be http or https",
        ),
        (
            mesos_spec("not a url".into(), None),
            "master: \"not a url\" is not a URL",
        ),
        (
            mesos_spec("http://m:5050/?x=1".into(), None),
            "master: must not have a query",
        ),
        (
            mesos_spec("http://m:5050".into(), Some("zone")),
            "attribute: \"zone\" is not key=value",
        ),
        (
            mesos_spec("http://m:5050".into(), Some("=a")),
            "attribute: \"=a\" needs a non-empty key",
        ),
    ];
    for (spec, expected) in cases {
        let message = spec.validate().unwrap_err();
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
}

#[test]
fn validate_does_not_echo_the_token() {
    let spec = ClusterSpec::Kubernetes {
        api_server: None,
        token: Some("sec ret".into()),
        ca_cert: None,
        label_selector: String::new(),
        insecure_skip_tls_verify: false,
    };
    let message = spec.validate().unwrap_err();
    assert!(!message.contains("sec ret"), "{message}");
}

#[test]
fn redacted_hides_only_the_token() {
    let spec = ClusterSpec::Kubernetes {
        api_server: Some("https://k8s:6443".into()),
        token: Some(TOKEN.into()),
        ca_cert: Some("PEM".into()),
        label_selector: "a=b".into(),
        insecure_skip_tls_verify: true,
    };

    assert_eq!(
        spec.redacted(),
        ClusterSpec::Kubernetes {
            api_server: Some("https://k8s:6443".into()),
            token: Some("********".into()),
            ca_cert: Some("PEM".into()),
            label_selector: "a=b".into(),
            insecure_skip_tls_verify: true,
        }
    );
    assert!(matches!(&spec, ClusterSpec::Kubernetes { token: Some(t), .. } if t == TOKEN));
    assert_eq!(selector("a=b").redacted(), selector("a=b"));
    assert_eq!(hosts(&["a"]).redacted(), hosts(&["a"]));
    let mesos = mesos_spec("http://m:5050".into(), Some("k=v"));
    assert_eq!(mesos.redacted(), mesos);
    assert!(
        !serde_json::to_string(&spec.redacted())
            .unwrap()
            .contains(TOKEN)
    );
}

#[test]
fn is_member_static_matches_name_or_address() {
    let spec = hosts(&["Edge-1.example.com", "10.0.0.5", "fd00::1"]);

    assert!(spec.is_member(&[], "edge-1.example.com", "192.0.2.1"));
    assert!(spec.is_member(&[], "some-name", "10.0.0.5"));
    assert!(spec.is_member(&[], "some-name", "[fd00:0::1]"));
    assert!(spec.is_member(&[], "fd00::1", ""));
    assert!(!spec.is_member(&[], "edge-2.example.com", "10.0.0.6"));
    assert!(!spec.is_member(&[], "", ""));
}

#[test]
fn is_member_discovered_matches_member_names() {
    let members = vec![
        Member {
            name: "node-a".into(),
            address: Some("10.0.0.1".into()),
            zone: None,
            ready: true,
        },
        Member {
            name: "agent-b".into(),
            address: None,
            zone: None,
            ready: false,
        },
    ];
    for spec in [selector(""), mesos_spec("http://m:5050".into(), None)] {
        assert!(spec.is_member(&members, "node-a", "192.0.2.9"));
        assert!(spec.is_member(&members, "AGENT-B", ""));
        // The address alone does not make a member: names are what the source vouches for.
        assert!(!spec.is_member(&members, "node-x", "10.0.0.1"));
        assert!(!spec.is_member(&members, "", ""));
        assert!(!spec.is_member(&[], "node-a", "10.0.0.1"));
    }
}

#[test]
fn kind_names_each_variant() {
    assert_eq!(hosts(&["a"]).kind(), "static");
    assert_eq!(selector("").kind(), "kubernetes");
    assert_eq!(mesos_spec("http://m".into(), None).kind(), "mesos");
}

#[test]
fn serde_round_trip_and_shape() {
    let specs = [
        (
            hosts(&["a", "10.0.0.1"]),
            json!({"kind": "static", "hosts": ["a", "10.0.0.1"]}),
        ),
        (
            ClusterSpec::Kubernetes {
                api_server: Some("https://k8s:6443".into()),
                token: Some(TOKEN.into()),
                ca_cert: None,
                label_selector: "shoal.io/node=true".into(),
                insecure_skip_tls_verify: false,
            },
            json!({
                "kind": "kubernetes", "api_server": "https://k8s:6443", "token": TOKEN,
                "ca_cert": null, "label_selector": "shoal.io/node=true",
                "insecure_skip_tls_verify": false,
            }),
        ),
        (
            mesos_spec("http://m:5050".into(), Some("zone=a")),
            json!({"kind": "mesos", "master": "http://m:5050", "attribute": "zone=a"}),
        ),
    ];
    for (spec, expected) in specs {
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value, expected);
        let back: ClusterSpec = serde_json::from_value(value).unwrap();
        assert_eq!(back, spec);
    }

    let member = Member {
        name: "n".into(),
        address: Some("10.0.0.1".into()),
        zone: Some("z".into()),
        ready: true,
    };
    let back: Member = serde_json::from_str(&serde_json::to_string(&member).unwrap()).unwrap();
    assert_eq!(back, member);
}

#[test]
fn serde_fills_defaults_and_refuses_unknown_fields() {
    let spec: ClusterSpec = serde_json::from_str(r#"{"kind":"kubernetes"}"#).unwrap();
    assert_eq!(spec, selector(""));
    let spec: ClusterSpec =
        serde_json::from_str(r#"{"kind":"mesos","master":"http://m"}"#).unwrap();
    assert_eq!(spec, mesos_spec("http://m".into(), None));

    for (json, expected) in [
        (
            r#"{"kind":"kubernetes","label_selecter":"a=b"}"#,
            "unknown field `label_selecter`",
        ),
        (
            r#"{"kind":"static","hosts":["a"],"host":"b"}"#,
            "unknown field `host`",
        ),
        (r#"{"kind":"mesos"}"#, "missing field `master`"),
        (
            r#"{"kind":"swarm","hosts":["a"]}"#,
            "unknown variant `swarm`",
        ),
        (r#"{"hosts":["a"]}"#, "missing field `kind`"),
    ] {
        let error = serde_json::from_str::<ClusterSpec>(json)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{json}: {error}");
    }
}

#[test]
fn openapi_schema_lists_the_three_kinds() {
    let schema = serde_json::to_value(<ClusterSpec as utoipa::PartialSchema>::schema()).unwrap();
    let variants = schema["oneOf"].as_array().expect("a oneOf schema");
    let kinds: Vec<&str> = variants
        .iter()
        .map(|v| v["properties"]["kind"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["static", "kubernetes", "mesos"]);
    assert_eq!(variants[2]["required"], json!(["master", "kind"]));
}
