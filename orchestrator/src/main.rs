//! vbuild: hermetic, content-addressed builds.
/// mimalloc, not glibc's malloc: a no-op run is mostly small, short-lived
/// allocations (paths, labels, map nodes), and malloc/free were about 30 %
/// of its instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod action;
mod cleanup;
mod cli;
mod globs;
mod graph;
mod inputs;
mod interrupt;
mod key;
mod listdir;
mod materialize;
mod migrate;
mod node;
mod overlap;
mod profile;
mod prune;
mod remote;
mod report;
mod scheduler;
mod statat;
mod store_cmd;
mod term;
mod tmpfs;
mod workspace;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Cli, Cmd, OutputArgs, RemoteArgs, RemoteCmd, RemoteModeArg, SandboxArg, ToolCmd};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vbuild_schema::{Pattern, SandboxSetting};
use vbuild_store::Store;
use workspace::Workspace;

/// Actions at once by default: twice the cores. Setting up and tearing down
/// a namespace sandbox mostly waits on the kernel (mount namespace
/// teardown, RCU grace periods) rather than using a CPU; with only one
/// action per core that wait left cores idle (bench/README.md: N=1000 cold
/// build 39 s with 2 jobs, 19.5 s with 4, same CPU time).
fn default_jobs() -> usize {
    2 * cores()
}

fn cores() -> usize {
    // Once per process: each call reads the cgroup quota files (three
    // opens and reads), and loading asks once per step it splits.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `vbuild --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VBUILD_COMMIT"), ")");

/// Exit codes: 0 success, 1 an action failed, 2 bad input or vbuild error,
/// 130 interrupted (Ctrl-C).
const EXIT_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;
/// Like a shell: 128 + SIGINT.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    // Nothing an action starts may ptrace vbuild (or the forked supervisors,
    // which inherit this) to run code outside the action's process tree;
    // this also keeps /proc/<pid>/{mem,environ} of vbuild unreadable to them.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match e.downcast_ref::<workspace::LoadError>() {
                Some(load) => eprintln!("{load}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

struct Session {
    ws: Workspace,
    /// The package the user stands in (for `:target` labels).
    current: Option<String>,
    /// `--since REF`: the targets a run may select (by index).
    only: Option<Vec<bool>>,
}

fn load(dir: &Option<PathBuf>) -> Result<Session> {
    Ok(load_with(dir, |_| ())?.0)
}

/// The store, this workspace's stat cache rows and the lockfile, read while the
/// workspace loads.
type Opened = Result<(
    Store,
    vbuild_store::StatCache,
    vbuild_store::Lease,
    Option<node::Lockfile>,
)>;

/// Loads the workspace and opens the store at the same time (on another
/// thread: the two are independent, and both show up in a no-op build).
fn load_with_store(dir: &Option<PathBuf>) -> Result<(Session, Opened)> {
    let (session, opened) = load_with(dir, |root| {
        let prefix = format!("{}/", root.display());
        let root = root.to_path_buf();
        std::thread::spawn(move || -> Opened {
            let store = open_store()?;
            // Before anything is read: a collection keeps what this build uses.
            let lease = store.lease()?;
            let stat_cache = store.action_cache.load_stat_cache(&prefix)?;
            // Ahead of knowing whether a selected target uses
            // node_modules (this thread is done long before the workspace
            // is loaded), but only where some are installed: a workspace
            // without them never has its lockfiles probed.
            let lockfile = root
                .join("node_modules")
                .is_dir()
                .then(|| node::Lockfile::read(&root));
            Ok((store, stat_cache, lease, lockfile))
        })
    })?;
    let opened = opened
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("opening the store panicked")));
    Ok((session, opened))
}

/// A runtime for IPC servers and remote transfers (Ctrl-C: `interrupt.rs`).
pub(crate) fn start_runtime() -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the IPC runtime")?;
    Ok(rt)
}

