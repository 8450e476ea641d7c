//! One action from start to end: resolve inputs, look the key up, and on a
//! hit restore; on a miss run it in a scratch directory with its IPC
//! server, narrow the key by what the tool declared, store its outputs and
//! record the result.
//!
//! `cache`: the local lookup, restore and miss explanation; `env`: what an
//! action sees and is keyed by (environment, sandbox, static key);
//! `execute`: staging, the sandbox run with its IPC server, capture;
//! `exec_env`: the run-wide state only executing actions need.
mod cache;
mod env;
mod exec_env;
mod execute;
mod log;

pub(crate) use cache::{narrowed_record, restore};
pub use env::{requested_sandbox, ACTION_PATH};
pub use exec_env::ExecEnv;
pub use log::Log;

use crate::inputs::{self, PackageIndex};
use crate::key::{self, KeyInputs};
use crate::materialize;
use crate::workspace::{Target, Workspace};
use anyhow::Result;
use cache::{explain_miss, lookup};
use execute::execute;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vbuild_ipc::SecretMatcher;
use vbuild_sandbox::ExitKind;
use vbuild_schema::{CacheSetting, SandboxSetting};
use vbuild_store::{ActionResult, CacheEntry, StatCache, Store, Tree};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub no_cache: bool,
    /// Compute keys and explain, but run and restore nothing (`vbuild why`).
    pub dry_run: bool,
    pub sandbox: Option<SandboxSetting>,
    /// Refuse to run rather than fall back from namespaces to scratch.
    pub strict: bool,
    /// The caller's FORCE_COLOR, passed to actions (and keyed) instead of
    /// the default NO_COLOR=1.
    pub force_color: Option<String>,
}

/// Everything an action needs, shared by all workers of a run.
pub struct Ctx<'a> {
    pub ws: &'a Workspace,
    pub store: &'a Store,
    pub stat_cache: &'a StatCache,
    pub index: PackageIndex,
    /// Every selected target's srcs, resolved once (see `SrcsCache`).
    pub srcs: inputs::SrcsCache,
    /// vbuild's own environment: pass_env and tool `getEnv` read from it.
    pub host_env: Arc<HashMap<String, String>>,
    pub secrets: SecretMatcher,
    pub opts: RunOptions,
    /// Installed node_modules and node, when a selected target uses them.
    pub node: Option<crate::node::NodeEnv>,
    /// The remote cache, when one is configured (asked after a local miss).
    pub remote: Option<&'a crate::remote::Remote>,
    /// What only an action that executes needs (runtime, IPC directory,
    /// the sandbox probe): built on first use, so a run where everything
    /// hits never pays for it.
    pub exec_env: ExecEnv,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Hit,
    /// Restored from the remote cache after a local miss.
    RemoteHit,
    /// Ran because of a cache miss; the reason names what changed.
    Miss(String),
    /// Ran and was not stored.
    Uncached(String),
    Failed(String),
    /// Killed by Ctrl-C while it ran.
    Cancelled(String),
    /// Not run because a dependency failed.
    Skipped(String),
    /// Dry run: would run, and why.
    WouldRun(String),
    /// A file group: nothing ran; its files are staged for dependents.
    /// Not reported, not counted as an action.
    FileGroup,
}

pub struct Outcome {
    pub state: State,
    /// Streamed when replayed (see `Log`).
    pub stdout: Log,
    pub stderr: Log,
    /// The output tree, for dependents.
    pub outputs: Option<Arc<Tree>>,
    pub duration: Duration,
    /// vbuild's own warnings about this action (e.g. refused tool requests).
    pub warnings: Vec<String>,
    /// The action key its result is (or would be) stored under, when known.
    pub key: Option<vbuild_store::Digest>,
}

impl Outcome {
    pub fn new(state: State, duration: Duration) -> Outcome {
        Outcome {
            state,
            stdout: Log::Empty,
            stderr: Log::Empty,
            outputs: None,
            duration,
            warnings: vec![],
            key: None,
        }
    }
}

impl Ctx<'_> {
    /// Resolves one more target's srcs ahead of time; false when none is left.
    pub fn prefetch_one(&self, order: &[usize]) -> bool {
        self.srcs
            .prefetch_one(self.ws, &self.index, self.store, self.stat_cache, order)
    }
}

/// Runs (or restores, or explains) the action of `ws.targets[idx]`.
pub fn run(ctx: &Ctx, idx: usize, dep_outputs: &[Arc<Tree>]) -> Outcome {
    let start = Instant::now();
    match run_inner(ctx, idx, dep_outputs, start) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::new(State::Failed(format!("{e:#}")), start.elapsed()),
    }
}

