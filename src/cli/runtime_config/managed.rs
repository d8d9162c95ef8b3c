//! Files shoal writes into a runtime's configuration, and the way back.
//!
//! Every change is planned first ([`plan_write`], [`plan_restore`]), so `--dry-run` prints the
//! very plan `--write` would carry out. Before shoal first replaces a file it keeps a record
//! beside it that the runtime does not read: `NAME.shoal-backup` holds the original bytes (with
//! the original mode and owner), or `NAME.shoal-created` says there was no file (and whether
//! shoal also made its directory). A record, once there, is never replaced, so running `--write`
//! again (or with another node URL) keeps the original. `--restore` puts the backup back, or
//! removes what shoal created, and then the record. Every write goes through a temporary file,
//! `fsync` and a rename, so a crash leaves the old or the new file, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::RuntimeConfigError;

/// What every file shoal writes starts with. A file that starts so but has no record was
/// written by a shoal without backups: `--restore` removes it.
pub const HEADER: &str = "# Written by shoal";

/// Suffix of the copy of the original file.
pub const BACKUP_SUFFIX: &str = ".shoal-backup";

/// Suffix of the note that there was no file before shoal.
pub const CREATED_SUFFIX: &str = ".shoal-created";

/// Mode of files shoal creates.
const NEW_FILE_MODE: u32 = 0o644;

/// What there was before shoal's first write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    /// The original bytes, kept in `NAME.shoal-backup`.
    Backup,
    /// No file; `dir`: nor its directory.
    Created { dir: bool },
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Write the new content, first keeping `record` (`None`: a record exists already).
    Write { record: Option<Record> },
    /// Put the original back (or remove the file) and drop `record`.
    Restore { record: Record },
}

/// One planned change of one file.
#[derive(Debug, Clone)]
pub struct Change {
    path: PathBuf,
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
    step: Step,
}

impl Change {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file's content changes (a change may only add or drop a record).
    pub fn changes_content(&self) -> bool {
        self.old != self.new
    }
}

/// The current content of `path`, `None` when there is no file.
///
/// # Errors
/// When the file exists but cannot be read.
pub fn read_current(path: &Path) -> Result<Option<Vec<u8>>, RuntimeConfigError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeConfigError::io(path, e)),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Where the original of `path` is kept.
pub fn backup_path(path: &Path) -> PathBuf {
    with_suffix(path, BACKUP_SUFFIX)
}

/// The note that shoal created `path`.
pub fn created_path(path: &Path) -> PathBuf {
    with_suffix(path, CREATED_SUFFIX)
}

fn exists(path: &Path) -> Result<bool, RuntimeConfigError> {
    path.try_exists()
        .map_err(|e| RuntimeConfigError::io(path, e))
}

/// Plans writing `new` to `path`, whose content is now `old` (from [`read_current`]); `None`
/// when there is nothing to do.
///
/// # Errors
/// When the records beside `path` cannot be looked at.
pub fn plan_write(
    path: &Path,
    old: Option<Vec<u8>>,
    new: Vec<u8>,
) -> Result<Option<Change>, RuntimeConfigError> {
    let recorded = exists(&backup_path(path))? || exists(&created_path(path))?;
    let record = match &old {
        _ if recorded => None,
        None => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => !exists(p)?,
                _ => false,
            };
            Some(Record::Created { dir })
        }
        Some(bytes) if bytes.starts_with(HEADER.as_bytes()) => Some(Record::Created { dir: false }),
        Some(_) => Some(Record::Backup),
    };
    if old.as_deref() == Some(new.as_slice()) && record != Some(Record::Created { dir: false }) {
        return Ok(None);
    }
    Ok(Some(Change {
        path: path.to_owned(),
        old,
        new: Some(new),
        step: Step::Write { record },
    }))
}

