//! The size budget and garbage collection.
//!
//! The store may hold at most a budget of blob bytes (default
//! [`DEFAULT_MAX_SIZE`], `$VBUILD_STORE_MAX_SIZE`). [`collect`] removes the
//! least recently used entries until the blobs the remaining ones need fit
//! the target size, then every blob no remaining entry needs.
//!
//! Several processes share a store, so a collection must never remove what
//! a running build holds. Each build holds a [`Lease`] from before its first
//! read or write until it ends: a file under `leases/`, locked while the
//! build lives (a dead build's lease is unlocked and cleaned up). Let `S`
//! be the start of the oldest live lease (or the collection's own start).
//! - Entries: a build that uses an entry marks it (`last_used`) unless the
//!   mark is younger than [`TOUCH_MS`] (`ActionCache::get`). The collector
//!   only deletes entries whose mark is older than `S - TOUCH_MS`, checked
//!   inside its delete transaction, so an entry a live build found is either
//!   kept, or deleted before the build's mark, which then finds no row and
//!   reports a miss.
//! - Blobs: a blob is deleted only if no remaining entry needs it and its
//!   mtime is older than `S - SLACK_MS`. Writers mark a blob they find
//!   already stored (`Cas::keep` sets its mtime), and every blob written
//!   since `S` is newer than that. The collector renames a blob aside before
//!   checking its mtime again and unlinking it: a writer whose mark lands
//!   first is seen (the blob goes back); one whose mark comes after the
//!   rename finds no file and writes the blob anew.
use crate::{Digest, Result, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Budget when none is configured: 10 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
/// The environment variable that sets the budget (`500M`, `10G`, bytes).
pub const ENV_MAX_SIZE: &str = "VBUILD_STORE_MAX_SIZE";
/// An entry's `last_used` is refreshed when older than this (10 minutes):
/// a hit on a fresh mark writes nothing.
pub const TOUCH_MS: i64 = 10 * 60 * 1000;
/// Blobs younger than the oldest build by less than this are kept
/// regardless (filesystem timestamps may lag the clock by a tick).
const SLACK_MS: i64 = 60 * 1000;
/// An automatic collection brings the store down to this share of the
/// budget, so the next runs do not collect again at once.
pub const AUTO_TARGET_PERCENT: u64 = 80;

/// Where a collection moves a blob before deciding to unlink it (not
/// `tmp/`, whose sweep of old files must not race with it).
const ASIDE: &str = "gc-aside";

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024;
/// `KB`, `KiB` and lower case accepted).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!("invalid size `{text}`: write bytes or a number with K, M, G or T (e.g. 500M, 10G)")
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    Ok((num * mult as f64) as u64)
}

/// A size for people: `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The budget and where it comes from.
pub fn budget() -> std::result::Result<(u64, &'static str), String> {
    match std::env::var(ENV_MAX_SIZE) {
        Ok(v) if !v.is_empty() => parse_size(&v)
            .map(|n| (n, "$VBUILD_STORE_MAX_SIZE"))
            .map_err(|e| format!("${ENV_MAX_SIZE}: {e}")),
        _ => Ok((DEFAULT_MAX_SIZE, "default")),
    }
}

/// Marks a blob as used now; false when it does not exist.
pub(crate) fn touch(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // Null times = now; allowed for the owner of a read-only file.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    if rc == 0 {
        return true;
    }
    // Not ours to touch (a store shared read-only): it exists all the same.
    io::Error::last_os_error().kind() != io::ErrorKind::NotFound && path.is_file()
}

/// A running build's claim on the store; see the module docs.
pub struct Lease {
    path: PathBuf,
    _file: File,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn flock(file: &File, how: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

impl Store {
    /// Takes a lease for a build (hold it until the build ends).
    pub fn lease(&self) -> Result<Lease> {
        let dir = self.root().join("leases");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{}-{}", now_ms(), std::process::id()));
        let file = File::create(&path).map_err(io_err(&path))?;
        flock(&file, libc::LOCK_EX);
        Ok(Lease { path, _file: file })
    }

    /// Start (ms) of the oldest lease whose build is alive; removes the
    /// leases of builds that died.
    fn oldest_lease(&self) -> Result<Option<i64>> {
        let dir = self.root().join("leases");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut oldest: Option<i64> = None;
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if flock(&file, libc::LOCK_SH) {
                // Nobody holds it: its build is gone.
                let _ = fs::remove_file(&path);
                continue;
            }
            let name = entry.file_name();
            let start = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0);
            oldest = Some(oldest.map_or(start, |o| o.min(start)));
        }
        Ok(oldest)
    }

    /// Bytes of blobs as last counted plus what was written since (an
    /// estimate kept in `cache.db`; `None` before the first count).
    pub fn usage_estimate(&self) -> Result<Option<u64>> {
        let conn = self.action_cache.conn();
        let v: Option<i64> = rusqlite::OptionalExtension::optional(conn.query_row(
            "SELECT value FROM meta WHERE key = 'usage_estimate'",
            [],
            |r| r.get(0),
        ))?;
        Ok(v.map(|v| v.max(0) as u64))
    }

