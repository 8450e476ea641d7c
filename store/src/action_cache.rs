//! `ActionCache`: SQLite (WAL) mapping action keys to results, with the
//! narrowing records of the two-level lookup (weak key → records; strong key → result).
//!
//! Concurrency: several processes may open the same database. WAL lets
//! readers proceed while one writer writes; every multi-statement write runs
//! in a `BEGIN IMMEDIATE` transaction so a writer waits (busy_timeout) for
//! the write lock up front instead of failing when upgrading a read lock.
//!
//! Crash safety: a transaction is all or nothing, and the orchestrator writes
//! an entry only after its blobs are in the CAS, so `kill -9` leaves no entry
//! pointing at a missing blob. An entry's output tree (its `tree` column)
//! and the description of its key (with its last-run pointer) are not
//! blobs but written in the same transaction as the entry, so they are
//! never missing either; each is stored with its digest and checked
//! against it on every read, as a blob is.
//!
//! With `synchronous=NORMAL` a power loss may drop
//! the last commits (never corrupt the file); a blob torn by power loss is
//! caught by the CAS's verify-on-read and the entry can then be `remove`d.
use crate::schema::{self, Conn};
use crate::stat_cache::{Entry as StatEntry, FileStat};
use crate::{Digest, Result, StatCache, StoreError, StrongKey, Tree, WeakKey};
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Records kept per weak key (most recently used win). Each lookup tries
/// every record under the weak key, so the list must stay short; a record
/// evicted here only costs a miss.
pub const MAX_RECORDS_PER_WEAK_KEY: i64 = 32;

/// What a successful action produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Digest of the output `Tree`'s canonical bytes (paths
    /// workspace-relative). The bytes are kept in the entry's row.
    pub output_tree: Digest,
    pub stdout: Digest,
    pub stderr: Digest,
    pub exit_code: i32,
    /// The tool's declarations (IPC), opaque JSON to the store.
    pub declarations: serde_json::Value,
    pub duration_ms: u64,
    /// The order stdout and stderr bytes arrived in (records of stream and
    /// length), when the action wrote to both; absent in older entries and
    /// in entries from a remote cache (replayed stdout first then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interleave: Option<Digest>,
}

/// One row written after a successful cacheable action.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    pub weak_key: WeakKey,
    pub strong_key: StrongKey,
    /// Narrowing record (opaque JSON text owned by the orchestrator). Stored
    /// once per (weak_key, record) pair.
    pub record: String,
    /// The workspace's scope (its root: two repos with the same name are two
    /// scopes) and the label: for `vbuild clean` and `vbuild why`. Never
    /// part of a key, so a copy of the workspace elsewhere still hits.
    pub workspace: String,
    pub label: String,
    /// What the key was computed from (bytes owned by the orchestrator),
    /// to explain a later miss; kept (packed, with its digest) with the
    /// (workspace, label) last-run pointer this put sets.
    pub explain: Vec<u8>,
    /// The output tree; `result.output_tree` must be its digest. Kept in
    /// the row as its canonical bytes (a remote gets it as output files).
    pub tree: Tree,
    pub result: ActionResult,
}

/// An entry found by [`ActionCache::get`]: its result and output tree
/// (checked against `result.output_tree`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub result: ActionResult,
    pub tree: Tree,
}

/// One `records` row as stored: (weak key bytes, record text).
pub type RawRecord = (Vec<u8>, String);

/// One `entries` row as stored, for checking it.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub strong_key: Vec<u8>,
    pub label: String,
    /// The output tree's canonical bytes.
    pub tree: Vec<u8>,
    pub result: String,
}

/// Parses a stored result: `Err(StoreError::Corrupt)` on bad JSON or digests.
pub fn parse_result(json: &str) -> Result<ActionResult> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("action result: {e}")))
}

