use std::fs;

use proptest::prelude::*;

use super::*;
use crate::store::Store;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Deterministic, non-repeating test content.
fn blob(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn piece(data: &[u8], map: &PieceMap, i: u32) -> Vec<u8> {
    let r = map.piece_range(i);
    data[r.start as usize..r.end as usize].to_vec()
}

#[test]
fn geometry_and_default_piece_size() {
    const MIB: u64 = 1024 * 1024;
    assert_eq!(piece_count(0, 4), 0);
    assert_eq!(piece_count(8, 4), 2);
    assert_eq!(piece_count(9, 4), 3);
    assert_eq!(default_piece_size(0), MIN_DEFAULT_PIECE_SIZE);
    assert_eq!(default_piece_size(8 * 1024 * MIB), MIN_DEFAULT_PIECE_SIZE);
    assert_eq!(default_piece_size(8 * 1024 * MIB + 1), 8 * MIB as u32);
    assert_eq!(default_piece_size(100 * 1024 * MIB), 64 * MIB as u32);
    assert_eq!(default_piece_size(u64::MAX / 2), MAX_PIECE_SIZE);
    for size in [MIB, 5 * 1024 * MIB, 20 * 1024 * MIB, 100 * 1024 * MIB] {
        let ps = default_piece_size(size);
        assert!(ps.is_power_of_two());
        assert!(piece_count(size, ps) <= 2048);
    }
    // A configured size is kept unless the blob would have too many pieces.
    assert_eq!(piece_size_for(10 * 1024 * MIB, Some(1 << 20)), 1 << 20);
    assert_eq!(piece_size_for(10 * 1024 * MIB, None), 8 << 20);
    let huge = u64::from(MAX_PIECES) * MIB * 2;
    assert_eq!(piece_size_for(huge, Some(1 << 20)), 2 << 20);
    assert!(valid_piece_size(MIN_PIECE_SIZE) && valid_piece_size(MAX_PIECE_SIZE));
    assert!(!valid_piece_size(MIN_PIECE_SIZE / 2) && !valid_piece_size(3 << 20));
    let d = Digest::sha256_of(b"x");
    let map = PieceMap::new(d.clone(), 10, 4).unwrap();
    assert_eq!(map.piece_count(), 3);
    assert_eq!(map.piece_range(2), 8..10);
    assert!(PieceMap::new(d.clone(), 10, 0).is_err());
    assert!(PieceMap::new(d.clone(), 10, MAX_PIECE_SIZE + 1).is_err());
    assert!(PieceMap::new(d.clone(), u64::from(MAX_PIECES) + 1, 1).is_err());
    assert!(PieceMap::from_parts(d, 10, 4, vec![None; 2]).is_err());
}

#[test]
fn bitmap_is_lsb_first() {
    assert!(bitmap_has(&[0b0000_0001], 0));
    assert!(bitmap_has(&[0, 0b1000_0000], 15));
    assert!(!bitmap_has(&[0xff], 8));
}

#[test]
fn hasher_over_odd_chunks_equals_per_piece_hashes() {
    let data = blob(1000);
    let d = Digest::sha256_of(&data);
    let mut h = PieceHasher::new(1000, 64).unwrap();
    let mut emitted = Vec::new();
    let mut rest = &data[..];
    for chunk in [1, 63, 64, 65, 7, 200, 3].iter().cycle() {
        let n = (*chunk).min(rest.len());
        h.update(&rest[..n], |i, hash| emitted.push((i, hash)))
            .unwrap();
        rest = &rest[n..];
        if rest.is_empty() {
            break;
        }
    }
    assert!(h.update(b"x", |_, _| {}).is_err(), "past the end");
    let map = h.finish(d.clone()).unwrap();
    assert_eq!(map.piece_count(), 16);
    assert!(map.is_complete());
    for i in 0..16 {
        let expected = hash_piece(&piece(&data, &map, i));
        assert_eq!(map.hash(i), Some(expected));
        assert_eq!(emitted[i as usize], (i, expected));
    }
    assert_eq!(PieceMap::from_data(d.clone(), &data, 64).unwrap(), map);

    let mut short = PieceHasher::new(1000, 64).unwrap();
    short.update(&data[..999], |_, _| {}).unwrap();
    assert!(matches!(
        short.finish(d),
        Err(PieceError::StreamLength { .. })
    ));
}

#[test]
fn piece_map_serde_round_trips_and_validates() {
    let data = blob(100);
    let mut map = PieceMap::new(Digest::sha256_of(&data), 100, 30).unwrap();
    map.set_hash(1, hash_piece(&data[30..60])).unwrap();
    let json = serde_json::to_string(&map).unwrap();
    assert!(json.contains("null"));
    let back: PieceMap = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
    let bad = json.replacen("null", "\"abcd\"", 1);
    assert!(serde_json::from_str::<PieceMap>(&bad).is_err());
    let bad = json.replace("\"piece_size\":30", "\"piece_size\":0");
    assert!(serde_json::from_str::<PieceMap>(&bad).is_err());
}

#[test]
fn out_of_order_pieces_finish_into_blobs() {
    let (_dir, store) = store();
    let data = blob(1000);
    let d = Digest::sha256_of(&data);
    let map = PieceMap::from_data(d.clone(), &data, 128).unwrap();
    let mut p = store.partial(&d, 1000, 128).unwrap();
    assert!(matches!(
        p.write_piece(3, &piece(&data, &map, 3)),
        Err(PieceError::UnknownHash { index: 3 })
    ));
    assert_eq!(p.merge_map(&map).unwrap(), 8);
    for i in [7, 2, 0, 5] {
        p.write_piece(i, &piece(&data, &map, i)).unwrap();
    }
    assert_eq!(p.verified_count(), 4);
    assert_eq!(p.missing(), vec![1, 3, 4, 6]);
    assert_eq!(p.contiguous_verified(), 128);
    assert_eq!(p.verified_bytes(), 3 * 128 + (1000 - 7 * 128));
    assert_eq!(p.bitmap(), vec![0b1010_0101]);
    assert_eq!(&p.read_piece(7).unwrap()[..], &data[896..]);
    assert_eq!(&p.read_at(640, 100).unwrap()[..], &data[640..740]);
    assert!(matches!(
        p.read_at(100, 100),
        Err(PieceError::NotVerified { index: 1 })
    ));
    assert!(matches!(
        p.read_at(990, 20),
        Err(PieceError::BeyondEnd { .. })
    ));
    // A duplicate is checked but harmless.
    p.write_piece(7, &piece(&data, &map, 7)).unwrap();
    for i in p.missing() {
        p.write_piece(i, &piece(&data, &map, i)).unwrap();
    }
    assert!(p.is_complete());
    assert_eq!(p.contiguous_verified(), 1000);
    assert_eq!(p.finish().unwrap(), 1000);
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), data);
    assert_eq!(store.partials().unwrap(), vec![]);
    assert_eq!(fs::read_dir(store.partial_dir()).unwrap().count(), 0);
}

