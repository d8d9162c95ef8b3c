//! The stored sign-in: `credentials.json` in `$SHOAL_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/shoal`, else `~/.config/shoal`. It holds a bearer token, so it is written
//! with mode 0600 (in a 0700 directory), through a temporary file and a rename so that a crash
//! never leaves half a file.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::http::ClientError;

/// What `shoal login` stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// The manager's URL, as signed in to.
    pub manager: String,
    /// The session's bearer token.
    pub token: String,
    /// When the session ends (Unix ms, by the manager's clock).
    pub expires_at: Option<i64>,
}

/// The directory the credentials live in.
///
/// # Errors
/// When no directory can be told (no `SHOAL_CONFIG_DIR` and no `HOME`).
pub fn config_dir() -> Result<PathBuf, ClientError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("SHOAL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("shoal"));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".config").join("shoal"))
        .ok_or_else(|| {
            ClientError::Local("cannot tell where to keep credentials: set SHOAL_CONFIG_DIR".into())
        })
}

/// The credentials file.
///
/// # Errors
/// See [`config_dir`].
pub fn path() -> Result<PathBuf, ClientError> {
    Ok(config_dir()?.join("credentials.json"))
}

/// The stored credentials, if any.
///
/// # Errors
/// When the file exists but cannot be read or parsed.
pub fn load() -> Result<Option<Credentials>, ClientError> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::Local(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        ClientError::Local(format!(
            "{} is damaged ({e}): run shoal login again",
            path.display()
        ))
    })
}

/// Stores `creds` (mode 0600).
///
/// # Errors
/// When the directory or file cannot be written.
pub fn save(creds: &Credentials) -> Result<PathBuf, ClientError> {
    let path = path()?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let fail =
        |e: std::io::Error| ClientError::Local(format!("cannot write {}: {e}", path.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let tmp = dir.join(format!(".credentials.json.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = serde_json::to_vec_pretty(creds).map_err(std::io::Error::other)?;
        text.push(b'\n');
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok(path)
}

/// Forgets the stored credentials; `true` if there were any.
///
/// # Errors
/// When the file exists but cannot be removed.
pub fn forget() -> Result<bool, ClientError> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::Local(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}