/// The output tree of `result` from the bytes stored with it: they must
/// hash to `result.output_tree` (as a blob must hash to its name) and
/// parse; else `Err(StoreError::Corrupt)`.
pub fn parse_tree(result: &ActionResult, bytes: &[u8]) -> Result<Tree> {
    if Digest::of_bytes(bytes) != result.output_tree {
        return Err(StoreError::Corrupt(
            "its output tree does not match its digest".into(),
        ));
    }
    Tree::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("its output tree does not parse: {e}")))
}

/// One `last_run` row as stored, for checking its key description.
#[derive(Clone, Debug)]
pub struct RawLastRun {
    pub scope: String,
    pub label: String,
    /// The digest of the description.
    pub explain: Vec<u8>,
    /// The description, packed (`packed.rs`).
    pub explain_doc: Vec<u8>,
}

/// A key description as a last-run row holds it, unpacked and checked
/// against its digest.
pub(crate) fn checked_explain(digest: &[u8], doc: &[u8]) -> Result<Vec<u8>> {
    let doc = packed::unpack(doc).map_err(StoreError::Corrupt)?;
    if to_digest(digest)? != Digest::of_bytes(&doc) {
        return Err(StoreError::Corrupt(
            "its key description does not match its digest".into(),
        ));
    }
    Ok(doc)
}

/// The most recent entry written for (workspace, label).
#[derive(Clone, Debug)]
pub struct LastRun {
    pub weak_key: WeakKey,
    pub strong_key: StrongKey,
    /// The key description it was stored with (checked against its digest).
    pub explain: Vec<u8>,
    pub result: ActionResult,
}

pub struct ActionCache {
    /// The writer (and the connection of everything but lookups).
    conn: Mutex<Conn>,
    /// Read connections for lookups, one per worker thread (by slot):
    /// WAL lets them read while the writer writes, so the workers of a
    /// no-op run no longer take turns on one connection. Opened on first use.
    readers: Vec<Mutex<OnceLock<Conn>>>,
    path: PathBuf,
}

/// Read connections per cache: enough for one per worker at the default
/// `-j` (twice the cores) on the machines vbuild runs on; threads beyond
/// that share them (each still reads in its own transaction).
const READERS: usize = 8;

/// A lookup's read transaction on one read connection: the records of a
/// weak key and the entries they lead to are read from one snapshot, with
/// one lock of the WAL index instead of one per statement.
pub struct Reader<'a> {
    cache: &'a ActionCache,
    conn: MutexGuard<'a, OnceLock<Conn>>,
}

