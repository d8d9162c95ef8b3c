//! The manager's database: one SQL dialect over sqlx's `Any` driver, so the same queries run on
//! SQLite (the default, embedded) and PostgreSQL (for several managers). Each backend has its
//! own migrations (`migrations/sqlite`, `migrations/postgres`), differing only in how ids are
//! generated. Times are Unix milliseconds (`BIGINT`), lists and specs JSON text.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    Url,
    /// Connecting failed.
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one manager.
    Sqlite,
    /// PostgreSQL: one or more managers.
    Postgres,
}

/// The pool and what it talks to.
#[derive(Debug, Clone)]
pub struct Db {
    /// The connection pool.
    pub pool: AnyPool,
    /// The backend.
    pub backend: Backend,
}

impl Db {
    /// Connects (creating a SQLite file if missing) and applies the migrations.
    ///
    /// # Errors
    /// See [`DbError`].
    pub async fn open(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(DbError::Url);
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                // WAL lets readers go on while one writer writes; a busy writer waits instead of
                // failing. One file, so a handful of connections is plenty.
                let url = sqlite_url(url);
                let pool = options
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .map_err(DbError::Connect)?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                pool
            }
            Backend::Postgres => {
                let pool = options
                    .max_connections(16)
                    .connect(url)
                    .await
                    .map_err(DbError::Connect)?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                pool
            }
        };
        Ok(Db { pool, backend })
    }
}

impl Db {
    /// Begins a transaction that will write after reading. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`), so another writer in between cannot make it fail halfway.
    ///
    /// # Errors
    /// When no connection is available.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }
}

/// Adds `mode=rwc` so a missing SQLite file is created.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads a JSON text column into `T`, with an empty default when the text is malformed (it is
/// only ever written by the manager itself).
pub fn json_col<T: serde::de::DeserializeOwned + Default>(row: &AnyRow, col: &str) -> T {
    row.try_get::<String, _>(col)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Serializes a value for a JSON text column.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

/// Reads a flag column: BOOLEAN on PostgreSQL, INTEGER 0/1 on SQLite (the `Any` driver does
/// not map SQLite's BOOLEAN).
///
/// # Errors
/// When the column is neither.
pub fn flag(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    row.try_get::<bool, _>(col)
        .or_else(|_| row.try_get::<i64, _>(col).map(|v| v != 0))
}
