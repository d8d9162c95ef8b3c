//! Debian's PostgreSQL server on loopback: a cluster of its own in a temporary directory, a
//! port of its own, and a fresh database per test.
//!
//! ```ignore
//! if !common::postgres_available() { return; }
//! let pg = Postgres::start();
//! let url = pg.create_database("jobs"); // postgres://shoal:PASS@127.0.0.1:PORT/jobs
//! ```
//!
//! The server binaries live in `/usr/lib/postgresql/<version>/bin` (not on PATH on Debian); the
//! newest installed version is used. PostgreSQL refuses to run as root, so under root every
//! server command runs as the `postgres` system user (`runuser -u postgres --`) and the
//! directory is handed to that user. TCP connections on 127.0.0.1 need the password
//! (scram-sha-256); the unix socket in the directory trusts local clients, which is how
//! [`Postgres::psql`] and [`Postgres::create_database`] connect.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::{check_output, find_on_path, free_port, tail, wait_until};

/// The superuser every cluster is created with.
pub const USER: &str = "shoal";

/// Directory holding the newest installed PostgreSQL server binaries (`postgres`, `initdb`,
/// `pg_ctl`, `psql`, `createdb`), if any.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_server_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    // Other layouts put the server binaries on PATH.
    let bin = find_on_path("initdb")?.parent()?.to_path_buf();
    has_server_tools(&bin).then_some(bin)
}

fn has_server_tools(bin: &Path) -> bool {
    ["postgres", "initdb", "pg_ctl", "psql", "createdb"]
        .iter()
        .all(|tool| bin.join(tool).is_file())
}

/// True if a PostgreSQL server is installed; otherwise panics under `CI=true`, else prints SKIP
/// (the caller then skips its test), like [`super::require_tool`].
pub fn postgres_available() -> bool {
    if postgres_bin_dir().is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI: PostgreSQL (the Debian package `postgresql`) is missing");
    }
    eprintln!(
        "########## SKIP: PostgreSQL server binaries not found (Debian package `postgresql`); skipping this test ##########"
    );
    false
}

/// A running PostgreSQL cluster on 127.0.0.1; stopped and its directory removed on drop.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    /// `(uid, gid)` of the system user the server runs as, when started as root.
    owner: Option<(u32, u32)>,
    /// Pid of the postmaster, read from `postmaster.pid` once it is up.
    pid: Option<u32>,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a free port, waiting
    /// until it accepts password connections over TCP. Panics if it cannot start.
    pub fn start() -> Postgres {
        let bin = postgres_bin_dir().expect("PostgreSQL server binaries (see postgres_available)");
        let dir = tempfile::Builder::new()
            .prefix("shoal-postgres-")
            .tempdir()
            .unwrap();
        let owner = running_as_root().then(postgres_system_user);
        let password = new_password();
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            password,
            owner,
            pid: None,
        };
        pg.init();
        // The port from free_port() is released before the server binds it; if another
        // process takes it in between, try another one.
        let mut last_error = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => {
                    pg.wait_ready();
                    return pg;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("PostgreSQL did not start:\n{last_error}");
    }

    /// `initdb` with a superuser [`USER`] whose password is [`Postgres::password`].
    fn init(&mut self) {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password)).unwrap();
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(self.dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let output = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check_output("initdb", &output);
        let _ = std::fs::remove_file(&pwfile);
    }

    /// Writes the port into the configuration and runs `pg_ctl start -w`.
    fn try_start(&mut self) -> Result<(), String> {
        let conf = format!(
            "\n# shoal test harness\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 50\n\
             max_wal_senders = 0\n\
             wal_level = minimal\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        // postgresql.auto.conf is read last, so a retry with a new port overrides the old one.
        let auto = self.data_dir().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).unwrap();
        let log = self.dir.path().join("server.log");
        let started = Instant::now();
        let output = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start ({}) on port {}:\n{}\n--- server.log\n{}",
                output.status,
                self.port,
                String::from_utf8_lossy(&output.stderr),
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30),
            ));
        }
        self.pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok());
        eprintln!(
            "postgres: started on 127.0.0.1:{} in {:?}",
            self.port,
            started.elapsed()
        );
        Ok(())
    }

    /// Waits until a query over TCP with the password succeeds.
    fn wait_ready(&self) {
        let mut last = None;
        let ready = wait_until(Duration::from_secs(30), || {
            let output = self.psql_tcp_command("postgres", "SELECT 1").output();
            let ok = output.as_ref().is_ok_and(|o| o.status.success());
            last = output.ok();
            ok
        });
        if !ready {
            let stderr = last
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!(
                "PostgreSQL on port {} does not answer over TCP: {stderr}\n--- server.log\n{}",
                self.port,
                self.server_log_tail(30)
            );
        }
    }

    /// Creates database `name` (letters, digits and `_`) and returns its URL,
    /// `postgres://shoal:PASSWORD@127.0.0.1:PORT/NAME`.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}: use letters, digits and _"
        );
        let output = Command::new(self.bin.join("createdb"))
            .current_dir(self.dir.path())
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, name])
            .output()
            .expect("run createdb");
        check_output(&format!("createdb {name}"), &output);
        self.url(name)
    }

    /// URL of database `name` (which must exist; see [`Postgres::create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// Runs `sql` in database `db` as the superuser over the unix socket; returns the
    /// unaligned, tuples-only output (`|` between columns). Panics if psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .current_dir(self.dir.path())
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        check_output(&format!("psql {sql:?}"), &output);
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned()
    }

    /// psql over TCP with the password, as a client of the URL would connect.
    fn psql_tcp_command(&self, db: &str, sql: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.current_dir(self.dir.path())
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "2")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-X", "-A", "-t", "-c", sql]);
        cmd
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The temporary directory (cluster in `data/`, unix socket, `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pid of the postmaster.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Last `n` lines of the server log.
    pub fn server_log_tail(&self, n: usize) -> String {
        tail(
            &std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default(),
            n,
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for server binary `tool`, run as the directory's owner.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = if self.owner.is_some() {
            let mut cmd = Command::new(runuser());
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The caller's working directory may not be readable by the postgres user.
        cmd.current_dir(self.dir.path());
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let started = Instant::now();
        let output: Option<Output> = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .output()
            .ok();
        let stopped = output.is_some_and(|o| o.status.success());
        if let Some(pid) = self.pid
            && (!stopped || is_alive(pid))
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
            wait_until(Duration::from_secs(5), || !is_alive(pid));
        }
        super::process::kill_processes_mentioning(self.dir.path());
        eprintln!("postgres: stopped in {:?}", started.elapsed());
        // The TempDir field removes the directory after this.
    }
}

/// True while process `pid` exists and is not a zombie. The postmaster is not our child
/// (`pg_ctl` detaches it), so once stopped it stays a zombie until init reaps it.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `PID (COMM) STATE …`; COMM may contain spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `(uid, gid)` of the `postgres` system user that the Debian package creates.
fn postgres_system_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        check_output("id postgres (the postgres system user)", &output);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

/// `runuser`, which lives in an sbin directory that may not be on PATH.
fn runuser() -> PathBuf {
    find_on_path("runuser")
        .or_else(|| {
            ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .expect("runuser (util-linux) to run PostgreSQL as the postgres user")
}

/// A random-enough hex password for a throwaway cluster.
fn new_password() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{nanos}-{}-{:p}", std::process::id(), &nanos);
    super::sha256_hex(seed.as_bytes())["sha256:".len().."sha256:".len() + 24].to_owned()
}
