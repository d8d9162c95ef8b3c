//! Backups, restores and the refusals of [`super`], against real files in temporary directories.

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
    apply(&changes, &mut io::sink()).unwrap();
    changes
}

fn restore(paths: &[PathBuf]) {
    apply(&plan_restore(paths).unwrap(), &mut io::sink()).unwrap();
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
    apply(&plan, &mut io::sink()).unwrap();
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

#[test]
fn a_symlink_at_a_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    fs::write(&secret, "keep").unwrap();
    let file = dir.path().join("hosts.toml");
    // The name an older shoal used for every write of this file.
    let planted = dir.path().join(".hosts.toml.shoal-tmp");
    std::os::unix::fs::symlink(&secret, &planted).unwrap();

    write(&file, "x\n");
    write(&file, "y\n");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "keep");
    assert_eq!(fs::read_link(&planted).unwrap(), secret);
    assert_eq!(fs::read_to_string(&file).unwrap(), "y\n");
    // No temporary file is left behind, and two writers never share one.
    let temps = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(TEMP_SUFFIX))
        .count();
    assert_eq!(temps, 1);
    let (a, _) = create_temp(dir.path(), "hosts.toml", NEW_FILE_MODE).unwrap();
    let (b, _) = create_temp(dir.path(), "hosts.toml", NEW_FILE_MODE).unwrap();
    assert_ne!(a, b);
}

#[test]
fn a_record_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let foreign = outside.path().join("foreign");
    fs::write(&foreign, "not the original").unwrap();
    let file = dir.path().join("daemon.json");
    fs::write(&file, "{}").unwrap();
    std::os::unix::fs::symlink(&foreign, backup_path(&file)).unwrap();
    let before = snapshot(dir.path());

    let old = read_current(&file).unwrap();
    let err = plan_write(&file, old, b"{\"a\": 1}".to_vec()).unwrap_err();
    assert!(
        matches!(&err, RuntimeConfigError::Refused { path, .. } if *path == backup_path(&file))
    );
    assert!(err.to_string().contains("a symlink"), "{err}");
    let err = plan_restore(std::slice::from_ref(&file)).unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(fs::read_to_string(&foreign).unwrap(), "not the original");

    // A dangling link, or a directory, as the other record.
    fs::remove_file(backup_path(&file)).unwrap();
    std::os::unix::fs::symlink(outside.path().join("none"), created_path(&file)).unwrap();
    assert!(plan_restore(std::slice::from_ref(&file)).is_err());
    fs::remove_file(created_path(&file)).unwrap();
    fs::create_dir(created_path(&file)).unwrap();
    let err = plan_restore(std::slice::from_ref(&file)).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_symlinked_config_file_is_refused_with_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.json");
    fs::write(&target, "{}").unwrap();
    let link = dir.path().join("daemon.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let before = snapshot(dir.path());

    let err = read_current(&link).unwrap_err();
    let shown = fs::canonicalize(&target).unwrap().display().to_string();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: a symlink to {shown}", link.display())),
        "{msg}"
    );
    assert!(msg.contains(&format!("pass {shown}")), "{msg}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_failure_part_way_says_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let files = ["a/x.toml", "b/y.toml", "c/z.toml"].map(|f| dir.path().join(f));
    let plan: Vec<Change> = files
        .iter()
        .map(|f| plan_write(f, None, b"x\n".to_vec()).unwrap().unwrap())
        .collect();
    // After planning, a file appears where the second file's directory should be.
    fs::write(dir.path().join("b"), "in the way").unwrap();
    let mut out = Vec::new();
    let err = apply(&plan, &mut out).unwrap_err();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("wrote {}\n", files[0].display())
    );
    assert_eq!(
        err.to_string(),
        "1 of 3 files changed; run --write again to finish or --write --restore to undo"
    );
    let RuntimeConfigError::Partial { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(**source, RuntimeConfigError::Io { .. }),
        "{source:?}"
    );

    // --restore undoes what was done.
    restore(&files);
    assert_eq!(
        snapshot(dir.path()),
        [(dir.path().join("b"), b"in the way".to_vec())]
    );
}

#[test]
fn directories_made_above_the_file_are_removed_while_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x/y/z/hosts.toml");
    write(&file, "x\n");
    let note = fs::read_to_string(created_path(&file)).unwrap();
    assert!(
        note.contains(&format!("up to {}", dir.path().join("x").display())),
        "{note}"
    );
    assert_eq!(note_dirs(&created_path(&file), note.as_bytes()).unwrap(), 3);
    restore(std::slice::from_ref(&file));
    assert!(snapshot(dir.path()).is_empty());

    // What holds something else stays, and so does everything above it.
    write(&file, "x\n");
    fs::write(dir.path().join("x/y/mine"), "m").unwrap();
    restore(std::slice::from_ref(&file));
    assert_eq!(
        snapshot(dir.path()),
        [
            (dir.path().join("x"), Vec::new()),
            (dir.path().join("x/y"), Vec::new()),
            (dir.path().join("x/y/mine"), b"m".to_vec()),
        ]
    );

    // An older shoal's note: its directory only.
    let older = b"shoal created this file and its directory: --restore removes both\n";
    assert_eq!(note_dirs(Path::new("n"), older).unwrap(), 1);
    let plain = b"shoal created this file: --restore removes it\n";
    assert_eq!(note_dirs(Path::new("n"), plain).unwrap(), 0);
}

#[test]
fn a_dry_run_names_changes_without_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts.toml");
    let ours = format!("{HEADER}: same\n");
    fs::write(&file, &ours).unwrap();
    let plan: Vec<Change> = plan_write(&file, read_current(&file).unwrap(), ours.into())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        preview(&plan),
        format!("would record {} as shoal's own\n", file.display())
    );
    apply(&plan, &mut io::sink()).unwrap();
    fs::remove_file(&file).unwrap();
    assert_eq!(
        preview(&plan_restore(std::slice::from_ref(&file)).unwrap()),
        format!(
            "would remove {} ({} is gone already)\n",
            created_path(&file).display(),
            file.display()
        )
    );
}
