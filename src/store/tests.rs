use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn verified_blob_lands_and_bad_blob_does_not() {
    let (_dir, store) = store();
    let good = Digest::sha256_of(b"hello world");
    let mut w = store.blob_writer(&good).unwrap();
    w.write(b"hello ").unwrap();
    w.write(b"world").unwrap();
    let temp = w.temp_path().to_owned();
    assert_eq!(w.finish().unwrap(), 11);
    assert!(!temp.exists());
    assert_eq!(store.blob_size(&good), Some(11));
    assert_eq!(fs::read(store.blob_path(&good)).unwrap(), b"hello world");

    let wanted = Digest::sha256_of(b"the real bytes");
    let mut w = store.blob_writer(&wanted).unwrap();
    w.write(b"lies").unwrap();
    let temp = w.temp_path().to_owned();
    assert!(matches!(w.finish(), Err(StoreError::DigestMismatch { .. })));
    assert!(!temp.exists(), "temp file of a bad blob must be removed");
    assert_eq!(store.blob_size(&wanted), None);
}

#[test]
fn reset_starts_over() {
    let (_dir, store) = store();
    let d = Digest::sha256_of(b"abc");
    let mut w = store.blob_writer(&d).unwrap();
    w.write(b"xyz123").unwrap();
    w.reset().unwrap();
    w.write(b"abc").unwrap();
    w.finish().unwrap();
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"abc");
}

#[test]
fn dropped_writer_leaves_nothing_and_reopen_clears_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = Digest::sha256_of(b"abc");
    let w = store.blob_writer(&d).unwrap();
    let temp = w.temp_path().to_owned();
    drop(w);
    assert!(!temp.exists());

    // A crash leaves a temp file behind; the next open discards it.
    let w = store.blob_writer(&d).unwrap();
    let temp = w.temp_path().to_owned();
    std::mem::forget(w);
    assert!(temp.exists());
    let store = Store::open(dir.path()).unwrap();
    assert!(!temp.exists());
    assert_eq!(store.blob_size(&d), None);
}

#[test]
fn manifests_and_tags() {
    let (_dir, store) = store();
    let body = br#"{"schemaVersion":2}"#;
    let d = Digest::sha256_of(body);
    let media: MediaType = crate::oci::media::OCI_MANIFEST.parse().unwrap();
    store.put_manifest(&d, body, &media).unwrap();
    let (bytes, m) = store.manifest(&d).unwrap();
    assert_eq!(&bytes[..], body);
    assert_eq!(m, media);
    assert!(
        store
            .put_manifest(&Digest::sha256_of(b"other"), body, &media)
            .is_err()
    );

    // A manifest corrupted on disk is dropped rather than served.
    fs::write(store.manifest_path(&d), b"garbage").unwrap();
    assert!(store.manifest(&d).is_none());

    let reg: RegistryHost = "docker.io".parse().unwrap();
    let repo: RepoName = "library/x".parse().unwrap();
    let tag: Tag = "latest".parse().unwrap();
    assert!(store.tag(&reg, &repo, &tag).is_none());
    let rec = TagRecord {
        digest: d,
        media_type: media,
    };
    store.put_tag(&reg, &repo, &tag, &rec).unwrap();
    assert_eq!(store.tag(&reg, &repo, &tag), Some(rec.clone()));
    // A repository whose last component equals a tag of its parent does not collide.
    let nested: RepoName = "library/x/latest".parse().unwrap();
    store.put_tag(&reg, &nested, &tag, &rec).unwrap();
    assert_eq!(store.tag(&reg, &repo, &tag), Some(rec));
}
