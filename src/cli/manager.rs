//! `shoal manager`: flags, and turning them into [`ManagerSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::manager::ManagerSettings;

/// Flags of `shoal manager`.
#[derive(Debug, Args, Clone)]
pub struct ManagerArgs {
    /// API and console address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SHOAL_MANAGER_LISTEN")]
    pub listen: SocketAddr,
    /// Data directory (holds the SQLite database by default).
    #[arg(long, default_value = "./shoal-data", env = "SHOAL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Database: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB [default:
    /// sqlite://DATA_DIR/manager.db].
    #[arg(long, value_name = "URL", env = "SHOAL_DATABASE")]
    pub database: Option<String>,
    /// A file holding the first administrator's password (first start only; else
    /// SHOAL_ADMIN_PASSWORD, else one is generated and printed once).
    #[arg(long, value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// How long a sign-in lasts, in hours.
    #[arg(long, default_value_t = 12, value_name = "HOURS")]
    pub session_hours: u64,
    /// Seconds between discoveries of Kubernetes and Mesos cluster members.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub discovery_interval: u64,
}

impl ManagerArgs {
    /// The settings these flags (and the environment) give.
    ///
    /// # Errors
    /// When the password file cannot be read or a value is out of range.
    pub fn settings(&self) -> Result<ManagerSettings, String> {
        let mut s = ManagerSettings::new(&self.data_dir);
        s.listen = self.listen;
        if let Some(db) = &self.database {
            s.database = db.clone();
        }
        s.admin_password = match &self.admin_password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read --admin-password-file {}: {e}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => std::env::var("SHOAL_ADMIN_PASSWORD").ok(),
        };
        if !(1..=24 * 365).contains(&self.session_hours) {
            return Err("--session-hours must be 1 to 8760".into());
        }
        s.session_ttl = Duration::from_secs(self.session_hours * 3600);
        if self.discovery_interval < 5 {
            return Err("--discovery-interval must be at least 5 seconds".into());
        }
        s.discovery_every = Duration::from_secs(self.discovery_interval);
        Ok(s)
    }
}
