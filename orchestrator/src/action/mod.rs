//! One action from start to end, as one straight walk (`run_inner`):
//! resolve inputs, key them, look the key up (local, then remote), on a
//! miss run it in a scratch directory with its IPC server and record the
//! result under the record its tool declared, then materialize.
//!
//! `cache`: the layered action cache (lookup, record, miss explanation);
//! `env`: what an action sees (environment, sandbox);
//! `execute`: staging, the sandbox run with its IPC server, capture;
//! `exec_env`: the run-wide state only executing actions need.
mod cache;
mod direct;
mod env;
mod exec_env;
mod execute;
mod hint;
pub(crate) mod log;

pub use cache::{check_record, scope_of};
pub use env::{requested_sandbox, ACTION_PATH};
pub use exec_env::ExecEnv;
pub use log::Log;

use crate::inputs::{self, PackageIndex};
use crate::key::ActionKey;
use crate::materialize;
use crate::workspace::{Target, Workspace};
use anyhow::Result;
use cache::{Cache, Produced};
use execute::execute;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vbuild_ipc::SecretMatcher;
use vbuild_sandbox::ExitKind;
use vbuild_schema::{CacheSetting, SandboxSetting};
use vbuild_store::{EntryKind, StatCache, Store, Tree};

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
    /// How stdout and stderr interleaved (replayed in that order).
    pub order: Option<Arc<log::Order>>,
    /// The output tree, for dependents.
    pub outputs: Option<Arc<Tree>>,
    pub duration: Duration,
    /// vbuild's own warnings about this action (e.g. refused tool requests).
    pub warnings: Vec<String>,
    /// The action key (hex) its result is stored or was found under.
    pub key: Option<String>,
}

