//! Files shoal writes into a runtime's configuration, and the way back.
//!
//! Every change is planned first ([`plan_write`], [`plan_restore`]), so `--dry-run` prints the
//! very plan `--write` would carry out. Before shoal first replaces a file it keeps a record
//! beside it that the runtime does not read: `NAME.shoal-backup` holds the original bytes (with
//! the original mode and owner), or `NAME.shoal-created` says there was no file (and how many of
//! the directories above it shoal made). A record, once there, is never replaced, so running
//! `--write` again (or with another node URL) keeps the original. `--restore` puts the backup
//! back, or removes what shoal created, and then the record. Every write goes through a new
//! temporary file of a unique name, `fsync` and a rename, so a crash leaves the old or the new
//! file, never half of one.
//!
//! Shoal follows no symlink here: a configuration file that is one is refused (replacing it
//! would cut the link), and so is a record that is not a regular file (shoal would otherwise
//! trust, or restore, bytes from elsewhere).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::RuntimeConfigError;

/// What every file shoal writes starts with. A file that starts so but has no record was
/// written by a shoal without backups: `--restore` removes it.
pub const HEADER: &str = "# Written by shoal";

/// Suffix of the copy of the original file.
pub const BACKUP_SUFFIX: &str = ".shoal-backup";

/// Suffix of the note that there was no file before shoal.
pub const CREATED_SUFFIX: &str = ".shoal-created";

/// Suffix of the temporary files of [`write_atomic`].
const TEMP_SUFFIX: &str = ".shoal-tmp";

/// Mode of files shoal creates.
const NEW_FILE_MODE: u32 = 0o644;

/// The line of a `.shoal-created` note that says how many directories shoal made.
const DIRS_KEY: &str = "directories: ";

/// What there was before shoal's first write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    /// The original bytes, kept in `NAME.shoal-backup`.
    Backup,
    /// No file, nor the `dirs` directories right above it (1: its own directory).
    Created { dirs: usize },
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
    /// The backup's mode and owner, which a restored file gets back.
    like: Option<fs::Metadata>,
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

/// Whether the file is a configuration file (a symlink names its target) or shoal's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Config,
    Record,
}

/// Why `path`, which is there but is not a regular file, is refused.
fn refuse(path: &Path, meta: &fs::Metadata, role: Role) -> RuntimeConfigError {
    let reason = if !meta.file_type().is_symlink() {
        "not a regular file".to_owned()
    } else if role == Role::Record {
        "a symlink, not a record shoal wrote; remove it (or put the original there as a \
         regular file) and try again"
            .to_owned()
    } else {
        // Replacing the link by a file would cut it; the target is the file to change.
        let target = fs::canonicalize(path)
            .or_else(|_| {
                let link = fs::read_link(path)?;
                Ok::<_, io::Error>(path.parent().unwrap_or(Path::new("")).join(link))
            })
            .map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
        format!("a symlink to {target}; pass {target} instead (shoal does not replace a link)")
    };
    RuntimeConfigError::Refused {
        path: path.to_owned(),
        reason,
    }
}

/// The regular file at `path` opened for reading with its metadata, `None` when there is no
/// file. Symlinks are not followed: [`refuse`] says why.
fn open_regular(
    path: &Path,
    role: Role,
) -> Result<Option<(File, fs::Metadata)>, RuntimeConfigError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // The record's directory is a file, so it holds no record.
        Err(e) if e.kind() == io::ErrorKind::NotADirectory && role == Role::Record => {
            return Ok(None);
        }
        Err(e) => return Err(RuntimeConfigError::io(path, e)),
    };
    if !meta.is_file() {
        return Err(refuse(path, &meta, role));
    }
    // O_NOFOLLOW: a symlink put there since the look above is an error, not followed;
    // O_NONBLOCK: nor does a FIFO put there block the open.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = File::from(
        rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| RuntimeConfigError::io(path, e.into()))?,
    );
    let meta = file
        .metadata()
        .map_err(|e| RuntimeConfigError::io(path, e))?;
    if !meta.is_file() {
        return Err(refuse(path, &meta, role));
    }
    Ok(Some((file, meta)))
}

/// The bytes and metadata of the regular file at `path` (see [`open_regular`]).
fn read_regular(
    path: &Path,
    role: Role,
) -> Result<Option<(Vec<u8>, fs::Metadata)>, RuntimeConfigError> {
    let Some((mut file, meta)) = open_regular(path, role)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| RuntimeConfigError::io(path, e))?;
    Ok(Some((bytes, meta)))
}

