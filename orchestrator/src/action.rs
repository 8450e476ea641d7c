//! One action from start to end: resolve inputs, look the key up, and on a
//! hit restore; on a miss run it in a scratch directory with its IPC
//! server, narrow the key by what the tool declared, store its outputs and
//! record the result.
use crate::inputs::{self, PackageIndex};
use crate::key::{self, EnvSource, EnvValue, KeyInputs, Record, StaticKey};
use crate::materialize;
use crate::workspace::{Target, Workspace};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vbuild_ipc::{
    ActionServer, Declarations, EnvQuery, EnvQueryMatcher, SecretMatcher, ServerConfig,
};
use vbuild_sandbox::{ExitKind, SandboxMode, Scratch};
use vbuild_schema::SandboxSetting;
use vbuild_store::{ActionResult, CacheEntry, EntryKind, StatCache, Store, Tree};

/// The fixed PATH actions see after vbuild's own bin directory; a change
/// to it must bump `KEY_VERSION`.
pub const ACTION_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Epoch for `SOURCE_DATE_EPOCH`: 1980-01-01, the earliest zip can store.
pub const SOURCE_DATE_EPOCH: &str = "315532800";

/// Where the socket directory and vbuild itself appear in the namespace sandbox.
const IPC_INSIDE: &str = "/vbuild/ipc";
const BIN_INSIDE: &str = "/vbuild/bin";

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
    /// Refuse to run rather than fall back from namespaces to scratch.
    pub strict: bool,
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
    pub secret_patterns: Vec<String>,
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

/// Lazily built run-wide state for executing actions.
#[derive(Default)]
pub struct ExecEnv {
    /// Runs the per-action IPC servers.
    rt: OnceLock<Result<tokio::runtime::Runtime, String>>,
    /// The run's runtime when one was started up front (remote cache).
    preset_rt: Option<tokio::runtime::Handle>,
    /// Short directory for IPC sockets (a socket path must fit 107 bytes).
    ipc_parent: OnceLock<Result<PathBuf, String>>,
    /// This run's directory for per-action scratch dirs (created, after
    /// sweeping dead runs' leftovers, when the first action executes).
    scratch_parent: OnceLock<Result<PathBuf, String>>,
    /// The store's scratch directory, under which `scratch_parent` goes.
    store_scratch: PathBuf,
    /// This vbuild binary, put on every action's PATH for `vbuild tool`.
    exe: OnceLock<Result<PathBuf, String>>,
    /// Whether the namespace sandbox is usable in this run (probed once, the
    /// first time an action must execute, unless `--sandbox=strict` probed
    /// up front; when not, `namespaces` targets fall back to `scratch`,
    /// announced once).
    namespaces: OnceLock<bool>,
}

impl ExecEnv {
    /// `namespaces`: the probe's answer when already known (strict mode);
    /// `rt`: the runtime when something else needed it up front (remote).
    pub fn new(
        store_scratch: PathBuf,
        namespaces: Option<bool>,
        rt: Option<tokio::runtime::Handle>,
    ) -> ExecEnv {
        let env = ExecEnv {
            store_scratch,
            preset_rt: rt,
            ..ExecEnv::default()
        };
        if let Some(ok) = namespaces {
            let _ = env.namespaces.set(ok);
        }
        env
    }