impl ActionCache {
    /// Opens/creates the DB: WAL, busy_timeout (several processes at once),
    /// `schema_version` in a meta table, migrations; refuses a newer version.
    pub fn open(path: &Path) -> Result<ActionCache> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = schema::open(path)?;
        Ok(ActionCache {
            conn: Mutex::new(conn),
            readers: (0..READERS).map(|_| Mutex::new(OnceLock::new())).collect(),
            path: path.to_path_buf(),
        })
    }

    /// Starts a lookup's read transaction on this thread's read
    /// connection. The writer is never used for it, so a worker looking up
    /// never waits for another's lookup or for a write (WAL).
    pub fn reader(&self) -> Result<Reader<'_>> {
        self.checked((|| {
            let slot = &self.readers[reader_slot() % self.readers.len()];
            let guard = slot.lock().unwrap_or_else(|p| p.into_inner());
            if guard.get().is_none() {
                let conn = schema::open_reader(&self.path)?;
                let _ = guard.set(conn);
            }
            let reader = Reader {
                cache: self,
                conn: guard,
            };
            if !reader.conn().is_autocommit() {
                // A previous reader's COMMIT failed: drop its snapshot.
                reader.conn().execute_batch("ROLLBACK")?;
            }
            // Cached statements: parsing BEGIN and COMMIT anew for every
            // lookup cost more than the two lookups' own statements.
            reader
                .conn()
                .prepare_cached("BEGIN DEFERRED")?
                .execute([])?;
            Ok(reader)
        })())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All records stored under a weak key, most recently used first.
    pub fn records(&self, weak_key: &WeakKey) -> Result<Vec<String>> {
        self.reader()?.records(weak_key)
    }

    /// The result stored under a strong key. A row that does not parse is
    /// `Err(StoreError::Corrupt)`: the caller reports it, `remove`s it and
    /// runs the action, as for a corrupt blob.
    ///
    /// Using an entry marks it as used (`last_used`) when that mark is
    /// older than [`crate::gc::TOUCH_MS`]: the garbage collector never
    /// removes an entry marked within that interval before the oldest
    /// running build started, so an entry returned here stays while the
    /// caller restores it (`gc.rs` has the argument). If the entry vanished
    /// between the read and the mark (collected meanwhile), it is a miss.
    pub fn get(&self, strong_key: &StrongKey) -> Result<Option<StoredEntry>> {
        self.reader()?.get(strong_key)
    }

    /// Inserts record (if new), the entry (replacing an existing strong key),
    /// and updates the (workspace, label) → last pointer: one transaction.
    pub fn put(&self, entry: &CacheEntry) -> Result<()> {
        self.checked(self.put_inner(entry))
    }

    fn put_inner(&self, entry: &CacheEntry) -> Result<()> {
        let result_json = serde_json::to_string(&entry.result)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode action result: {e}")))?;
        let tree = entry.tree.to_canonical_bytes();
        if Digest::of_bytes(&tree) != entry.result.output_tree {
            return Err(StoreError::Corrupt(format!(
                "refusing to store an entry for {} whose result names another output tree",
                entry.label
            )));
        }
        let explain = Digest::of_bytes(&entry.explain);
        let explain_doc = packed::pack(&entry.explain);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        bump_record(&tx, &entry.weak_key, &entry.record)?;
        // Upsert rather than INSERT OR REPLACE: REPLACE deletes the old row,
        // which would cascade to last_run pointers of other labels.
        tx.prepare_cached(
            "INSERT INTO entries (strong_key, weak_key, workspace, label, tree,
                                  result, created_at, last_used)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT (strong_key) DO UPDATE SET
               weak_key = excluded.weak_key, workspace = excluded.workspace,
               label = excluded.label, tree = excluded.tree,
               result = excluded.result, created_at = excluded.created_at,
               last_used = excluded.last_used",
        )?
        .execute(params![
            entry.strong_key.as_bytes(),
            entry.weak_key.as_bytes(),
            entry.workspace,
            entry.label,
            tree,
            result_json,
            now_ms(),
        ])?;
        // Several workspaces (a copy at another path) may own one entry;
        // `clear_workspace` deletes an entry only when its last owner goes.
        tx.prepare_cached(
            "INSERT INTO entry_owners (scope, strong_key) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![entry.workspace, entry.strong_key.as_bytes()])?;
        tx.prepare_cached(
            "INSERT INTO last_run (scope, label, strong_key, explain, explain_doc)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (scope, label) DO UPDATE SET strong_key = excluded.strong_key,
               explain = excluded.explain, explain_doc = excluded.explain_doc",
        )?
        .execute(params![
            entry.workspace,
            entry.label,
            entry.strong_key.as_bytes(),
            &explain.0[..],
            explain_doc,
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a record as just used (call on a cache hit found through it), so
    /// `records` tries it first next time and eviction keeps it.
    pub fn touch_record(&self, weak_key: &WeakKey, record: &str) -> Result<()> {
        self.checked((|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            bump_record(&tx, weak_key, record)?;
            tx.commit()?;
            Ok(())
        })())
    }

    /// Drops one record (it did not parse): it only costs a miss.
    pub fn remove_record(&self, weak_key: &WeakKey, record: &str) -> Result<()> {
        self.checked((|| {
            let conn = self.conn();
            conn.prepare_cached("DELETE FROM records WHERE weak_key = ?1 AND record = ?2")?
                .execute(params![weak_key.as_bytes(), record])?;
            Ok(())
        })())
    }

    /// The last entry written for (workspace scope, label). A row that does
    /// not parse is `Err(StoreError::Corrupt)`.
    pub fn last_run(&self, workspace: &str, label: &str) -> Result<Option<LastRun>> {
        let row = self.checked((|| {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT e.weak_key, e.strong_key, l.explain, l.explain_doc, e.result
                 FROM last_run l JOIN entries e ON e.strong_key = l.strong_key
                 WHERE l.scope = ?1 AND l.label = ?2",
            )?;
            Ok(stmt
                .query_row(params![workspace, label], |r| {
                    Ok((
                        blob(r, 0)?,
                        blob(r, 1)?,
                        blob(r, 2)?,
                        blob(r, 3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?)
        })())?;
        let Some((weak, strong, explain, doc, json)) = row else {
            return Ok(None);
        };
        Ok(Some(LastRun {
            weak_key: WeakKey(to_digest(&weak)?),
            strong_key: StrongKey(to_digest(&strong)?),
            explain: checked_explain(&explain, &doc)?,
            result: parse_result(&json)?,
        }))
    }

    /// Removes a strong-key entry (e.g. its blobs were found corrupt).
    /// Last-run pointers to it go too (foreign key cascade); the records
    /// under its weak key stay, as they still describe what the tool reads.
    pub fn remove(&self, strong_key: &StrongKey) -> Result<()> {
        self.checked((|| {
            let conn = self.conn();
            conn.prepare_cached("DELETE FROM entries WHERE strong_key = ?1")?
                .execute([strong_key.as_bytes()])?;
            Ok(())
        })())
    }

    /// Forgets a workspace scope: its last-run pointers and its ownership
    /// of entries. Entries no other scope owns are deleted, and the records
    /// of their weak keys once no entry is left under them. Returns the
    /// entries deleted; entries another scope (a copy of the workspace at
    /// another path) also owns stay, since that scope still uses them.
    pub fn clear_workspace(&self, workspace: &str) -> Result<u64> {
        self.checked(self.clear_inner(workspace))
    }

    fn clear_inner(&self, workspace: &str) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM last_run WHERE scope = ?1")?
            .execute([workspace])?;
        let doomed: Vec<(Vec<u8>, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT e.strong_key, e.weak_key FROM entries e
                 JOIN entry_owners o ON o.strong_key = e.strong_key AND o.scope = ?1
                 WHERE NOT EXISTS (SELECT 1 FROM entry_owners x
                                   WHERE x.strong_key = e.strong_key AND x.scope <> ?1)",
            )?
            .query_map([workspace], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        tx.prepare_cached("DELETE FROM entry_owners WHERE scope = ?1")?
            .execute([workspace])?;
        for (strong, _) in &doomed {
            tx.prepare_cached("DELETE FROM entries WHERE strong_key = ?1")?
                .execute([strong])?;
        }
        for (_, weak) in &doomed {
            tx.prepare_cached(
                "DELETE FROM records WHERE weak_key = ?1
                   AND NOT EXISTS (SELECT 1 FROM entries WHERE weak_key = ?1)",
            )?
            .execute([weak])?;
        }
        tx.commit()?;
        Ok(doomed.len() as u64)
    }

    /// Number of entries.
    pub fn entry_count(&self) -> Result<u64> {
        self.checked((|| {
            let conn = self.conn();
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM entries")?
                .query_row([], |r| r.get(0))?;
            Ok(n as u64)
        })())
    }

    /// Loads the stat cache rows whose path starts with `prefix`.
    pub fn load_stat_cache(&self, prefix: &str) -> Result<crate::StatCache> {
        self.checked(self.load_stat_inner(prefix))
    }

    fn load_stat_inner(&self, prefix: &str) -> Result<crate::StatCache> {
        let cache = StatCache::empty();
        let conn = self.conn();
        // A range over the primary key (not LIKE/substr) so SQLite seeks
        // straight to the prefix instead of scanning every workspace's rows.
        let lower = prefix.as_bytes();
        let upper = prefix_successor(lower);
        let mut stmt = match upper {
            Some(_) => {
                conn.prepare_cached(&format!("{STAT_SELECT} WHERE path >= ?1 AND path < ?2"))?
            }
            None => conn.prepare_cached(&format!("{STAT_SELECT} WHERE path >= ?1"))?,
        };
        let mut rows = match &upper {
            Some(upper) => stmt.query(params![lower, upper])?,
            None => stmt.query([lower])?,
        };
        while let Some(row) = rows.next()? {
            // A malformed row is skipped, not fatal: it is only a cache, and
            // the file's next hash overwrites it.
            if let Some((path, entry)) = stat_row(row)? {
                cache.insert_loaded(path, entry);
            }
        }
        Ok(cache)
    }

    /// Writes the stat cache's new/changed rows in one transaction.
    pub fn save_stat_cache(&self, cache: &crate::StatCache) -> Result<()> {
        self.checked(self.save_stat_inner(cache))
    }

    fn save_stat_inner(&self, cache: &crate::StatCache) -> Result<()> {
        let dirty = cache.dirty_entries();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO stat_cache
                 (path, dev, ino, size, mtime_ns, ctime_ns, executable, digest, recorded_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (path, e) in &dirty {
                // u64 fields are stored bit-for-bit as SQLite's signed i64.
                stmt.execute(params![
                    path_bytes(path),
                    e.stat.dev as i64,
                    e.stat.ino as i64,
                    e.stat.size as i64,
                    e.stat.mtime_ns,
                    e.stat.ctime_ns,
                    e.stat.executable,
                    &e.digest.0[..],
                    e.recorded_ns,
                ])?;
            }
        }
        tx.commit()?;
        cache.mark_saved(&dirty);
        Ok(())
    }

    /// The SHA-256 (and size) recorded for a BLAKE3 blob, if any.
    pub fn sha256_of(&self, blake3: &Digest) -> Result<Option<([u8; 32], u64)>> {
        let conn = self.conn();
        let row: Option<(Vec<u8>, i64)> = conn
            .prepare_cached("SELECT sha256, size FROM remote_digests WHERE blake3 = ?1")?
            .query_row([&blake3.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(sha, size)| Some((sha.try_into().ok()?, size as u64))))
    }

    /// The BLAKE3 recorded for a SHA-256 of `size` bytes, if any.
    pub fn blake3_of_sha256(&self, sha256: &[u8; 32], size: u64) -> Result<Option<Digest>> {
        let conn = self.conn();
        let row: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT blake3 FROM remote_digests WHERE sha256 = ?1 AND size = ?2 LIMIT 1",
            )?
            .query_row(params![&sha256[..], size as i64], |r| r.get(0))
            .optional()?;
        Ok(row.and_then(|b| Digest::from_slice(&b)))
    }

    /// Records that the blob `blake3` has this SHA-256 and size. Callers
    /// record only pairs they computed from the same bytes.
    pub fn put_sha256(&self, blake3: &Digest, sha256: &[u8; 32], size: u64) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO remote_digests (blake3, sha256, size) VALUES (?1, ?2, ?3)
             ON CONFLICT (blake3) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
        )?
        .execute(params![&blake3.0[..], &sha256[..], size as i64])?;
        Ok(())
    }

    /// Every entry as stored, unparsed (for `vbuild store verify`).
    pub fn raw_entries(&self) -> Result<Vec<RawEntry>> {
        self.checked((|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT strong_key, label, tree, result FROM entries ORDER BY label, strong_key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(RawEntry {
                    strong_key: r.get(0)?,
                    label: r.get(1)?,
                    tree: r.get(2)?,
                    result: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })())
    }

    /// Every last-run pointer's key description as stored (for verify).
    pub fn raw_last_runs(&self) -> Result<Vec<RawLastRun>> {
        self.checked((|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT scope, label, explain, explain_doc FROM last_run ORDER BY label, scope",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(RawLastRun {
                    scope: r.get(0)?,
                    label: r.get(1)?,
                    explain: r.get(2)?,
                    explain_doc: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })())
    }

    /// Drops a last-run pointer (its key description is unusable): the
    /// entry stays; the next miss of the label has no reason to give.
    pub fn remove_last_run(&self, scope: &str, label: &str) -> Result<()> {
        self.checked((|| {
            let conn = self.conn();
            conn.execute(
                "DELETE FROM last_run WHERE scope = ?1 AND label = ?2",
                params![scope, label],
            )?;
            Ok(())
        })())
    }

    /// Every narrowing record as stored: (weak key bytes, record text).
    pub fn raw_records(&self) -> Result<Vec<RawRecord>> {
        self.checked((|| {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT weak_key, record FROM records ORDER BY weak_key, record")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })())
    }

    /// Deletes rows by their raw key bytes (which may not even be a digest).
    pub fn remove_raw(
        &self,
        strong_key: Option<&[u8]>,
        record: Option<(&[u8], &str)>,
    ) -> Result<()> {
        self.checked((|| {
            let conn = self.conn();
            if let Some(k) = strong_key {
                conn.execute("DELETE FROM entries WHERE strong_key = ?1", [k])?;
            }
            if let Some((weak, text)) = record {
                conn.execute(
                    "DELETE FROM records WHERE weak_key = ?1 AND record = ?2",
                    params![weak, text],
                )?;
            }
            Ok(())
        })())
    }

    /// SQLite's own structural check: empty when the file is sound.
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        self.checked((|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })())
    }

    /// A damaged database file (not a database, malformed pages) becomes
    /// an error naming the file and what to do; other errors pass through.
    fn checked<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| schema::damaged(e, &self.path))
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Conn> {
        // A panic mid-transaction rolls the transaction back as it unwinds
        // (Transaction's Drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reader<'_> {
    fn conn(&self) -> &Conn {
        self.conn.get().expect("opened by ActionCache::reader")
    }

    /// All records stored under a weak key, most recently used first.
    pub fn records(&self, weak_key: &WeakKey) -> Result<Vec<String>> {
        self.cache.checked((|| {
            let mut stmt = self.conn().prepare_cached(
                "SELECT record FROM records WHERE weak_key = ?1 ORDER BY last_used DESC",
            )?;
            let rows = stmt.query_map([weak_key.as_bytes()], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })())
    }

    /// The result stored under a strong key. A row that does not parse is
    /// `Err(StoreError::Corrupt)`: the caller reports it, `remove`s it and
    /// runs the action, as for a corrupt blob.
    ///
    /// Using an entry marks it as used (`last_used`) when that mark is
    /// older than [`crate::gc::TOUCH_MS`]: the garbage collector never
    /// removes an entry marked within that interval before the oldest
    /// running build started, so an entry returned here stays while the
    /// caller restores it (`gc.rs` has the argument). The mark goes
    /// through the writer, at once (not batched at the end: the argument
    /// needs it before the restore), and sees the latest state: if the
    /// entry vanished after this snapshot read it (collected meanwhile),
    /// it is a miss.
    pub fn get(&self, strong_key: &StrongKey) -> Result<Option<StoredEntry>> {
        type Row = (String, Vec<u8>);
        let cache = self.cache;
        let row: Option<Row> = cache.checked((|| {
            let mut stmt = self.conn().prepare_cached(
                "SELECT result, tree, last_used FROM entries WHERE strong_key = ?1",
            )?;
            let row: Option<(String, Vec<u8>, i64)> = stmt
                .query_row([strong_key.as_bytes()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((json, tree, last_used)) = row else {
                return Ok(None);
            };
            let now = now_ms();
            if last_used < now - crate::gc::TOUCH_MS {
                let marked = cache
                    .conn()
                    .prepare_cached("UPDATE entries SET last_used = ?2 WHERE strong_key = ?1")?
                    .execute(params![strong_key.as_bytes(), now])?;
                if marked == 0 {
                    return Ok(None);
                }
            }
            Ok(Some((json, tree)))
        })())?;
        let Some((json, tree)) = row else {
            return Ok(None);
        };
        let result = parse_result(&json)?;
        let tree = parse_tree(&result, &tree)?;
        Ok(Some(StoredEntry { result, tree }))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // Read-only: ending it can only release the snapshot. A failure
        // leaves the transaction open, so start the next one afresh.
        let ended = self
            .conn()
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if ended.is_err() {
            let _ = self.conn().execute_batch("ROLLBACK");
        }
    }
}

/// This thread's read-connection slot: threads take consecutive slots as
/// they first look something up (the workers of a run: one each).
fn reader_slot() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

const STAT_SELECT: &str =
    "SELECT path, dev, ino, size, mtime_ns, ctime_ns, executable, digest, recorded_ns FROM stat_cache";

/// Inserts the record or bumps its `last_used`, then evicts the oldest
/// records beyond [`MAX_RECORDS_PER_WEAK_KEY`].
fn bump_record(tx: &rusqlite::Transaction<'_>, weak_key: &WeakKey, record: &str) -> Result<()> {
    // Strictly above the newest record of this weak key, so order follows
    // use even when two uses share a clock reading.
    tx.prepare_cached(
        "INSERT INTO records (weak_key, record, last_used)
         VALUES (?1, ?2, max(?3, coalesce((SELECT max(last_used) + 1 FROM records WHERE weak_key = ?1), 0)))
         ON CONFLICT (weak_key, record) DO UPDATE SET last_used = excluded.last_used",
    )?
    .execute(params![weak_key.as_bytes(), record, crate::stat_cache::now_ns()])?;
    tx.prepare_cached(
        "DELETE FROM records WHERE weak_key = ?1 AND record NOT IN
           (SELECT record FROM records WHERE weak_key = ?1 ORDER BY last_used DESC LIMIT ?2)",
    )?
    .execute(params![weak_key.as_bytes(), MAX_RECORDS_PER_WEAK_KEY])?;
    Ok(())
}

fn blob(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<u8>> {
    row.get(idx)
}

fn to_digest(bytes: &[u8]) -> Result<Digest> {
    Digest::from_slice(bytes).ok_or_else(|| {
        StoreError::Corrupt(format!("digest column has {} bytes, not 32", bytes.len()))
    })
}

pub(crate) fn now_ms() -> i64 {
    crate::stat_cache::now_ns() / 1_000_000
}

/// One stat_cache row, or `None` if malformed.
fn stat_row(row: &Row<'_>) -> Result<Option<(PathBuf, StatEntry)>> {
    // `get_ref` and a typed view, not `get`: a no-op run loads one row
    // per source file of the workspace, and `get`'s generic conversion
    // (plus a Vec for the digest) per column was most of loading them.
    use rusqlite::types::ValueRef;
    let int = |i: usize| -> Result<i64> {
        match row.get_ref(i)? {
            ValueRef::Integer(n) => Ok(n),
            _ => Err(StoreError::Corrupt(format!(
                "stat cache column {i} is not an integer"
            ))),
        }
    };
    let ValueRef::Blob(digest) = row.get_ref(7)? else {
        return Ok(None);
    };
    let Some(digest) = Digest::from_slice(digest) else {
        return Ok(None);
    };
    let path = match row.get_ref(0)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        _ => return Ok(None),
    };
    let stat = FileStat {
        dev: int(1)? as u64,
        ino: int(2)? as u64,
        size: int(3)? as u64,
        mtime_ns: int(4)?,
        ctime_ns: int(5)?,
        executable: int(6)? != 0,
    };
    let entry = StatEntry {
        stat,
        digest,
        recorded_ns: int(8)?,
        dirty: false,
    };
    Ok(Some((path_from_bytes(path), entry)))
}

/// Smallest byte string greater than every string starting with `prefix`,
/// or `None` when there is none (empty prefix or all 0xff).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

mod packed;

#[cfg(test)]
mod tests;
