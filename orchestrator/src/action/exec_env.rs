//! Run-wide state only an executing action needs, built on first use so a
//! run where everything hits pays for none of it.
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vbuild_schema::SandboxSetting;

/// Lazily built run-wide state for executing actions.
#[derive(Default)]
pub struct ExecEnv {
    /// Runs the per-action IPC servers.
    rt: OnceLock<Result<tokio::runtime::Runtime, String>>,
    /// The run's runtime when one was started up front (remote cache).
    preset_rt: Option<tokio::runtime::Handle>,
    /// This run's private, unlistable directory for IPC sockets (short: a
    /// socket path must fit 107 bytes).
    ipc_parent: OnceLock<Result<PathBuf, String>>,
    /// This run's directory for namespace-sandbox scratch dirs, in the store
    /// (created, after sweeping dead runs' leftovers, on first use).
    scratch_parent: OnceLock<Result<PathBuf, String>>,
    /// The same for scratch-mode and `none` actions, outside the store
    /// (see `cleanup.rs`).
    host_scratch_parent: OnceLock<Result<PathBuf, String>>,
    /// The store's scratch directory, under which `scratch_parent` goes.
    store_scratch: PathBuf,
    /// This vbuild binary, put on every action's PATH for `vbuild tool`.
    exe: OnceLock<Result<PathBuf, String>>,
    /// Whether the namespace sandbox is usable in this run (probed once, the
    /// first time an action must execute, unless `--sandbox=strict` probed
    /// up front; when not, `namespaces` targets fall back to `scratch`,
    /// announced once).
    namespaces: OnceLock<bool>,
    /// Whether the namespace scratch parent is on the store's filesystem.
    store_fs: OnceLock<bool>,
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

    /// Where an action running in `sandbox` gets its scratch directory.
    pub(super) fn scratch_parent(&self, sandbox: SandboxSetting) -> Result<&Path> {
        let (cell, base) = match sandbox {
            SandboxSetting::Namespaces => (&self.scratch_parent, Ok(self.store_scratch.clone())),
            SandboxSetting::Scratch | SandboxSetting::None => (
                &self.host_scratch_parent,
                crate::private_dir(&std::env::temp_dir()),
            ),
        };
        cell.get_or_init(|| {
            let base = base.map_err(|e| format!("{e:#}"))?;
            Ok(crate::cleanup::run_scratch_dir(&base))
        })
        .as_deref()
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Whether `scratch_parent` (the namespace sandbox's) is on the store's
    /// filesystem, so that inputs can be hard links to blobs.
    pub(super) fn on_store_fs(&self, scratch_parent: &Path, store: &vbuild_store::Store) -> bool {
        use std::os::unix::fs::MetadataExt;
        *self.store_fs.get_or_init(|| {
            let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
            let parent = dev(scratch_parent);
            parent.is_some() && parent == dev(&store.root().join("cas"))
        })
    }

    /// This run's directories that actions created, to remove at the end.
    pub fn created_dirs(&self) -> Vec<&Path> {
        [
            &self.scratch_parent,
            &self.host_scratch_parent,
            &self.ipc_parent,
        ]
        .into_iter()
        .filter_map(|cell| cell.get().and_then(|r| r.as_deref().ok()))
        .collect()
    }

    pub(super) fn ipc_parent(&self) -> Result<&Path> {
        self.ipc_parent
            .get_or_init(|| {
                let base = crate::ipc_base().map_err(|e| format!("{e:#}"))?;
                crate::cleanup::run_ipc_dir(&base)
                    .map_err(|e| format!("creating an IPC directory in {}: {e}", base.display()))
            })
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub(super) fn exe(&self) -> Result<&Path> {
        self.exe
            .get_or_init(|| {
                std::env::current_exe().map_err(|e| format!("locating the vbuild binary: {e}"))
            })
            .as_deref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Probes the namespace sandbox once (announcing a fallback once).
    pub(super) fn namespaces(&self) -> bool {
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
