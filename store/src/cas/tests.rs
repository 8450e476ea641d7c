use super::*;
use std::os::unix::fs::PermissionsExt;

fn open() -> (tempfile::TempDir, Cas) {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(dir.path()).unwrap();
    (dir, cas)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Overwrites a blob's bytes in place, as disk corruption would.
fn corrupt(cas: &Cas, digest: &Digest) {
    let path = cas.blob_path(digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&path, bytes).unwrap();
}

#[test]
fn put_and_read_round_trip() {
    let (dir, cas) = open();
    let d = cas.put_bytes(b"hello world").unwrap();
    assert_eq!(d, Digest::of_bytes(b"hello world"));
    assert!(cas.contains(&d));
    let hex = d.to_hex();
    assert_eq!(
        cas.blob_path(&d),
        dir.path().join("cas").join(&hex[..1]).join(&hex[1..])
    );
    assert_eq!(mode(&cas.blob_path(&d)), 0o444);
    assert_eq!(cas.read_verified(&d).unwrap(), b"hello world");
    // Idempotent; the empty blob works too.
    assert_eq!(cas.put_bytes(b"hello world").unwrap(), d);
    let empty = cas.put_bytes(b"").unwrap();
    assert_eq!(cas.read_verified(&empty).unwrap(), b"");
    assert_eq!(cas.stats().unwrap(), (2, 11));
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn missing_blob() {
    let (dir, cas) = open();
    let d = Digest::of_bytes(b"absent");
    assert!(!cas.contains(&d));
    assert!(matches!(cas.read_verified(&d), Err(CasError::Missing(x)) if x == d));
    let dest = dir.path().join("out");
    assert!(matches!(
        cas.copy_out(&d, &dest, false),
        Err(CasError::Missing(_))
    ));
    assert!(!dest.exists());
}

#[test]
fn put_file_streams_large_file() {
    let (dir, cas) = open();
    // ~5 MiB of non-repeating bytes, not a multiple of the chunk size.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 123u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = dir.path().join("big.bin");
    fs::write(&src, &data).unwrap();
    let (d, size) = cas.put_file(&src).unwrap();
    assert_eq!(d, Digest::of_bytes(&data));
    assert_eq!(size, data.len() as u64);
    assert_eq!(cas.read_verified(&d).unwrap(), data);
    // Second put of the same content: same answer, temp file dropped.
    assert_eq!(cas.put_file(&src).unwrap(), (d, size));
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(cas.stats().unwrap(), (1, size));

    let dest = dir.path().join("deep/er/copy.bin");
    cas.copy_out(&d, &dest, true).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(mode(&dest), 0o755);
}

#[test]
fn put_file_of_missing_source_is_io_error() {
    let (dir, cas) = open();
    let err = cas.put_file(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, CasError::Io { .. }));
}

#[test]
fn copy_out_replaces_file_and_symlink() {
    let (dir, cas) = open();
    let d = cas.put_bytes(b"content").unwrap();
    let dest = dir.path().join("f");
    fs::write(&dest, b"old old old").unwrap();
    cas.copy_out(&d, &dest, false).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"content");
    assert_eq!(mode(&dest), 0o644);

    // A symlink at dest is replaced, its target left alone.
    let target = dir.path().join("target");
    fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    cas.copy_out(&d, &link, false).unwrap();
    assert!(!fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&link).unwrap(), b"content");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");

    // A directory at dest is an error and stays as it is.
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    assert!(matches!(
        cas.copy_out(&d, &sub, false),
        Err(CasError::Io { .. })
    ));
    assert!(sub.is_dir());
    // No temp files left next to the destinations.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".vbuild-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn corrupt_blob_detected_by_read_verified() {
    let (_dir, cas) = open();
    let d = cas.put_bytes(b"precious bytes").unwrap();
    corrupt(&cas, &d);
    assert!(matches!(cas.read_verified(&d), Err(CasError::Corrupt(x)) if x == d));
    assert!(!cas.contains(&d), "corrupt blob removed");
    assert!(matches!(cas.read_verified(&d), Err(CasError::Missing(_))));
    // Repaired by the next put.
    cas.put_bytes(b"precious bytes").unwrap();
    assert_eq!(cas.read_verified(&d).unwrap(), b"precious bytes");
}

#[test]
fn corrupt_blob_detected_by_copy_out_dest_untouched() {
    let (dir, cas) = open();
    let d = cas.put_bytes(b"precious bytes").unwrap();
    corrupt(&cas, &d);
    let dest = dir.path().join("out/file");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, b"previous").unwrap();
    assert!(matches!(
        cas.copy_out(&d, &dest, false),
        Err(CasError::Corrupt(_))
    ));
    assert_eq!(fs::read(&dest).unwrap(), b"previous");
    assert!(!cas.contains(&d));
    assert_eq!(
        fs::read_dir(dest.parent().unwrap()).unwrap().count(),
        1,
        "temp file removed"
    );
}

#[test]
fn concurrent_puts_of_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![7u8; 300_000];
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (root, data) = (dir.path(), &data);
            // Separate Cas instances, as separate processes would have.
            s.spawn(move || {
                let cas = Cas::open(root).unwrap();
                for _ in 0..20 {
                    assert_eq!(cas.put_bytes(data).unwrap(), Digest::of_bytes(data));
                }
            });
        }
    });
    let cas = Cas::open(dir.path()).unwrap();
    assert_eq!(cas.read_verified(&Digest::of_bytes(&data)).unwrap(), data);
    assert_eq!(cas.stats().unwrap(), (1, data.len() as u64));
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn cas_error_converts_to_store_error() {
    let d = Digest::of_bytes(b"x");
    assert!(matches!(
        StoreError::from(CasError::Corrupt(d)),
        StoreError::Corrupt(_)
    ));
    let io = CasError::Io {
        path: "p".into(),
        source: io::Error::other("boom"),
    };
    assert!(matches!(StoreError::from(io), StoreError::Io { .. }));
}

