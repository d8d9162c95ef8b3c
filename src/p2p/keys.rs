//! The node's identity (an ed25519 key kept in the data directory, so its peer id survives
//! restarts) and the swarm's pre-shared key (the standard libp2p `swarm.key` format).

use std::path::Path;
use std::str::FromStr;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

/// Key file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a valid key.
    #[error("{path}: not a valid key: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.display().to_string();
    move |source| KeyError::Io { path, source }
}

/// Loads the identity from `path`, creating it (mode 0600) if it does not exist.
///
/// # Errors
/// When the file cannot be read or written, or holds something else.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().expect("ed25519 keys encode");
            write_private(path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes a secret file readable by its owner only, through a temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Loads a swarm key file (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
///
/// # Errors
/// When the file cannot be read or is not a swarm key.
pub fn load_swarm_key(path: &Path) -> Result<PreSharedKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    PreSharedKey::from_str(text.trim()).map_err(|e| KeyError::Invalid {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A new random swarm key in the file format.
pub fn generate_swarm_key() -> String {
    PreSharedKey::new(rand::random()).to_key_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_swarm_keys_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = load_or_create_identity(&path).unwrap();
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let key_file = dir.path().join("swarm.key");
        let text = generate_swarm_key();
        assert_ne!(text, generate_swarm_key());
        std::fs::write(&key_file, &text).unwrap();
        let key = load_swarm_key(&key_file).unwrap();
        assert_eq!(key.to_key_file(), text);

        std::fs::write(&key_file, "not a key").unwrap();
        assert!(load_swarm_key(&key_file).is_err());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load_or_create_identity(&path).is_err());
    }
}
