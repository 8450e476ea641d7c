//! The action cache of a run as one interface over its tiers, the way
//! sccache layers its storage: `lookup` asks the local cache, then the
//! remote, and a verified remote hit fills the local cache; `record` is the
//! one way an entry is written (after a run, or filling from the remote);
//! `assemble` is the one place an `ActionResult` is built. Nothing here
//! writes into the workspace: the pipeline restores a hit once, after the
//! lookup.
use super::{Ctx, Log, Outcome};
use crate::key::{self, ActionKey, KeyInputs, Record};
use crate::workspace::{Target, Workspace};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use vbuild_ipc::Declarations;
use vbuild_store::{ActionResult, CacheEntry, Store, StoreError, StrongKey, Tree};

/// A verified hit: the entry's blobs are all present and sound.
pub(crate) struct Hit {
    pub(crate) strong: StrongKey,
    pub(crate) tree: Arc<Tree>,
    pub(crate) stdout: Log,
    pub(crate) stderr: Log,
    pub(crate) order: Option<super::log::Order>,
    /// Found in the remote (and now filled into the local cache).
    pub(crate) remote: bool,
    /// The run that stored it called disableCache() (kept by `cache = "always"`).
    pub(crate) tool_disabled: bool,
}

/// What a lookup found.
#[derive(Default)]
pub(crate) struct Found {
    pub(crate) hit: Option<Hit>,
    /// Why a found entry could not be used (it was dropped).
    pub(crate) unusable: Option<String>,
    /// One line per dropped entry or rejected remote answer.
    pub(crate) warnings: Vec<String>,
}

/// What a run (or a remote entry) produced, to be recorded.
pub(crate) struct Produced<'a> {
    pub(crate) tree: &'a Tree,
    pub(crate) stdout: &'a Log,
    pub(crate) stderr: &'a Log,
    pub(crate) order: Option<&'a super::log::Order>,
    pub(crate) declarations: serde_json::Value,
    pub(crate) duration: Duration,
}

/// The one place an `ActionResult` is built: the logs go into the store
/// first (blobs before rows: an entry never points at a missing blob). The
/// tree is named by its digest; its bytes are kept in the entry's row.
pub(crate) fn assemble(store: &Store, p: &Produced) -> Result<ActionResult> {
    Ok(ActionResult {
        output_tree: p.tree.digest(),
        stdout: p.stdout.digest(&store.cas)?,
        stderr: p.stderr.digest(&store.cas)?,
        exit_code: 0,
        declarations: p.declarations.clone(),
        duration_ms: p.duration.as_millis() as u64,
        interleave: match p.order {
            Some(o) => Some(store.cas.put_bytes(&super::log::encode_order(o))?),
            None => None,
        },
    })
}

/// The tool's declarations as stored with an entry (refusals are this
/// run's warnings, not part of the result).
pub(crate) fn stored_declarations(decl: &Declarations) -> Result<serde_json::Value> {
    let mut d = decl.clone();
    d.refusals.clear();
    Ok(serde_json::to_value(&d)?)
}

/// Entries, miss explanations and `vbuild clean` are scoped by the
/// workspace's root: two repos with the same name never share them, while
/// keys (path-independent) still let a copy elsewhere hit.
pub fn scope_of(ws: &Workspace) -> String {
    ws.root.to_string_lossy().into_owned()
}

pub(crate) struct Cache<'c> {
    ctx: &'c Ctx<'c>,
}

