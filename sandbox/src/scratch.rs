//! The per-action scratch directory and running an action in it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::outputs::{prepare, relative};
use crate::plan::{ChildPlan, ExecPlan};
use crate::rootfs::{self, RootSpec};
use crate::{launch, remove};
use crate::{Layout, Outcome, RunSpec, SandboxError, SandboxMode, FIXED_HOME, FIXED_TMP, FIXED_WS};

/// A per-action scratch directory on the host:
/// `<parent>/<unique>/{ws,home,tmp,out,root}`. `ws` mirrors the workspace
/// layout and holds only the staged inputs; `root` is the (empty) mountpoint
/// of the namespace sandbox's root. Removed on drop.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
    ws: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    out: PathBuf,
    mnt: PathBuf,
}

impl Scratch {
    /// Creates a unique directory under `parent` (created if missing).
    pub fn create(parent: &Path) -> io::Result<Scratch> {
        fs::create_dir_all(parent)?;
        let root = tempfile::Builder::new()
            .prefix("act-")
            .tempdir_in(parent)?
            .keep();
        let s = Scratch {
            ws: root.join("ws"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            out: root.join("out"),
            mnt: root.join("root"),
            root,
        };
        for d in [&s.ws, &s.home, &s.tmp, &s.out, &s.mnt] {
            // On failure `s` is dropped and the partial tree removed.
            fs::create_dir(d)?;
        }
        Ok(s)
    }

    /// Where the orchestrator stages inputs (mirrors the workspace layout).
    pub fn host_ws(&self) -> &Path {
        &self.ws
    }

    pub fn host_root(&self) -> &Path {
        &self.root
    }

    /// HOME of the action, on the host.
    pub fn host_home(&self) -> &Path {
        &self.home
    }

    /// TMPDIR of the action, on the host.
    pub fn host_tmp(&self) -> &Path {
        &self.tmp
    }

    /// A directory the action never sees, e.g. for its stdout/stderr files.
    pub fn host_out(&self) -> &Path {
        &self.out
    }

    /// Paths as the action sees them: fixed in namespaces mode, the host
    /// paths in scratch mode.
    pub fn layout(&self, mode: SandboxMode) -> Layout {
        match mode {
            SandboxMode::Namespaces => Layout {
                ws: FIXED_WS.into(),
                home: FIXED_HOME.into(),
                tmp: FIXED_TMP.into(),
            },
            SandboxMode::Scratch => Layout {
                ws: self.ws.clone(),
                home: self.home.clone(),
                tmp: self.tmp.clone(),
            },
        }
    }

    /// Runs the action. A failing command is an `Ok(Outcome)`; `Err` means
    /// it could not run as asked (for namespaces: see
    /// [`SandboxError::NamespacesUnavailable`]).
    pub fn run(&self, mode: SandboxMode, spec: &RunSpec) -> Result<Outcome, SandboxError> {
        let plan = self.plan(mode, spec)?;
        launch::run(plan, spec)
    }

    /// Builds the namespace sandbox for `spec` without running anything.
    pub(crate) fn probe(&self, spec: &RunSpec) -> Result<Outcome, SandboxError> {
        let mut plan = self.plan(SandboxMode::Namespaces, spec)?;
        plan.probe_only = true;
        launch::run(plan, spec)
    }

    fn plan(&self, mode: SandboxMode, spec: &RunSpec) -> Result<ChildPlan, SandboxError> {
        let ws_mounts = prepare(&self.ws, spec)?;
        let cwd = self.layout(mode).ws.join(relative(&spec.cwd)?);
        let mut exec = ExecPlan::new(spec, &cwd)?;
        match mode {
            SandboxMode::Scratch => Ok(ChildPlan::supervised(exec, spec.timeout)),
            SandboxMode::Namespaces => {
                exec.no_new_privs = true;
                let ns = rootfs::build(&RootSpec {
                    new_root: &self.mnt,
                    ws: &self.ws,
                    home: &self.home,
                    tmp: &self.tmp,
                    ws_mounts: &ws_mounts,
                    network: spec.network,
                    extra_ro: &spec.extra_ro_binds,
                    extra_rw: &spec.extra_rw_binds,
                })?;
                Ok(ChildPlan {
                    exec,
                    timeout: spec.timeout,
                    ns: Some(ns),
                    probe_only: false,
                })
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover scratch dir wastes space but is harmless.
        let _ = remove::remove_tree(&self.root);
    }
}