    fn set_usage(&self, bytes: u64, add: bool) -> Result<()> {
        let conn = self.action_cache.conn();
        let sql = if add {
            "INSERT INTO meta (key, value) VALUES ('usage_estimate', ?1)
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
        } else {
            "INSERT INTO meta (key, value) VALUES ('usage_estimate', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        };
        conn.execute(sql, [bytes as i64])?;
        Ok(())
    }

    /// After a build: adds what it wrote to the usage estimate and collects
    /// down to [`AUTO_TARGET_PERCENT`] of `budget` when over it. `None` when
    /// nothing needed collecting.
    pub fn after_build(&self, budget: u64) -> Result<Option<GcReport>> {
        let written = self.cas.bytes_written();
        let usage = match self.usage_estimate()? {
            Some(u) => {
                if written > 0 {
                    self.set_usage(written, true)?;
                }
                u + written
            }
            // A store this build created holds what it wrote (another
            // build writing at the same time adds its own at its end, at
            // worst counted twice: an estimate, made exact by `collect`);
            // else count once, walking `cas/`.
            None if self.cas.created() => {
                self.set_usage(written, false)?;
                written
            }
            None => {
                let (_, bytes) = self.cas.stats()?;
                self.set_usage(bytes, false)?;
                bytes
            }
        };
        if usage <= budget {
            return Ok(None);
        }
        collect(self, budget / 100 * AUTO_TARGET_PERCENT).map(Some)
    }
}

/// What a collection did.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub entries_removed: u64,
    pub blobs_removed: u64,
    /// Another collection held the lock: nothing was done.
    pub busy: bool,
}

struct BlobInfo {
    size: u64,
    mtime_ms: i64,
}

/// Every blob on disk: digest → size and mtime. Blobs of the layout before
/// schema v7 (`cas/<2 hex>/`, which nothing reads any more) are listed
/// apart, by path: nothing needs them.
type Listing = (HashMap<Digest, BlobInfo>, Vec<(PathBuf, BlobInfo)>);

fn list_blobs(cas_dir: &Path) -> Result<Listing> {
    let mut blobs = HashMap::new();
    let mut legacy = Vec::new();
    let shards = match fs::read_dir(cas_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((blobs, legacy)),
        Err(e) => return Err(io_err(cas_dir)(e)),
    };
    for shard in shards.flatten() {
        let shard_name = shard.file_name();
        let Some(prefix) = shard_name.to_str() else {
            continue;
        };
        let Ok(rd) = fs::read_dir(shard.path()) else {
            continue;
        };
        for blob in rd.flatten() {
            let name = blob.file_name();
            let Some(rest) = name.to_str() else { continue };
            let Some(digest) = crate::cas::blob_name(prefix, rest) else {
                continue;
            };
            let Ok(meta) = blob.metadata() else { continue };
            let mtime_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            let info = BlobInfo {
                size: meta.len(),
                mtime_ms,
            };
            if prefix.len() == crate::cas::SHARD_HEX {
                blobs.insert(digest, info);
            } else {
                legacy.push((blob.path(), info));
            }
        }
    }
    Ok((blobs, legacy))
}

struct EntryRow {
    strong: Vec<u8>,
    last_used: i64,
    result: String,
    /// The output tree's canonical bytes (kept in the row, schema v5).
    tree: Vec<u8>,
}