/// Plans bringing back what each of `paths` was before shoal's first write; files without a
/// record are left alone.
///
/// # Errors
/// When a record or a file cannot be read.
pub fn plan_restore(paths: &[PathBuf]) -> Result<Vec<Change>, RuntimeConfigError> {
    let mut changes = Vec::new();
    for path in paths {
        let backup = backup_path(path);
        let created = created_path(path);
        let (new, record) = if let Some(bytes) = read_current(&backup)? {
            (Some(bytes), Record::Backup)
        } else if let Some(note) = read_current(&created)? {
            let dir = String::from_utf8_lossy(&note).contains("directory");
            (None, Record::Created { dir })
        } else {
            continue;
        };
        changes.push(Change {
            path: path.clone(),
            old: read_current(path)?,
            new,
            step: Step::Restore { record },
        });
    }
    Ok(changes)
}

/// A unified diff of every change of content, `/dev/null` standing for a missing file.
pub fn diff(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes.iter().filter(|c| c.changes_content()) {
        let text = |b: &Option<Vec<u8>>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let (old, new) = (text(&c.old), text(&c.new));
        let name = c.path.display().to_string();
        let label = |b: &Option<Vec<u8>>| match b {
            Some(_) => name.clone(),
            None => "/dev/null".to_owned(),
        };
        out.push_str(
            &similar::TextDiff::from_lines(&old, &new)
                .unified_diff()
                .context_radius(3)
                .header(&label(&c.old), &label(&c.new))
                .to_string(),
        );
    }
    out
}

/// Carries out `changes`, returning one line per file for the operator.
///
/// # Errors
/// On the first I/O failure; the files changed before it stay changed (each one whole).
pub fn apply(changes: &[Change]) -> Result<Vec<String>, RuntimeConfigError> {
    changes.iter().map(apply_one).collect()
}

fn apply_one(c: &Change) -> Result<String, RuntimeConfigError> {
    let path = &c.path;
    let shown = path.display();
    match (&c.step, &c.new) {
        (Step::Write { record }, Some(new)) => {
            let meta = fs::metadata(path).ok();
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| RuntimeConfigError::io(parent, e))?;
            }
            match record {
                Some(Record::Backup) => {
                    let old = c.old.as_deref().unwrap_or_default();
                    write_atomic(&backup_path(path), old, meta.as_ref())?;
                }
                Some(Record::Created { dir }) => {
                    let note = if *dir {
                        "shoal created this file and its directory: --restore removes both\n"
                    } else {
                        "shoal created this file: --restore removes it\n"
                    };
                    write_atomic(&created_path(path), note.as_bytes(), None)?;
                }
                None => {}
            }
            if c.changes_content() {
                write_atomic(path, new, meta.as_ref())?;
            }
            Ok(match record {
                Some(Record::Backup) => format!(
                    "wrote {shown} (the original is kept in {})",
                    backup_path(path).display()
                ),
                _ if c.changes_content() => format!("wrote {shown}"),
                _ => format!("unchanged {shown} (recorded as shoal's own)"),
            })
        }
        (
            Step::Restore {
                record: Record::Backup,
            },
            Some(original),
        ) => {
            let backup = backup_path(path);
            let meta = fs::metadata(&backup).map_err(|e| RuntimeConfigError::io(&backup, e))?;
            if c.changes_content() {
                write_atomic(path, original, Some(&meta))?;
            }
            remove(&backup)?;
            Ok(format!("restored {shown}"))
        }
        (Step::Restore { record }, _) => {
            remove(path)?;
            remove(&created_path(path))?;
            if let (Record::Created { dir: true }, Some(parent)) = (record, path.parent()) {
                // Only when empty: anything else in it is not shoal's.
                if fs::read_dir(parent).is_ok_and(|mut d| d.next().is_none()) {
                    fs::remove_dir(parent).map_err(|e| RuntimeConfigError::io(parent, e))?;
                    sync_dir(parent.parent().unwrap_or(Path::new("/")))?;
                }
            }
            Ok(format!("removed {shown}"))
        }
        (Step::Write { .. }, None) => unreachable!("a write always has content"),
    }
}

fn remove(path: &Path) -> Result<(), RuntimeConfigError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeConfigError::io(path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), RuntimeConfigError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RuntimeConfigError::io(dir, e))
}

