//! Authentication: argon2 password hashes, bearer tokens (sessions from a login, personal
//! access tokens, node tokens, cluster join tokens), the [`Caller`] extractor that every
//! authenticated endpoint takes, and the login rate limiter.
//!
//! Tokens are 32 random bytes, base64url, with a prefix saying what they are (`shs_` session,
//! `shp_` personal, `shn_` node, `shj_` join). Only their SHA-256 is stored, so a copy of the
//! database does not let anyone in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use sha2::Digest as _;
use sqlx::Row as _;

use super::ManagerState;
use super::db::json_col;
use super::error::ApiError;
use super::rbac::{Caller, Grant, Permission};

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// An argon2id hash of `password` (PHC string). Slow on purpose: call off the async threads.
///
/// # Errors
/// Never in practice (argon2 with its default parameters).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt: [u8; 16] = rand::random();
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Rules for a new password.
///
/// # Errors
/// 400 `INVALID` saying what is wrong.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < 8 {
        return Err(ApiError::invalid("a password needs at least 8 characters"));
    }
    if n > 256 {
        return Err(ApiError::invalid(
            "a password may have at most 256 characters",
        ));
    }
    Ok(())
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty() && t.len() <= 200)
}

impl FromRequestParts<ManagerState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ManagerState,
    ) -> Result<Caller, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("sign in: send Authorization: Bearer TOKEN"))?;
        let caller = caller_for_token(state, token).await?;
        super::audit::note_caller(&parts.extensions, &caller);
        Ok(caller)
    }
}

/// Looks up a user token (session or personal) and builds the caller's rights.
///
/// # Errors
/// 401 when the token is unknown, expired, revoked, or its user disabled.
pub async fn caller_for_token(state: &ManagerState, token: &str) -> Result<Caller, ApiError> {
    let now = state.now_ms();
    let row = sqlx::query(
        "SELECT t.id AS token_id, t.scopes, t.kind, t.last_used_at, u.id AS user_id, u.name, u.tenant_id \
         FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.hash = $1 AND t.revoked = FALSE AND t.expires_at > $2 AND u.disabled = FALSE",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::unauthorized("the token is unknown, expired or revoked"))?;
    let token_id: i64 = row.try_get("token_id")?;
    let user_id: i64 = row.try_get("user_id")?;
    let kind: String = row.try_get("kind")?;
    let scopes: Vec<Permission> = json_col(&row, "scopes");
    let last_used: Option<i64> = row.try_get("last_used_at")?;
    // Recording use costs a write: once a minute per token is enough to show it.
    if last_used.is_none_or(|t| now - t > 60_000) {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&state.db.pool)
            .await?;
    }
    Ok(Caller {
        user_id,
        name: row.try_get("name")?,
        tenant_id: row.try_get("tenant_id")?,
        token_id,
        grants: grants_of(state, user_id).await?,
        token_scopes: (kind == "personal" && !scopes.is_empty())
            .then(|| scopes.into_iter().collect()),
        personal: kind == "personal",
    })
}

/// A user's role bindings.
///
/// # Errors
/// Database failures.
pub async fn grants_of(state: &ManagerState, user_id: i64) -> Result<Vec<Grant>, ApiError> {
    let rows = sqlx::query(
        "SELECT r.permissions, b.clusters FROM role_bindings b JOIN roles r ON r.id = b.role_id \
         WHERE b.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let permissions: BTreeSet<Permission> = json_col(row, "permissions");
            let clusters: BTreeSet<i64> = json_col(row, "clusters");
            Grant {
                permissions,
                clusters: (!clusters.is_empty()).then_some(clusters),
            }
        })
        .collect())
}

/// Stores a new token for `user_id` and returns it (the only time it is seen).
///
/// # Errors
/// Database failures.
pub async fn issue_token(
    state: &ManagerState,
    user_id: i64,
    kind: &str,
    name: &str,
    scopes: &[Permission],
    expires_at: i64,
) -> Result<(i64, String), ApiError> {
    let token = new_token(if kind == "personal" { "shp_" } else { "shs_" });
    let row = sqlx::query(
        "INSERT INTO tokens (user_id, kind, name, hash, scopes, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(user_id)
    .bind(kind)
    .bind(name)
    .bind(token_hash(&token))
    .bind(super::db::to_json(&scopes))
    .bind(expires_at)
    .bind(state.now_ms())
    .fetch_one(&state.db.pool)
    .await?;
    Ok((row.try_get("id")?, token))
}

/// Sign-in attempts per user name and per client address: each attempt counts when it starts
/// (so parallel guesses count too) and a successful one is forgiven; after
/// [`LoginLimiter::MAX_FAILURES`] within [`LoginLimiter::WINDOW`], further attempts are refused
/// until the window passes, whether or not the password is right. At most
/// [`LoginLimiter::PARALLEL`] password checks run at once (each takes ~19 MiB and a core).
#[derive(Debug)]
pub struct LoginLimiter {
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
    /// Slots for argon2 verifications.
    pub hashing: tokio::sync::Semaphore,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter {
            attempts: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(Self::PARALLEL),
        }
    }
}

impl LoginLimiter {
    /// Failures allowed within a window.
    pub const MAX_FAILURES: u32 = 5;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Password checks at once.
    pub const PARALLEL: usize = 4;
    /// Keys kept at most; past it, keys below the limit are forgotten (lockouts stay).
    const MAX_KEYS: usize = 100_000;

    /// Refuses when `keys` have failed too often lately; else counts this attempt.
    ///
    /// # Errors
    /// 429 `TOO_MANY_REQUESTS`.
    pub fn check(&self, keys: &[String]) -> Result<(), ApiError> {
        let mut map = self.attempts.lock().unwrap();
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < Self::WINDOW);
        if keys
            .iter()
            .any(|k| map.get(k).is_some_and(|(n, _)| *n >= Self::MAX_FAILURES))
        {
            return Err(ApiError::too_many(
                "too many failed sign-ins; try again in a few minutes",
            ));
        }
        for k in keys {
            map.entry(k.clone()).or_insert((0, now)).0 += 1;
        }
        if map.len() > Self::MAX_KEYS {
            map.retain(|_, (n, _)| *n >= Self::MAX_FAILURES);
        }
        Ok(())
    }

    /// Forgives the attempt of a successful sign-in: the user's count goes, the address's
    /// attempt is taken back.
    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.attempts.lock().unwrap();
        for (i, k) in keys.iter().enumerate() {
            if i == 0 {
                map.remove(k);
            } else if let Some((n, _)) = map.get_mut(k) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token("shs_");
        let b = new_token("shs_");
        assert_ne!(a, b);
        assert!(a.starts_with("shs_") && a.len() == 4 + 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn the_limiter_refuses_after_five_failures() {
        let l = LoginLimiter::default();
        let keys = vec!["user:bob".to_string(), "ip:127.0.0.1".to_string()];
        for _ in 0..LoginLimiter::MAX_FAILURES {
            l.check(&keys).unwrap();
        }
        assert_eq!(l.check(&keys).unwrap_err().status, 429);
        assert_eq!(l.check(&["ip:127.0.0.1".into()]).unwrap_err().status, 429);
        l.succeeded(&["user:bob".into()]);
        assert!(l.check(&["user:bob".into()]).is_ok());
        // A success takes back its own attempt only.
        let other = vec!["user:eve".to_string(), "ip:10.0.0.9".to_string()];
        for _ in 0..10 {
            l.check(&other).unwrap();
            l.succeeded(&other);
        }
        assert!(l.check(&other).is_ok());
    }
}