fn run_inner(ctx: &Ctx, idx: usize, dep_outputs: &[Arc<Tree>], start: Instant) -> Result<Outcome> {
    let target = &ctx.ws.targets[idx];
    let label = target.label.to_string();
    let resolve_span = crate::profile::span("resolve");
    let srcs = ctx
        .srcs
        .get(ctx.ws, &ctx.index, ctx.store, ctx.stat_cache, idx)?;
    let src_warnings: Vec<String> = ctx
        .srcs
        .unmatched(idx)
        .iter()
        .map(|p| format!("srcs pattern {p:?} matches no file"))
        .collect();
    if target.file_group {
        return file_group(srcs.as_ref(), dep_outputs, src_warnings, start);
    }
    let mut inputs = inputs::resolve(&srcs, dep_outputs);
    // Workspace inputs go under everything else (the same file from a src
    // or a dep is the same content anyway).
    let ws_inputs = ctx
        .index
        .workspace_inputs(ctx.ws, ctx.store, ctx.stat_cache)?;
    for (path, entry) in ws_inputs.iter() {
        inputs.entry(path.clone()).or_insert_with(|| entry.clone());
    }
    if ctx.node_env(target).is_some() {
        // node_modules links to workspace packages (`@scope/lib -> ../lib`)
        // need each dep's package.json next to its outputs to resolve.
        // The dep's own srcs (resolved when it ran) usually list it: no
        // stat per dependency edge on a no-op.
        for &dep in &target.deps {
            let rel =
                crate::workspace::join_package(&ctx.ws.targets[dep].label.package, "package.json");
            if inputs.contains_key(&rel) {
                continue;
            }
            let dep_srcs = ctx
                .srcs
                .get(ctx.ws, &ctx.index, ctx.store, ctx.stat_cache, dep)?;
            if let Some(entry) = dep_srcs.get(&rel) {
                inputs.insert(rel, entry.clone());
                continue;
            }
            let abs = ctx.ws.root.join(&rel);
            if abs.is_file() {
                let entry = inputs::entry_for(ctx.store, ctx.stat_cache, &abs)?;
                inputs.insert(rel, entry);
            }
        }
    }
    drop(resolve_span);
    // Keyed optimistically by the sandbox asked for: a result produced in
    // the namespace sandbox is valid wherever it is found, so a hit needs
    // no probe. Only a miss asks whether namespaces work here; if they do
    // not, the action is keyed (and looked up again) as `scratch`.
    let requested = requested_sandbox(ctx.opts.sandbox, target, ctx.ws);
    let mut sandbox = requested;
    let mut fixed = ctx.static_key(target, sandbox);
    let mut weak = key::weak_key(&fixed);
    let cacheable =
        target.cache != CacheSetting::Off && !ctx.opts.no_cache && sandbox != SandboxSetting::None;
    let mut remote_warnings: Vec<String> = vec![];

    let reason = if !cacheable {
        if ctx.opts.no_cache {
            "--no-cache".to_string()
        } else if target.cache == CacheSetting::Off {
            "cache = false".to_string()
        } else {
            "sandbox = \"none\" is never cached".to_string()
        }
    } else {
        let _lookup = crate::profile::span("lookup");
        let mut unusable = None;
        if let Some(outcome) = lookup(ctx, target, &weak, &inputs, &mut unusable)? {
            return Ok(Outcome {
                duration: start.elapsed(),
                warnings: [src_warnings, outcome.warnings].concat(),
                ..outcome
            });
        }
        let effective = ctx.sandbox_of(target);
        if effective != sandbox {
            sandbox = effective;
            fixed = ctx.static_key(target, sandbox);
            weak = key::weak_key(&fixed);
            if let Some(outcome) = lookup(ctx, target, &weak, &inputs, &mut unusable)? {
                return Ok(Outcome {
                    duration: start.elapsed(),
                    ..outcome
                });
            }
        }
        // Remote cache: asked only after a local miss (docs/remote-cache.md).
        // `why` asks too: a remote hit is fetched into the local store
        // (never into the workspace), as the next run would.
        if let Some(remote) = ctx.remote {
            let found = remote.lookup(ctx, target, &weak, &fixed, &inputs)?;
            remote_warnings = found.warnings;
            if let Some(outcome) = found.outcome {
                return Ok(Outcome {
                    duration: start.elapsed(),
                    warnings: remote_warnings,
                    ..outcome
                });
            }
        }
        match unusable {
            Some(why) => why,
            None => explain_miss(ctx, &label, &fixed, &inputs)?,
        }
    };
    // Uncacheable actions skipped the lookup: resolve the sandbox now.
    let sandbox = if cacheable {
        sandbox
    } else {
        ctx.sandbox_of(target)
    };
    if ctx.opts.dry_run {
        return Ok(Outcome::new(State::WouldRun(reason), start.elapsed()));
    }

    let run = execute(ctx, target, sandbox, &inputs)?;
    // `cache = "always"`: the target vouches that this run is hermetic
    // even though its tool asked not to be cached (e.g. Vite's server
    // under `vitest run`).
    let overridden = run.decl.cache_disabled && target.cache == CacheSetting::Always;
    let warnings = src_warnings
        .into_iter()
        .chain(remote_warnings)
        .chain(
            run.decl
                .refusals
                .iter()
                .map(|r| format!("refused a tool request: {r}")),
        )
        .chain(discarded_warning(&run.discarded))
        .collect();
    if run.exit != ExitKind::Exited(0) {
        return Ok(Outcome {
            state: State::Failed(describe(run.exit, target)),
            stdout: run.stdout,
            stderr: run.stderr,
            outputs: None,
            duration: start.elapsed(),
            warnings,
            key: None,
        });
    }
    let tree = Arc::new(run.tree.expect("captured on success"));
    let inputs_kept = inputs.clone();
    let duration = start.elapsed();
    let mut stored_key = None;
    let state = if run.decl.cache_disabled && !overridden {
        State::Uncached("requested by tool".into())
    } else if cacheable {
        let _record = crate::profile::span("record");
        let record = narrowed_record(ctx, target, &run.decl);
        let mut declarations = run.decl.clone();
        declarations.refusals.clear();
        let result = ActionResult {
            output_tree: ctx.store.cas.put_bytes(&tree.to_canonical_bytes())?,
            stdout: run.stdout.digest(&ctx.store.cas)?,
            stderr: run.stderr.digest(&ctx.store.cas)?,
            exit_code: 0,
            declarations: serde_json::to_value(&declarations)?,
            duration_ms: duration.as_millis() as u64,
        };
        let strong = key::strong_key(&weak, &record, &inputs, ctx);
        stored_key = Some(strong);
        let env_values = key::env_values(&record, ctx);
        let explain = KeyInputs {
            fixed,
            inputs,
            env_values,
            record: record.clone(),
        };
        let record_text = serde_json::to_string(&record)?;
        ctx.store.action_cache.put(&CacheEntry {
            weak_key: weak,
            strong_key: strong,
            record: record_text.clone(),
            workspace: ctx.ws.name().to_string(),
            label,
            explain: ctx.store.cas.put_bytes(&serde_json::to_vec(&explain)?)?,
            result: result.clone(),
        })?;
        // Remote cache: queued, uploaded in the background (read-write mode).
        if let Some(remote) = ctx.remote {
            remote.upload(crate::remote::Upload {
                weak,
                strong,
                record: record_text,
                tree: tree.clone(),
                result,
            });
        }
        State::Miss(match overridden {
            true => format!("{reason}; cache = \"always\" overrode the tool's disableCache()"),
            false => reason,
        })
    } else {
        State::Uncached(reason)
    };
    if sandbox != SandboxSetting::None {
        let _m = crate::profile::span("materialize");
        materialize::materialize(
            ctx.store,
            ctx.stat_cache,
            ctx.ws,
            target,
            &inputs_kept,
            &tree,
        )?;
    }
    Ok(Outcome {
        state,
        stdout: run.stdout,
        stderr: run.stderr,
        outputs: Some(tree),
        duration,
        warnings,
        key: stored_key,
    })
}