/// The current content of `path`, `None` when there is no file.
///
/// # Errors
/// When the file exists but cannot be read, or is not a regular file: a symlink is refused
/// with its target named (shoal would replace the link by a file).
pub fn read_current(path: &Path) -> Result<Option<Vec<u8>>, RuntimeConfigError> {
    Ok(read_regular(path, Role::Config)?.map(|(bytes, _)| bytes))
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

/// Whether the record at `path` is there; `Err` when something else than a regular file is.
fn record_exists(path: &Path) -> Result<bool, RuntimeConfigError> {
    Ok(open_regular(path, Role::Record)?.is_some())
}

/// Whether shoal keeps a record of what `path` was before its first write.
///
/// # Errors
/// When a record cannot be looked at, or is there but is not a regular file (a symlink is not
/// trusted).
pub fn has_record(path: &Path) -> Result<bool, RuntimeConfigError> {
    Ok(record_exists(&backup_path(path))? || record_exists(&created_path(path))?)
}

/// The directories above `path` that are missing, lowest first.
fn missing_dirs(path: &Path) -> Result<Vec<PathBuf>, RuntimeConfigError> {
    let mut missing = Vec::new();
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            break;
        }
        match fs::symlink_metadata(dir) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir.to_owned()),
            Err(e) => return Err(RuntimeConfigError::io(dir, e)),
        }
    }
    Ok(missing)
}

/// Plans writing `new` to `path`, whose content is now `old` (from [`read_current`]); `None`
/// when there is nothing to do.
///
/// # Errors
/// When the records beside `path` cannot be looked at, or are not regular files.
pub fn plan_write(
    path: &Path,
    old: Option<Vec<u8>>,
    new: Vec<u8>,
) -> Result<Option<Change>, RuntimeConfigError> {
    let record = match &old {
        _ if has_record(path)? => None,
        None => Some(Record::Created {
            dirs: missing_dirs(path)?.len(),
        }),
        Some(bytes) if bytes.starts_with(HEADER.as_bytes()) => Some(Record::Created { dirs: 0 }),
        Some(_) => Some(Record::Backup),
    };
    if old.as_deref() == Some(new.as_slice()) && record != Some(Record::Created { dirs: 0 }) {
        return Ok(None);
    }
    Ok(Some(Change {
        path: path.to_owned(),
        old,
        new: Some(new),
        step: Step::Write { record },
        like: None,
    }))
}

/// The text of a `.shoal-created` note for `path`, `dirs` directories made above it.
fn created_note(path: &Path, dirs: usize) -> String {
    match path.ancestors().nth(dirs).filter(|_| dirs > 0) {
        None => "shoal created this file: --restore removes it\n".to_owned(),
        Some(top) => format!(
            "shoal created this file and the directories above it up to {}: --restore removes \
             the file, and each of them that is empty\n{DIRS_KEY}{dirs}\n",
            top.display()
        ),
    }
}

/// How many directories a `.shoal-created` note at `note_path` says shoal made.
fn note_dirs(note_path: &Path, note: &[u8]) -> Result<usize, RuntimeConfigError> {
    let text = String::from_utf8_lossy(note);
    match text.lines().find_map(|l| l.strip_prefix(DIRS_KEY)) {
        Some(n) => n.trim().parse().map_err(|_| RuntimeConfigError::Malformed {
            path: note_path.to_owned(),
            reason: format!("`{DIRS_KEY}{n}` is not a count of directories"),
        }),
        // An older shoal's note: "... this file and its directory ...".
        None => Ok(usize::from(text.contains("directory"))),
    }
}

