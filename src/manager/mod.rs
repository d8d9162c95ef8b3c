//! The control plane: REST API under `/api/v1` (users, roles, tenants, clusters, nodes, tasks,
//! file versions, statistics, audit), its database, and the scheduler. Nodes reach it through
//! the agent protocol in [`protocol`]; the OpenAPI document at `/api/v1/openapi.json` is
//! generated from the handlers themselves.
//!
//! - [`db`]: the pool over SQLite or PostgreSQL and the migrations.
//! - [`auth`], [`rbac`]: tokens, passwords, permissions and the [`rbac::Caller`] extractor.
//! - [`audit`]: the audit log, written by a layer around every change.
//! - `users`, `tenants`, `clusters`, `nodes`, `tasks`, `files`, `stats`: the API's resources.
//! - [`agent_api`]: the endpoints nodes call; [`scheduler`]: timed and cron tasks, budgets.

pub mod agent_api;
pub mod audit;
pub mod auth;
mod auth_api;
pub mod clock;
mod clusters;
mod console;
pub mod db;
pub mod discovery;
pub mod error;
mod files;
mod nodes;
pub mod protocol;
pub mod rbac;
pub mod scheduler;
mod stats;
pub mod tasks;
mod tenants;
mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::Row as _;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use clock::{Clock, ManualClock, SystemClock};
pub use clusters::local_cluster;
pub use db::{Backend, Db, DbError};
pub use error::{ApiError, ErrorBody};

/// The largest request body the API accepts.
pub const MAX_BODY: usize = 1 << 20;

/// How a manager runs.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    /// The API's address.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database: String,
    /// The first super administrator's password (first start only); `None` = generate one and
    /// print it once.
    pub admin_password: Option<String>,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// How often cluster members are discovered again (Kubernetes, Mesos).
    pub discovery_every: Duration,
    /// How often the scheduler looks for due tasks.
    pub tick: Duration,
    /// How long a node may stay silent (no heartbeat) before its assignments fail.
    pub node_gone: Duration,
}

