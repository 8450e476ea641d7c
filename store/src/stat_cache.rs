//! `StatCache`: (device, inode, size, mtime, ctime) → digest, so a no-op run
//! reads no file it has hashed before. Racy entries (modified within the
//! timestamp granularity of when they were recorded) are not trusted, as git
//! does for its index.
//!
//! Git's racy-entry rule, adapted: a file written in the same timestamp tick
//! as we recorded its digest can be written again within that tick without
//! its mtime (or size) changing, and the stale digest would then be trusted.
//! So an entry is trusted only when its file's mtime is at least
//! [`RACY_MARGIN_NS`] before the wall-clock time the entry was recorded
//! (2 s covers filesystems with coarse timestamps, e.g. FAT's 2 s, ext3's 1 s).
//! A racy entry reads as a miss: the caller rehashes and records again with a
//! new recorded time, which the next run then trusts.
use crate::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long before its recording a file's mtime must be for the entry to be
/// trusted.
pub const RACY_MARGIN_NS: i64 = 2_000_000_000;

/// The stat fields that identify a file version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub executable: bool,
}

impl FileStat {
    #[cfg(unix)]
    pub fn from_metadata(meta: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            executable: meta.mode() & 0o111 != 0,
        }
    }

    /// Without inode numbers and ctime, fall back on size and mtime only.
    #[cfg(not(unix))]
    pub fn from_metadata(meta: &std::fs::Metadata) -> FileStat {
        let mtime_ns = meta.modified().ok().map_or(0, system_time_ns);
        FileStat {
            dev: 0,
            ino: 0,
            size: meta.len(),
            mtime_ns,
            ctime_ns: mtime_ns,
            executable: false,
        }
    }
}

/// Nanoseconds since the Unix epoch (negative before it).
pub(crate) fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_ns() -> i64 {
    system_time_ns(SystemTime::now())
}

/// One cached file version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub stat: FileStat,
    pub digest: Digest,
    /// Wall clock (ns since epoch) when the digest was recorded.
    pub recorded_ns: i64,
    /// Recorded in this run and not yet saved.
    pub dirty: bool,
}

impl Entry {
    fn trusted_for(&self, stat: &FileStat) -> bool {
        self.stat == *stat && stat.mtime_ns <= self.recorded_ns.saturating_sub(RACY_MARGIN_NS)
    }
}

/// FxHash (rustc's): paths are not attacker-chosen keys here, and SipHash
/// over `Path`'s component-wise `Hash` dominated loading the cache.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map = HashMap<Vec<u8>, Entry, std::hash::BuildHasherDefault<FxHasher>>;

/// The map key: the path's bytes (unique per path on every platform).
fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

fn owned_key(path: PathBuf) -> Vec<u8> {
    path.into_os_string().into_encoded_bytes()
}

fn key_path(key: &[u8]) -> PathBuf {
    // Safety: every key came from `key` or `owned_key`, i.e. from an OsStr
    // of this platform, unmodified.
    PathBuf::from(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(key) })
}

/// In-memory view, loaded once per run, saved once at the end. Thread-safe
/// (`&self` methods; interior Mutex or sharded locks).
///
/// One mutex: every critical section is a single hash-map operation, far
/// cheaper than the `stat` call the caller made just before, so contention
/// does not matter at build scale. Keyed by the path's bytes.
pub struct StatCache {
    entries: Mutex<Map>,
}

impl StatCache {
    pub fn empty() -> StatCache {
        StatCache {
            entries: Mutex::new(Map::default()),
        }
    }

    /// The digest recorded for `path` if `stat` matches and the entry is not racy.
    pub fn lookup(&self, path: &Path, stat: &FileStat) -> Option<Digest> {
        self.lock()
            .get(key(path))
            .filter(|e| e.trusted_for(stat))
            .map(|e| e.digest)
    }

    /// Records (or replaces) the digest for `path`; marks it dirty for saving.
    pub fn record(&self, path: &Path, stat: &FileStat, digest: Digest) {
        self.record_at(path, stat, digest, now_ns());
    }

    /// Number of entries (loaded plus recorded).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// `record` with an explicit recording time (tests; importing entries).
    pub(crate) fn record_at(&self, path: &Path, stat: &FileStat, digest: Digest, recorded_ns: i64) {
        let entry = Entry {
            stat: *stat,
            digest,
            recorded_ns,
            dirty: true,
        };
        self.lock().insert(key(path).to_vec(), entry);
    }