#[test]
fn wrong_bytes_are_rejected_and_nothing_marked() {
    let (_dir, store) = store();
    let data = blob(300);
    let d = Digest::sha256_of(&data);
    let map = PieceMap::from_data(d.clone(), &data, 100).unwrap();
    let mut p = store.partial(&d, 300, 100).unwrap();
    p.merge_map(&map).unwrap();
    let mut bad = piece(&data, &map, 1);
    bad[50] ^= 1;
    let err = p.write_piece(1, &bad).unwrap_err();
    assert!(matches!(err, PieceError::HashMismatch { index: 1 }));
    assert!(err.blames_sender());
    let err = p.write_piece(1, &bad[..99]).unwrap_err();
    assert!(matches!(err, PieceError::WrongLength { .. }) && err.blames_sender());
    assert!(matches!(
        p.write_piece(3, &bad),
        Err(PieceError::OutOfRange { .. })
    ));
    assert_eq!(p.verified_count(), 0);
    assert!(!p.has(1));
    assert!(p.read_piece(1).is_err());
    // Nothing was written either.
    assert_eq!(fs::read(&p.paths.data).unwrap(), vec![0; 300]);
}

#[test]
fn conflicting_hashes_are_refused() {
    let (_dir, store) = store();
    let data = blob(300);
    let d = Digest::sha256_of(&data);
    let map = PieceMap::from_data(d.clone(), &data, 100).unwrap();
    let mut p = store.partial(&d, 300, 100).unwrap();
    assert!(p.set_hash(0, map.hash(0).unwrap()).unwrap());
    assert!(!p.set_hash(0, map.hash(0).unwrap()).unwrap());
    assert!(matches!(
        p.set_hash(0, [0; 32]),
        Err(PieceError::HashConflict { index: 0 })
    ));
    let liar = PieceMap::from_data(d.clone(), &blob(301)[1..], 100).unwrap();
    assert!(matches!(
        p.merge_map(&liar),
        Err(PieceError::HashConflict { .. })
    ));
    assert_eq!(p.map().known_count(), 1, "a refused merge learns nothing");
    let other = PieceMap::new(d, 300, 50).unwrap();
    assert!(matches!(p.merge_map(&other), Err(PieceError::MapMismatch)));
}

