//! A long-running child process whose stdout and stderr lines are collected in memory.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Output lines of a [`Daemon`], shared with its reader threads (and kept across restarts).
pub type SharedLog = Arc<Mutex<Vec<String>>>;

/// A spawned background process, killed and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: SharedLog,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Spawns `cmd` with stdout and stderr appended line by line to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: SharedLog) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let readers = vec![
            read_lines(child.stdout.take().unwrap(), log.clone()),
            read_lines(child.stderr.take().unwrap(), log.clone()),
        ];
        Daemon {
            name: name.to_owned(),
            child: Some(child),
            log,
            readers,
        }
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "{} exited unexpectedly; output tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// Last `n` collected output lines, joined.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Idempotent.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
            super::wait_until(grace, || !self.is_running());
        }
        self.kill();
    }

    /// SIGKILLs and reaps the process, and waits for its output to be collected. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Grandchildren holding the pipes open could block a join; give them a moment only.
        let readers = std::mem::take(&mut self.readers);
        super::wait_until(Duration::from_secs(2), || {
            readers.iter().all(JoinHandle::is_finished)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lines(stream: impl Read + Send + 'static, log: SharedLog) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&line).into_owned());
        }
    })
}

/// SIGKILLs every process (other than this one) whose command line mentions `dir`, such as
/// containerd shims started for a daemon living in that temporary directory.
pub fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = Command::new("kill").args(["-KILL", &pid]).output();
        }
    }
}
