//! One action from start to end: resolve inputs, look the key up, and on a
//! hit restore; on a miss run it in a scratch directory with its IPC
//! server, narrow the key by what the tool declared, store its outputs and
//! record the result.
use crate::exec::{self, Exit, Scratch};
use crate::inputs::{self, PackageIndex};
use crate::key::{self, EnvSource, EnvValue, KeyInputs, Record, StaticKey};
use crate::materialize;
use crate::workspace::{Target, Workspace};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vbuild_ipc::{
    ActionServer, Declarations, EnvQuery, EnvQueryMatcher, SecretMatcher, ServerConfig,
};
use vbuild_schema::SandboxSetting;
use vbuild_store::{ActionResult, CacheEntry, EntryKind, StatCache, Store, Tree};

/// How long the runner waits for tool connections to finish after the
/// action's processes exit; anything already sent is applied regardless.
const IPC_DRAIN: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub no_cache: bool,
    /// Compute keys and explain, but run and restore nothing (`vbuild why`).
    pub dry_run: bool,
    pub sandbox: Option<SandboxSetting>,
}

/// Everything an action needs, shared by all workers of a run.
pub struct Ctx<'a> {
    pub ws: &'a Workspace,
    pub store: &'a Store,
    pub stat_cache: &'a StatCache,
    pub index: PackageIndex,
    /// vbuild's own environment: pass_env and tool `getEnv` read from it.
    pub host_env: Arc<HashMap<String, String>>,
    pub secrets: SecretMatcher,
    pub secret_patterns: Vec<String>,
    pub opts: RunOptions,
    /// Runs the per-action IPC servers.
    pub rt: tokio::runtime::Handle,
    /// Short directory for IPC sockets (a socket path must fit 107 bytes).
    pub ipc_parent: PathBuf,
    /// This vbuild binary, put on every action's PATH for `vbuild tool`.
    pub exe: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Hit,
    /// Ran because of a cache miss; the reason names what changed.
    Miss(String),
    /// Ran and was not stored.
    Uncached(String),
    Failed(String),
    /// Not run because a dependency failed.
    Skipped(String),
    /// Dry run: would run, and why.
    WouldRun(String),
}

pub struct Outcome {
    pub state: State,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The output tree, for dependents.
    pub outputs: Option<Arc<Tree>>,
    pub duration: Duration,
    /// vbuild's own warnings about this action (e.g. refused tool requests).
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn new(state: State, duration: Duration) -> Outcome {
        Outcome {
            state,
            stdout: vec![],
            stderr: vec![],
            outputs: None,
            duration,
            warnings: vec![],
        }
    }
}

impl EnvSource for Ctx<'_> {
    fn value(&self, name: &str) -> EnvValue {
        self.secrets
            .record(name, self.host_env.get(name).map(String::as_str))
    }

    fn matching(&self, query: &EnvQuery) -> BTreeMap<String, EnvValue> {
        let Ok(matcher) = EnvQueryMatcher::new(query) else {
            return BTreeMap::new();
        };
        let found = matcher.select(&self.host_env);
        found
            .keys()
            .map(|name| (name.clone(), self.value(name)))
            .collect()
    }
}