/// Finds the root, calls `start` with it, then loads the workspace.
fn load_with<T>(
    dir: &Option<PathBuf>,
    start: impl FnOnce(&std::path::Path) -> T,
) -> Result<(Session, T)> {
    let cwd = match dir {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("-C {}", d.display()))?,
        None => std::env::current_dir()?.canonicalize()?,
    };
    let Some(root) = workspace::find_root(&cwd) else {
        bail!(
            "no {} found in {} or any parent directory; create one with:\n\n  [workspace]\n  name = \"my-project\"",
            workspace::WORKSPACE_FILE,
            cwd.display()
        );
    };
    let started = start(&root);
    let ws = Workspace::load(&root).map_err(anyhow::Error::new)?;
    let current = workspace::package_of(&ws.root, &cwd);
    Ok((
        Session {
            ws,
            current,
            only: None,
        },
        started,
    ))
}

fn store_root() -> Result<PathBuf> {
    vbuild_store::default_root()
        .context("cannot locate the store: set VBUILD_CACHE_DIR, XDG_CACHE_HOME or HOME")
}

fn open_store() -> Result<Store> {
    let root = store_root()?;
    Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
}

fn parse_patterns(s: &Session, texts: &[String]) -> Result<Vec<Pattern>> {
    texts
        .iter()
        .map(|t| Pattern::parse(t, s.current.as_deref()).map_err(anyhow::Error::new))
        .collect()
}

fn sandbox_setting(s: SandboxArg) -> SandboxSetting {
    match s {
        SandboxArg::Strict | SandboxArg::Namespaces => SandboxSetting::Namespaces,
        SandboxArg::Scratch => SandboxSetting::Scratch,
        SandboxArg::None => SandboxSetting::None,
    }
}

fn real_main(cli: Cli) -> Result<u8> {
    match cli.command {
        Cmd::Run(args) => {
            if let Some(path) = &args.profile {
                profile::enable();
                // Fail before building, not after: the file must be writable.
                report::write_atomic(path, b"{}").context("--profile")?;
            }
            let (mut session, opened) = load_with_store(&cli.dir)?;
            let texts = if args.patterns.is_empty() {
                vec!["//...".to_string()]
            } else {
                args.patterns.clone()
            };
            let patterns = parse_patterns(&session, &texts)?;
            session.ws.check_broken(Some(&patterns))?;
            if let Some(base) = &args.since {
                session.only =
                    Some(graph::changed_since(&session.ws, base).map_err(anyhow::Error::msg)?);
            }
            if !args.args.is_empty() {
                append_args(&mut session.ws, &patterns, &args.args)?;
            }
            let opts = action::RunOptions {
                jobs: args.jobs.map_or_else(default_jobs, |j| j.resolve(cores())),
                keep_going: args.keep_going,
                no_cache: args.no_cache,
                dry_run: false,
                strict: args.sandbox == Some(SandboxArg::Strict),
                sandbox: args.sandbox.map(sandbox_setting),
                force_color: None,
            };
            let code = build(
                &session,
                &patterns,
                opts,
                opened,
                &args.remote,
                &args.output,
            )?;
            if let Some(path) = &args.profile {
                profile::write(path)?;
            }
            // Memory only (the workspace's targets and file listing): the
            // process exits next, see the end of `build`.
            std::mem::forget(session);
            Ok(code)
        }
        Cmd::Why(args) => {
            let (session, opened) = load_with_store(&cli.dir)?;
            let patterns = parse_patterns(&session, &args.patterns)?;
            session.ws.check_broken(Some(&patterns))?;
            let opts = action::RunOptions {
                jobs: 1,
                dry_run: true,
                ..Default::default()
            };
            let output = OutputArgs {
                json: args.json,
                ..Default::default()
            };
            build(&session, &patterns, opts, opened, &args.remote, &output)
        }
        Cmd::Query { patterns, output } => {
            let session = load(&cli.dir)?;
            let texts = if patterns.is_empty() {
                vec!["//...".to_string()]
            } else {
                patterns
            };
            let patterns = parse_patterns(&session, &texts)?;
            // Listing needs no package: errors are warnings, and the
            // targets of broken packages are not listed.
            session.ws.check_broken(None)?;
            print!("{}", graph::query(&session.ws, &patterns, output));
            Ok(0)
        }
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vbuild", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Schema { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => {
                    let cwd = match &cli.dir {
                        Some(d) => d.clone(),
                        None => std::env::current_dir()?,
                    };
                    workspace::find_root(&cwd.canonicalize()?)
                        .unwrap_or(cwd)
                        .join(".vbuild/schema")
                }
            };
            store_cmd::write_schemas(&dir)
        }
        Cmd::Clean => {
            let session = load(&cli.dir)?;
            session.ws.check_broken(None)?;
            let store = open_store()?;
            let removed = store
                .action_cache
                .clear_workspace(&action::scope_of(&session.ws))?;
            println!(
                "removed {removed} cache entries of workspace '{}'",
                session.ws.name()
            );
            Ok(0)
        }
        Cmd::Tool { command } => tool(command),
        Cmd::Migrate { dry_run, force } => {
            let dir = match &cli.dir {
                Some(d) => d.clone(),
                None => std::env::current_dir()?,
            };
            migrate::run(&dir, &migrate::Options { dry_run, force })
        }
        Cmd::Remote {
            command: RemoteCmd::Check(args),
        } => {
            let session = load(&cli.dir)?;
            session.ws.check_broken(None)?;
            let env = std::env::vars().collect();
            match remote::resolve(&session.ws, &remote_overrides(&args), &env)? {
                Some(cfg) => remote::check(&cfg),
                None => bail!(
                    "no remote cache configured: set url under [remote] in vbuild.toml, ${} or --remote",
                    remote::ENV_URL
                ),
            }
        }
        Cmd::Store { command } => store_cmd::run(command),
    }
}