#[test]
fn drop_without_finish_resumes_with_the_same_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(1000);
    let d = Digest::sha256_of(&data);
    let map = PieceMap::from_data(d.clone(), &data, 100).unwrap();
    let mut p = store.partial(&d, 1000, 100).unwrap();
    p.merge_map(&map).unwrap();
    for i in [1, 4, 9] {
        p.write_piece(i, &piece(&data, &map, i)).unwrap();
    }
    let bits = p.bitmap();
    drop(p);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.partials().unwrap(), vec![d.clone()]);
    let mut p = store.partial(&d, 1000, 100).unwrap();
    assert_eq!(p.bitmap(), bits);
    assert_eq!(p.map(), &map, "hashes persist too");
    assert_eq!(&p.read_piece(4).unwrap()[..], &data[400..500]);
    for i in p.missing() {
        p.write_piece(i, &piece(&data, &map, i)).unwrap();
    }
    drop(p);
    // Resuming without knowing the layout.
    let p = store.open_partial(&d).unwrap().unwrap();
    assert!(p.is_complete());
    p.finish().unwrap();
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), data);
    assert!(store.open_partial(&d).unwrap().is_none());
}

#[test]
fn crash_between_checkpoints_never_marks_unwritten_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(1000);
    let d = Digest::sha256_of(&data);
    let map = PieceMap::from_data(d.clone(), &data, 100).unwrap();
    let mut p = store.partial(&d, 1000, 100).unwrap();
    p.merge_map(&map).unwrap();
    p.write_piece(0, &piece(&data, &map, 0)).unwrap();
    p.checkpoint().unwrap();
    p.write_piece(5, &piece(&data, &map, 5)).unwrap();
    // Suspect piece 0, then rewrite it: the on-disk meta must stop vouching for it first.
    p.reset_pieces(&[0]).unwrap();
    assert_eq!(p.map().hash(0), None);
    p.write_trusted_piece(0, &piece(&data, &map, 0)).unwrap();
    std::mem::forget(p); // no drop: a crash

    let store = Store::open(dir.path()).unwrap();
    let p = store.partial(&d, 1000, 100).unwrap();
    // Rewriting piece 0 forced a checkpoint that retracted it and carried piece 5 along.
    assert!(p.has(5), "checkpointed progress survives");
    assert!(
        !p.has(0),
        "a piece rewritten after the last checkpoint is not vouched for"
    );
    for i in 0..10 {
        if p.has(i) {
            assert_eq!(p.read_piece(i).unwrap()[..], piece(&data, &map, i)[..]);
        }
    }
}

#[test]
fn corrupt_or_mismatched_meta_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(1000);
    let d = Digest::sha256_of(&data);
    let mut p = store.partial(&d, 1000, 100).unwrap();
    p.write_trusted_piece(0, &data[..100]).unwrap();
    let meta_path = p.paths.meta.clone();
    drop(p);

    let mut meta = fs::read(&meta_path).unwrap();
    let mid = meta.len() / 2;
    meta[mid] ^= 0x40;
    fs::write(&meta_path, &meta).unwrap();
    let p = store.partial(&d, 1000, 100).unwrap();
    assert_eq!(p.verified_count(), 0, "a corrupt meta is not trusted");
    assert_eq!(p.map().known_count(), 0);
    drop(p);

    // Another size or piece size for the same digest: start over.
    let mut p = store.partial(&d, 1000, 100).unwrap();
    p.write_trusted_piece(0, &data[..100]).unwrap();
    drop(p);
    let p = store.partial(&d, 1000, 200).unwrap();
    assert_eq!((p.verified_count(), p.piece_count()), (0, 5));
    drop(p);
    let p = store.partial(&d, 999, 200).unwrap();
    assert_eq!((p.verified_count(), p.size()), (0, 999));
    assert_eq!(fs::metadata(&p.paths.data).unwrap().len(), 999);
}

#[test]
fn self_consistent_but_wrong_pieces_fail_the_digest() {
    let (_dir, store) = store();
    let data = blob(500);
    let d = Digest::sha256_of(&data);
    let lies = blob(501)[1..].to_vec();
    let liar_map = PieceMap::from_data(d.clone(), &lies, 100).unwrap();
    let mut p = store.partial(&d, 500, 100).unwrap();
    p.merge_map(&liar_map).unwrap();
    for i in 0..5 {
        p.write_piece(i, &piece(&lies, &liar_map, i)).unwrap();
    }
    let (data_path, meta_path) = (p.paths.data.clone(), p.paths.meta.clone());
    assert!(matches!(p.finish(), Err(StoreError::DigestMismatch { .. })));
    assert_eq!(store.blob_size(&d), None);
    assert!(!data_path.exists() && !meta_path.exists());
    assert_eq!(store.partials().unwrap(), vec![]);
}

