//! The action cache's SQLite schema: connection settings and migrations.
//!
//! Migration policy: `meta.schema_version` names the schema a database has.
//! `MIGRATIONS[n]` takes version n to n+1; opening applies the missing steps,
//! each in its own `BEGIN IMMEDIATE` transaction together with the version
//! bump, so a crash mid-migration leaves the previous version intact and two
//! processes opening at once cannot both migrate. A database newer than
//! `MIGRATIONS.len()` is refused, never downgraded.
use crate::{Result, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) type Conn = Connection;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Step n takes the schema from version n to n+1.
const MIGRATIONS: &[Migration] = &[
    v0_to_v1, v1_to_v2, v2_to_v3, v3_to_v4, v4_to_v5, v5_to_v6, v6_to_v7,
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn open(path: &Path) -> Result<Conn> {
    open_inner(path).map_err(|e| damaged(e, path))
}

/// Turns SQLite's "not a database" and "malformed" errors into
/// [`StoreError::Damaged`], which names the file and what to do.
pub(crate) fn damaged(e: StoreError, path: &Path) -> StoreError {
    match &e {
        StoreError::Sqlite(inner)
            if matches!(
                inner.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ) =>
        {
            StoreError::Damaged {
                path: path.to_path_buf(),
                detail: inner.to_string(),
            }
        }
        _ => e,
    }
}

/// A connection that only reads (lookups), to a database [`open`] has
/// already set up (WAL is persistent in the file; the schema migrated).
pub(crate) fn open_reader(path: &Path) -> Result<Conn> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A bug that writes through it fails instead of bypassing the writer.
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(16);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

fn open_inner(path: &Path) -> Result<Conn> {
    let mut conn = Connection::open(path)?;
    // The busy timeout first: the pragmas below may need a lock.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    enable_wal(&conn)?;
    // NORMAL in WAL mode is durable against crashes of the process and
    // consistent after power loss (may lose the last commits).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Room for every statement the cache prepares, so none is re-parsed.
    conn.set_prepared_statement_cache_capacity(64);
    // Plans must not depend on bound values: otherwise SQLite re-prepares
    // (re-parses and re-plans) a cached statement whenever a parameter it
    // may plan around is bound anew, i.e. on every lookup.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// WAL: readers never block the writer or each other across processes. The
/// mode is persistent in the file, so this is a no-op after the first open.
///
/// Switching a fresh database to WAL needs an exclusive lock, and SQLite
/// reports SQLITE_BUSY for it without calling the busy handler when another
/// connection is switching at the same moment (seen when two processes
/// create the store at once), so retry here for up to the busy timeout.
fn enable_wal(conn: &Conn) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && start.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn migrate(conn: &mut Conn, path: &Path) -> Result<()> {
    // Fast path without a write lock: the usual open finds the current schema.
    if check_version(read_version(conn)?, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the lock: another process may have migrated meanwhile.
        let version = check_version(read_version(&tx)?, path)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        MIGRATIONS[version as usize](&tx)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [version + 1],
        )?;
        tx.commit()?;
    }
}

fn check_version(found: i64, path: &Path) -> Result<i64> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "schema_version {found} is negative"
        )));
    }
    Ok(found)
}

/// 0 for a new, empty database.
fn read_version(conn: &Connection) -> Result<i64> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0))
}

fn v0_to_v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        );
        -- Narrowing records: what the tool declared under one weak key.
        CREATE TABLE records (
            weak_key  BLOB NOT NULL,
            record    TEXT NOT NULL,
            last_used INTEGER NOT NULL,   -- ns since epoch
            PRIMARY KEY (weak_key, record)
        ) WITHOUT ROWID;
        CREATE TABLE entries (
            strong_key BLOB PRIMARY KEY,
            weak_key   BLOB NOT NULL,
            workspace  TEXT NOT NULL,
            label      TEXT NOT NULL,
            explain    BLOB NOT NULL,
            result     TEXT NOT NULL,     -- ActionResult as JSON
            created_at INTEGER NOT NULL   -- ms since epoch
        );
        CREATE INDEX entries_by_workspace ON entries (workspace);
        CREATE INDEX entries_by_weak_key ON entries (weak_key);
        -- Removing an entry removes the pointers to it: never a dangling last run.
        CREATE TABLE last_run (
            workspace  TEXT NOT NULL,
            label      TEXT NOT NULL,
            strong_key BLOB NOT NULL REFERENCES entries (strong_key) ON DELETE CASCADE,
            PRIMARY KEY (workspace, label)
        );
        CREATE INDEX last_run_by_strong_key ON last_run (strong_key);
        -- Paths are absolute, as raw OS bytes; u64 fields stored as i64 bits.
        CREATE TABLE stat_cache (
            path        BLOB PRIMARY KEY,
            dev         INTEGER NOT NULL,
            ino         INTEGER NOT NULL,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            executable  INTEGER NOT NULL,
            digest      BLOB NOT NULL,
            recorded_ns INTEGER NOT NULL
        );",
    )
}