/// One line naming what an action wrote outside its declared outputs.
fn discarded_warning(discarded: &[String]) -> Option<String> {
    const SHOWN: usize = 3;
    if discarded.is_empty() {
        return None;
    }
    let mut line = format!(
        "discarded {} write{} outside the declared outputs: {}",
        discarded.len(),
        if discarded.len() == 1 { "" } else { "s" },
        discarded[..discarded.len().min(SHOWN)].join(", ")
    );
    if discarded.len() > SHOWN {
        line.push_str(&format!(" (+{} more)", discarded.len() - SHOWN));
    }
    Some(line)
}

/// A file group's "outputs": its srcs and its deps' outputs, as they are.
fn file_group(
    srcs: &inputs::Srcs,
    dep_outputs: &[Arc<Tree>],
    warnings: Vec<String>,
    start: Instant,
) -> Result<Outcome> {
    let entries = inputs::resolve(srcs, dep_outputs)
        .into_iter()
        .map(|(path, kind)| vbuild_store::TreeEntry { path, kind })
        .collect();
    let tree = Tree::new(entries)?;
    Ok(Outcome {
        outputs: Some(Arc::new(tree)),
        warnings,
        ..Outcome::new(State::FileGroup, start.elapsed())
    })
}

fn describe(exit: ExitKind, target: &Target) -> String {
    match exit {
        ExitKind::Exited(code) => format!("exit code {code}"),
        ExitKind::Signaled(sig) => format!("killed by signal {sig}"),
        ExitKind::TimedOut => match target.timeout {
            Some(t) => format!("timed out after {t:?}"),
            None => "timed out".into(),
        },
    }
}