/// Plans bringing back what each of `paths` was before shoal's first write; files without a
/// record are left alone.
///
/// # Errors
/// When a record or a file cannot be read, or is not a regular file.
pub fn plan_restore(paths: &[PathBuf]) -> Result<Vec<Change>, RuntimeConfigError> {
    let mut changes = Vec::new();
    for path in paths {
        let backup = backup_path(path);
        let created = created_path(path);
        let (new, record, like) = if let Some((bytes, meta)) = read_regular(&backup, Role::Record)?
        {
            (Some(bytes), Record::Backup, Some(meta))
        } else if let Some((note, _)) = read_regular(&created, Role::Record)? {
            let dirs = note_dirs(&created, &note)?;
            (None, Record::Created { dirs }, None)
        } else {
            continue;
        };
        changes.push(Change {
            path: path.clone(),
            old: read_current(path)?,
            new,
            step: Step::Restore { record },
            like,
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

/// What `--dry-run` prints: the [`diff`], then a line for each change that only adds or drops
/// a record (it has no diff, but is not nothing).
pub fn preview(changes: &[Change]) -> String {
    let mut out = diff(changes);
    for c in changes.iter().filter(|c| !c.changes_content()) {
        let shown = c.path.display();
        let line = match &c.step {
            Step::Write { .. } => format!("would record {shown} as shoal's own\n"),
            Step::Restore {
                record: Record::Backup,
            } => format!(
                "would remove {} ({shown} is as it was already)\n",
                backup_path(&c.path).display()
            ),
            Step::Restore { .. } => format!(
                "would remove {} ({shown} is gone already)\n",
                created_path(&c.path).display()
            ),
        };
        out.push_str(&line);
    }
    out
}

/// Carries out `changes`, printing one line to `out` as each file is done.
///
/// # Errors
/// On the first failure; the files changed before it stay changed (each one whole), and when
/// there were several the error says how many and what to run next.
pub fn apply(changes: &[Change], out: &mut dyn io::Write) -> Result<(), RuntimeConfigError> {
    for (done, c) in changes.iter().enumerate() {
        let result = apply_one(c).and_then(|line| Ok(writeln!(out, "{line}")?));
        if let Err(e) = result {
            if changes.len() == 1 {
                return Err(e);
            }
            let restore = matches!(c.step, Step::Restore { .. });
            return Err(RuntimeConfigError::Partial {
                done,
                total: changes.len(),
                what: if restore { "restored" } else { "changed" },
                next: if restore {
                    "run --write --restore again to finish"
                } else {
                    "run --write again to finish or --write --restore to undo"
                },
                source: Box::new(e),
            });
        }
    }
    Ok(())
}

fn apply_one(c: &Change) -> Result<String, RuntimeConfigError> {
    let path = &c.path;
    let shown = path.display();
    match (&c.step, &c.new) {
        (Step::Write { record }, Some(new)) => {
            // The file was found a regular file (or missing) when planned; `like` is its mode.
            let meta = fs::symlink_metadata(path)
                .ok()
                .filter(fs::Metadata::is_file);
            create_dirs(path)?;
            match record {
                Some(Record::Backup) => {
                    let old = c.old.as_deref().unwrap_or_default();
                    write_atomic(&backup_path(path), old, meta.as_ref())?;
                }
                Some(Record::Created { dirs }) => {
                    let note = created_note(path, *dirs);
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
            if c.changes_content() {
                write_atomic(path, original, c.like.as_ref())?;
            }
            remove(&backup_path(path))?;
            Ok(format!("restored {shown}"))
        }
        (Step::Restore { record }, _) => {
            remove(path)?;
            remove(&created_path(path))?;
            if let Record::Created { dirs } = record {
                remove_empty_dirs(path, *dirs)?;
            }
            Ok(format!("removed {shown}"))
        }
        (Step::Write { .. }, None) => unreachable!("a write always has content"),
    }
}

/// Makes the missing directories above `path`, each made durable in its parent.
fn create_dirs(path: &Path) -> Result<(), RuntimeConfigError> {
    let missing = missing_dirs(path)?;
    let Some(lowest) = missing.first() else {
        return Ok(());
    };
    fs::create_dir_all(lowest).map_err(|e| RuntimeConfigError::io(lowest, e))?;
    for dir in missing.iter().rev() {
        sync_dir(dir.parent().unwrap_or(Path::new("/")))?;
    }
    Ok(())
}

/// Removes the `dirs` directories right above `path` that shoal made, lowest first, up to the
/// first that is not empty: anything in it is not shoal's.
fn remove_empty_dirs(path: &Path, dirs: usize) -> Result<(), RuntimeConfigError> {
    for dir in path.ancestors().skip(1).take(dirs) {
        if dir.as_os_str().is_empty() {
            break;
        }
        match fs::remove_dir(dir) {
            Ok(()) => sync_dir(dir.parent().unwrap_or(Path::new("/")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => break,
            Err(e) => return Err(RuntimeConfigError::io(dir, e)),
        }
    }
    Ok(())
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

/// A new, empty `.NAME.RANDOM.shoal-tmp` in `dir` with `mode`. Created exclusively
/// (`O_EXCL`): a symlink planted at the name is not followed, and no other writer's file is
/// opened.
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    for _ in 0..16 {
        let tmp = dir.join(format!(
            ".{name}.{:016x}{TEMP_SUFFIX}",
            rand::random::<u64>()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// Writes `bytes` to `path` through a new temporary file in the same directory (see
/// [`create_temp`]), `fsync` and a rename, with the mode and owner of `like` (else 0644); the
/// directory is synced after.
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
    let mode = like.map_or(NEW_FILE_MODE, |m| m.permissions().mode() & 0o7777);
    let (tmp, mut f) =
        create_temp(dir, &name, mode).map_err(|e| RuntimeConfigError::io(path, e))?;
    let result = (|| {
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
mod tests;