/// v2: the BLAKE3 ↔ SHA-256 mapping for remote caches that speak SHA-256.
fn v1_to_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "-- One row per blob whose SHA-256 is known (computed on upload or
        -- verified on download); only a cache: a lost row is recomputed.
        CREATE TABLE remote_digests (
            blake3 BLOB PRIMARY KEY,
            sha256 BLOB NOT NULL,
            size   INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX remote_digests_by_sha256 ON remote_digests (sha256);",
    )
}

/// v3: entries are owned by workspace scopes (a workspace's root, so two
/// repos with the same name never share `clean` or `why`); `last_run` is
/// keyed by scope. Existing rows keep their workspace name as their scope.
fn v2_to_v3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE entry_owners (
            scope      TEXT NOT NULL,
            strong_key BLOB NOT NULL REFERENCES entries (strong_key) ON DELETE CASCADE,
            PRIMARY KEY (scope, strong_key)
        ) WITHOUT ROWID;
        CREATE INDEX entry_owners_by_strong_key ON entry_owners (strong_key);
        INSERT INTO entry_owners (scope, strong_key) SELECT workspace, strong_key FROM entries;
        ALTER TABLE last_run RENAME COLUMN workspace TO scope;",
    )
}

/// v4: when each entry was last used (ms since epoch), for the size
/// budget's least-recently-used collection (`gc.rs`).
fn v3_to_v4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE entries ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
        UPDATE entries SET last_used = created_at;
        CREATE INDEX entries_by_last_used ON entries (last_used);",
    )
}

/// v5: an entry keeps its output tree (canonical bytes, whose digest is
/// the result's `output_tree`) in its row and the description of its key
/// (whose digest is `entries.explain`) in `explanations`, instead of as two
/// blobs: a cold build then creates one store file per output file, not two
/// more per action. The descriptions (a few KiB each, read only to explain
/// a miss) have a table of their own so that the rows a hit reads stay
/// small. A v4 row names both as blobs, which this layout does not read:
/// every v4 entry is dropped (its action runs again: a miss, never a
/// misread), and the records with them (only read with an entry). Their
/// blobs, now needed by nothing, go at the next collection.
fn v4_to_v5(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DELETE FROM last_run;
        DELETE FROM entry_owners;
        DELETE FROM entries;
        DELETE FROM records;
        ALTER TABLE entries ADD COLUMN tree BLOB NOT NULL DEFAULT x'';
        CREATE TABLE explanations (
            strong_key BLOB PRIMARY KEY REFERENCES entries (strong_key) ON DELETE CASCADE,
            doc        BLOB NOT NULL    -- its BLAKE3 is entries.explain
        );",
    )
}

/// The stat cache as one B-tree keyed by path (`WITHOUT ROWID`). A no-op
/// run loads every row under the workspace's prefix: through the rowid
/// table's separate path index, each row cost a second B-tree search (a
/// third of loading them). Rows are kept.
fn v5_to_v6(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE stat_cache_v6 (
            path        BLOB PRIMARY KEY,
            dev         INTEGER NOT NULL,
            ino         INTEGER NOT NULL,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            executable  INTEGER NOT NULL,
            digest      BLOB NOT NULL,
            recorded_ns INTEGER NOT NULL
        ) WITHOUT ROWID;
        -- A rowid table's primary key allowed NULL; a cache row without a
        -- path is useless anyway.
        INSERT INTO stat_cache_v6
            SELECT path, dev, ino, size, mtime_ns, ctime_ns, executable, digest, recorded_ns
            FROM stat_cache WHERE path IS NOT NULL;
        DROP TABLE stat_cache;
        ALTER TABLE stat_cache_v6 RENAME TO stat_cache;",
    )
}

