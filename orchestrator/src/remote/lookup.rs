//! Asking the remote after a local miss: candidate records, the entry of
//! each, and fetching a found entry into the local store, verified first.
use super::{
    ac_key, fetch_small, RecordsBlob, Remote, ACTION_TAG, DECLARATIONS_TYPE, MAX_RECORDS_BLOB,
    MAX_REMOTE_RECORDS, RECORDS_FILE, RECORDS_TAG,
};
use crate::key::{ActionKey, Record};
use crate::materialize::Confinement;
use crate::workspace::{Target, Workspace};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use vbuild_store::remote::{self as wire, reapi, RemoteError, WireDigest};
use vbuild_store::{Digest, EntryKind, Store, Tree, TreeEntry, WeakKey};

/// What a remote lookup found.
#[derive(Default)]
pub struct Answer {
    pub hit: Option<Fetched>,
    /// One line per rejected remote entry (it was treated as a miss).
    pub warnings: Vec<String>,
}

/// A verified remote entry whose blobs are now in the local store. It is
/// not in the local action cache yet: the caller (the layered cache) does
/// that, and restores it.
pub struct Fetched {
    /// The record it was found under (confined to this action).
    pub record: Record,
    pub tree: Tree,
    pub stdout: Digest,
    pub stderr: Digest,
    pub declarations: serde_json::Value,
}

