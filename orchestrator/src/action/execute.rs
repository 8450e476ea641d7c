//! A miss that runs: stage the inputs into a scratch directory, start the
//! IPC server, run the command in its sandbox, capture its outputs.
use super::{Ctx, Log};
use crate::materialize;
use crate::workspace::Target;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vbuild_ipc::{ActionServer, Declarations, ServerConfig};
use vbuild_sandbox::{ExitKind, SandboxMode, Scratch};
use vbuild_schema::SandboxSetting;
use vbuild_store::{EntryKind, Tree};

/// Where the socket directory and vbuild itself appear in the namespace sandbox.
const IPC_INSIDE: &str = "/vbuild/ipc";
const BIN_INSIDE: &str = "/vbuild/bin";

/// How long the runner waits for tool connections to finish after the
/// action's processes exit; anything already sent is applied regardless.
const IPC_DRAIN: Duration = Duration::from_secs(2);

pub(super) struct Executed {
    pub(super) exit: ExitKind,
    /// In the store already: never read into memory.
    pub(super) stdout: Log,
    pub(super) stderr: Log,
    /// How stdout and stderr interleaved, when both have bytes.
    pub(super) order: Option<super::log::Order>,
    /// Captured outputs, on success.
    pub(super) tree: Option<Tree>,
    pub(super) decl: Declarations,
    /// What it wrote outside its declared outputs (discarded), for the
    /// warning: workspace-relative, described.
    pub(super) discarded: Vec<String>,
    /// On failure: which declaration would stage a path its logs name.
    pub(super) hint: Option<String>,
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
pub(super) fn execute(
    ctx: &Ctx,
    target: &Target,
    sandbox: SandboxSetting,
    inputs: &BTreeMap<String, EntryKind>,
) -> Result<Executed> {
    let parent = ctx.exec_env.scratch_parent(sandbox)?;
    let scratch = Scratch::create(parent)?;
    let mode = match sandbox {
        SandboxSetting::Namespaces => Some(SandboxMode::Namespaces),
        SandboxSetting::Scratch => Some(SandboxMode::Scratch),
        SandboxSetting::None => None,
    };
    let ws_root = match mode {
        Some(_) => scratch.host_ws().to_path_buf(),
        None => ctx.ws.root.clone(),
    };
    let namespaced = mode == Some(SandboxMode::Namespaces);
    // Where the scratch filesystem cannot hold an overlay's upper layer,
    // the namespace sandbox writes its staged tree directly: of copies.
    let overlay = namespaced && vbuild_sandbox::overlay_usable(parent);
    // Hard links to blobs need the scratch tree on the store's filesystem
    // (not the default tmpfs, where a link attempt only fails with EXDEV).
    let link = overlay && ctx.exec_env.on_store_fs(parent, ctx.store);
    let mut writable = writable_paths(target);
    let stage_span = crate::profile::span("stage");
    if mode.is_some() {
        stage(ctx, &ws_root, inputs, link)?;
    }
    let exe = ctx.exec_env.exe()?;
    let mut extra_ro_binds = vec![(exe.to_path_buf(), Path::new(BIN_INSIDE).join("vbuild"))];
    if let (Some(node), Some(mode)) = (ctx.node_env(target), mode) {
        let staged = node.stage(
            &target.label.package,
            &ws_root,
            &scratch.layout(mode).ws,
            namespaced,
        )?;
        // The namespace sandbox's overlay makes them writable anyway (and
        // their tool caches are discarded with it).
        if !namespaced {
            writable.extend(staged.writable);
        }
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
        secrets: ctx.secrets.clone(),
    };
    let server = ActionServer::start(&ctx.exec_env.rt()?, ctx.exec_env.ipc_parent()?, config)
        .context("starting the IPC server")?;
    let ipc_env = if namespaced {
        let inside = Path::new(IPC_INSIDE);
        server.action_env(inside, &inside.join(vbuild_ipc::NODE_CLIENT_FILE_NAME))
    } else {
        server.action_env(server.socket_dir(), server.node_client_path())
    };
    let env = ctx.action_env(target, &layout, &bin, ipc_env);
    let (out_path, err_path, order_path) = (
        scratch.host_out().join("stdout"),
        scratch.host_out().join("stderr"),
        scratch.host_out().join("order"),
    );
    let argv = super::direct::spawn_argv(&target.argv);
    let direct = argv != target.argv;
    let mut spec = vbuild_sandbox::RunSpec {
        argv: argv.iter().map(Into::into).collect(),
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd: PathBuf::from(&target.label.package),
        writable,
        network: target.network,
        timeout: target.timeout,
        stdout: out_path.clone(),
        stderr: err_path.clone(),
        order: Some(order_path.clone()),
        extra_ro_binds,
        extra_rw_binds: vec![(server.socket_dir().to_path_buf(), PathBuf::from(IPC_INSIDE))],
        direct_ws: namespaced && !overlay,
    };
    drop(stage_span);
    let run_span = crate::profile::span("run");
    let run = |spec: &vbuild_sandbox::RunSpec| match mode {
        Some(mode) => scratch.run(mode, spec),
        None => vbuild_sandbox::run_direct(&ctx.ws.root, spec),
    };
    let mut outcome = run(&spec);
    if direct && matches!(outcome, Err(vbuild_sandbox::SandboxError::Spawn(_))) {
        // Not found, or not something execve runs (a script without `#!`):
        // nothing ran yet, so the shell gets it, as written, and says why.
        spec.argv = target.argv.iter().map(Into::into).collect();
        outcome = run(&spec);
    }
    // Drain the channel before anything else: fire-and-forget calls made
    // just before exit must still count.
    let decl = server.finish(IPC_DRAIN);
    drop(run_span);
    let outcome = match outcome {
        Ok(o) => o,
        Err(vbuild_sandbox::SandboxError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            // Report like a shell would, as the action's own failure.
            let msg = format!("vbuild: {}: command not found\n", target.argv[0]);
            return Ok(Executed {
                exit: ExitKind::Exited(127),
                stdout: Log::Empty,
                stderr: Log::from(msg.into_bytes()),
                order: None,
                tree: None,
                decl,
                discarded: vec![],
                hint: None,
            });
        }
        Err(e) => return Err(e).context("running the action"),
    };
    let hint = (mode.is_some() && !outcome.success())
        .then(|| {
            super::hint::for_failure(ctx.ws, target, inputs, &layout.ws, [&out_path, &err_path])
        })
        .flatten();
    // Hashed into the store in chunks, however much the action printed.
    let stdout = Log::store_file(&ctx.store.cas, &out_path).context("storing stdout")?;
    let stderr = Log::store_file(&ctx.store.cas, &err_path).context("storing stderr")?;
    // Worth keeping only when both streams have something to interleave.
    let order = match (
        stdout.is_empty() || stderr.is_empty(),
        std::fs::read(&order_path),
    ) {
        (false, Ok(bytes)) => vbuild_sandbox::parse_order(&bytes).filter(|o| o.len() > 1),
        _ => None,
    };
    if !outcome.success() {
        return Ok(Executed {
            exit: outcome.status,
            stdout,
            stderr,
            order,
            tree: None,
            decl,
            discarded: vec![],
            hint,
        });
    }
    let discarded = match mode {
        Some(_) => discarded_writes(target, &scratch.writes()),
        None => vec![],
    };
    let _capture = crate::profile::span("capture");
    let input_paths: BTreeSet<&str> = inputs.keys().map(String::as_str).collect();
    let ignored: Vec<String> = decl.ignored_outputs.iter().cloned().collect();
    let conf = materialize::Confinement::new(ctx.ws, target).map_err(anyhow::Error::msg)?;
    let tree = materialize::capture(ctx.store, ctx.ws, &conf, &ws_root, &input_paths, &ignored)?;
    Ok(Executed {
        exit: outcome.status,
        stdout,
        stderr,
        order,
        tree: Some(tree),
        decl,
        discarded,
        hint: None,
    })
}

/// The writes of an action that no declared output covers, described
/// (`path/` for a directory, `(modified)`, `(removed)`). Writes under
/// node_modules are left out: those directories are writable for tools'
/// caches, which are fresh in every action by design.
fn discarded_writes(target: &Target, writes: &[vbuild_sandbox::Write]) -> Vec<String> {
    let pkg = &target.label.package;
    let globs: Vec<_> = target
        .outs
        .iter()
        .map(|o| match o {
            crate::globs::OutSpec::Glob(g) => crate::globs::out_glob(g).ok(),
            _ => None,
        })
        .collect();
    writes
        .iter()
        .filter_map(|w| {
            let path = w.path.to_str()?;
            if path.split('/').any(|c| c == "node_modules") {
                return None;
            }
            let rel = match pkg.is_empty() {
                true => Some(path),
                false => path
                    .strip_prefix(pkg.as_str())
                    .and_then(|r| r.strip_prefix('/')),
            };
            let declared = rel.is_some_and(|rel| {
                target.outs.iter().zip(&globs).any(|(o, g)| {
                    o.covers(rel, g.as_ref())
                        // The output directory itself (deleted, re-created).
                        || matches!(o, crate::globs::OutSpec::Dir(d) if d == rel)
                })
            });
            if declared {
                return None;
            }
            let slash = if w.dir { "/" } else { "" };
            Some(match w.kind {
                vbuild_sandbox::WriteKind::Created => format!("{path}{slash}"),
                vbuild_sandbox::WriteKind::Modified => format!("{path}{slash} (modified)"),
                vbuild_sandbox::WriteKind::Removed => format!("{path}{slash} (removed)"),
            })
        })
        .collect()
}

/// Whether an input may be staged as a hard link to its blob: only under
/// the namespace sandbox's overlay with the scratch tree on the store's
/// filesystem (`link`), where the staged tree is the lower layer that no
/// write reaches (a write, even after `chmod`, copies the file up first;
/// tested by `inputs_under_writable_outputs_never_alias_the_store`). In
/// scratch mode the action writes the staged tree itself, so inputs are
/// copies. Executables are copied (blobs are 0444; making a link executable
/// would chmod the blob).
fn linkable(path: &str, executable: bool, link: bool) -> bool {
    link && !executable && !path.split('/').any(|c| c == "node_modules")
}

/// Puts every input into the scratch workspace, read-only: a hard link to
/// its verified blob where [`linkable`] (a source is stored first: sources
/// are hashed, not stored, when the workspace is read), else a copy whose
/// bytes are verified against the input's digest while copying: from the
/// workspace file (a source's only copy; a dependency's output
/// materialized there), or from the blob when the workspace file changed.
fn stage(
    ctx: &Ctx,
    ws_root: &Path,
    inputs: &BTreeMap<String, EntryKind>,
    link: bool,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cas = &ctx.store.cas;
    // Directories made so far: one mkdir per directory, not per input.
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for (path, entry) in inputs {
        let dest = ws_root.join(path);
        if let Some(parent) = dest.parent() {
            if !made.contains(parent) {
                std::fs::create_dir_all(parent)?;
                made.extend(parent.ancestors().map(Path::to_path_buf));
            }
        }
        match entry {
            EntryKind::File {
                digest, executable, ..
            } => {
                let src = ctx.ws.root.join(path);
                // Saves a copy and an inode per input; any failure (another
                // filesystem, a corrupt blob, now removed) falls back to copying.
                if linkable(path, *executable, link)
                    && (cas.link_out(digest, &dest).is_ok()
                        || (cas.put_file(&src).is_ok_and(|(d, _)| d == *digest)
                            && cas.link_out(digest, &dest).is_ok()))
                {
                    continue;
                }
                let mode = if *executable { 0o555 } else { 0o444 };
                if cas.copy_file_verified(&src, digest, &dest, mode)? {
                    continue;
                }
                // The workspace file changed since it was hashed: only the
                // store may still have the bytes the key stands for.
                if cas.copy_out(digest, &dest, *executable).is_err() {
                    anyhow::bail!("input '{path}' changed while the build ran; run again");
                }
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &dest)?,
        }
    }
    Ok(())
}