/// Writes `bytes` to `path` through `.NAME.shoal-tmp` in the same directory, `fsync` and a
/// rename, with the mode and owner of `like` (else 0644).
///
/// # Errors
/// On I/O failure; the temporary file is removed.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    like: Option<&fs::Metadata>,
) -> Result<(), RuntimeConfigError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.shoal-tmp"));
    let mode = like.map_or(NEW_FILE_MODE, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have narrowed the mode at creation.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(m) = like {
            // Best effort: only root may give a file away.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(RuntimeConfigError::io(path, e));
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `dir` with its bytes, sorted.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
        out.sort();
        out
    }

    fn write(path: &Path, new: &str) -> Vec<Change> {
        let old = read_current(path).unwrap();
        let changes: Vec<Change> = plan_write(path, old, new.as_bytes().to_vec())
            .unwrap()
            .into_iter()
            .collect();
        apply(&changes).unwrap();
        changes
    }

    fn restore(paths: &[PathBuf]) {
        apply(&plan_restore(paths).unwrap()).unwrap();
    }

    #[test]
    fn backup_once_and_restore_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.toml");
        let original = b"server = \"https://mine\"\n\xff not utf-8\n".to_vec();
        fs::write(&file, &original).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let before = snapshot(dir.path());

        write(&file, &format!("{HEADER}: one\n"));
        assert_eq!(fs::read(backup_path(&file)).unwrap(), original);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Again, and with other content: the backup still holds the original.
        assert!(write(&file, &format!("{HEADER}: one\n")).is_empty());
        write(&file, &format!("{HEADER}: two\n"));
        assert_eq!(fs::read(backup_path(&file)).unwrap(), original);
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("{HEADER}: two\n")
        );

        restore(std::slice::from_ref(&file));
        assert_eq!(snapshot(dir.path()), before);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Nothing left to restore.
        assert!(plan_restore(&[file]).unwrap().is_empty());
    }

    #[test]
    fn created_files_and_directories_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new.d/shoal.conf");
        let changes = write(&file, "x\n");
        assert!(diff(&changes).starts_with("--- /dev/null\n"));
        assert!(created_path(&file).exists());
        write(&file, "y\n");

        let plan = plan_restore(std::slice::from_ref(&file)).unwrap();
        let shown = diff(&plan);
        assert!(shown.contains("+++ /dev/null"), "{shown}");
        assert!(shown.contains("-y"), "{shown}");
        apply(&plan).unwrap();
        assert!(snapshot(dir.path()).is_empty());

        // A directory that holds something else stays.
        let other = dir.path().join("keep.d");
        fs::create_dir(&other).unwrap();
        let file = other.join("shoal.conf");
        write(&file, "x\n");
        fs::write(other.join("mine.conf"), "m").unwrap();
        restore(std::slice::from_ref(&file));
        assert_eq!(snapshot(&other), [(other.join("mine.conf"), b"m".to_vec())]);
    }

    #[test]
    fn a_file_from_an_older_shoal_is_recorded_as_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.toml");
        let ours = format!("{HEADER}: same\n");
        fs::write(&file, &ours).unwrap();
        // Same content: only the record is added.
        let changes = write(&file, &ours);
        assert_eq!(changes.len(), 1);
        assert!(diff(&changes).is_empty());
        assert!(write(&file, &ours).is_empty());
        restore(std::slice::from_ref(&file));
        assert!(!file.exists());
    }

    #[test]
    fn a_plan_changes_nothing_until_applied() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.json");
        fs::write(&file, "{}").unwrap();
        let before = snapshot(dir.path());
        let plan = plan_write(
            &file,
            read_current(&file).unwrap(),
            b"{\"a\": 1}\n".to_vec(),
        )
        .unwrap()
        .unwrap();
        let shown = diff(std::slice::from_ref(&plan));
        assert!(shown.contains("-{}"), "{shown}");
        assert!(shown.contains("+{\"a\": 1}"), "{shown}");
        assert_eq!(snapshot(dir.path()), before);
    }
}