#[test]
fn link_out_shares_the_blob_only_when_it_verifies() {
    let (dir, cas) = open();
    let d = cas.put_bytes(b"linked bytes").unwrap();
    let dest = dir.path().join("linked");
    cas.link_out(&d, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"linked bytes");
    assert_eq!(mode(&dest), 0o444, "the link is the read-only blob itself");

    let bad = cas.put_bytes(b"bytes to corrupt").unwrap();
    corrupt(&cas, &bad);
    let dest = dir.path().join("not-linked");
    assert!(matches!(
        cas.link_out(&bad, &dest),
        Err(CasError::Corrupt(_))
    ));
    assert!(!dest.exists() && !cas.contains(&bad));
    assert!(
        cas.link_out(&Digest::empty(), &dir.path().join("empty"))
            .is_err(),
        "the empty blob is copied"
    );
}

#[test]
fn hash_file_stores_nothing_and_copy_file_verified_checks_the_bytes() {
    let (dir, cas) = open();
    let src = dir.path().join("src.txt");
    fs::write(&src, b"source bytes").unwrap();
    let (digest, size) = cas.hash_file(&src).unwrap();
    assert_eq!((digest, size), (Digest::of_bytes(b"source bytes"), 12));
    assert!(!cas.contains(&digest), "hashing stores nothing");
    // Unchanged: copied with the requested mode.
    let dest = dir.path().join("staged.txt");
    assert!(cas.copy_file_verified(&src, &digest, &dest, 0o444).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), b"source bytes");
    assert_eq!(mode(&dest), 0o444);
    // Changed since it was hashed: refused, and nothing left at `dest`.
    fs::write(&src, b"edited bytes").unwrap();
    let dest2 = dir.path().join("staged2.txt");
    assert!(!cas
        .copy_file_verified(&src, &digest, &dest2, 0o444)
        .unwrap());
    assert!(!dest2.exists());
    // Never replaces an existing file, never follows a symlink source.
    assert!(cas.copy_file_verified(&src, &digest, &dest, 0o444).is_err());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    let digest2 = Digest::of_bytes(b"edited bytes");
    let dest3 = dir.path().join("staged3.txt");
    assert!(!cas
        .copy_file_verified(&link, &digest2, &dest3, 0o444)
        .unwrap());
    assert!(!dest3.exists());
}

#[test]
fn copy_into_reads_exactly_the_trees_size_and_verifies() {
    let (_d, cas) = open();
    let bytes = b"hello world";
    let digest = cas.put_bytes(bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let mut f = File::create(&dest).unwrap();
    cas.copy_into(&digest, bytes.len() as u64, &mut f, &dest)
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), bytes);

    // A tree lying about the size: an error, and the intact blob is kept.
    let mut f = File::create(dir.path().join("short")).unwrap();
    let err = cas.copy_into(&digest, 5, &mut f, &dest).unwrap_err();
    assert!(matches!(err, CasError::Io { .. }), "{err}");
    assert!(err.to_string().contains("the tree says 5 bytes"), "{err}");
    assert!(cas.contains(&digest));

    // A corrupt blob: removed, reported as corrupt.
    corrupt(&cas, &digest);
    let mut f = File::create(dir.path().join("bad")).unwrap();
    let err = cas
        .copy_into(&digest, bytes.len() as u64, &mut f, &dest)
        .unwrap_err();
    assert!(matches!(err, CasError::Corrupt(_)), "{err}");
    assert!(!cas.contains(&digest));
}

#[test]
fn copy_into_of_a_large_blob_clones_or_copies_exactly() {
    let (_d, cas) = open();
    // Above CLONE_FROM: the reflink path, or where the filesystem refuses
    // it (ext4, tmpfs) copy_file_range, then streaming.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = cas.put_bytes(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["first", "second"] {
        let dest = dir.path().join(name);
        let mut f = File::create(&dest).unwrap();
        cas.copy_into(&digest, bytes.len() as u64, &mut f, &dest)
            .unwrap();
        drop(f);
        assert!(fs::read(&dest).unwrap() == bytes, "{name}");
    }
    // Corrupt: nothing cloned, the blob removed.
    corrupt(&cas, &digest);
    let dest = dir.path().join("bad");
    let mut f = File::create(&dest).unwrap();
    let err = cas
        .copy_into(&digest, bytes.len() as u64, &mut f, &dest)
        .unwrap_err();
    assert!(matches!(err, CasError::Corrupt(_)), "{err}");
    assert!(!cas.contains(&digest));
}

/// Blobs fan out over at most 16 directories (each is an inode a cold
/// build creates; 100 blobs made ~82 of the 256 before schema v7).
#[test]
fn blobs_fan_out_over_sixteen_directories() {
    let (dir, cas) = open();
    for i in 0..100u32 {
        cas.put_bytes(&i.to_le_bytes()).unwrap();
    }
    let dirs = std::fs::read_dir(dir.path().join("cas")).unwrap().count();
    assert!(dirs <= 16, "{dirs} directories");
    assert_eq!(cas.stats().unwrap().0, 100);
}