impl ManagerSettings {
    /// Defaults for a data directory: SQLite in `DATA_DIR/manager.db`, port 8080 on loopback.
    pub fn new(data_dir: &std::path::Path) -> ManagerSettings {
        ManagerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: format!("sqlite://{}", data_dir.join("manager.db").display()),
            admin_password: None,
            session_ttl: Duration::from_secs(12 * 3600),
            discovery_every: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            node_gone: Duration::from_secs(600),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct ManagerState {
    /// The database.
    pub db: Db,
    /// Settings.
    pub settings: Arc<ManagerSettings>,
    /// The clock (a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// Failed sign-ins.
    pub logins: Arc<auth::LoginLimiter>,
    /// Wakes long polls of nodes whose assignments changed.
    pub work: Arc<agent_api::WorkSignals>,
    /// The manager's metrics.
    pub metrics: Arc<ManagerMetrics>,
    /// When this manager started (by its clock).
    pub started_ms: i64,
}

impl ManagerState {
    /// Now, by the manager's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The manager's Prometheus metrics.
pub struct ManagerMetrics {
    /// The registry they live in.
    pub registry: prometheus::Registry,
    /// Requests by route and status.
    pub requests: prometheus::IntCounterVec,
    /// Request latency by route.
    pub latency: prometheus::HistogramVec,
}

impl ManagerMetrics {
    fn new() -> Result<ManagerMetrics, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "shoal_manager_http_requests_total",
                "API requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "shoal_manager_http_request_duration_seconds",
                "API request latency by route",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(ManagerMetrics {
            registry,
            requests,
            latency,
        })
    }
}

/// Why a manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query at start-up.
    #[error("database error at start-up: {0}")]
    Query(#[from] sqlx::Error),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Setting up the first administrator failed.
    #[error("cannot create the first administrator: {0}")]
    Bootstrap(String),
}

/// The first administrator, when this start created one.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    /// The user name (`admin`).
    pub name: String,
    /// The password: as given, or generated (shown once).
    pub password: String,
    /// Whether the password was generated.
    pub generated: bool,
}

/// A manager with its port bound and database ready.
pub struct Manager {
    listener: TcpListener,
    state: ManagerState,
    first_admin: Option<FirstAdmin>,
}

impl Manager {
    /// Opens the database (migrating it), creates the built-in roles, the default tenant and
    /// the first administrator when missing, and binds the port.
    ///
    /// # Errors
    /// See [`ManagerError`].
    pub async fn bind(
        settings: ManagerSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Manager, ManagerError> {
        let db = Db::open(&settings.database).await?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ManagerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let state = ManagerState {
            db,
            settings: Arc::new(settings),
            clock: clock.clone(),
            logins: Arc::default(),
            work: Arc::default(),
            metrics: Arc::new(ManagerMetrics::new()?),
            started_ms: clock.now_ms(),
        };
        let first_admin = bootstrap(&state).await?;
        Ok(Manager {
            listener,
            state,
            first_admin,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The first administrator, if this start created them.
    pub fn first_admin(&self) -> Option<&FirstAdmin> {
        self.first_admin.as_ref()
    }

    /// The shared state (tests use it to reach the database and clock).
    pub fn state(&self) -> &ManagerState {
        &self.state
    }

    /// Serves the API and runs the scheduler and discovery until `shutdown` resolves.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ManagerError> {
        let background = scheduler::spawn(self.state.clone());
        let app = router(self.state.clone());
        let result = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        background.abort();
        result.map_err(ManagerError::Serve)
    }
}

/// Creates what a fresh database needs: the built-in roles, the default tenant, and the first
/// super administrator when there is no user at all.
async fn bootstrap(state: &ManagerState) -> Result<Option<FirstAdmin>, ManagerError> {
    let pool = &state.db.pool;
    let now = state.now_ms();
    for role in rbac::BUILTIN_ROLES {
        let exists = sqlx::query("SELECT id FROM roles WHERE tenant_id IS NULL AND name = $1")
            .bind(role.name)
            .fetch_optional(pool)
            .await?;
        let perms = db::to_json(&role.permissions);
        if exists.is_none() {
            // Two managers starting at once on one PostgreSQL: the unique index settles it.
            let _ = sqlx::query(
                "INSERT INTO roles (tenant_id, name, description, permissions, builtin, created_at) \
                 VALUES (NULL, $1, $2, $3, TRUE, $4)",
            )
            .bind(role.name)
            .bind(role.description)
            .bind(&perms)
            .bind(now)
            .execute(pool)
            .await;
        } else {
            // Built-in roles follow the code of the running version.
            sqlx::query(
                "UPDATE roles SET permissions = $1, description = $2 WHERE tenant_id IS NULL AND name = $3",
            )
            .bind(&perms)
            .bind(role.description)
            .bind(role.name)
            .execute(pool)
            .await?;
        }
    }
    let _ = sqlx::query("INSERT INTO tenants (name, created_at) VALUES ('default', $1)")
        .bind(now)
        .execute(pool)
        .await;
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    if users > 0 {
        return Ok(None);
    }
    let (password, generated) = match &state.settings.admin_password {
        Some(p) => (p.clone(), false),
        None => (auth::new_token("")[..20].to_string(), true),
    };
    auth::check_password(&password).map_err(|e| ManagerError::Bootstrap(e.message))?;
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(|e| ManagerError::Bootstrap(e.to_string()))?
            .map_err(|e| ManagerError::Bootstrap(e.message))?
    };
    let created = create_first_admin(state, &hash, now).await;
    match created {
        Ok(()) => {}
        // Another manager on the same database created it at the same moment.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(FirstAdmin {
        name: "admin".into(),
        password,
        generated,
    }))
}

/// Writes the first super administrator and their binding, in one transaction.
async fn create_first_admin(state: &ManagerState, hash: &str, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = state.db.pool.begin().await?;
    let tenant: i64 = sqlx::query("SELECT id FROM tenants WHERE name = 'default'")
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
    let user: i64 = sqlx::query(
        "INSERT INTO users (tenant_id, name, password_hash, created_at) VALUES ($1, 'admin', $2, $3) RETURNING id",
    )
    .bind(tenant)
    .bind(hash)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?
    .try_get("id")?;
    let role: i64 = sqlx::query("SELECT id FROM roles WHERE tenant_id IS NULL AND name = $1")
        .bind(rbac::SUPER_ADMIN)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
    sqlx::query(
        "INSERT INTO role_bindings (user_id, role_id, clusters, created_at) VALUES ($1, $2, '[]', $3)",
    )
    .bind(user)
    .bind(role)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "shoal manager",
        description = "Users, roles, tenants, clusters, nodes, distribution tasks, file versions, statistics and audit of a shoal installation."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes with their OpenAPI description.
fn api() -> OpenApiRouter<ManagerState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth_api::routes())
        .merge(users::routes())
        .merge(tenants::routes())
        .merge(clusters::routes())
        .merge(nodes::routes())
        .merge(tasks::routes())
        .merge(files::routes())
        .merge(stats::routes())
        .merge(audit::routes())
        .merge(agent_api::routes())
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// The whole HTTP application: the API, its OpenAPI document, `/metrics`, `/healthz`, and the
/// web console at every other path.
pub fn router(state: ManagerState) -> Router {
    let (api, doc) = api().split_for_parts();
    let doc = Arc::new(doc);
    api.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    )
    .route("/healthz", axum::routing::get(healthz))
    .route("/metrics", axum::routing::get(metrics))
    .fallback(console::serve)
    // Outermost first: the audit layer sees every change's final status (denials included);
    // the metrics layer times the whole request; the body limit guards the JSON parsers; the
    // trace layer logs method, path and status (never headers, which carry tokens).
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        audit::layer,
    ))
    .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
    .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
    .layer(tower_http::trace::TraceLayer::new_for_http())
    .with_state(state)
}

async fn healthz(axum::extract::State(state): axum::extract::State<ManagerState>) -> ApiResultText {
    sqlx::query("SELECT 1")
        .execute(&state.db.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "health check: database unreachable");
            ApiError {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                code: "UNAVAILABLE",
                message: "the database is unreachable".into(),
            }
        })?;
    Ok("ok")
}

type ApiResultText = Result<&'static str, ApiError>;

async fn metrics(axum::extract::State(state): axum::extract::State<ManagerState>) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&state.metrics.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Counts and times requests by their route template (not the raw path, which has ids).
async fn observe(
    axum::extract::State(state): axum::extract::State<ManagerState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .latency
        .with_label_values(&[&method, &route])
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    response
}
