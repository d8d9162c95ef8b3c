//! The manager's permissions end to end over HTTP:
//!
//! - a matrix of every documented route against the super administrator, the built-in cluster
//!   and task administrators (the latter bound to one cluster), a custom role, a user without
//!   roles and an anonymous caller — on SQLite and on PostgreSQL;
//! - the matrix's routes are the OpenAPI document's, so a new endpoint without a row fails;
//! - the agent endpoints take node and join tokens only, and user endpoints refuse them;
//! - one tenant's users can neither see nor change another tenant's objects;
//! - nobody hands out (or takes over) more than they hold;
//! - a tenant's bandwidth budget holds across concurrent task creations.
//!
//! The matrix's paths and bodies are templates: `{a1}` is a fixed object of the setup, `{new_…}`
//! a fresh one created (by the super administrator) for each call, so that rows and callers run
//! in any order without one call's change showing in another's answer.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::manager::{ADMIN_PASSWORD, Api, FakeAgent, TestManager, now_ms};
use serde_json::{Value, json};
use shoal::manager::ManualClock;

/// Every test user's password.
const PASSWORD: &str = "password-123";

/// Host names of clusters a1 and a2: `a1-0` is the setup's node, the others fresh nodes.
const HOSTS_PER_CLUSTER: usize = 64;

// ---------------------------------------------------------------------------------------------
// Callers
// ---------------------------------------------------------------------------------------------

/// The matrix's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// The first administrator (built-in `super-admin`).
    Super,
    /// `cluster-admin` on every cluster of tenant A.
    Cadmin,
    /// `task-admin` on cluster a1 only.
    Tadmin,
    /// A custom role holding `tasks:read` and `stats:read`.
    Viewer,
    /// A user without role bindings.
    Nobody,
    /// No credentials.
    Anon,
}

impl Who {
    const ALL: [Who; 6] = [
        Who::Super,
        Who::Cadmin,
        Who::Tadmin,
        Who::Viewer,
        Who::Nobody,
        Who::Anon,
    ];