/// `vbuild run //app:build -- --flag`: the arguments go to that one
/// target's command (and so into its key); its deps are unchanged.
fn append_args(ws: &mut Workspace, patterns: &[Pattern], extra: &[String]) -> Result<()> {
    let [Pattern::Target(label)] = patterns else {
        bail!("arguments after `--` go to one target: name exactly one label, e.g. `vbuild run //app:build -- --mode staging`");
    };
    let Some(t) = ws.targets.iter_mut().find(|t| t.label == *label) else {
        return Ok(()); // selection reports the unknown label
    };
    match t.argv.as_slice() {
        [sh, c, _] if sh == "/bin/sh" && c == "-c" => {
            // A shell command: quoted words appended to the script.
            let quoted: Vec<String> = extra.iter().map(|a| shell_quote(a)).collect();
            let script = format!("{} {}", t.argv[2], quoted.join(" "));
            t.argv[2] = script;
        }
        _ => t.argv.extend(extra.iter().cloned()),
    }
    Ok(())
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:@%+,".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// `vbuild store verify [--repair]`: 0 when all is sound, else 1.
pub(crate) fn store_verify(repair: bool) -> Result<u8> {
    let store = open_store()?;
    let report = vbuild_store::verify::verify(&store, repair, &action::check_record)?;
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!("store: {}", store.root().display());
    println!(
        "checked {} blobs, {} entries, {} records: {} problems{}",
        report.blobs,
        report.entries,
        report.records,
        report.problems.len(),
        if repair {
            format!(", {} repaired", report.repaired)
        } else if report.problems.is_empty() {
            String::new()
        } else {
            " (run `vbuild store verify --repair` to drop what is unusable)".into()
        }
    );
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}

/// Probes the namespace sandbox once, if any selected action asks for it.
/// Unavailable: announce the fallback to scratch once, or refuse (strict).
fn namespaces_usable(
    ws: &Workspace,
    order: &[usize],
    cli: &Option<SandboxSetting>,
    strict: bool,
) -> Result<bool> {
    let wanted = order.iter().any(|&i| {
        action::requested_sandbox(*cli, &ws.targets[i], ws) == SandboxSetting::Namespaces
    });
    if !wanted {
        return Ok(false);
    }
    let (mode, warning) =
        vbuild_sandbox::resolve_mode(vbuild_sandbox::SandboxMode::Namespaces, strict)
            .map_err(|e| anyhow::anyhow!("--sandbox=strict: {e}"))?;
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    Ok(mode == vbuild_sandbox::SandboxMode::Namespaces)
}

/// Env names whose tracked values enter keys only as a hash and are never
/// printed (`secret_env` in vbuild.toml adds more).
const DEFAULT_SECRETS: &[&str] = &["*TOKEN*", "*SECRET*", "*PASSWORD*", "*_KEY", "*CREDENTIAL*"];

/// A short, private directory for IPC sockets: socket paths are limited to
/// 107 bytes, so the store (which may live deep) is no place for them.
/// `$XDG_RUNTIME_DIR`, else `$TMPDIR`, else the private directory on
/// `/dev/shm` (a tmpfs: each action's socket directory, socket and client
/// module are three new inodes, which on ext4 cost a scan past recently
/// deleted ones), else `/tmp`.
fn ipc_base() -> Result<PathBuf> {
    let set = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
    };
    match set("XDG_RUNTIME_DIR").or_else(|| set("TMPDIR")) {
        Some(base) => private_dir(&base),
        None => match tmpfs::private_tmpfs(std::path::Path::new("/dev/shm")) {
            Some(dir) => Ok(dir),
            None => private_dir(&std::env::temp_dir()),
        },
    }
}