impl<'c> Cache<'c> {
    pub(crate) fn new(ctx: &'c Ctx<'c>) -> Cache<'c> {
        Cache { ctx }
    }

    /// Local, then remote. The key is first the one of the requested
    /// sandbox (a result made in the namespace sandbox is valid anywhere,
    /// so a hit needs no probe); on a local miss it is re-keyed for the
    /// sandbox this run really has (probing it) and asked again.
    pub(crate) fn lookup(&self, target: &Target, key: &mut ActionKey) -> Result<Found> {
        let mut found = Found::default();
        found.hit = self.local(key, &mut found)?;
        if found.hit.is_none() && key.resandbox(self.ctx, target, self.ctx.sandbox_of(target)) {
            found.hit = self.local(key, &mut found)?;
        }
        // `why` asks too: a remote hit is fetched into the local store
        // (never into the workspace), as the next run would.
        if found.hit.is_none() {
            found.hit = self.remote(target, key, &mut found)?;
        }
        Ok(found)
    }

    /// Tries every local record under the weak key, most recently used first.
    fn local(&self, key: &ActionKey, found: &mut Found) -> Result<Option<Hit>> {
        let ac = &self.ctx.store.action_cache;
        // One read transaction on this worker's own connection for the
        // records and the entries they lead to (writes go to the writer).
        let reader = ac.reader()?;
        for (nth, text) in reader.records(&key.weak)?.into_iter().enumerate() {
            let record = match Record::from_text(&text) {
                Ok(r) => r,
                Err(e) => {
                    found
                        .warnings
                        .push(format!("dropped a corrupt action-cache record ({e})"));
                    ac.remove_record(&key.weak, &text)?;
                    continue;
                }
            };
            let strong = key.strong(&record);
            let stored = match reader.get(&strong) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(StoreError::Corrupt(why)) => {
                    // Like a corrupt blob: report, drop, run again.
                    found.warnings.push(format!(
                        "dropped a corrupt action-cache entry ({why}); running the action"
                    ));
                    ac.remove(&strong)?;
                    found.unusable = Some(format!("cached entry unusable ({why})"));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match self.load(strong, stored.result, stored.tree) {
                Ok(hit) => {
                    // The first record needs no write.
                    if nth > 0 {
                        ac.touch_record(&key.weak, &text)?;
                    }
                    return Ok(Some(hit));
                }
                Err(e) => {
                    // Never trust an entry whose blobs are gone or corrupt.
                    ac.remove(&strong)?;
                    found.unusable = Some(format!("cached entry unusable ({e:#})"));
                }
            }
        }
        Ok(None)
    }

    /// Asks the remote; a verified entry is filled into the local cache
    /// under the record without its input narrowing (a remote's record is
    /// not something a local run declared), then loaded like a local hit.
    fn remote(&self, target: &Target, key: &ActionKey, found: &mut Found) -> Result<Option<Hit>> {
        let Some(remote) = self.ctx.remote else {
            return Ok(None);
        };
        let local: Vec<Record> = self
            .ctx
            .store
            .action_cache
            .records(&key.weak)?
            .iter()
            .filter_map(|t| Record::from_text(t).ok())
            .collect();
        let answer = remote.lookup(self.ctx.store, self.ctx.ws, target, key, local)?;
        found.warnings.extend(answer.warnings);
        let Some(got) = answer.hit else {
            return Ok(None);
        };
        let record = key.unnarrowed(&got.record);
        let cas = &self.ctx.store.cas;
        let (stdout, stderr) = (
            Log::verified_blob(cas, &got.stdout)?,
            Log::verified_blob(cas, &got.stderr)?,
        );
        let produced = Produced {
            tree: &got.tree,
            stdout: &stdout,
            stderr: &stderr,
            order: None,
            declarations: got.declarations,
            duration: Duration::ZERO,
        };
        let (strong, result) = self.put(target, key, &record, &produced)?;
        let mut hit = self.load(strong, result, got.tree)?;
        hit.remote = true;
        Ok(Some(hit))
    }

    /// Records a successful run: locally, then queued for the remote.
    pub(crate) fn record(
        &self,
        target: &Target,
        key: &ActionKey,
        record: &Record,
        tree: &Arc<Tree>,
        produced: &Produced,
    ) -> Result<()> {
        let (strong, result) = self.put(target, key, record, produced)?;
        // Only results built in the namespace sandbox are shared: a
        // scratch-mode action could read or write anything of the user's
        // (docs/sandbox.md), so what it produced is trusted here at most.
        let isolated = key.sandbox == vbuild_schema::SandboxSetting::Namespaces;
        if let (Some(remote), true) = (self.ctx.remote, isolated) {
            remote.upload(crate::remote::Upload {
                weak: key.weak,
                strong,
                record: record.to_text(),
                tree: tree.clone(),
                result,
            });
        }
        Ok(())
    }

    /// The one writer of local entries: blobs, then the row (record, entry
    /// with its output tree and key description, last-run pointer) in one
    /// transaction.
    fn put(
        &self,
        target: &Target,
        key: &ActionKey,
        record: &Record,
        produced: &Produced,
    ) -> Result<(StrongKey, ActionResult)> {
        let store = self.ctx.store;
        let result = assemble(store, produced)?;
        let strong = key.strong(record);
        let explain = serde_json::to_vec(&key.explanation(record))?;
        store.action_cache.put(&CacheEntry {
            weak_key: key.weak,
            strong_key: strong,
            record: record.to_text(),
            workspace: scope_of(self.ctx.ws),
            label: target.label.to_string(),
            explain,
            tree: produced.tree.clone(),
            result: result.clone(),
        })?;
        Ok((strong, result))
    }

    /// Loads an entry's logs, verifying every blob read (its tree was
    /// checked against its digest when read from the row).
    fn load(&self, strong: StrongKey, result: ActionResult, tree: Tree) -> Result<Hit> {
        let cas = &self.ctx.store.cas;
        let tree = Arc::new(tree);
        // Verified in chunks and replayed from the store: a hit with a
        // large log costs no memory for it.
        let (stdout, stderr) = if self.ctx.opts.dry_run {
            (Log::Empty, Log::Empty)
        } else {
            (
                Log::verified_blob(cas, &result.stdout)?,
                Log::verified_blob(cas, &result.stderr)?,
            )
        };
        // A damaged order blob makes the entry unusable like any other.
        let order = match (&result.interleave, self.ctx.opts.dry_run) {
            (Some(d), false) => Some(
                vbuild_sandbox::parse_order(&cas.read_verified(d)?)
                    .context("the stored order of stdout and stderr is malformed")?,
            ),
            _ => None,
        };
        let tool_disabled = result
            .declarations
            .get("cache_disabled")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Hit {
            strong,
            tree,
            stdout,
            stderr,
            order,
            remote: false,
            tool_disabled,
        })
    }

    /// Drops an entry whose restore failed (a blob turned out corrupt).
    pub(crate) fn forget(&self, strong: &StrongKey) -> Result<()> {
        Ok(self.ctx.store.action_cache.remove(strong)?)
    }

    /// Names what changed since the last entry of this target here.
    pub(crate) fn explain_miss(&self, target: &Target, key: &ActionKey) -> Result<String> {
        let label = target.label.to_string();
        let last = match self
            .ctx
            .store
            .action_cache
            .last_run(&scope_of(self.ctx.ws), &label)
        {
            Ok(Some(last)) => last,
            Ok(None) | Err(StoreError::Corrupt(_)) => return Ok("no previous entry".into()),
            Err(e) => return Err(e.into()),
        };
        let Ok(before) = serde_json::from_slice::<KeyInputs>(&last.explain) else {
            return Ok("no previous entry".into());
        };
        Ok(key::explain(&before, &key.explanation(&before.record)))
    }
}

impl Hit {
    pub(crate) fn outcome(self, state: super::State, duration: Duration) -> Outcome {
        Outcome {
            state,
            stdout: self.stdout,
            stderr: self.stderr,
            order: self.order.map(Arc::new),
            outputs: Some(self.tree),
            duration,
            warnings: vec![],
            key: None,
        }
    }
}

/// Reads a stored record's text for `vbuild store verify`.
pub fn check_record(text: &str) -> std::result::Result<(), String> {
    Record::from_text(text).map(|_| ())
}