    /// The user name, or `None` for the anonymous caller.
    fn user(self) -> Option<&'static str> {
        match self {
            Who::Super => Some("admin"),
            Who::Cadmin => Some("cadmin"),
            Who::Tadmin => Some("tadmin"),
            Who::Viewer => Some("viewer"),
            Who::Nobody => Some("nobody"),
            Who::Anon => None,
        }
    }

    fn password(self) -> &'static str {
        if self == Who::Super {
            ADMIN_PASSWORD
        } else {
            PASSWORD
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

/// One call of the matrix and what each caller gets.
struct Row {
    method: &'static str,
    /// Path template (see the module doc).
    path: &'static str,
    /// JSON body template.
    body: Option<&'static str>,
    /// Statuses for [`Who::ALL`], in order.
    want: [u16; 6],
    /// Sign in afresh for this call (signing out ends the session).
    fresh_session: bool,
}

fn row(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    want: [u16; 6],
) -> Row {
    Row {
        method,
        path,
        body,
        want,
        fresh_session: false,
    }
}

/// Every documented route but the agent's, with scope cases. Columns: super, cadmin, tadmin,
/// viewer, nobody, anonymous.
///
/// Reading the handlers: an object of another tenant answers 404 before any permission check
/// (clusters, nodes, tasks) or after the check of the read permission (files, tenants, users,
/// roles); an
/// object of the caller's tenant outside the caller's cluster scope answers 404 (it is
/// invisible); inside the scope but without the needed write permission, 403.
#[rustfmt::skip]
fn matrix() -> Vec<Row> {
    vec![
        // Sign-in is public; everything else needs a token.
        row("POST", "/api/v1/auth/login", Some(r#"{"name":"admin","password":"{admin_password}"}"#), [200, 200, 200, 200, 200, 200]),
        Row { fresh_session: true, ..row("POST", "/api/v1/auth/logout", None, [204, 204, 204, 204, 204, 401]) },
        row("GET", "/api/v1/auth/me", None, [200, 200, 200, 200, 200, 401]),
        row("GET", "/api/v1/permissions", None, [200, 200, 200, 200, 200, 401]),
        // Personal access tokens: one's own, carrying only what one holds.
        row("GET", "/api/v1/tokens", None, [200, 200, 200, 200, 200, 401]),
        row("POST", "/api/v1/tokens", Some(r#"{"name":"t-{uniq}"}"#), [201, 201, 201, 201, 201, 401]),
        row("POST", "/api/v1/tokens", Some(r#"{"name":"t-{uniq}","scopes":["tasks:write"]}"#), [201, 403, 201, 403, 403, 401]),
        row("DELETE", "/api/v1/tokens/{own_token}", None, [204, 204, 204, 204, 204, 401]),
        row("DELETE", "/api/v1/tokens/{admin_token}", None, [204, 404, 404, 404, 404, 401]),
        // Users and bindings: users:read / users:write (super only here).
        row("GET", "/api/v1/users", None, [200, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/users?tenant_id={tenant_b}", None, [200, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/users", Some(r#"{"name":"u-{uniq}","password":"{password}"}"#), [201, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/users", Some(r#"{"name":"u-{uniq}","password":"{password}","tenant_id":{tenant_b}}"#), [201, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/users/{u_target}", None, [200, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/users/{self}", None, [200, 200, 200, 200, 200, 401]),
        row("PATCH", "/api/v1/users/{new_user}", Some(r#"{"disabled":true}"#), [200, 403, 403, 403, 403, 401]),
        row("DELETE", "/api/v1/users/{new_user}", None, [204, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/users/{new_user}/bindings", Some(r#"{"role_id":{role_viewer}}"#), [201, 403, 403, 403, 403, 401]),
        row("DELETE", "/api/v1/bindings/{new_binding}", None, [204, 403, 403, 403, 403, 401]),
        // Roles: roles:read / roles:write (super only here).
        row("GET", "/api/v1/roles", None, [200, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/roles", Some(r#"{"name":"r-{uniq}","permissions":["tasks:read"]}"#), [201, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/roles/{role_viewer}", None, [200, 403, 403, 403, 403, 401]),
        row("PUT", "/api/v1/roles/{new_role}", Some(r#"{"name":"r-{uniq}","permissions":["stats:read"]}"#), [200, 403, 403, 403, 403, 401]),
        row("DELETE", "/api/v1/roles/{new_role}", None, [204, 403, 403, 403, 403, 401]),
        // Tenants: read with tenants:read (one's own), write with system.
        row("GET", "/api/v1/tenants", None, [200, 200, 200, 403, 403, 401]),
        row("POST", "/api/v1/tenants", Some(r#"{"name":"t-{uniq}"}"#), [201, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/tenants/{tenant_a}", None, [200, 200, 200, 403, 403, 401]),
        row("GET", "/api/v1/tenants/{tenant_b}", None, [200, 404, 404, 403, 403, 401]),
        row("PATCH", "/api/v1/tenants/{new_tenant}", Some(r#"{"bandwidth_budget":1000}"#), [200, 403, 403, 403, 403, 401]),
        // Clusters: creating one needs clusters:write on every cluster.
        row("GET", "/api/v1/clusters", None, [200, 200, 200, 403, 403, 401]),
        row("POST", "/api/v1/clusters", Some(r#"{"name":"c-{uniq}","spec":{"kind":"static","hosts":["h-{uniq}"]}}"#), [201, 201, 403, 403, 403, 401]),
        row("POST", "/api/v1/clusters", Some(r#"{"name":"c-{uniq}","tenant_id":{tenant_b},"spec":{"kind":"static","hosts":["h-{uniq}"]}}"#), [201, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/clusters/{a1}", None, [200, 200, 200, 403, 403, 401]),
        row("GET", "/api/v1/clusters/{a2}", None, [200, 200, 404, 403, 403, 401]),
        row("GET", "/api/v1/clusters/{b1}", None, [200, 404, 404, 404, 404, 401]),
        row("PUT", "/api/v1/clusters/{a1}", Some(r#"{"name":"a1","zone":"z1","spec":{"kind":"static","hosts":{a1_hosts}}}"#), [200, 200, 403, 403, 403, 401]),
        row("PUT", "/api/v1/clusters/{new_cluster}", Some(r#"{"name":"c-{uniq}","spec":{"kind":"static","hosts":["h-{uniq}"]}}"#), [200, 200, 404, 403, 403, 401]),
        row("DELETE", "/api/v1/clusters/{new_cluster}", None, [204, 204, 404, 403, 403, 401]),
        row("POST", "/api/v1/clusters/{new_cluster}/token", None, [200, 200, 404, 403, 403, 401]),
        row("POST", "/api/v1/clusters/{a1}/discover", None, [200, 200, 403, 403, 403, 401]),
        row("POST", "/api/v1/clusters/{new_cluster}/discover", None, [200, 200, 404, 403, 403, 401]),
        // Nodes.
        row("GET", "/api/v1/nodes", None, [200, 200, 200, 403, 403, 401]),
        row("GET", "/api/v1/nodes/{na1}", None, [200, 200, 200, 403, 403, 401]),
        row("GET", "/api/v1/nodes/{na2}", None, [200, 200, 404, 403, 403, 401]),
        row("GET", "/api/v1/nodes/{nb1}", None, [200, 404, 404, 404, 404, 401]),
        row("DELETE", "/api/v1/nodes/{new_node_a1}", None, [204, 204, 403, 403, 403, 401]),
        row("DELETE", "/api/v1/nodes/{new_node_a2}", None, [204, 204, 404, 403, 403, 401]),
        // Tasks: tasks:write on every cluster a task reaches.
        row("GET", "/api/v1/tasks", None, [200, 200, 200, 200, 403, 401]),
        row("POST", "/api/v1/tasks", Some(IMG_A1), [201, 403, 201, 403, 403, 401]),
        row("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"image","image":"app:{uniq}"},"clusters":[{a2}]}"#), [201, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"image","image":"app:{uniq}"},"nodes":[{na2}]}"#), [201, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"image","image":"app:{uniq}"},"clusters":[{a1},{a2}]}"#), [201, 403, 403, 403, 403, 401]),
        row("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"file","version_id":{fa}},"clusters":[{a1}]}"#), [201, 403, 201, 403, 403, 401]),
        row("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"image","image":"app:{uniq}"},"clusters":[{b1}],"tenant_id":{tenant_b}}"#), [201, 403, 403, 403, 403, 401]),
        row("GET", "/api/v1/tasks/{ta1}", None, [200, 200, 200, 200, 403, 401]),
        row("GET", "/api/v1/tasks/{ta2}", None, [200, 200, 404, 200, 403, 401]),
        row("GET", "/api/v1/tasks/{tb1}", None, [200, 404, 404, 404, 404, 401]),
        row("DELETE", "/api/v1/tasks/{new_task_a1}", None, [204, 403, 204, 403, 403, 401]),
        row("DELETE", "/api/v1/tasks/{new_task_a2}", None, [204, 403, 404, 403, 403, 401]),
        row("POST", "/api/v1/tasks/{new_task_a1}/stop", None, [200, 403, 200, 403, 403, 401]),
        row("POST", "/api/v1/tasks/{new_task_a2}/stop", None, [200, 403, 404, 403, 403, 401]),
        row("POST", "/api/v1/tasks/{ta1}/copy", None, [201, 403, 201, 403, 403, 401]),
        row("POST", "/api/v1/tasks/{ta2}/copy", None, [201, 403, 404, 403, 403, 401]),
        row("GET", "/api/v1/tasks/{ta1}/nodes", None, [200, 200, 200, 200, 403, 401]),
        row("GET", "/api/v1/tasks/{ta2}/nodes", None, [200, 200, 404, 200, 403, 401]),
        row("GET", "/api/v1/tasks/{ta1}/logs", None, [200, 200, 200, 200, 403, 401]),
        row("GET", "/api/v1/tasks/{tb1}/logs", None, [200, 404, 404, 404, 404, 401]),
        // File versions: tenant-wide files:read / files:write.
        row("GET", "/api/v1/files", None, [200, 200, 200, 403, 403, 401]),
        row("POST", "/api/v1/files", Some(r#"{"name":"f-{uniq}","version":"1","url":"http://files.example/f.tar","digest":"{digest}"}"#), [201, 403, 201, 403, 403, 401]),
        row("GET", "/api/v1/files/{fa}", None, [200, 200, 200, 403, 403, 401]),
        row("GET", "/api/v1/files/{fb}", None, [200, 404, 404, 403, 403, 401]),
        row("DELETE", "/api/v1/files/{new_file}", None, [204, 403, 204, 403, 403, 401]),
        // Statistics and audit.
        row("GET", "/api/v1/stats", None, [200, 200, 200, 200, 403, 401]),
        row("GET", "/api/v1/stats?tenant_id={tenant_b}", None, [200, 200, 200, 200, 403, 401]),
        row("GET", "/api/v1/audit", None, [200, 200, 403, 403, 403, 401]),
    ]
}

/// A route as the OpenAPI document names it: `("GET", "/api/v1/tasks/{id}")`.
type Route = (String, String);

/// The route a row calls: query dropped, every `{…}` segment made `{id}`.
fn route_of(method: &str, path: &str) -> Route {
    let path = path.split('?').next().unwrap_or(path);
    let path = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    (method.to_uppercase(), path)
}

fn matrix_routes() -> BTreeSet<Route> {
    matrix()
        .iter()
        .map(|r| route_of(r.method, r.path))
        .collect()
}

/// Whether a documented route is one of the nodes' (tested on their own: they take node and
/// join tokens, not user tokens).
fn is_agent_route(route: &Route) -> bool {
    route.1.starts_with("/api/v1/agent/")
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) of an OpenAPI document, with whether the operation needs no credentials
/// (`security: [{}]`).
fn documented_routes(doc: &Value) -> BTreeMap<Route, bool> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut out = BTreeMap::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (method, op) in item {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            let public = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|req| req.as_object().is_some_and(|o| o.is_empty()))
            });
            out.insert((method.to_uppercase(), path.clone()), public);
        }
    }
    out
}

/// Why a call's answer is not the one expected, if it is not.
fn mismatch(want: u16, status: u16, body: &Value) -> Option<String> {
    if status != want {
        return Some(format!("status {status}, want {want}"));
    }
    let code = match want {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NOT_FOUND",
        _ => return None,
    };
    let shape_ok = body.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("code") == Some(&Value::from(code))
            && o.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| !m.is_empty())
    });
    (!shape_ok).then(|| format!("error body is not {{\"code\":\"{code}\",\"message\":…}}"))
}

// ---------------------------------------------------------------------------------------------
// The world: tenants A and B with their clusters, nodes, tasks, files and users
/// What the setup made, and fresh objects on demand.
struct World {
    url: String,
    admin: Api,
    /// Sessions of the matrix's users.
    sessions: BTreeMap<Who, Api>,
    /// Template values: ids (`a1`, `ta1`, `u_cadmin`, `b_cadmin` for cadmin's binding, …) and
    /// a few texts. Tests add their own.
    vars: HashMap<String, String>,
    join_a1: String,
    join_a2: String,
    /// Tenant A's node in a1, tenant B's in b1.
    na1: FakeAgent,
    nb1: FakeAgent,
    /// A tenant-B user holding `task-admin` on every cluster of B.
    ub: Api,
    counter: AtomicU64,
    next_node: AtomicUsize,
}

/// One expected answer outside the matrix: method, path and body templates, status.
type Check = (&'static str, &'static str, Option<&'static str>, u16);

/// What a list shows: its path template, ids it must hold and ids it must not (as template
/// variables). For statistics, the ids of its `tasks`.
type Sight = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// An id no object has.
const MISSING: i64 = 999_999;

/// An image task on cluster a1.
const IMG_A1: &str = r#"{"source":{"kind":"image","image":"app:{uniq}"},"clusters":[{a1}]}"#;

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// The ids of a list, or of a statistics answer's tasks.
fn ids_of(v: &Value) -> BTreeSet<i64> {
    let list = if v.is_object() { &v["tasks"] } else { v };
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(id_of)
        .collect()
}

/// POSTs `body`, which must be created (201); returns the new id.
async fn post_id(api: &Api, path: &str, body: Value) -> i64 {
    id_of(&api.post_ok(path, body, 201).await)
}

fn hosts(prefix: &str) -> Vec<String> {
    (0..HOSTS_PER_CLUSTER)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn image_task(image: &str, clusters: &[i64]) -> Value {
    json!({"source": {"kind": "image", "image": image}, "clusters": clusters})
}

fn static_cluster(name: &str, hosts: Vec<String>, tenant: Option<i64>) -> Value {
    json!({"name": name, "zone": "z1", "tenant_id": tenant, "spec": {"kind": "static", "hosts": hosts}})
}

/// Builds the world as the super administrator (and, for tenant B's file version, B's user).
async fn setup(m: &TestManager) -> World {
    let admin = m.admin().await;
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut var = |key: &str, id: i64| vars.insert(key.to_string(), id.to_string());

    // Tenant A (the default tenant): two static clusters, a node in each, a file, two tasks.
    let a1 = admin
        .post_ok(
            "/api/v1/clusters",
            static_cluster("a1", hosts("a1"), None),
            201,
        )
        .await;
    let a2 = admin
        .post_ok(
            "/api/v1/clusters",
            static_cluster("a2", hosts("a2"), None),
            201,
        )
        .await;
    let join_a1 = a1["join_token"].as_str().unwrap().to_string();
    let join_a2 = a2["join_token"].as_str().unwrap().to_string();
    let (a1, a2) = (id_of(&a1), id_of(&a2));
    let na1 = FakeAgent::register(&m.url, &join_a1, "a1-0").await;
    let na2 = FakeAgent::register(&m.url, &join_a2, "a2-0").await;
    na1.heartbeat().await;
    na2.heartbeat().await;
    let file = json!({"name": "tool", "version": "1.0", "url": "http://files.example/a.tar", "digest": digest('a')});
    var("fa", post_id(&admin, "/api/v1/files", file).await);
    let ta1 = admin
        .post_ok("/api/v1/tasks", image_task("app:a1", &[a1]), 201)
        .await;
    assert_eq!(ta1["state"], "running", "{ta1}");
    var("ta1", id_of(&ta1));
    var(
        "ta2",
        post_id(&admin, "/api/v1/tasks", image_task("app:a2", &[a2])).await,
    );

    // Roles: the built-in ones, and a custom one.
    let roles = admin.get_ok("/api/v1/roles").await;
    let role = |name: &str| {
        let found = roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name && r["builtin"] == true);
        id_of(found.unwrap_or_else(|| panic!("no built-in role {name}: {roles}")))
    };
    let (cluster_admin, task_admin) = (role("cluster-admin"), role("task-admin"));
    var("role_super_admin", role("super-admin"));
    var("role_cluster_admin", cluster_admin);
    var("role_task_admin", task_admin);
    let viewer = json!({"name": "viewer-role", "permissions": ["tasks:read", "stats:read"]});
    let viewer_role = post_id(&admin, "/api/v1/roles", viewer).await;
    var("role_viewer", viewer_role);

    // Tenant B: a cluster with a node, a task, a user with task-admin on all of B, a file.
    let tenant_b = post_id(&admin, "/api/v1/tenants", json!({"name": "team-b"})).await;
    let b1 = static_cluster("b1", vec!["b1-0".into()], Some(tenant_b));
    let b1 = admin.post_ok("/api/v1/clusters", b1, 201).await;
    let nb1 = FakeAgent::register(&m.url, b1["join_token"].as_str().unwrap(), "b1-0").await;
    nb1.heartbeat().await;
    let b1 = id_of(&b1);
    let mut tb1 = image_task("app:b1", &[b1]);
    tb1["tenant_id"] = json!(tenant_b);
    let tb1 = admin.post_ok("/api/v1/tasks", tb1, 201).await;
    assert_eq!(tb1["tenant_id"], tenant_b);
    let ub = json!({"name": "ub", "password": PASSWORD, "tenant_id": tenant_b, "bindings": [{"role_id": task_admin}]});
    var("u_ub", post_id(&admin, "/api/v1/users", ub).await);
    let ub = Api::login(&m.url, "ub", PASSWORD).await;
    let file = json!({"name": "tool", "version": "1.0", "url": "http://files.example/b.tar", "digest": digest('b')});
    let fb = ub.post_ok("/api/v1/files", file, 201).await;
    assert_eq!(fb["tenant_id"], tenant_b);

    // Tenant A's users.
    let me = admin.get_ok("/api/v1/auth/me").await;
    let admin_user = admin.get_ok(&format!("/api/v1/users/{}", id_of(&me))).await;
    var("u_admin", id_of(&admin_user));
    var("b_admin", id_of(&admin_user["bindings"][0]));
    for (name, bindings) in [
        ("cadmin", json!([{"role_id": cluster_admin}])),
        ("tadmin", json!([{"role_id": task_admin, "clusters": [a1]}])),
        ("viewer", json!([{"role_id": viewer_role}])),
        ("nobody", json!([])),
        ("target", json!([])),
    ] {
        let user = json!({"name": name, "password": PASSWORD, "bindings": bindings});
        let u = admin.post_ok("/api/v1/users", user, 201).await;
        var(&format!("u_{name}"), id_of(&u));
        if let Some(b) = u["bindings"].get(0) {
            var(&format!("b_{name}"), id_of(b));
        }
    }
    let mut sessions = BTreeMap::new();
    for who in Who::ALL {
        if let Some(name) = who.user() {
            sessions.insert(who, Api::login(&m.url, name, who.password()).await);
        }
    }

    for (key, id) in [
        ("tenant_a", 1),
        ("tenant_b", tenant_b),
        ("a1", a1),
        ("a2", a2),
        ("b1", b1),
        ("na1", na1.id),
        ("na2", na2.id),
        ("nb1", nb1.id),
        ("tb1", id_of(&tb1)),
        ("fb", id_of(&fb)),
    ] {
        var(key, id);
    }
    for (key, text) in [
        ("a1_hosts", serde_json::to_string(&hosts("a1")).unwrap()),
        ("admin_password", ADMIN_PASSWORD.to_string()),
        ("password", PASSWORD.to_string()),
        ("digest", digest('c')),
    ] {
        vars.insert(key.to_string(), text);
    }
    World {
        url: m.url.clone(),
        admin,
        sessions,
        vars,
        join_a1,
        join_a2,
        na1,
        nb1,
        ub,
        counter: AtomicU64::new(1),
        next_node: AtomicUsize::new(1),
    }
}

impl World {
    /// An id of the setup.
    fn id(&self, key: &str) -> i64 {
        let v = self.vars.get(key).unwrap_or_else(|| panic!("no {key}"));
        v.parse().unwrap_or_else(|_| panic!("{key} is not an id"))
    }

    /// Records an id for templates.
    fn set(&mut self, key: &str, id: i64) {
        self.vars.insert(key.to_string(), id.to_string());
    }

    /// The caller's client (anonymous: no token).
    fn api(&self, who: Who) -> Api {
        match self.sessions.get(&who) {
            Some(api) => api.clone(),
            None => Api::new(&self.url, None),
        }
    }

    /// A new session of the caller (anonymous: none).
    async fn fresh_session(&self, who: Who) -> Api {
        match who.user() {
            Some(name) => Api::login(&self.url, name, who.password()).await,
            None => Api::new(&self.url, None),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Fills a template's `{name}` placeholders; a name seen twice in one call has one value.
    async fn expand(&self, template: &str, who: Who, seen: &mut HashMap<String, String>) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            if len > 0 && after[len..].starts_with('}') {
                let name = &after[..len];
                let value = match seen.get(name) {
                    Some(v) => v.clone(),
                    None => {
                        let v = self.value(name, who).await;
                        seen.insert(name.to_string(), v.clone());
                        v
                    }
                };
                out.push_str(&value);
                rest = &after[len + 1..];
            } else {
                out.push('{');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }

    /// Expands a path and a body template.
    async fn request(
        &self,
        path: &str,
        body: Option<&str>,
        who: Who,
        seen: &mut HashMap<String, String>,
    ) -> (String, Option<Value>) {
        let path = self.expand(path, who, seen).await;
        let body = match body {
            Some(t) => {
                let text = self.expand(t, who, seen).await;
                Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("body {text}: {e}")))
            }
            None => None,
        };
        (path, body)
    }

    /// One placeholder's value for a call by `who`: `{self}` is the caller's user id, `{uniq}`
    /// a new number, `{new_…}` a fresh object.
    async fn value(&self, name: &str, who: Who) -> String {
        let n = self.next();
        let admin = &self.admin;
        let owner = if who == Who::Anon { Who::Super } else { who };
        let id = match name {
            "uniq" => return n.to_string(),
            "self" => return self.vars[&format!("u_{}", owner.user().unwrap())].clone(),
            "new_task_a1" | "new_task_a2" => {
                let cluster = self.id(&name["new_task_".len()..]);
                post_id(
                    admin,
                    "/api/v1/tasks",
                    image_task(&format!("app:fresh-{n}"), &[cluster]),
                )
                .await
            }
            "new_cluster" => {
                let name = format!("fresh-{n}");
                post_id(
                    admin,
                    "/api/v1/clusters",
                    static_cluster(&name, vec![name.clone()], None),
                )
                .await
            }
            "new_node_a1" | "new_node_a2" => {
                let k = self.next_node.fetch_add(1, Ordering::Relaxed);
                assert!(
                    k < HOSTS_PER_CLUSTER - 1,
                    "out of host names for fresh nodes"
                );
                let (join, prefix) = if name == "new_node_a1" {
                    (&self.join_a1, "a1")
                } else {
                    (&self.join_a2, "a2")
                };
                FakeAgent::register(&self.url, join, &format!("{prefix}-{k}"))
                    .await
                    .id
            }
            "new_user" => {
                let user = json!({"name": format!("fresh-{n}"), "password": PASSWORD});
                post_id(admin, "/api/v1/users", user).await
            }
            "new_binding" => {
                let role = self.id("role_viewer");
                let user = json!({"name": format!("fresh-{n}"), "password": PASSWORD, "bindings": [{"role_id": role}]});
                id_of(&admin.post_ok("/api/v1/users", user, 201).await["bindings"][0])
            }
            "new_role" => {
                let role = json!({"name": format!("fresh-{n}"), "permissions": ["stats:read"]});
                post_id(admin, "/api/v1/roles", role).await
            }
            "new_file" => {
                let file = json!({"name": format!("fresh-{n}"), "version": "1", "url": "http://files.example/x.tar", "digest": digest('d')});
                post_id(admin, "/api/v1/files", file).await
            }
            "new_tenant" => {
                post_id(
                    admin,
                    "/api/v1/tenants",
                    json!({"name": format!("fresh-{n}")}),
                )
                .await
            }
            "own_token" => {
                post_id(
                    &self.api(owner),
                    "/api/v1/tokens",
                    json!({"name": format!("fresh-{n}")}),
                )
                .await
            }
            "admin_token" => {
                post_id(
                    admin,
                    "/api/v1/tokens",
                    json!({"name": format!("fresh-{n}")}),
                )
                .await
            }
            fixed => {
                let value = self.vars.get(fixed);
                return value
                    .cloned()
                    .unwrap_or_else(|| panic!("unknown placeholder {{{fixed}}}"));
            }
        };
        id.to_string()
    }

    /// Sends each check as `api`, in order (fresh objects made as for the super administrator).
    async fn check_all(&self, api: &Api, checks: &[Check]) {
        for (method, path, body, want) in checks {
            let (path, body) = self
                .request(path, *body, Who::Super, &mut HashMap::new())
                .await;
            expect(api, method, &path, body, *want).await;
        }
    }

    /// Reads each list as `api` and checks which ids it holds.
    async fn check_lists(&self, api: &Api, sights: &[Sight]) {
        for (path, present, absent) in sights {
            let path = self.expand(path, Who::Super, &mut HashMap::new()).await;
            let seen = ids_of(&api.get_ok(&path).await);
            for key in *present {
                assert!(seen.contains(&self.id(key)), "{path} lacks {key}: {seen:?}");
            }
            for key in *absent {
                assert!(
                    !seen.contains(&self.id(key)),
                    "{path} shows {key}: {seen:?}"
                );
            }
        }
    }

    /// A POST naming another tenant's object (`{target}` = the id of `key`) must fail with 400
    /// exactly as the same request naming [`MISSING`] does, so that it does not tell whether
    /// the object exists.
    async fn same_as_missing(&self, api: &Api, path: &str, body: &str, key: &str) {
        let mut messages = Vec::new();
        for id in [self.id(key), MISSING] {
            let mut seen = HashMap::from([("target".to_string(), id.to_string())]);
            let (path, body) = self.request(path, Some(body), Who::Super, &mut seen).await;
            let v = expect(api, "POST", &path, body, 400).await;
            messages.push(v["message"].as_str().unwrap().replace(&id.to_string(), "N"));
        }
        assert_eq!(messages[0], messages[1], "{path} {body} with {key}");
    }
}

/// Sends a request that must answer `want` (with the error shape for 401, 403 and 404).
async fn expect(api: &Api, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
    let (status, v) = api.call(method, path, body).await;
    if let Some(problem) = mismatch(want, status, &v) {
        panic!("{method} {path}: {problem}: {v}");
    }
    v
}

/// Every item of a list belongs to `tenant` (`tenant_id`; `allow_null` for built-in roles).
fn all_of_tenant(list: &Value, tenant: i64, allow_null: bool) {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    assert!(
        items
            .iter()
            .all(|i| i["tenant_id"] == tenant || (allow_null && i["tenant_id"].is_null())),
        "not all of tenant {tenant}: {list}"
    );
}

/// The (served) OpenAPI document.
async fn openapi_document(m: &TestManager) -> Value {
    m.anonymous().get_ok("/api/v1/openapi.json").await
}

/// Runs every row for every caller; returns the number of calls.
async fn run_matrix(m: &TestManager, w: &World) -> usize {
    // A new endpoint without a row fails here, before anything else.
    let documented: BTreeSet<Route> = documented_routes(&openapi_document(m).await)
        .into_keys()
        .filter(|r| !is_agent_route(r))
        .collect();
    let covered = matrix_routes();
    let missing: Vec<_> = documented.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the matrix: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows for routes the document does not have: {stale:?}"
    );

    let mut failures = Vec::new();
    let mut calls = 0;
    for row in matrix() {
        for (who, want) in Who::ALL.into_iter().zip(row.want) {
            let (path, body) = w
                .request(row.path, row.body, who, &mut HashMap::new())
                .await;
            let api = if row.fresh_session {
                w.fresh_session(who).await
            } else {
                w.api(who)
            };
            let (status, v) = api.call(row.method, &path, body).await;
            calls += 1;
            if let Some(problem) = mismatch(want, status, &v) {
                failures.push(format!(
                    "{who:?} {} {path} ({}): {problem}: {v}",
                    row.method, row.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    calls
}

/// What the lists show each caller of tenant A: only their scope.
async fn check_list_scopes(w: &World) {
    let tadmin = w.api(Who::Tadmin);
    w.check_lists(
        &tadmin,
        &[
            ("/api/v1/clusters", &["a1"], &["a2", "b1"]),
            ("/api/v1/nodes", &["na1"], &["na2", "nb1"]),
            ("/api/v1/tasks?limit=1000", &["ta1"], &["ta2", "tb1"]),
            ("/api/v1/tasks?cluster_id={a2}", &[], &["ta2"]),
        ],
    )
    .await;
    let nodes = tadmin.get_ok("/api/v1/nodes").await;
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cluster_id"] == w.id("a1")),
        "{nodes}"
    );
    // Tasks reaching a2, by cluster or by node, are out of a1's scope.
    let tasks = tadmin.get_ok("/api/v1/tasks?limit=1000").await;
    for t in tasks.as_array().unwrap() {
        assert!(
            !t["clusters"]
                .as_array()
                .unwrap()
                .contains(&json!(w.id("a2"))),
            "{t}"
        );
        assert!(
            !t["nodes"].as_array().unwrap().contains(&json!(w.id("na2"))),
            "{t}"
        );
    }
    for who in [Who::Cadmin, Who::Viewer] {
        w.check_lists(
            &w.api(who),
            &[("/api/v1/tasks?limit=1000", &["ta1", "ta2"], &["tb1"])],
        )
        .await;
    }
    let sights: &[Sight] = &[(
        "/api/v1/clusters?tenant_id={tenant_b}",
        &["a1", "a2"],
        &["b1"],
    )];
    w.check_lists(&w.api(Who::Cadmin), sights).await;

    // What each caller holds, as the console learns it (super administrators: everything).
    let everything = w.admin.get_ok("/api/v1/permissions").await;
    let everything = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap());
    let everything = everything.collect::<Vec<_>>().join(" ");
    for (who, perms) in [
        (Who::Nobody, ""),
        (Who::Viewer, "tasks:read stats:read"),
        (
            Who::Tadmin,
            "clusters:read nodes:read tasks:read tasks:write files:read files:write stats:read tenants:read",
        ),
        (
            Who::Cadmin,
            "clusters:read clusters:write nodes:read nodes:write tasks:read files:read stats:read audit:read tenants:read",
        ),
        (Who::Super, &everything),
    ] {
        let me = w.api(who).get_ok("/api/v1/auth/me").await;
        let held: Vec<&str> = me["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(held.join(" "), perms, "{who:?}");
        assert_eq!(me["super_admin"], who == Who::Super, "{who:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Budget helpers
// ---------------------------------------------------------------------------------------------

/// A tenant with a budget, a cluster and a node in it.
async fn budget_tenant(
    m: &TestManager,
    admin: &Api,
    name: &str,
    policy: &str,
) -> (i64, i64, FakeAgent) {
    let spec = json!({"name": name, "bandwidth_budget": 100, "budget_policy": policy});
    let tenant = post_id(admin, "/api/v1/tenants", spec).await;
    let cluster = static_cluster(
        &format!("{name}-c"),
        vec![format!("{name}-n")],
        Some(tenant),
    );
    let cluster = admin.post_ok("/api/v1/clusters", cluster, 201).await;
    let node = FakeAgent::register(
        &m.url,
        cluster["join_token"].as_str().unwrap(),
        &format!("{name}-n"),
    )
    .await;
    (tenant, id_of(&cluster), node)
}

/// Creates `n` tasks of 30 B/s at once; returns each answer.
async fn create_concurrently(
    admin: &Api,
    tenant: i64,
    cluster: i64,
    n: usize,
    tag: &str,
) -> Vec<(u16, Value)> {
    let calls = (0..n).map(|i| {
        let admin = admin.clone();
        let body = json!({"source": {"kind": "image", "image": format!("app:{tag}-{i}")}, "clusters": [cluster],
                          "bandwidth": 30, "tenant_id": tenant});
        tokio::spawn(async move { admin.post("/api/v1/tasks", body).await })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// The tenant's tasks by state.
async fn tasks_by_state(admin: &Api, tenant: i64) -> BTreeMap<String, Vec<i64>> {
    let list = admin.get_ok("/api/v1/tasks?limit=1000").await;
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for t in list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tenant_id"] == tenant)
    {
        out.entry(t["state"].as_str().unwrap().to_string())
            .or_default()
            .push(id_of(t));
    }
    for ids in out.values_mut() {
        ids.sort_unstable();
    }
    out
}

async fn task_state(admin: &Api, id: i64) -> String {
    admin.get_ok(&format!("/api/v1/tasks/{id}")).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_state(admin: &Api, id: i64, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = task_state(admin, id).await;
        if now == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} stayed {now}, never became {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watches a tenant's bandwidth until [`Watch::finish`]: the sum of its running tasks' limits in
/// the task list, and the tenant's `bandwidth_in_use`.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Peaks>,
}

/// The largest figures a [`Watch`] saw.
#[derive(Debug, Default)]
struct Peaks {
    /// The largest sum of the running tasks' limits.
    sum: i64,
    /// The largest `bandwidth_in_use`.
    in_use: i64,
    /// How many times it looked.
    samples: usize,
}

impl Watch {
    fn start(admin: Api, tenant: i64) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut peaks = Peaks::default();
            while !flag.load(Ordering::Relaxed) {
                let list = admin.get_ok("/api/v1/tasks?limit=1000").await;
                let sum: i64 = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["tenant_id"] == tenant && t["state"] == "running")
                    .map(|t| t["bandwidth"].as_i64().unwrap_or(i64::MAX / 2))
                    .sum();
                let tenant = admin.get_ok(&format!("/api/v1/tenants/{tenant}")).await;
                peaks.sum = peaks.sum.max(sum);
                peaks.in_use = peaks
                    .in_use
                    .max(tenant["bandwidth_in_use"].as_i64().unwrap());
                peaks.samples += 1;
            }
            peaks
        });
        Watch { stop, handle }
    }

    async fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

async fn count_tasks(m: &TestManager, tenant: i64) -> i64 {
    use sqlx::Row as _;
    sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn matrix_suite(m: &TestManager) {
    let started = Instant::now();
    let w = setup(m).await;
    let calls = run_matrix(m, &w).await;
    check_list_scopes(&w).await;
    eprintln!(
        "permission matrix: {} rows x {} callers = {calls} calls in {:?}",
        matrix().len(),
        Who::ALL.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_on_sqlite() {
    let m = TestManager::sqlite().await;
    matrix_suite(&m).await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_on_postgres() {
    if !common::postgres::postgres_available() {
        return;
    }
    let pg = common::postgres::Postgres::start();
    let url = pg.create_database("permissions");
    let m = TestManager::start(&url, Arc::new(ManualClock::new(now_ms()))).await;
    matrix_suite(&m).await;
    m.shutdown().await;
}

/// The matrix's route list is the OpenAPI document's: paths and methods parsed from the served
/// `/api/v1/openapi.json`, the agent's routes aside, and the public ones exactly the rows where
/// an anonymous caller is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_routes_come_from_the_openapi_document() {
    let m = TestManager::sqlite().await;
    let doc = openapi_document(&m).await;
    let generated = serde_json::to_value(shoal::manager::openapi()).unwrap();
    assert_eq!(doc, generated, "the served document is the generated one");
    let documented = documented_routes(&doc);
    assert!(
        documented.len() > 40,
        "too few routes parsed: {documented:?}"
    );
    let routes = |pairs: &[(&str, &str)]| -> BTreeSet<Route> {
        pairs
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect()
    };

    let agent: BTreeSet<Route> = documented
        .keys()
        .filter(|r| is_agent_route(r))
        .cloned()
        .collect();
    let expected = routes(&[
        ("POST", "/api/v1/agent/register"),
        ("POST", "/api/v1/agent/heartbeat"),
        ("GET", "/api/v1/agent/work"),
        ("POST", "/api/v1/agent/progress"),
    ]);
    assert_eq!(
        agent, expected,
        "agent routes: see agent_endpoints_take_node_tokens_only"
    );

    let user: BTreeSet<Route> = documented
        .keys()
        .filter(|r| !is_agent_route(r))
        .cloned()
        .collect();
    assert_eq!(
        user,
        matrix_routes(),
        "the matrix has a row for each documented route, and no other"
    );

    // Public in the document ⇔ an anonymous caller gets through in the matrix.
    let public: BTreeSet<Route> = documented
        .iter()
        .filter(|(r, public)| **public && !is_agent_route(r))
        .map(|(r, _)| r.clone())
        .collect();
    let anonymous_ok: BTreeSet<Route> = matrix()
        .iter()
        .filter(|r| r.want[5] != 401)
        .map(|r| route_of(r.method, r.path))
        .collect();
    assert_eq!(public, anonymous_ok);
    assert_eq!(public, routes(&[("POST", "/api/v1/auth/login")]));
    m.shutdown().await;
}

/// Nodes' endpoints take node tokens (and registration a join token); user endpoints refuse
/// both, and nodes' endpoints refuse user tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_endpoints_take_node_tokens_only() {
    let m = TestManager::sqlite().await;
    let w = setup(&m).await;
    let tadmin = w.api(Who::Tadmin);
    let pat = tadmin
        .post_ok("/api/v1/tokens", json!({"name": "pat"}), 201)
        .await;
    let pat = Api::new(&m.url, Some(pat["token"].as_str().unwrap().to_string()));
    const HEARTBEAT: &str = r#"{"version":"0.1.0","role":"node","zone":"z1","peer_id":"p","address":"a:1",
        "disk_total":1000,"disk_free":500,"peers":2,"downloads":0,"load":0.5,"ready":true}"#;
    const PROGRESS: &str = r#"{"task_id":{ta1},"state":"running","blobs_total":1,"blobs_done":0,
        "bytes_total":10,"bytes_done":1,"bytes_peer":0,"bytes_upstream":1,"logs":[]}"#;
    const REGISTER: &str = r#"{"name":"a1-63","peer_id":"p","address":"a1-63:65001","version":"0.1.0",
        "role":"node","zone":"z1"}"#;
    let agent_calls: &[Check] = &[
        ("GET", "/api/v1/agent/work", None, 401),
        ("POST", "/api/v1/agent/heartbeat", Some(HEARTBEAT), 401),
        ("POST", "/api/v1/agent/progress", Some(PROGRESS), 401),
        ("POST", "/api/v1/agent/register", Some(REGISTER), 401),
    ];
    // User tokens (a session, a personal access token, the super administrator's) and none.
    for api in [&tadmin, &pat, &w.admin, &m.anonymous()] {
        w.check_all(api, agent_calls).await;
    }
    // A node token is no user token, nor a join token.
    let node = &w.na1.api;
    w.check_all(
        node,
        &[
            ("GET", "/api/v1/users", None, 401),
            ("GET", "/api/v1/auth/me", None, 401),
            ("GET", "/api/v1/tokens", None, 401),
            ("GET", "/api/v1/tasks", None, 401),
            ("POST", "/api/v1/tasks", Some(IMG_A1), 401),
            ("POST", "/api/v1/agent/register", Some(REGISTER), 401),
            ("GET", "/api/v1/agent/work", None, 200),
            ("POST", "/api/v1/agent/heartbeat", Some(HEARTBEAT), 204),
        ],
    )
    .await;
    // A join token only registers.
    let join = Api::new(&m.url, Some(w.join_a1.clone()));
    w.check_all(
        &join,
        &[
            ("GET", "/api/v1/users", None, 401),
            ("GET", "/api/v1/agent/work", None, 401),
            ("POST", "/api/v1/agent/heartbeat", Some(HEARTBEAT), 401),
            ("POST", "/api/v1/agent/register", Some(REGISTER), 200),
        ],
    )
    .await;
    m.shutdown().await;
}

/// A user of tenant B with task-admin on all of B (and, through a custom role of B, users,
/// roles and audit) neither sees nor changes tenant A's objects; the super administrator sees
/// both, and `?tenant_id=` narrows their lists where the API has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let m = TestManager::sqlite().await;
    let mut w = setup(&m).await;
    let (admin, ub) = (w.admin.clone(), w.ub.clone());
    let tenant_b = w.id("tenant_b");

    // Finished tasks in both tenants, for the statistics.
    let (na1, nb1) = (w.na1.clone(), w.nb1.clone());
    for (api, node, cluster, key) in [(&admin, na1, "a1", "ta_done"), (&ub, nb1, "b1", "tb_done")] {
        let id = post_id(
            api,
            "/api/v1/tasks",
            image_task("app:done", &[w.id(cluster)]),
        )
        .await;
        node.report(id, "succeeded", 1000, 600, 400).await;
        assert_eq!(task_state(&admin, id).await, "succeeded");
        w.set(key, id);
    }

    // Custom roles are made in the maker's tenant, so only a super administrator of B can make
    // one for B: one does (users, roles, audit), then goes.
    let owner = json!({"name": "b-owner", "password": PASSWORD, "tenant_id": tenant_b,
                       "bindings": [{"role_id": w.id("role_super_admin")}]});
    let owner = post_id(&admin, "/api/v1/users", owner).await;
    let b_owner = Api::login(&m.url, "b-owner", PASSWORD).await;
    let b_ops = json!({"name": "b-ops", "permissions": ["users:read", "users:write", "roles:read", "roles:write", "audit:read"]});
    let b_ops = b_owner.post_ok("/api/v1/roles", b_ops, 201).await;
    assert_eq!(b_ops["tenant_id"], tenant_b);
    w.set("b_ops", id_of(&b_ops));
    let ub_bindings = format!("/api/v1/users/{}/bindings", w.id("u_ub"));
    admin
        .post_ok(&ub_bindings, json!({"role_id": id_of(&b_ops)}), 201)
        .await;
    expect(
        &admin,
        "DELETE",
        &format!("/api/v1/users/{owner}"),
        None,
        204,
    )
    .await;
    let ub2 = json!({"name": "ub2", "password": PASSWORD});
    w.set("ub2", post_id(&ub, "/api/v1/users", ub2).await);

    // B's user: A's objects answer 404, or 403 where the request names tenant A.
    const A1_SPEC: &str =
        r#"{"name":"a1","zone":"z1","spec":{"kind":"static","hosts":{a1_hosts}}}"#;
    #[rustfmt::skip]
    const OUT_OF_REACH: &[Check] = &[
        ("GET", "/api/v1/tasks/{ta1}", None, 404),
        ("GET", "/api/v1/tasks/{ta1}/nodes", None, 404),
        ("GET", "/api/v1/tasks/{ta2}/logs", None, 404),
        ("POST", "/api/v1/tasks/{ta1}/stop", None, 404),
        ("POST", "/api/v1/tasks/{ta2}/copy", None, 404),
        ("DELETE", "/api/v1/tasks/{ta1}", None, 404),
        ("DELETE", "/api/v1/tasks/{ta_done}", None, 404),
        ("GET", "/api/v1/clusters/{a1}", None, 404),
        ("PUT", "/api/v1/clusters/{a1}", Some(A1_SPEC), 404),
        ("POST", "/api/v1/clusters/{a1}/token", None, 404),
        ("POST", "/api/v1/clusters/{a2}/discover", None, 404),
        ("DELETE", "/api/v1/clusters/{a2}", None, 404),
        ("GET", "/api/v1/nodes/{na1}", None, 404),
        ("DELETE", "/api/v1/nodes/{na2}", None, 404),
        ("GET", "/api/v1/files/{fa}", None, 404),
        ("DELETE", "/api/v1/files/{fa}", None, 404),
        ("GET", "/api/v1/users/{u_cadmin}", None, 404),
        ("PATCH", "/api/v1/users/{u_cadmin}", Some(r#"{"password":"taken-over"}"#), 404),
        ("PATCH", "/api/v1/users/{u_admin}", Some(r#"{"disabled":true}"#), 404),
        ("DELETE", "/api/v1/users/{u_nobody}", None, 404),
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_task_admin}}"#), 404),
        ("DELETE", "/api/v1/bindings/{b_cadmin}", None, 404),
        ("GET", "/api/v1/roles/{role_viewer}", None, 404),
        ("PUT", "/api/v1/roles/{role_viewer}", Some(r#"{"name":"x","permissions":["tasks:read"]}"#), 404),
        ("DELETE", "/api/v1/roles/{role_viewer}", None, 404),
        ("GET", "/api/v1/tenants/{tenant_a}", None, 404),
        ("PATCH", "/api/v1/tenants/{tenant_a}", Some(r#"{"bandwidth_budget":1}"#), 403),
        ("POST", "/api/v1/users", Some(r#"{"name":"x","password":"{password}","tenant_id":1}"#), 403),
        ("POST", "/api/v1/tasks", Some(r#"{"source":{"kind":"image","image":"x:1"},"clusters":[{a1}],"tenant_id":1}"#), 403),
    ];
    w.check_all(&ub, OUT_OF_REACH).await;
    // Nothing changed in A.
    assert_eq!(task_state(&admin, w.id("ta1")).await, "running");
    for name in ["cadmin", "nobody"] {
        Api::login(&m.url, name, PASSWORD).await;
    }
    w.check_lists(
        &admin,
        &[
            ("/api/v1/clusters", &["a1", "a2"], &[]),
            ("/api/v1/files", &["fa"], &[]),
        ],
    )
    .await;

    // Naming A's objects in B: 400, worded as for objects that do not exist.
    #[rustfmt::skip]
    const NAMING_A: &[(&str, &str)] = &[
        (r#"{"source":{"kind":"image","image":"x:1"},"clusters":[{target}]}"#, "a1"),
        (r#"{"source":{"kind":"image","image":"x:1"},"clusters":[{b1},{target}]}"#, "a2"),
        (r#"{"source":{"kind":"image","image":"x:1"},"nodes":[{target}]}"#, "na1"),
        (r#"{"source":{"kind":"image","image":"x:1"},"clusters":[{b1}],"nodes":[{target}]}"#, "na2"),
        (r#"{"source":{"kind":"file","version_id":{target}},"clusters":[{b1}]}"#, "fa"),
    ];
    for (body, key) in NAMING_A {
        w.same_as_missing(&ub, "/api/v1/tasks", body, key).await;
    }
    let bindings = "/api/v1/users/{ub2}/bindings";
    w.same_as_missing(&ub, bindings, r#"{"role_id":{target}}"#, "role_viewer")
        .await;
    w.same_as_missing(
        &ub,
        bindings,
        r#"{"role_id":{role_task_admin},"clusters":[{target}]}"#,
        "a1",
    )
    .await;

    // B's lists hold none of A's objects, whatever `?tenant_id=` says.
    const A_USERS: &[&str] = &[
        "u_admin", "u_cadmin", "u_tadmin", "u_viewer", "u_nobody", "u_target",
    ];
    #[rustfmt::skip]
    const B_SEES: &[Sight] = &[
        ("/api/v1/tasks?limit=1000", &["tb1", "tb_done"], &["ta1", "ta2", "ta_done"]),
        ("/api/v1/tasks?cluster_id={a1}", &[], &["ta1", "ta_done"]),
        ("/api/v1/clusters", &["b1"], &["a1", "a2"]),
        ("/api/v1/clusters?tenant_id={tenant_a}", &["b1"], &["a1", "a2"]),
        ("/api/v1/nodes", &["nb1"], &["na1", "na2"]),
        ("/api/v1/nodes?cluster_id={a1}", &[], &["na1"]),
        ("/api/v1/files", &["fb"], &["fa"]),
        ("/api/v1/users", &["u_ub", "ub2"], A_USERS),
        ("/api/v1/users?tenant_id={tenant_a}", &["u_ub"], A_USERS),
        ("/api/v1/roles?tenant_id={tenant_a}", &["b_ops", "role_task_admin"], &["role_viewer"]),
        ("/api/v1/tenants", &["tenant_b"], &["tenant_a"]),
        ("/api/v1/stats", &["tb_done"], &["ta_done"]),
        ("/api/v1/stats?tenant_id={tenant_a}", &["tb_done"], &["ta_done"]),
    ];
    w.check_lists(&ub, B_SEES).await;
    all_of_tenant(
        &ub.get_ok("/api/v1/users?tenant_id=1").await,
        tenant_b,
        false,
    );
    all_of_tenant(
        &ub.get_ok("/api/v1/roles?tenant_id=1").await,
        tenant_b,
        true,
    );
    let audit = ub.get_ok("/api/v1/audit?limit=1000").await;
    assert!(!audit.as_array().unwrap().is_empty());
    all_of_tenant(&audit, tenant_b, false);
    // Nor do A's lists hold B's.
    let cadmin = w.api(Who::Cadmin);
    #[rustfmt::skip]
    const A_SEES: &[Sight] = &[
        ("/api/v1/stats?tenant_id={tenant_b}", &["ta_done"], &["tb_done"]),
        ("/api/v1/nodes", &["na1"], &["nb1"]),
        ("/api/v1/files", &["fa"], &["fb"]),
    ];
    w.check_lists(&cadmin, A_SEES).await;
    all_of_tenant(&cadmin.get_ok("/api/v1/audit?limit=1000").await, 1, false);

    // The super administrator sees both tenants, and narrows lists by tenant.
    #[rustfmt::skip]
    const SUPER_SEES: &[Sight] = &[
        ("/api/v1/tasks?limit=1000", &["ta1", "tb1"], &[]),
        ("/api/v1/clusters", &["a1", "a2", "b1"], &[]),
        ("/api/v1/clusters?tenant_id={tenant_b}", &["b1"], &["a1", "a2"]),
        ("/api/v1/nodes", &["na1", "nb1"], &[]),
        ("/api/v1/files", &["fa", "fb"], &[]),
        ("/api/v1/users", &["u_cadmin", "u_ub"], &[]),
        ("/api/v1/users?tenant_id={tenant_b}", &["u_ub", "ub2"], A_USERS),
        ("/api/v1/roles?tenant_id={tenant_b}", &["b_ops"], &["role_viewer"]),
        ("/api/v1/roles", &["b_ops", "role_viewer"], &[]),
        ("/api/v1/stats", &["ta_done", "tb_done"], &[]),
        ("/api/v1/stats?tenant_id={tenant_b}", &["tb_done"], &["ta_done"]),
        ("/api/v1/tenants", &["tenant_a", "tenant_b"], &[]),
    ];
    w.check_lists(&admin, SUPER_SEES).await;
    let audit = admin.get_ok("/api/v1/audit?limit=1000").await;
    let tenants: BTreeSet<Option<i64>> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenant_id"].as_i64())
        .collect();
    assert!(
        tenants.contains(&Some(1)) && tenants.contains(&Some(tenant_b)),
        "{tenants:?}"
    );
    w.check_all(
        &admin,
        &[
            ("GET", "/api/v1/tasks/{tb1}", None, 200),
            ("GET", "/api/v1/clusters/{b1}", None, 200),
            ("GET", "/api/v1/nodes/{nb1}", None, 200),
            ("GET", "/api/v1/files/{fb}", None, 200),
            ("GET", "/api/v1/users/{u_ub}", None, 200),
            ("GET", "/api/v1/roles/{b_ops}", None, 200),
            ("GET", "/api/v1/tenants/{tenant_b}", None, 200),
        ],
    )
    .await;
    m.shutdown().await;
}

/// Nobody hands out more than they hold: not through roles, bindings, password resets or
/// personal access tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_escalation() {
    let m = TestManager::sqlite().await;
    let mut w = setup(&m).await;
    let admin = w.admin.clone();

    // The task administrator holds neither roles:write nor users:write.
    #[rustfmt::skip]
    const TADMIN: &[Check] = &[
        ("POST", "/api/v1/roles", Some(r#"{"name":"mine","permissions":["tasks:write","users:write"]}"#), 403),
        ("POST", "/api/v1/roles", Some(r#"{"name":"mine","permissions":["tasks:read"]}"#), 403),
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_super_admin}}"#), 403),
        ("POST", "/api/v1/users/{u_tadmin}/bindings", Some(r#"{"role_id":{role_super_admin}}"#), 403),
    ];
    w.check_all(&w.api(Who::Tadmin), TADMIN).await;

    // A user manager: users and roles through a custom role, plus what the viewer role holds.
    let perms = [
        "users:read",
        "users:write",
        "roles:read",
        "roles:write",
        "tasks:read",
        "stats:read",
    ];
    let role = post_id(
        &admin,
        "/api/v1/roles",
        json!({"name": "user-manager", "permissions": perms}),
    )
    .await;
    w.set("role_user_manager", role);
    let umgr = json!({"name": "umgr", "password": PASSWORD, "bindings": [{"role_id": role}]});
    w.set("u_umgr", post_id(&admin, "/api/v1/users", umgr).await);
    let umgr = Api::login(&m.url, "umgr", PASSWORD).await;
    #[rustfmt::skip]
    const UMGR: &[Check] = &[
        // Roles: only with what it holds, never `system`, never a built-in one.
        ("POST", "/api/v1/roles", Some(r#"{"name":"more","permissions":["tasks:write"]}"#), 403),
        ("POST", "/api/v1/roles", Some(r#"{"name":"more","permissions":["tasks:read","clusters:write"]}"#), 403),
        ("POST", "/api/v1/roles", Some(r#"{"name":"more","permissions":["audit:read"]}"#), 403),
        ("POST", "/api/v1/roles", Some(r#"{"name":"god","permissions":["system"]}"#), 400),
        ("PUT", "/api/v1/roles/{role_user_manager}", Some(r#"{"name":"user-manager","permissions":["tasks:write"]}"#), 403),
        ("PUT", "/api/v1/roles/{role_super_admin}", Some(r#"{"name":"x","permissions":["tasks:read"]}"#), 409),
        ("POST", "/api/v1/roles", Some(r#"{"name":"fine","permissions":["tasks:read"]}"#), 201),
        // Bindings: no super administrators, no role with more than it holds.
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_super_admin}}"#), 403),
        ("POST", "/api/v1/users/{u_umgr}/bindings", Some(r#"{"role_id":{role_super_admin}}"#), 403),
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_cluster_admin}}"#), 403),
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_task_admin},"clusters":[{a1}]}"#), 403),
        ("POST", "/api/v1/users", Some(r#"{"name":"new-super","password":"{password}","bindings":[{"role_id":{role_super_admin}}]}"#), 403),
        ("POST", "/api/v1/users/{u_nobody}/bindings", Some(r#"{"role_id":{role_viewer}}"#), 201),
        // Super administrators are out of reach: no reset, disabling, deletion, unbinding.
        ("PATCH", "/api/v1/users/{u_admin}", Some(r#"{"password":"taken-over"}"#), 403),
        ("PATCH", "/api/v1/users/{u_admin}", Some(r#"{"disabled":true}"#), 403),
        ("DELETE", "/api/v1/users/{u_admin}", None, 403),
        ("DELETE", "/api/v1/bindings/{b_admin}", None, 403),
        // So is anyone holding what it does not: a password reset would hand that over.
        ("PATCH", "/api/v1/users/{u_cadmin}", Some(r#"{"password":"taken-over"}"#), 403),
        ("PATCH", "/api/v1/users/{u_tadmin}", Some(r#"{"password":"taken-over"}"#), 403),
        ("PATCH", "/api/v1/users/{u_cadmin}", Some(r#"{"disabled":true}"#), 403),
        ("DELETE", "/api/v1/users/{u_cadmin}", None, 403),
        ("DELETE", "/api/v1/bindings/{b_tadmin}", None, 403),
        // Users within its reach it manages.
        ("POST", "/api/v1/users", Some(r#"{"name":"junior","password":"{password}","bindings":[{"role_id":{role_viewer}}]}"#), 201),
        ("PATCH", "/api/v1/users/{u_viewer}", Some(r#"{"password":"reset-by-umgr"}"#), 200),
        ("DELETE", "/api/v1/bindings/{b_viewer}", None, 204),
    ];
    w.check_all(&umgr, UMGR).await;
    // The refused ones left every password as it was; the reset one took.
    for (name, password) in [
        ("admin", ADMIN_PASSWORD),
        ("cadmin", PASSWORD),
        ("tadmin", PASSWORD),
    ] {
        Api::login(&m.url, name, password).await;
    }
    let viewer = Api::login(&m.url, "viewer", "reset-by-umgr").await;
    let users = admin.get_ok("/api/v1/users").await;
    assert!(
        !users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "new-super"),
        "a refused user was created"
    );
    let bind = json!({"role_id": w.id("role_super_admin")});
    let path = format!("/api/v1/users/{}/bindings", w.id("u_nobody"));
    let v = expect(&umgr, "POST", &path, Some(bind), 403).await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("super administrators"),
        "{v}"
    );
    let v = expect(
        &umgr,
        "POST",
        "/api/v1/roles",
        Some(json!({"name": "m", "permissions": ["files:read"]})),
        403,
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("files:read"), "{v}");

    // A user manager that runs tasks on a1 binds task-admin on a1 only. (The user `nobody` now
    // holds the viewer role, whose tasks:read covers every cluster: beyond its reach.)
    let role = post_id(
        &admin,
        "/api/v1/roles",
        json!({"name": "user-admin", "permissions": ["users:read", "users:write"]}),
    )
    .await;
    let smgr = json!({"name": "smgr", "password": PASSWORD,
                      "bindings": [{"role_id": role}, {"role_id": w.id("role_task_admin"), "clusters": [w.id("a1")]}]});
    admin.post_ok("/api/v1/users", smgr, 201).await;
    let smgr = Api::login(&m.url, "smgr", PASSWORD).await;
    #[rustfmt::skip]
    const SMGR: &[Check] = &[
        ("POST", "/api/v1/users/{u_target}/bindings", Some(r#"{"role_id":{role_task_admin},"clusters":[{a2}]}"#), 403),
        ("POST", "/api/v1/users/{u_target}/bindings", Some(r#"{"role_id":{role_task_admin},"clusters":[{a1},{a2}]}"#), 403),
        ("POST", "/api/v1/users/{u_target}/bindings", Some(r#"{"role_id":{role_task_admin},"clusters":[]}"#), 403),
        ("POST", "/api/v1/users/{u_target}/bindings", Some(r#"{"role_id":{role_task_admin},"clusters":[{a1}]}"#), 201),
        // Who holds task-admin on a1 (and nothing more) is within its reach; who holds more is not.
        ("PATCH", "/api/v1/users/{u_target}", Some(r#"{"password":"reset-by-smgr"}"#), 200),
        ("PATCH", "/api/v1/users/{u_cadmin}", Some(r#"{"password":"taken-over"}"#), 403),
        ("PATCH", "/api/v1/users/{u_nobody}", Some(r#"{"password":"taken-over"}"#), 403),
    ];
    w.check_all(&smgr, SMGR).await;

    // Personal access tokens narrow their user: the task administrator's, read-only.
    let token = |api: Api, scopes: Value| async move {
        let t = api
            .post_ok(
                "/api/v1/tokens",
                json!({"name": "narrow", "scopes": scopes}),
                201,
            )
            .await;
        Api::new(&api.base, Some(t["token"].as_str().unwrap().to_string()))
    };
    let narrow = token(w.api(Who::Tadmin), json!(["tasks:read"])).await;
    const NARROW: &[Check] = &[
        ("POST", "/api/v1/tasks", Some(IMG_A1), 403),
        ("GET", "/api/v1/tasks", None, 200),
        ("POST", "/api/v1/tasks/{ta1}/stop", None, 403),
        ("GET", "/api/v1/tasks/{ta2}", None, 404),
        ("GET", "/api/v1/files", None, 403),
        ("POST", "/api/v1/tokens", Some(r#"{"name":"wider"}"#), 403),
    ];
    w.check_all(&narrow, NARROW).await;
    w.check_all(
        &w.api(Who::Tadmin),
        &[("POST", "/api/v1/tasks", Some(IMG_A1), 201)],
    )
    .await;
    let wider = r#"{"name":"w","scopes":["tasks:write"]}"#;
    w.check_all(&viewer, &[("POST", "/api/v1/tokens", Some(wider), 403)])
        .await;
    // A super administrator's narrowed token is no longer a super administrator's.
    let admin_pat = token(admin.clone(), json!(["tasks:read"])).await;
    assert_eq!(
        admin_pat.get_ok("/api/v1/auth/me").await["super_admin"],
        false
    );
    const ADMIN_PAT: &[Check] = &[
        ("GET", "/api/v1/tasks/{tb1}", None, 404),
        ("GET", "/api/v1/tasks/{ta2}", None, 200),
        ("GET", "/api/v1/users", None, 403),
        ("POST", "/api/v1/tenants", Some(r#"{"name":"nope"}"#), 403),
        ("POST", "/api/v1/tasks", Some(IMG_A1), 403),
    ];
    w.check_all(&admin_pat, ADMIN_PAT).await;
    m.shutdown().await;
}

/// Six tasks of 30 B/s created at once in a tenant with a budget of 100 B/s: with `wait`, three
/// run and three wait, the sum never passes the budget, and finished tasks make room for the
/// waiting ones in order; with `refuse`, three are created and three refused without a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_holds_across_concurrent_tasks() {
    let m = TestManager::sqlite().await;
    let admin = m.admin().await;

    // Policy `wait`.
    let (tenant, cluster, node) = budget_tenant(&m, &admin, "budget-wait", "wait").await;
    let watch = Watch::start(admin.clone(), tenant);
    let answers = create_concurrently(&admin, tenant, cluster, 6, "wait").await;
    for (status, v) in &answers {
        assert_eq!(*status, 201, "{v}");
    }
    let states = tasks_by_state(&admin, tenant).await;
    let running = states.get("running").cloned().unwrap_or_default();
    let mut waiting = states.get("waiting").cloned().unwrap_or_default();
    assert_eq!((running.len(), waiting.len()), (3, 3), "{states:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        tasks_by_state(&admin, tenant).await,
        states,
        "tasks moved without room in the budget"
    );
    let mut active = running.clone();
    while !waiting.is_empty() {
        let done = active.remove(0);
        node.report(done, "succeeded", 1000, 1000, 0).await;
        assert_eq!(task_state(&admin, done).await, "succeeded");
        let next = waiting.remove(0);
        wait_state(&admin, next, "running").await;
        active.push(next);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for w in &waiting {
            assert_eq!(
                task_state(&admin, *w).await,
                "waiting",
                "task {w} started out of order or over the budget"
            );
        }
    }
    for t in active {
        node.report(t, "succeeded", 1000, 1000, 0).await;
    }
    let peaks = watch.finish().await;
    assert!(peaks.samples > 5, "the watcher hardly ran: {peaks:?}");
    assert!(
        peaks.sum <= 100 && peaks.in_use <= 100,
        "budget exceeded: {peaks:?}"
    );
    assert_eq!(peaks.sum, 90, "{peaks:?}");
    let states = tasks_by_state(&admin, tenant).await;
    assert_eq!(
        states.keys().collect::<Vec<_>>(),
        ["succeeded"],
        "{states:?}"
    );
    assert_eq!(
        admin.get_ok(&format!("/api/v1/tenants/{tenant}")).await["bandwidth_in_use"],
        0
    );

    // Policy `refuse`, several rounds (the scheduler ticks meanwhile).
    let (tenant, cluster, node) = budget_tenant(&m, &admin, "budget-refuse", "refuse").await;
    let watch = Watch::start(admin.clone(), tenant);
    for round in 0..4 {
        let answers =
            create_concurrently(&admin, tenant, cluster, 6, &format!("refuse-{round}")).await;
        let created: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == 201)
            .map(|(_, v)| v)
            .collect();
        let refused: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == 409)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            (created.len(), refused.len()),
            (3, 3),
            "round {round}: {answers:?}"
        );
        for v in &refused {
            assert_eq!(v["code"], "CONFLICT", "{v}");
            assert!(v["message"].as_str().unwrap().contains("budget"), "{v}");
        }
        for v in &created {
            assert_eq!(v["state"], "running", "round {round}: {v}");
        }
        assert_eq!(
            count_tasks(&m, tenant).await,
            3 * (round + 1),
            "round {round}: a refused task left a row"
        );
        let states = tasks_by_state(&admin, tenant).await;
        assert_eq!(
            states.get("running").map(Vec::len),
            Some(3),
            "round {round}: {states:?}"
        );
        for v in created {
            node.report(id_of(v), "succeeded", 1000, 1000, 0).await;
        }
        assert_eq!(
            admin.get_ok(&format!("/api/v1/tenants/{tenant}")).await["bandwidth_in_use"],
            0
        );
    }
    let peaks = watch.finish().await;
    assert!(
        peaks.sum <= 100 && peaks.in_use <= 100,
        "budget exceeded: {peaks:?}"
    );
    m.shutdown().await;
}