/// `base/vbuild-<uid>`, created 0700 if missing, and refused unless it is
/// a directory of ours that nobody else can enter.
fn private_dir(base: &std::path::Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = unsafe { libc::getuid() };
    let dir = base.join(format!("vbuild-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "{} must be a directory owned by you with mode 0700; remove it and run again",
            dir.display()
        );
    }
    Ok(dir)
}

/// `vbuild tool …`: a thin shell front end to the IPC client.
fn tool(command: ToolCmd) -> Result<u8> {
    let Some(client) = vbuild_ipc::client::Client::from_env() else {
        // Outside vbuild: declarations mean nothing; reads come from our env.
        match command {
            ToolCmd::GetEnv { name, .. } => {
                if let Ok(v) = std::env::var(&name) {
                    println!("{v}");
                }
            }
            ToolCmd::GetEnvs { glob, prefix, .. } => {
                let query = match (glob, prefix) {
                    (Some(g), _) => vbuild_ipc::EnvQuery::Glob(g),
                    (_, p) => vbuild_ipc::EnvQuery::Prefix(p.unwrap_or_default()),
                };
                let matcher =
                    vbuild_ipc::EnvQueryMatcher::new(&query).map_err(anyhow::Error::msg)?;
                for (k, v) in matcher.select(&std::env::vars().collect()) {
                    println!("{k}={v}");
                }
            }
            _ => {}
        }
        return Ok(0);
    };
    match command {
        ToolCmd::IgnoreInput { path } => {
            client.ignore_input(&path)?;
        }
        ToolCmd::IgnoreOutput { path } => {
            client.ignore_output(&path)?;
        }
        ToolCmd::DisableCache => client.disable_cache()?,
        ToolCmd::GetEnv { name, untracked } => {
            if let Some(v) = client.get_env(&name, !untracked)? {
                println!("{v}");
            }
        }
        ToolCmd::GetEnvs {
            glob,
            prefix,
            untracked,
        } => {
            let query = match (glob, prefix) {
                (Some(g), _) => vbuild_ipc::EnvQuery::Glob(g),
                (_, p) => vbuild_ipc::EnvQuery::Prefix(p.unwrap_or_default()),
            };
            for (k, v) in client.get_envs(query, !untracked)? {
                println!("{k}={v}");
            }
        }
        ToolCmd::ReportUsedInputs { paths } => client.report_used_inputs(&paths)?,
    }
    Ok(0)
}

fn remote_overrides(args: &RemoteArgs) -> remote::Overrides {
    remote::Overrides {
        url: args.remote.clone(),
        mode: args.remote_mode.map(|m| match m {
            RemoteModeArg::ReadWrite => vbuild_schema::RemoteMode::ReadWrite,
            RemoteModeArg::ReadOnly => vbuild_schema::RemoteMode::ReadOnly,
        }),
        instance: args.remote_instance.clone(),
        disabled: args.no_remote,
    }
}