fn entries(store: &Store) -> Result<Vec<EntryRow>> {
    let conn = store.action_cache.conn();
    let mut stmt = conn.prepare(
        "SELECT strong_key, last_used, result, tree FROM entries ORDER BY last_used DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(EntryRow {
            strong: r.get(0)?,
            last_used: r.get(1)?,
            result: r.get(2)?,
            tree: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The blobs an entry needs (its output tree and key description are in
/// its row, not blobs); `None` when its output tree is unreadable (the
/// entry is useless: a hit would fail on it).
fn needs(row: &EntryRow) -> Option<Vec<Digest>> {
    let result = crate::action_cache::parse_result(&row.result).ok()?;
    let tree = crate::action_cache::parse_tree(&result, &row.tree).ok()?;
    let mut out = vec![result.stdout, result.stderr];
    out.extend(result.interleave);
    for e in tree.entries() {
        if let crate::EntryKind::File { digest, .. } = &e.kind {
            out.push(*digest);
        }
    }
    Some(out)
}

/// Collects down to `target` bytes of blobs (see the module docs).
pub fn collect(store: &Store, target: u64) -> Result<GcReport> {
    let lock_path = store.root().join("gc.lock");
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    if !flock(&lock, libc::LOCK_EX) {
        return Ok(GcReport {
            busy: true,
            ..Default::default()
        });
    }
    // Blobs set aside by a collection that was killed: unneeded and old.
    let aside = store.root().join(ASIDE);
    let _ = fs::remove_dir_all(&aside);
    fs::create_dir_all(&aside).map_err(io_err(&aside))?;
    let start = now_ms().min(store.oldest_lease()?.unwrap_or(i64::MAX));
    let entry_fence = start - TOUCH_MS;
    let blob_fence = start - SLACK_MS;
    let (blobs, legacy) = list_blobs(store.cas.dir())?;
    let bytes_before: u64 = blobs
        .values()
        .chain(legacy.iter().map(|(_, b)| b))
        .map(|b| b.size)
        .sum();

    // Most recently used first: keep while the needed blobs fit.
    let rows = entries(store)?;
    let mut kept_blobs: HashSet<Digest> = HashSet::new();
    let mut kept_bytes = 0u64;
    let mut evict: Vec<Vec<u8>> = Vec::new();
    let mut full = false;
    for row in &rows {
        let protected = row.last_used >= entry_fence;
        let Some(need) = needs(row) else {
            if !protected {
                evict.push(row.strong.clone());
            }
            continue;
        };
        let new: Vec<Digest> = need
            .into_iter()
            .filter(|d| !kept_blobs.contains(d))
            .collect();
        let add: u64 = new
            .iter()
            .filter_map(|d| blobs.get(d))
            .map(|b| b.size)
            .sum();
        full |= kept_bytes + add > target;
        if full && !protected {
            evict.push(row.strong.clone());
            continue;
        }
        kept_bytes += add;
        kept_blobs.extend(new);
    }
    let entries_removed = remove_entries(store, &evict, entry_fence)?;

    // What the entries left now need (others may have been added meanwhile).
    let mut needed: HashSet<Digest> = HashSet::new();
    for row in entries(store)? {
        match needs(&row) {
            Some(n) => needed.extend(n),
            None => {
                // Unreadable tree: keep what can be named without it.
                if let Ok(r) = crate::action_cache::parse_result(&row.result) {
                    needed.extend([r.stdout, r.stderr]);
                    needed.extend(r.interleave);
                }
            }
        }
    }
    let mut blobs_removed = 0;
    let mut freed = 0u64;
    for (digest, info) in &blobs {
        if needed.contains(digest) || info.mtime_ms >= blob_fence {
            continue;
        }
        if remove_blob(store, digest, blob_fence)? {
            blobs_removed += 1;
            freed += info.size;
        }
    }
    // The old layout's blobs: no entry reads them (the v7 migration dropped
    // the entries that did), so they go, then their emptied directories.
    for (path, info) in &legacy {
        if info.mtime_ms < blob_fence && fs::remove_file(path).is_ok() {
            blobs_removed += 1;
            freed += info.size;
            if let Some(shard) = path.parent() {
                let _ = fs::remove_dir(shard);
            }
        }
    }
    let bytes_after = bytes_before - freed;
    store.set_usage(bytes_after, false)?;
    drop(lock);
    Ok(GcReport {
        bytes_before,
        bytes_after,
        entries_removed,
        blobs_removed,
        busy: false,
    })
}

fn remove_entries(store: &Store, keys: &[Vec<u8>], fence: i64) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut conn = store.action_cache.conn();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut removed = 0;
    {
        let mut stmt =
            tx.prepare("DELETE FROM entries WHERE strong_key = ?1 AND last_used < ?2")?;
        for k in keys {
            removed += stmt.execute(rusqlite::params![k, fence])? as u64;
        }
        // Records are only read together with an entry under their weak key.
        tx.execute(
            "DELETE FROM records WHERE weak_key NOT IN (SELECT weak_key FROM entries)",
            [],
        )?;
    }
    tx.commit()?;
    Ok(removed)
}

/// Renames the blob aside, checks it was not marked meanwhile, unlinks it.
fn remove_blob(store: &Store, digest: &Digest, fence: i64) -> Result<bool> {
    let path = store.cas.blob_path(digest);
    let aside = store.root().join(ASIDE).join(digest.to_hex());
    match fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&path)(e)),
    }
    let marked = fs::metadata(&aside)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_millis() as i64 >= fence);
    if marked {
        // A writer relies on it: put it back (unless it was written anew).
        if fs::hard_link(&aside, &path).is_err() && !path.exists() {
            return Err(StoreError::Corrupt(format!(
                "garbage collection could not put back blob {digest}"
            )));
        }
        let _ = fs::remove_file(&aside);
        return Ok(false);
    }
    fs::remove_file(&aside).map_err(io_err(&aside))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs of the layout before schema v7 (`cas/<2 hex>/<62 hex>`) serve
    /// no entry: a collection removes them and their directories, and
    /// leaves the current layout's blobs that are young or needed.
    #[test]
    fn collection_removes_the_old_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.cas.put_bytes(b"young").unwrap();
        let old = Digest::of_bytes(b"old layout").to_hex();
        let shard = dir.path().join("cas").join(&old[..2]);
        fs::create_dir_all(&shard).unwrap();
        let path = shard.join(&old[2..]);
        fs::write(&path, b"old layout").unwrap();
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let report = collect(&store, u64::MAX).unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert_eq!(report.bytes_before - report.bytes_after, 10);
        assert!(!shard.exists());
        assert!(store.cas.contains(&kept));
        assert_eq!(store.cas.stats().unwrap(), (1, 5));
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