impl Outcome {
    pub fn new(state: State, duration: Duration) -> Outcome {
        Outcome {
            state,
            stdout: Log::Empty,
            stderr: Log::Empty,
            order: None,
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

/// The steps of the design brief, in order: resolve, key, look up, and on
/// a miss execute and record; then materialize (a hit's outputs or the
/// fresh ones) through the one materializer call, `place`.
fn run_inner(ctx: &Ctx, idx: usize, dep_outputs: &[Arc<Tree>], start: Instant) -> Result<Outcome> {
    let target = &ctx.ws.targets[idx];
    // 1. Resolve the inputs.
    let resolve_span = crate::profile::span("resolve");
    let (own, inputs, mut warnings) = match resolve(ctx, idx, dep_outputs)? {
        Resolved::FileGroup(tree, warnings) => {
            return Ok(Outcome {
                outputs: Some(Arc::new(tree)),
                warnings,
                ..Outcome::new(State::FileGroup, start.elapsed())
            })
        }
        Resolved::Action(own, inputs, warnings) => (own, inputs, warnings),
    };
    // 2. Key them (for the sandbox asked for; `Cache::lookup` re-keys).
    let requested = requested_sandbox(ctx.opts.sandbox, target, ctx.ws);
    let mut key = ActionKey::new(ctx, target, requested, inputs, own);
    drop(resolve_span);
    let cache = Cache::new(ctx);
    // 3. Look up: local, then remote; a hit is restored once, here.
    let reason = match look_up(ctx, target, &cache, &mut key, &mut warnings)? {
        Err(hit) => {
            let state = if hit.remote {
                State::RemoteHit
            } else {
                State::Hit
            };
            if ctx.opts.dry_run && hit.tool_disabled {
                warnings.push(
                    "cached although its tool asked not to be (disableCache()): cache = \"always\" overrides that"
                        .into(),
                );
            }
            let strong = hit.strong.to_hex();
            let mut outcome = hit.outcome(state, start.elapsed());
            outcome.warnings = warnings;
            outcome.key = Some(strong);
            return Ok(outcome);
        }
        Ok(reason) => reason,
    };
    if ctx.opts.dry_run {
        return Ok(Outcome::new(State::WouldRun(reason), start.elapsed()));
    }
    // Ctrl-C came while this action was resolved or looked up.
    if crate::scheduler::cancelled() {
        return Ok(Outcome::new(
            State::Cancelled("interrupted".into()),
            start.elapsed(),
        ));
    }
    // 4. Execute on a miss.
    let mut run = execute(ctx, target, key.sandbox, &key.inputs)?;
    warnings.extend(
        run.decl
            .refusals
            .iter()
            .map(|r| format!("refused a tool request: {r}")),
    );
    warnings.extend(discarded_warning(&run.discarded));
    warnings.extend(run.hint.clone());
    if run.exit != ExitKind::Exited(0) {
        return Ok(Outcome {
            state: State::Failed(describe(run.exit, target)),
            stdout: run.stdout,
            stderr: run.stderr,
            order: run.order.map(Arc::new),
            outputs: None,
            duration: start.elapsed(),
            warnings,
            key: None,
        });
    }
    let tree = Arc::new(run.tree.take().expect("captured on success"));
    let duration = start.elapsed();
    // 5. Record.
    let (state, stored_key) = record(ctx, target, &cache, &key, &run, &tree, reason, duration)?;
    // 6. Materialize (`none` ran in the workspace: its outputs are there).
    if key.sandbox != SandboxSetting::None {
        place(ctx, target, &key, &tree)?;
    }
    Ok(Outcome {
        state,
        stdout: run.stdout,
        stderr: run.stderr,
        order: run.order.map(Arc::new),
        outputs: Some(tree),
        duration,
        warnings,
        key: stored_key,
    })
}

/// Step 3: `Err` with a hit that is now in the workspace, or `Ok` with
/// why the action must run.
fn look_up(
    ctx: &Ctx,
    target: &Target,
    cache: &Cache,
    key: &mut ActionKey,
    warnings: &mut Vec<String>,
) -> Result<Result<String, cache::Hit>> {
    if let Some(why) = uncacheable(ctx, target, key.sandbox) {
        key.resandbox(ctx, target, ctx.sandbox_of(target));
        return Ok(Ok(why));
    }
    let lookup_span = crate::profile::span("lookup");
    let found = cache.lookup(target, key)?;
    drop(lookup_span);
    warnings.extend(found.warnings);
    Ok(match found.hit {
        Some(hit) => match place(ctx, target, key, &hit.tree) {
            Ok(()) => Err(hit),
            Err(e) => {
                cache.forget(&hit.strong)?;
                Ok(format!("cached entry unusable ({e:#})"))
            }
        },
        None => Ok(match found.unusable {
            Some(why) => why,
            None => cache.explain_miss(target, key)?,
        }),
    })
}

/// Step 5: stores a successful run (unless it is not cacheable or its tool
/// asked not to be cached) and says how it ended, with the key it stored.
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &Ctx,
    target: &Target,
    cache: &Cache,
    key: &ActionKey,
    run: &execute::Executed,
    tree: &Arc<Tree>,
    reason: String,
    duration: Duration,
) -> Result<(State, Option<String>)> {
    // `cache = "always"`: the target vouches that this run is hermetic
    // even though its tool asked not to be cached (e.g. Vite's server
    // under `vitest run`).
    let overridden = run.decl.cache_disabled && target.cache == CacheSetting::Always;
    if run.decl.cache_disabled && !overridden {
        return Ok((State::Uncached("requested by tool".into()), None));
    }
    let requested = requested_sandbox(ctx.opts.sandbox, target, ctx.ws);
    if uncacheable(ctx, target, requested).is_some() {
        return Ok((State::Uncached(reason), None));
    }
    let _span = crate::profile::span("record");
    let record = key.record_of(&run.decl);
    let stored = key.strong(&record).to_hex();
    let produced = Produced {
        tree,
        stdout: &run.stdout,
        stderr: &run.stderr,
        order: run.order.as_ref(),
        declarations: cache::stored_declarations(&run.decl)?,
        duration,
    };
    cache.record(target, key, &record, tree, &produced)?;
    let state = State::Miss(match overridden {
        true => format!("{reason}; cache = \"always\" overrode the tool's disableCache()"),
        false => reason,
    });
    Ok((state, Some(stored)))
}

/// Why an action is never looked up or stored, if it is not.
fn uncacheable(ctx: &Ctx, target: &Target, requested: SandboxSetting) -> Option<String> {
    if ctx.opts.no_cache {
        Some("--no-cache".into())
    } else if target.cache == CacheSetting::Off {
        Some("cache = false".into())
    } else if requested == SandboxSetting::None {
        Some("sandbox = \"none\" is never cached".into())
    } else {
        None
    }
}

/// What resolving found: a file group (its files are its outputs) or an
/// action's own sources and full input set, with warnings about its srcs.
enum Resolved {
    FileGroup(Tree, Vec<String>),
    Action(Arc<inputs::Srcs>, BTreeMap<String, EntryKind>, Vec<String>),
}

/// The target's own sources and the full input set: own sources, the deps'
/// outputs, the workspace inputs, and for node_modules targets the deps'
/// package.json.
fn resolve(ctx: &Ctx, idx: usize, dep_outputs: &[Arc<Tree>]) -> Result<Resolved> {
    let target = &ctx.ws.targets[idx];
    let srcs = ctx
        .srcs
        .get(ctx.ws, &ctx.index, ctx.store, ctx.stat_cache, idx)?;
    let warnings: Vec<String> = ctx
        .srcs
        .unmatched(idx)
        .iter()
        .map(|p| format!("srcs pattern {p:?} matches no file"))
        .collect();
    if target.file_group {
        // A file group's "outputs": its srcs and its deps' outputs, as they are.
        let entries = inputs::resolve(&srcs, dep_outputs)
            .into_iter()
            .map(|(path, kind)| vbuild_store::TreeEntry { path, kind })
            .collect();
        return Ok(Resolved::FileGroup(Tree::new(entries)?, warnings));
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
    Ok(Resolved::Action(srcs, inputs, warnings))
}

/// The one call into the materializer: makes the target's declared outputs
/// in the workspace equal to `tree` (not under `vbuild why`).
fn place(ctx: &Ctx, target: &Target, key: &ActionKey, tree: &Tree) -> Result<()> {
    if !ctx.opts.dry_run {
        let _m = crate::profile::span("materialize");
        materialize::materialize(ctx.store, ctx.stat_cache, ctx.ws, target, &key.inputs, tree)?;
    }
    Ok(())
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