    /// The runtime for IPC servers (and the Ctrl-C handler), started on
    /// first use.
    pub fn rt(&self) -> Result<tokio::runtime::Handle> {
        if let Some(rt) = &self.preset_rt {
            return Ok(rt.clone());
        }
        let rt = self
            .rt
            .get_or_init(|| crate::start_runtime().map_err(|e| format!("{e:#}")));
        rt.as_ref()
            .map(|rt| rt.handle().clone())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn scratch_parent(&self) -> Result<&Path> {
        self.scratch_parent
            .get_or_init(|| {
                let ipc = self.ipc_parent().map_err(|e| format!("{e:#}"))?;
                Ok(crate::cleanup::run_scratch_dir(&self.store_scratch, ipc))
            })
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// This run's scratch parent, if an action created it.
    pub fn created_scratch(&self) -> Option<&Path> {
        self.scratch_parent.get().and_then(|r| r.as_deref().ok())
    }

    fn ipc_parent(&self) -> Result<&Path> {
        self.ipc_parent
            .get_or_init(|| crate::ipc_parent().map_err(|e| format!("{e:#}")))
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn exe(&self) -> Result<&Path> {
        self.exe
            .get_or_init(|| {
                std::env::current_exe().map_err(|e| format!("locating the vbuild binary: {e}"))
            })
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Probes the namespace sandbox once (announcing a fallback once).
    fn namespaces(&self) -> bool {
        *self.namespaces.get_or_init(|| {
            match vbuild_sandbox::resolve_mode(vbuild_sandbox::SandboxMode::Namespaces, false) {
                Ok((mode, warning)) => {
                    if let Some(warning) = warning {
                        eprintln!("{warning}");
                    }
                    mode == vbuild_sandbox::SandboxMode::Namespaces
                }
                Err(_) => false,
            }
        })
    }
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
    /// Resolves one more target's srcs ahead of time; false when none is left.
    pub fn prefetch_one(&self, order: &[usize]) -> bool {
        self.srcs
            .prefetch_one(self.ws, &self.index, self.store, self.stat_cache, order)
    }

    /// The sandbox an action really runs in (and is keyed by). Probes the
    /// namespace sandbox the first time it is asked about one.
    fn sandbox_of(&self, target: &Target) -> SandboxSetting {
        match requested_sandbox(self.opts.sandbox, target, self.ws) {
            SandboxSetting::Namespaces if !self.exec_env.namespaces() => SandboxSetting::Scratch,
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
            node: self
                .node_env(target)
                .map(|n| n.key_part(&target.label.package)),
        }
    }

    /// The node_modules/toolchain view of a target that uses it.
    fn node_env(&self, target: &Target) -> Option<&crate::node::NodeEnv> {
        self.node.as_ref().filter(|_| self.ws.uses_node(target))
    }

    /// The environment an action runs with: fixed, scrubbed, declared.
    /// `bin` holds `vbuild` itself; `ipc` is the tool channel's env.
    fn action_env(
        &self,
        target: &Target,
        layout: &vbuild_sandbox::Layout,
        bin: &Path,
        ipc: Vec<(String, String)>,
    ) -> BTreeMap<String, String> {
        let path_of = |p: &Path| p.to_string_lossy().into_owned();
        // Like `npm run`: the package's node_modules/.bin, then its
        // ancestors' up to the root, then a node living outside /usr.
        let mut path = String::new();
        if let Some(node) = self.node_env(target) {
            for dir in node.bin_dirs(&layout.ws, &target.label.package) {
                path.push_str(&format!("{}:", dir.display()));
            }
            if let Some(dir) = &node.node_bin_dir {
                path.push_str(&format!("{}:", dir.display()));
            }
        }
        let mut env = BTreeMap::from([
            (
                "PATH".to_string(),
                format!("{path}{}:{ACTION_PATH}", bin.display()),
            ),
            // The workspace root as the action sees it (not in the key,
            // like HOME): lets tools such as vite-plugin-vbuild find the
            // staged tree.
            ("VBUILD_WS_ROOT".to_string(), path_of(&layout.ws)),
            ("HOME".to_string(), path_of(&layout.home)),
            ("TMPDIR".to_string(), path_of(&layout.tmp)),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("LC_ALL".to_string(), "C.UTF-8".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
            (
                "SOURCE_DATE_EPOCH".to_string(),
                SOURCE_DATE_EPOCH.to_string(),
            ),
        ]);
        env.extend(ipc);
        for name in self.pass_env_names(target) {
            if let Some(v) = self.host_env.get(&name) {
                env.insert(name, v.clone());
            }
        }
        env.extend(target.env.clone());
        // `vbuild tool` must stay reachable even when a target sets PATH.
        let path = &env["PATH"];
        let bin = bin.to_string_lossy().into_owned();
        if !path.split(':').any(|p| p == bin) {
            let path = format!("{bin}:{path}");
            env.insert("PATH".to_string(), path);
        }
        env
    }
}

/// The sandbox a target asks for: `--sandbox`, else the target's, else the
/// workspace's, else `namespaces` on Linux.
pub fn requested_sandbox(
    cli: Option<SandboxSetting>,
    target: &Target,
    ws: &Workspace,
) -> SandboxSetting {
    let default = if cfg!(target_os = "linux") {
        SandboxSetting::Namespaces
    } else {
        SandboxSetting::Scratch
    };
    cli.or(target.sandbox).or(ws.def.sandbox).unwrap_or(default)
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
    let srcs = ctx
        .srcs
        .get(ctx.ws, &ctx.index, ctx.store, ctx.stat_cache, idx)?;
    let mut inputs = inputs::resolve(&srcs, dep_outputs);
    if ctx.node_env(target).is_some() {
        // node_modules links to workspace packages (`@scope/lib -> ../lib`)
        // need each dep's package.json next to its outputs to resolve.
        for &dep in &target.deps {
            let rel = crate::inputs::join(&ctx.ws.targets[dep].label.package, "package.json");
            let abs = ctx.ws.root.join(&rel);
            if abs.is_file() && !inputs.contains_key(&rel) {
                let entry = inputs::entry_for(ctx.store, ctx.stat_cache, &abs)?;
                inputs.insert(rel, entry);
            }
        }
    }
    // Keyed optimistically by the sandbox asked for: a result produced in
    // the namespace sandbox is valid wherever it is found, so a hit needs
    // no probe. Only a miss asks whether namespaces work here; if they do
    // not, the action is keyed (and looked up again) as `scratch`.
    let requested = requested_sandbox(ctx.opts.sandbox, target, ctx.ws);
    let mut sandbox = requested;
    let mut fixed = ctx.static_key(target, sandbox);
    let mut weak = key::weak_key(&fixed);
    let cacheable = target.cache && !ctx.opts.no_cache && sandbox != SandboxSetting::None;
    let mut remote_warnings: Vec<String> = vec![];

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
        if let Some(outcome) = lookup(ctx, target, &weak, &inputs, &mut unusable)? {
            return Ok(Outcome {
                duration: start.elapsed(),
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
        if let (Some(remote), false) = (ctx.remote, ctx.opts.dry_run) {
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
    let warnings = remote_warnings
        .into_iter()
        .chain(
            run.decl
                .refusals
                .iter()
                .map(|r| format!("refused a tool request: {r}")),
        )
        .collect();
    if run.exit != ExitKind::Exited(0) {
        return Ok(Outcome {
            state: State::Failed(describe(run.exit, target)),
            stdout: run.stdout,
            stderr: run.stderr,
            outputs: None,
            duration: start.elapsed(),
            warnings,
        });
    }
    let tree = Arc::new(run.tree.expect("captured on success"));
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
        outputs: Some(tree),
        duration,
        warnings,
    })
}

/// The record to store: the target's pass_env plus what the tool declared.
pub(crate) fn narrowed_record(ctx: &Ctx, target: &Target, decl: &Declarations) -> Record {
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

/// Tries every record under `weak`; restores and returns the first hit.
/// An entry whose blobs are unusable is removed and noted in `unusable`.
fn lookup(
    ctx: &Ctx,
    target: &Target,
    weak: &vbuild_store::Digest,
    inputs: &BTreeMap<String, EntryKind>,
    unusable: &mut Option<String>,
) -> Result<Option<Outcome>> {
    for (nth, text) in ctx
        .store
        .action_cache
        .records(weak)?
        .into_iter()
        .enumerate()
    {
        let record: Record = serde_json::from_str(&text).context("reading a narrowing record")?;
        let strong = key::strong_key(weak, &record, inputs, ctx);
        let Some(result) = ctx.store.action_cache.get(&strong)? else {
            continue;
        };
        match restore(ctx, target, &result) {
            Ok(outcome) => {
                // Most recently used first; the first record needs no write.
                if nth > 0 {
                    ctx.store.action_cache.touch_record(weak, &text)?;
                }
                return Ok(Some(outcome));
            }
            Err(e) => {
                // Never trust an entry whose blobs are gone or corrupt.
                ctx.store.action_cache.remove(&strong)?;
                *unusable = Some(format!("cached entry unusable ({e:#})"));
            }
        }
    }
    Ok(None)
}

/// A hit: load the output tree and logs (verifying every blob), then make
/// the workspace match. Any missing or corrupt blob fails the restore.
pub(crate) fn restore(ctx: &Ctx, target: &Target, result: &ActionResult) -> Result<Outcome> {
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

struct Executed {
    exit: ExitKind,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Captured outputs, on success.
    tree: Option<Tree>,
    decl: Declarations,
}

/// The paths (workspace-relative) an action may write: its declared
/// outputs; for a glob, the directory before its first wildcard.
fn writable_paths(target: &Target) -> Vec<PathBuf> {
    // A trailing `/` marks a directory; `./` is the workspace root itself.
    let dir = |p: PathBuf| match p.as_os_str().is_empty() {
        true => PathBuf::from("./"),
        false => PathBuf::from(format!("{}/", p.display())),
    };
    let pkg = Path::new(&target.label.package);
    target
        .outs
        .iter()
        .map(|out| match out {
            crate::globs::OutSpec::Dir(d) => dir(pkg.join(d)),
            crate::globs::OutSpec::File(f) => pkg.join(f),
            crate::globs::OutSpec::Glob(g) => {
                let fixed: Vec<&str> = g
                    .split('/')
                    .take_while(|s| !crate::globs::is_glob(s))
                    .collect();
                dir(pkg.join(fixed.join("/")))
            }
        })
        .collect()
}

/// Stages the inputs into a fresh scratch directory, runs the command in
/// its sandbox with its IPC server, and captures its outputs into the store.
fn execute(
    ctx: &Ctx,
    target: &Target,
    sandbox: SandboxSetting,
    inputs: &BTreeMap<String, EntryKind>,
) -> Result<Executed> {
    let scratch = Scratch::create(ctx.exec_env.scratch_parent()?)?;
    let mode = match sandbox {
        SandboxSetting::Namespaces => Some(SandboxMode::Namespaces),
        SandboxSetting::Scratch => Some(SandboxMode::Scratch),
        SandboxSetting::None => None,
    };
    let ws_root = match mode {
        Some(_) => scratch.host_ws().to_path_buf(),
        None => ctx.ws.root.clone(),
    };
    if mode.is_some() {
        stage(ctx, &ws_root, inputs)?;
    }
    let namespaced = mode == Some(SandboxMode::Namespaces);
    let mut writable = writable_paths(target);
    let exe = ctx.exec_env.exe()?;
    let mut extra_ro_binds = vec![(exe.to_path_buf(), Path::new(BIN_INSIDE).join("vbuild"))];
    if let (Some(node), Some(mode)) = (ctx.node_env(target), mode) {
        let staged = node.stage(&ctx.ws.root, &ws_root, &scratch.layout(mode).ws, namespaced)?;
        writable.extend(staged.writable);
        extra_ro_binds.extend(staged.ro_binds);
        // A node outside the system directories: bind its install prefix.
        if let Some(prefix) = node.node_bin_dir.as_ref().and_then(|d| d.parent()) {
            extra_ro_binds.push((prefix.to_path_buf(), prefix.to_path_buf()));
        }
    }
    let layout = match mode {
        Some(mode) => scratch.layout(mode),
        None => vbuild_sandbox::Layout {
            ws: ctx.ws.root.clone(),
            home: scratch.host_home().to_path_buf(),
            tmp: scratch.host_tmp().to_path_buf(),
        },
    };
    // vbuild itself, for `vbuild tool`: bound into the namespace sandbox,
    // a symlink in a private bin directory otherwise.
    let host_bin = scratch.host_out().join("bin");
    std::fs::create_dir_all(&host_bin)?;
    std::os::unix::fs::symlink(exe, host_bin.join("vbuild"))?;
    let bin = if namespaced {
        PathBuf::from(BIN_INSIDE)
    } else {
        host_bin
    };
    let config = ServerConfig {
        ws_root_inside: layout.ws.clone(),
        host_env: ctx.host_env.clone(),
        secret_patterns: ctx.secret_patterns.clone(),
    };
    let server = ActionServer::start(&ctx.exec_env.rt()?, ctx.exec_env.ipc_parent()?, config)
        .context("starting the IPC server")?;
    let ipc_env = if namespaced {
        let inside = Path::new(IPC_INSIDE);
        ActionServer::action_env(inside, &inside.join(vbuild_ipc::NODE_CLIENT_FILE_NAME))
    } else {
        ActionServer::action_env(server.socket_dir(), server.node_client_path())
    };
    let env = ctx.action_env(target, &layout, &bin, ipc_env);
    let (out_path, err_path) = (
        scratch.host_out().join("stdout"),
        scratch.host_out().join("stderr"),
    );
    let spec = vbuild_sandbox::RunSpec {
        argv: target.argv.iter().map(Into::into).collect(),
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd: PathBuf::from(&target.label.package),
        writable,
        network: target.network,
        timeout: target.timeout,
        stdout: out_path.clone(),
        stderr: err_path.clone(),
        extra_ro_binds,
        extra_rw_binds: vec![(server.socket_dir().to_path_buf(), PathBuf::from(IPC_INSIDE))],
    };
    let outcome = match mode {
        Some(mode) => scratch.run(mode, &spec),
        None => vbuild_sandbox::run_direct(&ctx.ws.root, &spec),
    };
    // Drain the channel before anything else: fire-and-forget calls made
    // just before exit must still count.
    let decl = server.finish(IPC_DRAIN);
    let outcome = match outcome {
        Ok(o) => o,
        Err(vbuild_sandbox::SandboxError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            // Report like a shell would, as the action's own failure.
            let msg = format!("vbuild: {}: command not found\n", target.argv[0]);
            return Ok(Executed {
                exit: ExitKind::Exited(127),
                stdout: vec![],
                stderr: msg.into_bytes(),
                tree: None,
                decl,
            });
        }
        Err(e) => return Err(e).context("running the action"),
    };
    let stdout = std::fs::read(&out_path)?;
    let stderr = std::fs::read(&err_path)?;
    if !outcome.success() {
        return Ok(Executed {
            exit: outcome.status,
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
        exit: outcome.status,
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