    /// Inserts a row loaded from the database (not dirty).
    pub(crate) fn insert_loaded(&self, path: PathBuf, entry: Entry) {
        self.lock().insert(
            owned_key(path),
            Entry {
                dirty: false,
                ..entry
            },
        );
    }

    /// Snapshot of the entries that need saving.
    pub(crate) fn dirty_entries(&self) -> Vec<(PathBuf, Entry)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(p, e)| (key_path(p), *e))
            .collect()
    }

    /// Clears the dirty flag of saved entries, unless re-recorded meanwhile.
    pub(crate) fn mark_saved(&self, saved: &[(PathBuf, Entry)]) {
        let mut map = self.lock();
        for (path, entry) in saved {
            if let Some(current) = map.get_mut(key(path)) {
                if current == entry {
                    current.dirty = false;
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-updated
        // (each section is one map operation), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for StatCache {
    fn default() -> StatCache {
        StatCache::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn stat_of(path: &Path) -> FileStat {
        FileStat::from_metadata(&fs::metadata(path).unwrap())
    }

    #[test]
    fn fresh_file_is_racy_old_entry_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let stat = stat_of(&path);
        let d = Digest::of_bytes(b"hello");
        let cache = StatCache::empty();
        assert_eq!(cache.lookup(&path, &stat), None);
        // Just written, recorded now: racy, so not trusted.
        cache.record(&path, &stat, d);
        assert_eq!(cache.lookup(&path, &stat), None);
        // Recorded well after the mtime: trusted.
        cache.record_at(&path, &stat, d, stat.mtime_ns + 3 * RACY_MARGIN_NS);
        assert_eq!(cache.lookup(&path, &stat), Some(d));
        // Exactly at the margin is trusted; just inside is not.
        cache.record_at(&path, &stat, d, stat.mtime_ns + RACY_MARGIN_NS);
        assert_eq!(cache.lookup(&path, &stat), Some(d));
        cache.record_at(&path, &stat, d, stat.mtime_ns + RACY_MARGIN_NS - 1);
        assert_eq!(cache.lookup(&path, &stat), None);
    }

    #[test]
    fn stat_changes_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"v1").unwrap();
        let stat = stat_of(&path);
        let d = Digest::of_bytes(b"v1");
        let cache = StatCache::empty();
        cache.record_at(&path, &stat, d, stat.mtime_ns + 10 * RACY_MARGIN_NS);
        assert_eq!(cache.lookup(&path, &stat), Some(d));
        let changed = [
            FileStat {
                size: stat.size + 1,
                ..stat
            },
            FileStat {
                mtime_ns: stat.mtime_ns - 1,
                ..stat
            },
            FileStat {
                ctime_ns: stat.ctime_ns + 1,
                ..stat
            },
            FileStat {
                ino: stat.ino + 1,
                ..stat
            },
            FileStat {
                dev: stat.dev + 1,
                ..stat
            },
            FileStat {
                executable: !stat.executable,
                ..stat
            },
        ];
        for s in changed {
            assert_eq!(cache.lookup(&path, &s), None, "{s:?}");
        }
        // A real rewrite changes size (and mtime).
        fs::write(&path, b"version 2").unwrap();
        assert_eq!(cache.lookup(&path, &stat_of(&path)), None);
        assert_eq!(cache.lookup(&dir.path().join("other"), &stat), None);
    }

    #[cfg(unix)]
    #[test]
    fn from_metadata_reads_mode_and_times() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, b"abc").unwrap();
        let s = stat_of(&path);
        assert_eq!(s.size, 3);
        assert!(!s.executable);
        assert!(s.ino != 0);
        let now = now_ns();
        assert!(
            (now - s.mtime_ns).abs() < 60_000_000_000,
            "mtime {} vs now {now}",
            s.mtime_ns
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o744)).unwrap();
        assert!(stat_of(&path).executable);
    }

    #[test]
    fn usable_from_many_threads() {
        let cache = StatCache::empty();
        let stat = FileStat {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 0,
            ctime_ns: 0,
            executable: false,
        };
        std::thread::scope(|s| {
            for t in 0..4 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..100 {
                        let p = PathBuf::from(format!("/t{t}/f{i}"));
                        cache.record(
                            &p,
                            &stat,
                            Digest::of_bytes(p.as_os_str().as_encoded_bytes()),
                        );
                        assert!(cache.lookup(&p, &stat).is_some());
                    }
                });
            }
        });
        assert_eq!(cache.len(), 400);
        assert_eq!(cache.dirty_entries().len(), 400);
    }
}