/// v7: the key description is kept with the last-run pointer (the only
/// place it is read from: a miss is explained against the last entry of
/// its label), packed (`action_cache/packed.rs`), with its digest; not one
/// per entry. Entries no pointer names never needed theirs, and a put
/// writes the pointer's row anyway, so this costs no page of its own. v6
/// entries are dropped as v4 ones were (the v5/v6 layout of descriptions
/// lived only a day, in development).
fn v6_to_v7(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DELETE FROM last_run;
        DELETE FROM entry_owners;
        DELETE FROM entries;
        DELETE FROM records;
        DROP TABLE explanations;
        ALTER TABLE entries DROP COLUMN explain;
        ALTER TABLE last_run ADD COLUMN explain BLOB NOT NULL DEFAULT x'';
        ALTER TABLE last_run ADD COLUMN explain_doc BLOB NOT NULL DEFAULT x'';",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActionCache, StrongKey};

    /// A database left at schema `version`, filled by `fill` in the same
    /// transaction, as an older vbuild would have left it.
    fn db_at(path: &Path, version: usize, fill: impl FnOnce(&Transaction<'_>)) {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        for step in &MIGRATIONS[..version] {
            step(&tx).unwrap();
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
            [version as i64],
        )
        .unwrap();
        fill(&tx);
        tx.commit().unwrap();
    }

    /// One value read from the database at `path` on a fresh connection.
    fn query_one<T: rusqlite::types::FromSql>(path: &Path, sql: &str) -> T {
        Connection::open(path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    /// v5 → v6 keeps the stat cache's rows (one clustered table now).
    #[test]
    fn v5_stat_rows_survive_v6() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        db_at(&path, 5, |tx| {
            for (p, ino) in [(&b"/w/a/x.ts"[..], 7i64), (&b"/w/b/y.ts"[..], 8)] {
                tx.execute(
                    "INSERT INTO stat_cache VALUES (?1, 1, ?2, 3, 4, 5, 0, ?3, 9000000000)",
                    rusqlite::params![p, ino, &[9u8; 32][..]],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO stat_cache VALUES (NULL, 1, 2, 3, 4, 5, 0, x'00', 6)",
                [],
            )
            .unwrap();
        });
        let cache = ActionCache::open(&path).unwrap();
        let sql: String = query_one(
            &path,
            "SELECT sql FROM sqlite_master WHERE name = 'stat_cache'",
        );
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        let loaded = cache.load_stat_cache("/w/").unwrap();
        assert_eq!(loaded.len(), 2);
        let stat = crate::FileStat {
            dev: 1,
            ino: 7,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
            executable: false,
        };
        assert_eq!(
            loaded.lookup(std::path::Path::new("/w/a/x.ts"), &stat),
            Some(crate::Digest([9; 32]))
        );
    }

    /// A v4 database (output tree and key description as blobs) migrates
    /// to the current schema by dropping its entries and records: a v4
    /// row is never read as a current one (a miss, never a wrong hit).
    #[test]
    fn v4_entries_are_dropped_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        let key = [7u8; 32];
        db_at(&path, 4, |tx| {
            let d = crate::Digest([1; 32]).to_hex();
            let result = format!(
                r#"{{"output_tree":"{d}","stdout":"{d}","stderr":"{d}","exit_code":0,"declarations":null,"duration_ms":1}}"#
            );
            tx.execute(
                "INSERT INTO entries (strong_key, weak_key, workspace, label, explain, result, created_at, last_used)
                 VALUES (?1, ?1, 'old', '//a', ?1, ?2, 0, 0)",
                rusqlite::params![&key[..], result],
            )
            .unwrap();
            tx.execute("INSERT INTO entry_owners VALUES ('old', ?1)", [&key[..]])
                .unwrap();
            tx.execute("INSERT INTO last_run VALUES ('old', '//a', ?1)", [&key[..]])
                .unwrap();
            tx.execute("INSERT INTO records VALUES (?1, 'r', 0)", [&key[..]])
                .unwrap();
        });
        let cache = ActionCache::open(&path).unwrap();
        let version: i64 = query_one(&path, "SELECT value FROM meta WHERE key = 'schema_version'");
        assert_eq!(version, SCHEMA_VERSION);
        assert!(cache.get(&StrongKey(crate::Digest(key))).unwrap().is_none());
        assert!(cache.last_run("old", "//a").unwrap().is_none());
        assert!(cache
            .records(&crate::WeakKey(crate::Digest(key)))
            .unwrap()
            .is_empty());
        assert_eq!(cache.entry_count().unwrap(), 0);
        assert_eq!(cache.clear_workspace("old").unwrap(), 0);
    }
}
