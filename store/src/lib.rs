//! vbuild-store: the content-addressed blob store (BLAKE3), canonical trees,
//! the SQLite action cache and the stat cache.
//!
//! Layout of a store root (`$VBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/vbuild`,
//! else `~/.cache/vbuild`):
//! ```text
//! cas/a/bcdef…      immutable blobs named by the BLAKE3 hex of their bytes
//! tmp/              temp files (.vbuild-tmp-<pid>-…, or unnamed O_TMPFILE ones
//!                   for blobs), linked or renamed into cas/ or the
//!                   workspace when complete; a dead run's are swept at open
//! scratch/          per-action scratch directories (owned by the orchestrator)
//! cache.db          SQLite (WAL): action cache (each entry's row holds its
//!                   output tree, each last-run pointer its key's description)
//!                   + stat cache
//! leases/           one locked file per running build (see gc.rs)
//! gc.lock           held by the one collection running
//! gc-aside/         blobs a collection is about to unlink
//! ```

mod action_cache;
mod cas;
mod digest;
mod gc;
pub mod remote;
mod schema;
mod stat_cache;
pub mod temp;
mod tree;
pub mod verify;

pub use action_cache::{
    parse_result, parse_tree, ActionCache, ActionResult, CacheEntry, LastRun, RawEntry, RawLastRun,
    Reader, StoredEntry, MAX_RECORDS_PER_WEAK_KEY,
};
pub use cas::{BlobWriter, Cas, CasError};
pub use digest::{Digest, ParseDigestError, StrongKey, WeakKey};
pub use gc::{
    budget, collect, format_size, parse_size, GcReport, Lease, DEFAULT_MAX_SIZE, ENV_MAX_SIZE,
};
pub use schema::SCHEMA_VERSION;
pub use stat_cache::{FileStat, StatCache, RACY_MARGIN_NS};
pub use tree::{EntryKind, Tree, TreeEntry, TreeError, TREE_FORMAT_VERSION};

use std::path::{Path, PathBuf};

/// Errors from opening or using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("action cache database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("action cache at {path} has schema version {found}, newer than this vbuild understands ({supported}); upgrade vbuild or use another VBUILD_CACHE_DIR")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("corrupt record in action cache: {0}")]
    Corrupt(String),
    #[error("the action cache database {} is damaged ({detail}); remove it and its -wal and -shm files (`rm {}*`): the next build creates a new one (cached results are lost, the blobs in cas/ are kept)", path.display(), path.display())]
    Damaged { path: PathBuf, detail: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the store lives: `$VBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/vbuild`,
/// else `$HOME/.cache/vbuild`. `None` only when none of those is set.
pub fn default_root() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("VBUILD_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|p| p.join("vbuild")))
        .or_else(|| from("HOME").map(|p| p.join(".cache").join("vbuild")))
}

/// The whole store: CAS plus the SQLite database.
pub struct Store {
    root: PathBuf,
    pub cas: Cas,
    pub action_cache: ActionCache,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let cas = Cas::open(root)?;
        let action_cache = ActionCache::open(&root.join("cache.db"))?;
        Ok(Store {
            root: root.to_path_buf(),
            cas,
            action_cache,
        })
    }

    /// Opens the store at `root` only if one exists there (`store stats`
    /// must not create one).
    pub fn open_existing(root: &Path) -> Result<Option<Store>> {
        if !root.join("cache.db").is_file() {
            return Ok(None);
        }
        Store::open(root).map(Some)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory under which the orchestrator creates per-action scratch dirs.
    /// `$VBUILD_SCRATCH_DIR` if set (e.g. a tmpfs: scratch files are
    /// short-lived and never need to survive a crash), else `scratch/` in
    /// the store.
    pub fn scratch_dir(&self) -> PathBuf {
        match std::env::var_os("VBUILD_SCRATCH_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => self.root.join("scratch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_across_threads() {
        assert_send_sync::<Store>();
        assert_send_sync::<Cas>();
        assert_send_sync::<ActionCache>();
        assert_send_sync::<StatCache>();
    }

    #[test]
    fn store_open_creates_layout_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nested/store");
        let store = Store::open(&root).unwrap();
        assert_eq!(store.root(), root);
        assert!(root.join("cas").is_dir());
        assert!(root.join("tmp").is_dir());
        assert!(root.join("cache.db").is_file());
        assert_eq!(store.scratch_dir(), root.join("scratch"));

        let out = store.cas.put_bytes(b"out").unwrap();
        let tree = Tree::new(vec![TreeEntry {
            path: "dist/out.txt".into(),
            kind: EntryKind::File {
                digest: out,
                size: 3,
                executable: false,
            },
        }])
        .unwrap();
        let tree_digest = store.cas.put_bytes(&tree.to_canonical_bytes()).unwrap();
        assert_eq!(tree_digest, tree.digest());
        let back = Tree::from_bytes(&store.cas.read_verified(&tree_digest).unwrap()).unwrap();
        assert_eq!(back, tree);
        drop(store);
        // Reopening finds the same blobs.
        let store = Store::open(&root).unwrap();
        assert!(store.cas.contains(&tree_digest));
    }
}