impl Remote {
    /// After a local miss: asks the remote for the action under every
    /// record it or the local cache knows (the default record last), each
    /// confined by the action's key first: a remote's record is untrusted.
    pub fn lookup(
        &self,
        store: &Store,
        ws: &Workspace,
        target: &Target,
        key: &ActionKey,
        local: Vec<Record>,
    ) -> Result<Answer> {
        let mut found = Answer::default();
        if !self.shared.health.usable() {
            return Ok(found);
        }
        let df = self.client().digest_fn();
        let mut candidates: Vec<Record> = Vec::new();
        match self.remote_records(&key.weak) {
            Ok(list) => {
                for text in list {
                    match Record::from_text(&text) {
                        Ok(r) => candidates.push(r),
                        Err(_) => found.warnings.push(
                            "remote records rejected: a record is not valid JSON; treated as a miss"
                                .into(),
                        ),
                    }
                }
            }
            Err(RemoteError::Rejected(e)) => found
                .warnings
                .push(format!("remote records rejected: {e}; treated as a miss")),
            Err(e) => {
                self.shared.health.report(&e);
                return Ok(found);
            }
        }
        candidates.extend(local);
        candidates.push(key.default_record());
        let mut seen = BTreeSet::new();
        let candidates: Vec<Record> = candidates
            .into_iter()
            .map(|r| key.confine(r))
            .filter(|r| seen.insert(r.to_text()))
            .collect();
        for record in candidates {
            if !self.shared.health.usable() {
                break;
            }
            let strong = key.strong(&record);
            let ac = ac_key(df, ACTION_TAG, strong.as_bytes());
            let result = match self
                .client()
                .get_action_result(&ac, self.shared.cfg.max_result)
            {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(RemoteError::Rejected(e)) => {
                    found
                        .warnings
                        .push(format!("remote entry rejected: {e}; treated as a miss"));
                    continue;
                }
                Err(e) => {
                    self.shared.health.report(&e);
                    return Ok(found);
                }
            };
            match self.fetch_entry(store, ws, target, &key.inputs, &result) {
                Ok((tree, stdout, stderr, declarations)) => {
                    self.shared.stats.hits.fetch_add(1, Ordering::SeqCst);
                    found.hit = Some(Fetched {
                        record,
                        tree,
                        stdout,
                        stderr,
                        declarations,
                    });
                    return Ok(found);
                }
                Err(RemoteError::Rejected(e)) => found
                    .warnings
                    .push(format!("remote entry rejected: {e}; treated as a miss")),
                Err(e) => {
                    self.shared.health.report(&e);
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }

    /// The records list stored under the weak key (empty when none).
    fn remote_records(&self, weak: &WeakKey) -> Result<Vec<String>, RemoteError> {
        let df = self.client().digest_fn();
        let key = ac_key(df, RECORDS_TAG, weak.as_bytes());
        let Some(result) = self.client().get_action_result(&key, MAX_RECORDS_BLOB)? else {
            return Ok(vec![]);
        };
        let file = result
            .output_files
            .iter()
            .find(|f| f.path == RECORDS_FILE)
            .ok_or_else(|| {
                RemoteError::Rejected(format!("no {RECORDS_FILE} in the records entry"))
            })?;
        let digest = file
            .digest
            .as_ref()
            .ok_or_else(|| RemoteError::Rejected("records file without a digest".into()))
            .and_then(|d| WireDigest::from_proto(d).map_err(RemoteError::Rejected))?;
        let bytes = fetch_small(self.client(), &digest, MAX_RECORDS_BLOB)?;
        let list: RecordsBlob = serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Rejected(format!("records list: {e}")))?;
        Ok(list.records.into_iter().take(MAX_REMOTE_RECORDS).collect())
    }

    /// Checks a remote `ActionResult` against the target, downloads and
    /// verifies every blob it names, and only then puts them into the
    /// local store. Returns the tree, the logs' local digests and the
    /// declarations. On any rejection the store is left as it was.
    // `output_file_symlinks` and `output_directory_symlinks` are deprecated
    // in REAPI v2.1 but older servers and clients still send them.
    #[allow(deprecated)]
    fn fetch_entry(
        &self,
        store: &Store,
        ws: &Workspace,
        target: &Target,
        inputs: &BTreeMap<String, EntryKind>,
        result: &reapi::ActionResult,
    ) -> Result<(Tree, Digest, Digest, serde_json::Value), RemoteError> {
        let reject = RemoteError::Rejected;
        let cfg = &self.shared.cfg;
        if result.exit_code != 0 {
            return Err(reject(format!(
                "exit code {} (only successes are cached)",
                result.exit_code
            )));
        }
        if !result.output_directories.is_empty() || !result.output_directory_symlinks.is_empty() {
            return Err(reject(
                "it has output directories; vbuild stores files and symlinks only".into(),
            ));
        }
        check_entry_caps(cfg, result).map_err(reject)?;
        let outs = Confinement::new(ws, target).map_err(reject)?;
        let is_input = |p: &str| inputs.contains_key(p);
        let mut files: Vec<(String, WireDigest, bool)> = Vec::new();
        for f in &result.output_files {
            outs.check_path(&f.path, &is_input).map_err(reject)?;
            let digest = f
                .digest
                .as_ref()
                .ok_or_else(|| reject(format!("output {:?} has no digest", f.path)))
                .and_then(|d| WireDigest::from_proto(d).map_err(reject))?;
            if digest.size > cfg.max_blob {
                return Err(reject(format!(
                    "output {:?} is {} bytes, over the limit of {} (max_blob_size)",
                    f.path, digest.size, cfg.max_blob
                )));
            }
            files.push((f.path.clone(), digest, f.is_executable));
        }
        let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
        for s in result
            .output_symlinks
            .iter()
            .chain(&result.output_file_symlinks)
        {
            outs.check_path(&s.path, &is_input).map_err(reject)?;
            if let Some(prev) = symlinks.insert(s.path.clone(), s.target.clone()) {
                if prev != s.target {
                    return Err(reject(format!("symlink {:?} appears twice", s.path)));
                }
            }
        }
        let log = |d: &Option<reapi::Digest>, raw: &[u8], what: &str| -> Result<Log, RemoteError> {
            match d {
                Some(d) => {
                    let w = WireDigest::from_proto(d).map_err(reject)?;
                    if w.size > cfg.max_blob {
                        return Err(reject(format!("{what} is over max_blob_size")));
                    }
                    Ok(Log::Blob(w))
                }
                None => Ok(Log::Raw(raw.to_vec())),
            }
        };
        let stdout = log(&result.stdout_digest, &result.stdout_raw, "stdout")?;
        let stderr = log(&result.stderr_digest, &result.stderr_raw, "stderr")?;
        // The manifest must be a valid tree before anything is fetched.
        let probe: Vec<TreeEntry> = files
            .iter()
            .map(|(path, _, exe)| TreeEntry {
                path: path.clone(),
                kind: EntryKind::File {
                    digest: Digest([0; 32]),
                    size: 0,
                    executable: *exe,
                },
            })
            .chain(symlinks.iter().map(|(p, t)| TreeEntry {
                path: p.clone(),
                kind: EntryKind::Symlink { target: t.clone() },
            }))
            .collect();
        let probe = Tree::new(probe).map_err(|e| reject(e.to_string()))?;
        // Symlinks are followed through each other (a chain of links that
        // each stay inside may still lead out).
        outs.check_tree(&ws.root, &probe, &is_input)
            .map_err(reject)?;

        let mut wanted: BTreeSet<WireDigest> = files.iter().map(|(_, d, _)| *d).collect();
        for l in [&stdout, &stderr] {
            if let Log::Blob(d) = l {
                wanted.insert(*d);
            }
        }
        let wanted: Vec<WireDigest> = wanted.into_iter().collect();
        let pending = self.download_all(store, &wanted)?;
        // Every blob verified: now, and only now, into the store.
        let mut local: HashMap<WireDigest, Digest> = HashMap::new();
        for (w, p) in wanted.iter().zip(pending) {
            let fetched = p.is_fetched();
            let d = p
                .commit(store)
                .map_err(|e| RemoteError::Unavailable(format!("local store: {e}")))?;
            if fetched {
                let s = &self.shared.stats;
                s.downloaded_blobs.fetch_add(1, Ordering::SeqCst);
                s.downloaded_bytes.fetch_add(w.size, Ordering::SeqCst);
            }
            local.insert(*w, d);
        }
        let entries: Vec<TreeEntry> = files
            .iter()
            .map(|(path, d, exe)| TreeEntry {
                path: path.clone(),
                kind: EntryKind::File {
                    digest: local[d],
                    size: d.size,
                    executable: *exe,
                },
            })
            .chain(symlinks.into_iter().map(|(path, target)| TreeEntry {
                path,
                kind: EntryKind::Symlink { target },
            }))
            .collect();
        let tree = Tree::new(entries).map_err(|e| reject(e.to_string()))?;
        let store_err =
            |e: vbuild_store::CasError| RemoteError::Unavailable(format!("local store: {e}"));
        let log_digest = |l: &Log| -> Result<Digest, RemoteError> {
            match l {
                Log::Blob(w) => Ok(local[w]),
                Log::Raw(bytes) => store.cas.put_bytes(bytes).map_err(store_err),
            }
        };
        let declarations = result
            .execution_metadata
            .as_ref()
            .and_then(|m| {
                m.auxiliary_metadata
                    .iter()
                    .find(|a| a.type_url == DECLARATIONS_TYPE)
            })
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok((
            tree,
            log_digest(&stdout)?,
            log_digest(&stderr)?,
            declarations,
        ))
    }

    /// Downloads blobs with bounded parallelism; all verified or an error.
    fn download_all<'s>(
        &self,
        store: &'s Store,
        wanted: &[WireDigest],
    ) -> Result<Vec<wire::Pending<'s>>, RemoteError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<wire::Pending<'s>, RemoteError>>>> =
            Mutex::new((0..wanted.len()).map(|_| None).collect());
        let threads = self.shared.cfg.connections.min(wanted.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= wanted.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let _slot = self.shared.slots.acquire();
                    let r =
                        wire::download(store, self.client(), &wanted[i], self.shared.cfg.max_blob);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(wanted.len());
        // Report the first error in order; the rest (incl. good ones) drop.
        let mut first_err = None;
        for r in results {
            match r {
                Some(Ok(p)) => out.push(p),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if out.len() == wanted.len() => Ok(out),
            None => Err(RemoteError::Unavailable("download interrupted".into())),
        }
    }
}

enum Log {
    Blob(WireDigest),
    Raw(Vec<u8>),
}

/// Caps one entry before any of it is checked path by path or fetched: a
/// forged entry naming 20,000 files, terabytes or a path 10,000 deep is
/// refused (a warning, and the action runs locally).
#[allow(deprecated)]
fn check_entry_caps(
    cfg: &super::config::Config,
    result: &reapi::ActionResult,
) -> Result<(), String> {
    let paths = result.output_files.len()
        + result.output_symlinks.len()
        + result.output_file_symlinks.len();
    if paths as u64 > cfg.max_entry_files {
        return Err(format!(
            "it has {paths} files, over the limit of {} (max_entry_files)",
            cfg.max_entry_files
        ));
    }
    let bytes = result
        .output_files
        .iter()
        .filter_map(|f| f.digest.as_ref())
        .map(|d| d.size_bytes.max(0) as u64)
        .fold(0u64, u64::saturating_add);
    if bytes > cfg.max_entry_bytes {
        return Err(format!(
            "its files hold {bytes} bytes, over the limit of {} (max_entry_bytes)",
            cfg.max_entry_bytes
        ));
    }
    let deepest = result
        .output_files
        .iter()
        .map(|f| &f.path)
        .chain(result.output_symlinks.iter().map(|s| &s.path))
        .chain(result.output_file_symlinks.iter().map(|s| &s.path))
        .map(|p| p.split('/').count())
        .max()
        .unwrap_or(0);
    if deepest as u64 > cfg.max_entry_depth {
        return Err(format!(
            "a path is {deepest} levels deep, over the limit of {} (max_entry_depth)",
            cfg.max_entry_depth
        ));
    }
    Ok(())
}
