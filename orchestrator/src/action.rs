//! One action from start to end: resolve inputs, look the key up, and on a
//! hit restore; on a miss run it in a scratch directory, store its outputs
//! and record the result.
use crate::exec::{self, Exit, Scratch};
use crate::inputs::{self, PackageIndex};
use crate::key::{self, EnvValue, KeyInputs, Record, StaticKey};
use crate::materialize;
use crate::workspace::{Target, Workspace};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vbuild_schema::SandboxSetting;
use vbuild_store::{ActionResult, CacheEntry, EntryKind, StatCache, Store, Tree};

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
    pub host_env: HashMap<String, String>,
    pub secrets: globset::GlobSet,
    pub opts: RunOptions,
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
}

impl Outcome {
    fn failed(why: String, start: Instant) -> Outcome {
        Outcome {
            state: State::Failed(why),
            stdout: vec![],
            stderr: vec![],
            outputs: None,
            duration: start.elapsed(),
        }
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

    /// A tracked variable's value from vbuild's own environment; secrets
    /// enter the key only as a hash.
    pub fn env_value(&self, name: &str) -> EnvValue {
        match self.host_env.get(name) {
            None => EnvValue::Absent,
            Some(v) if self.secrets.is_match(name) => {
                EnvValue::Hashed(blake3::hash(v.as_bytes()).to_hex().to_string())
            }
            Some(v) => EnvValue::Value(v.clone()),
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
    fn action_env(&self, target: &Target, scratch: &Scratch) -> BTreeMap<String, String> {
        let home = scratch.root().join("home").to_string_lossy().into_owned();
        let tmp = scratch.root().join("tmp").to_string_lossy().into_owned();
        let mut env = BTreeMap::from([
            ("PATH".to_string(), exec::ACTION_PATH.to_string()),
            ("HOME".to_string(), home),
            ("TMPDIR".to_string(), tmp),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("LC_ALL".to_string(), "C.UTF-8".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
            (
                "SOURCE_DATE_EPOCH".to_string(),
                exec::SOURCE_DATE_EPOCH.to_string(),
            ),
        ]);
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
        Err(e) => Outcome::failed(format!("{e:#}"), start),
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
    let env_of = |name: &str| ctx.env_value(name);
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
            let strong = key::strong_key(&weak, &record, &inputs, &env_of);
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
        return Ok(Outcome {
            state: State::WouldRun(reason),
            stdout: vec![],
            stderr: vec![],
            outputs: None,
            duration: start.elapsed(),
        });
    }

    let record = Record {
        ignored_inputs: vec![],
        tracked_env: ctx.pass_env_names(target),
    };
    let (exit, stdout, stderr, tree) = execute(ctx, target, sandbox, &inputs)?;
    if !exit.success() {
        return Ok(Outcome {
            state: State::Failed(exit.describe()),
            stdout,
            stderr,
            outputs: None,
            duration: start.elapsed(),
        });
    }
    let tree = tree.expect("captured on success");
    let duration = start.elapsed();
    let state = if cacheable {
        let result = ActionResult {
            output_tree: ctx.store.cas.put_bytes(&tree.to_canonical_bytes())?,
            stdout: ctx.store.cas.put_bytes(&stdout)?,
            stderr: ctx.store.cas.put_bytes(&stderr)?,
            exit_code: 0,
            declarations: serde_json::Value::Null,
            duration_ms: duration.as_millis() as u64,
        };
        let env_values = record
            .tracked_env
            .iter()
            .map(|n| (n.clone(), env_of(n)))
            .collect();
        let strong = key::strong_key(&weak, &record, &inputs, &env_of);
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
        stdout,
        stderr,
        outputs: Some(Arc::new(tree)),
        duration,
    })
}

/// A hit: load the output tree and logs (verifying every blob), then make
/// the workspace match. Any missing or corrupt blob fails the restore.
fn restore(ctx: &Ctx, target: &Target, result: &ActionResult) -> Result<Outcome> {
    let cas = &ctx.store.cas;
    let tree = Tree::from_bytes(&cas.read_verified(&result.output_tree)?)?;
    if ctx.opts.dry_run {
        return Ok(Outcome {
            state: State::Hit,
            stdout: vec![],
            stderr: vec![],
            outputs: Some(Arc::new(tree)),
            duration: Duration::ZERO,
        });
    }
    let stdout = cas.read_verified(&result.stdout)?;
    let stderr = cas.read_verified(&result.stderr)?;
    materialize::materialize(ctx.store, ctx.stat_cache, &ctx.ws.root, target, &tree)?;
    Ok(Outcome {
        state: State::Hit,
        stdout,
        stderr,
        outputs: Some(Arc::new(tree)),
        duration: Duration::ZERO,
    })
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
        env_values: before
            .record
            .tracked_env
            .iter()
            .map(|n| (n.clone(), ctx.env_value(n)))
            .collect(),
        record: before.record.clone(),
    };
    Ok(key::explain(&before, &now))
}

type Executed = (Exit, Vec<u8>, Vec<u8>, Option<Tree>);

/// Stages the inputs into a fresh scratch directory, runs the command and
/// captures its outputs into the store.
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
    let env = ctx.action_env(target, &scratch);
    let (out_path, err_path) = (scratch.root().join("stdout"), scratch.root().join("stderr"));
    let exit = exec::run(&exec::RunSpec {
        argv: &target.argv,
        env: &env,
        cwd: &cwd,
        stdout: &out_path,
        stderr: &err_path,
        timeout: target.timeout,
    })?;
    let stdout = std::fs::read(&out_path)?;
    let stderr = std::fs::read(&err_path)?;
    if !exit.success() {
        return Ok((exit, stdout, stderr, None));
    }
    let input_paths: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    let tree = materialize::capture(ctx.store, target, &ws_root, &input_paths, &[])?;
    Ok((exit, stdout, stderr, Some(tree)))
}

/// Copies every input from the store into the scratch workspace, read-only.
fn stage(ctx: &Ctx, ws_root: &std::path::Path, inputs: &BTreeMap<String, EntryKind>) -> Result<()> {
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