impl Ctx<'_> {
    fn sandbox_of(&self, target: &Target) -> SandboxSetting {
        let chosen = self.opts.sandbox.or(target.sandbox).or(self.ws.def.sandbox);
        // Until the namespace sandbox lands, `namespaces` runs as `scratch`.
        match chosen.unwrap_or(SandboxSetting::Scratch) {
            SandboxSetting::Namespaces => SandboxSetting::Scratch,
            other => other,
        }
    }

    fn pass_env_names(&self, target: &Target) -> Vec<String> {
        let mut names: Vec<String> = target
            .pass_env
            .iter()
            .chain(&self.ws.def.pass_env)
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn static_key(&self, target: &Target, sandbox: SandboxSetting) -> StaticKey {
        StaticKey {
            version: key::KEY_VERSION,
            platform: key::platform(),
            argv: target.argv.clone(),
            cwd: target.label.package.clone(),
            env: target.env.clone(),
            pass_env: self.pass_env_names(target),
            srcs: target.src_patterns.clone(),
            outs: target.outs.iter().map(|o| o.text()).collect(),
            deps: target
                .deps
                .iter()
                .map(|&d| self.ws.targets[d].label.to_string())
                .collect(),
            sandbox: format!("{sandbox:?}").to_lowercase(),
            network: target.network,
        }
    }

    /// The environment an action runs with: fixed, scrubbed, declared.
    /// `bin` holds `vbuild` itself; `ipc` is the tool channel's env.
    fn action_env(
        &self,
        target: &Target,
        scratch: &Scratch,
        bin: &Path,
        ipc: Vec<(String, String)>,
    ) -> BTreeMap<String, String> {
        let path_of = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut env = BTreeMap::from([
            (
                "PATH".to_string(),
                format!("{}:{}", bin.display(), exec::ACTION_PATH),
            ),
            ("HOME".to_string(), path_of(scratch.root().join("home"))),
            ("TMPDIR".to_string(), path_of(scratch.root().join("tmp"))),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("LC_ALL".to_string(), "C.UTF-8".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
            (
                "SOURCE_DATE_EPOCH".to_string(),
                exec::SOURCE_DATE_EPOCH.to_string(),
            ),
        ]);
        env.extend(ipc);
        for name in self.pass_env_names(target) {
            if let Some(v) = self.host_env.get(&name) {
                env.insert(name, v.clone());
            }
        }
        env.extend(target.env.clone());
        env
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
    let sandbox = ctx.sandbox_of(target);
    let inputs = inputs::resolve(
        ctx.ws,
        &ctx.index,
        ctx.store,
        ctx.stat_cache,
        idx,
        dep_outputs,
    )?;
    let fixed = ctx.static_key(target, sandbox);
    let weak = key::weak_key(&fixed);
    let cacheable = target.cache && !ctx.opts.no_cache && sandbox != SandboxSetting::None;

    let reason = if !cacheable {
        if ctx.opts.no_cache {
            "--no-cache".to_string()
        } else if !target.cache {
            "cache = false".to_string()
        } else {
            "sandbox = \"none\" is never cached".to_string()
        }
    } else {
        let mut unusable = None;
        for (nth, text) in ctx
            .store
            .action_cache
            .records(&weak)?
            .into_iter()
            .enumerate()
        {
            let record: Record =
                serde_json::from_str(&text).context("reading a narrowing record")?;
            let strong = key::strong_key(&weak, &record, &inputs, ctx);
            let Some(result) = ctx.store.action_cache.get(&strong)? else {
                continue;
            };
            match restore(ctx, target, &result) {
                Ok(outcome) => {
                    // Most recently used first; the first record needs no write.
                    if nth > 0 {
                        ctx.store.action_cache.touch_record(&weak, &text)?;
                    }
                    return Ok(Outcome {
                        duration: start.elapsed(),
                        ..outcome
                    });
                }
                Err(e) => {
                    // Never trust an entry whose blobs are gone or corrupt.
                    ctx.store.action_cache.remove(&strong)?;
                    unusable = Some(format!("cached entry unusable ({e:#})"));
                }
            }
        }
        match unusable {
            Some(why) => why,
            None => explain_miss(ctx, &label, &fixed, &inputs)?,
        }
    };
    if ctx.opts.dry_run {
        return Ok(Outcome::new(State::WouldRun(reason), start.elapsed()));
    }

    let run = execute(ctx, target, sandbox, &inputs)?;
    let warnings = run
        .decl
        .refusals
        .iter()
        .map(|r| format!("refused a tool request: {r}"))
        .collect();
    if !run.exit.success() {
        return Ok(Outcome {
            state: State::Failed(run.exit.describe()),
            stdout: run.stdout,
            stderr: run.stderr,
            outputs: None,
            duration: start.elapsed(),
            warnings,
        });
    }
    let tree = run.tree.expect("captured on success");
    let duration = start.elapsed();
    let state = if run.decl.cache_disabled {
        State::Uncached("requested by tool".into())
    } else if cacheable {
        let record = narrowed_record(ctx, target, &run.decl);
        let mut declarations = run.decl.clone();
        declarations.refusals.clear();
        let result = ActionResult {
            output_tree: ctx.store.cas.put_bytes(&tree.to_canonical_bytes())?,
            stdout: ctx.store.cas.put_bytes(&run.stdout)?,
            stderr: ctx.store.cas.put_bytes(&run.stderr)?,
            exit_code: 0,
            declarations: serde_json::to_value(&declarations)?,
            duration_ms: duration.as_millis() as u64,
        };
        let strong = key::strong_key(&weak, &record, &inputs, ctx);
        let env_values = key::env_values(&record, ctx);
        let explain = KeyInputs {
            fixed,
            inputs,
            env_values,
            record: record.clone(),
        };
        ctx.store.action_cache.put(&CacheEntry {
            weak_key: weak,
            strong_key: strong,
            record: serde_json::to_string(&record)?,
            workspace: ctx.ws.name().to_string(),
            label,
            explain: ctx.store.cas.put_bytes(&serde_json::to_vec(&explain)?)?,
            result,
        })?;
        State::Miss(reason)
    } else {
        State::Uncached(reason)
    };
    if sandbox != SandboxSetting::None {
        materialize::materialize(ctx.store, ctx.stat_cache, &ctx.ws.root, target, &tree)?;
    }
    Ok(Outcome {
        state,
        stdout: run.stdout,
        stderr: run.stderr,
        outputs: Some(Arc::new(tree)),
        duration,
        warnings,
    })
}

/// The record to store: the target's pass_env plus what the tool declared.
fn narrowed_record(ctx: &Ctx, target: &Target, decl: &Declarations) -> Record {
    let mut tracked: BTreeSet<String> = ctx.pass_env_names(target).into_iter().collect();
    tracked.extend(decl.tracked_env.keys().cloned());
    Record {
        ignored_inputs: decl.ignored_inputs.iter().cloned().collect(),
        tracked_env: tracked.into_iter().collect(),
        env_patterns: decl.env_patterns.iter().map(|p| p.query.clone()).collect(),
        used_inputs: decl
            .used_inputs
            .as_ref()
            .map(|u| u.iter().cloned().collect()),
    }
}

/// A hit: load the output tree and logs (verifying every blob), then make
/// the workspace match. Any missing or corrupt blob fails the restore.
fn restore(ctx: &Ctx, target: &Target, result: &ActionResult) -> Result<Outcome> {
    let cas = &ctx.store.cas;
    let tree = Arc::new(Tree::from_bytes(&cas.read_verified(&result.output_tree)?)?);
    let mut outcome = Outcome::new(State::Hit, Duration::ZERO);
    if !ctx.opts.dry_run {
        outcome.stdout = cas.read_verified(&result.stdout)?;
        outcome.stderr = cas.read_verified(&result.stderr)?;
        materialize::materialize(ctx.store, ctx.stat_cache, &ctx.ws.root, target, &tree)?;
    }
    outcome.outputs = Some(tree);
    Ok(outcome)
}

fn explain_miss(
    ctx: &Ctx,
    label: &str,
    fixed: &StaticKey,
    inputs: &BTreeMap<String, EntryKind>,
) -> Result<String> {
    let Some(last) = ctx.store.action_cache.last_run(ctx.ws.name(), label)? else {
        return Ok("no previous entry".into());
    };
    let Ok(bytes) = ctx.store.cas.read_verified(&last.explain) else {
        return Ok("no previous entry".into());
    };
    let before: KeyInputs =
        serde_json::from_slice(&bytes).context("reading a cached explanation")?;
    let now = KeyInputs {
        fixed: fixed.clone(),
        inputs: inputs.clone(),
        env_values: key::env_values(&before.record, ctx),
        record: before.record.clone(),
    };
    Ok(key::explain(&before, &now))
}

struct Executed {
    exit: Exit,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Captured outputs, on success.
    tree: Option<Tree>,
    decl: Declarations,
}

/// Stages the inputs into a fresh scratch directory, runs the command with
/// its IPC server, and captures its outputs into the store.
fn execute(
    ctx: &Ctx,
    target: &Target,
    sandbox: SandboxSetting,
    inputs: &BTreeMap<String, EntryKind>,
) -> Result<Executed> {
    let scratch = Scratch::create(&ctx.store.scratch_dir())?;
    let ws_root = if sandbox == SandboxSetting::None {
        ctx.ws.root.clone()
    } else {
        scratch.ws()
    };
    if sandbox != SandboxSetting::None {
        stage(ctx, &ws_root, inputs)?;
    }
    let cwd = ws_root.join(&target.label.package);
    std::fs::create_dir_all(&cwd)?;
    let bin = scratch.root().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(&ctx.exe, bin.join("vbuild"))?;
    let config = ServerConfig {
        ws_root_inside: ws_root.clone(),
        host_env: ctx.host_env.clone(),
        secret_patterns: ctx.secret_patterns.clone(),
    };
    let server =
        ActionServer::start(&ctx.rt, &ctx.ipc_parent, config).context("starting the IPC server")?;
    let ipc_env = ActionServer::action_env(server.socket_dir(), server.node_client_path());
    let env = ctx.action_env(target, &scratch, &bin, ipc_env);
    let (out_path, err_path) = (scratch.root().join("stdout"), scratch.root().join("stderr"));
    let exit = exec::run(&exec::RunSpec {
        argv: &target.argv,
        env: &env,
        cwd: &cwd,
        stdout: &out_path,
        stderr: &err_path,
        timeout: target.timeout,
    });
    // Drain the channel before anything else: fire-and-forget calls made
    // just before exit must still count.
    let decl = server.finish(IPC_DRAIN);
    let exit = exit?;
    let stdout = std::fs::read(&out_path)?;
    let stderr = std::fs::read(&err_path)?;
    if !exit.success() {
        return Ok(Executed {
            exit,
            stdout,
            stderr,
            tree: None,
            decl,
        });
    }
    let input_paths: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    let ignored: Vec<String> = decl.ignored_outputs.iter().cloned().collect();
    let tree = materialize::capture(ctx.store, target, &ws_root, &input_paths, &ignored)?;
    Ok(Executed {
        exit,
        stdout,
        stderr,
        tree: Some(tree),
        decl,
    })
}

/// Copies every input from the store into the scratch workspace, read-only.
fn stage(ctx: &Ctx, ws_root: &Path, inputs: &BTreeMap<String, EntryKind>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (path, entry) in inputs {
        let dest = ws_root.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match entry {
            EntryKind::File {
                digest, executable, ..
            } => {
                let copied = ctx.store.cas.copy_out(digest, &dest, *executable);
                if copied.is_err() {
                    // The stat cache vouched for a blob that is gone or was
                    // corrupt: store the workspace file again, if unchanged.
                    let (again, _) = ctx.store.cas.put_file(&ctx.ws.root.join(path))?;
                    anyhow::ensure!(
                        again == *digest,
                        "input '{path}' changed while the build ran; run again"
                    );
                    ctx.store.cas.copy_out(digest, &dest, *executable)?;
                }
                let mode = if *executable { 0o555 } else { 0o444 };
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &dest)?,
        }
    }
    Ok(())
}