/// Builds (or, with `dry_run`, explains) the closure of `patterns`.
fn build(
    session: &Session,
    patterns: &[Pattern],
    opts: action::RunOptions,
    opened: Opened,
    remote_args: &RemoteArgs,
    output: &OutputArgs,
) -> Result<u8> {
    let ws = &session.ws;
    // Before the first file is hashed: Ctrl-C is ours from here on.
    interrupt::install();
    let order = match &session.only {
        Some(keep) => graph::select_where(ws, patterns, |i| keep[i]),
        None => graph::select(ws, patterns),
    }
    .map_err(anyhow::Error::msg)?;
    if order.is_empty() {
        eprintln!("vbuild: nothing changed since the given ref touches the selected targets");
        return Ok(0);
    }
    let (store, stat_cache, lease, lockfile) = opened?;
    let mut opts = opts;
    let (opts_sandbox, strict) = (opts.sandbox, opts.strict);
    let secret_patterns: Vec<String> = DEFAULT_SECRETS
        .iter()
        .map(|s| s.to_string())
        .chain(ws.def.secret_env.iter().cloned())
        .collect();
    // The remote's credential variable is hidden from tools like vbuild's
    // own VBUILD_* settings.
    let credential_vars: Vec<&str> = ws
        .def
        .remote
        .as_ref()
        .and_then(|r| r.credentials_env.as_deref())
        .into_iter()
        .collect();
    let secrets = vbuild_ipc::SecretMatcher::new(&secret_patterns)
        .context("vbuild.toml: secret_env")?
        .hide(&credential_vars);
    let host_env: HashMap<String, String> = std::env::vars().collect();
    let term = term::Term::detect(&host_env);
    opts.force_color = term.force_color.clone();
    // No remote when nothing is read or written (`--no-cache`).
    let remote_cfg = if opts.no_cache {
        None
    } else {
        remote::resolve(ws, &remote_overrides(remote_args), &host_env)?
    };
    // The runtime (IPC servers, Ctrl-C) starts with the first action that
    // executes, unless the remote cache needs it now.
    let rt = match &remote_cfg {
        Some(_) => Some(start_runtime()?),
        None => None,
    };
    let remote = match (remote_cfg, &rt) {
        (Some(cfg), Some(rt)) => Some(remote::Remote::start(cfg, store.root(), rt.handle())?),
        _ => None,
    };
    // The probe runs up front only for --sandbox=strict (which must refuse
    // before anything runs); otherwise on the first action that executes.
    let namespaces = if strict {
        Some(namespaces_usable(ws, &order, &opts_sandbox, strict)?)
    } else {
        None
    };
    let ctx = action::Ctx {
        ws,
        store: &store,
        stat_cache: &stat_cache,
        index: inputs::PackageIndex::new(ws),
        srcs: inputs::SrcsCache::new(ws.targets.len()),
        host_env: Arc::new(host_env),
        secrets,
        opts,
        node: if order.iter().any(|&i| ws.uses_node(&ws.targets[i])) {
            Some(
                node::NodeEnv::detect(
                    &ws.root,
                    ws.tree.module_dirs.clone(),
                    &store.root().join("toolchains"),
                    lockfile.unwrap_or_else(|| node::Lockfile::read(&ws.root)),
                )
                .context("looking at node_modules and node")?,
            )
        } else {
            None
        },
        remote: remote.as_ref(),
        exec_env: action::ExecEnv::new(
            tmpfs::scratch_base(&store),
            namespaces,
            rt.as_ref().map(|rt| rt.handle().clone()),
        ),
    };
    let mut reporter = report::Reporter::new(report::ReportOptions {
        json: output.json,
        output_logs: output.output_logs,
        progress: term.progress,
        color: term.color,
        running_notice: term.running_notice,
        summary_file: output.summary.clone(),
        dry_run: ctx.opts.dry_run,
        jobs: ctx.opts.jobs,
    });
    let failed = scheduler::run(&ctx, &order, &mut reporter);
    reporter.flush();
    for dir in ctx.exec_env.created_dirs() {
        cleanup::remove_tree(dir);
    }
    store.action_cache.save_stat_cache(&stat_cache)?;
    reporter.summary(&failed, scheduler::cancelled())?;
    if let Some(remote) = &remote {
        remote.finish();
    }
    drop(lease);
    if !ctx.opts.dry_run {
        store_cmd::after_build(&store);
    }
    let code = if scheduler::cancelled() {
        EXIT_INTERRUPTED
    } else if failed.is_empty() {
        0
    } else {
        EXIT_FAILED
    };
    // The process exits next: freeing every resolved srcs map, listing and
    // stat-cache entry one by one (2 % of a 1000-package no-op) is work
    // the OS does at once. Only memory: nothing here has a side effect
    // on drop (the store, its connection and the runtime drop normally).
    let action::Ctx { srcs, index, .. } = ctx;
    std::mem::forget((srcs, index, stat_cache));
    Ok(code)
}