#[test]
fn trusted_bytes_replace_a_lying_map() {
    let (_dir, store) = store();
    let data = blob(300);
    let d = Digest::sha256_of(&data);
    let liar_map = PieceMap::from_data(d.clone(), &blob(301)[1..], 100).unwrap();
    let mut p = store.partial(&d, 300, 100).unwrap();
    p.merge_map(&liar_map).unwrap();
    p.write_piece(1, &blob(301)[101..201]).unwrap();
    for i in 0..3 {
        let r = i as usize * 100..(i as usize + 1) * 100;
        p.write_trusted_piece(i, &data[r]).unwrap();
    }
    assert!(p.is_complete());
    p.finish().unwrap();
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), data);
}

#[test]
fn empty_blob_and_sha512() {
    let (_dir, store) = store();
    let empty = Digest::sha256_of(b"");
    let p = store.partial(&empty, 0, 16).unwrap();
    assert!(p.is_complete());
    assert_eq!(p.finish().unwrap(), 0);
    assert_eq!(store.blob_size(&empty), Some(0));

    let data = blob(70);
    let mut h = crate::oci::Hasher::new(crate::oci::Algorithm::Sha512);
    h.update(&data);
    let d512 = h.finish();
    let mut p = store.partial(&d512, 70, 32).unwrap();
    for i in [2, 0, 1] {
        let r = i * 32..(i * 32 + 32).min(70);
        p.write_trusted_piece(i as u32, &data[r]).unwrap();
    }
    p.finish().unwrap();
    assert_eq!(fs::read(store.blob_path(&d512)).unwrap(), data);
}

#[test]
fn open_keeps_intact_partials_and_drops_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(200);
    let keep = Digest::sha256_of(&data);
    let mut p = store.partial(&keep, 200, 100).unwrap();
    p.write_trusted_piece(0, &data[..100]).unwrap();
    drop(p);

    let pdir = store.partial_dir();
    let corrupt = Digest::sha256_of(b"corrupt");
    let stem = |d: &Digest| format!("{}-{}", d.algorithm().as_str(), d.hex());
    fs::write(pdir.join(format!("{}.meta", stem(&corrupt))), b"junk").unwrap();
    fs::write(pdir.join(format!("{}.data", stem(&corrupt))), b"junk").unwrap();
    let orphan = Digest::sha256_of(b"orphan");
    fs::write(pdir.join(format!("{}.data", stem(&orphan))), b"x").unwrap();
    fs::write(pdir.join("whatever.meta.tmp"), b"x").unwrap();
    // A meta whose data file was truncated behind our back.
    let short = Digest::sha256_of(b"short");
    drop(store.partial(&short, 50, 10).unwrap());
    fs::write(pdir.join(format!("{}.data", stem(&short))), b"x").unwrap();
    // A partial whose blob completed, but the crash came before its meta was removed.
    let done = Digest::sha256_of(b"done");
    drop(store.partial(&done, 4, 10).unwrap());
    fs::write(store.blob_path(&done), b"done").unwrap();

    let store = Store::open(dir.path()).unwrap();
    let mut left: Vec<_> = fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            format!("{}.data", stem(&keep)),
            format!("{}.meta", stem(&keep))
        ]
    );
    assert_eq!(store.partials().unwrap(), vec![keep.clone()]);
    let p = store.partial(&keep, 200, 100).unwrap();
    assert_eq!(p.missing(), vec![1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the piece order, the chunking of the map's stream and the interruptions, the
    /// pieces make the blob.
    #[test]
    fn any_order_and_chunking_reconstructs_the_blob(
        len in 0usize..3000,
        piece_size in 1u32..700,
        chunks in proptest::collection::vec(1usize..500, 1..20),
        order_seed in any::<u64>(),
        reopen_every in 1usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let data = blob(len);
        let d = Digest::sha256_of(&data);
        let mut hasher = PieceHasher::new(len as u64, piece_size).unwrap();
        let mut rest = &data[..];
        for &c in chunks.iter().cycle() {
            if rest.is_empty() { break; }
            let n = c.min(rest.len());
            hasher.update(&rest[..n], |_, _| {}).unwrap();
            rest = &rest[n..];
        }
        let map = hasher.finish(d.clone()).unwrap();
        prop_assert_eq!(&map, &PieceMap::from_data(d.clone(), &data, piece_size).unwrap());

        let mut order: Vec<u32> = (0..map.piece_count()).collect();
        let mut s = order_seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut p = store.partial(&d, len as u64, piece_size).unwrap();
        p.merge_map(&map).unwrap();
        for (n, &i) in order.iter().enumerate() {
            p.write_piece(i, &piece(&data, &map, i)).unwrap();
            if n % reopen_every == 0 {
                drop(p);
                store = Store::open(dir.path()).unwrap();
                p = store.partial(&d, len as u64, piece_size).unwrap();
            }
        }
        prop_assert!(p.is_complete());
        prop_assert_eq!(p.finish().unwrap(), len as u64);
        prop_assert_eq!(fs::read(store.blob_path(&d)).unwrap(), data);
    }
}
