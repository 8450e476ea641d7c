//! The per-action scratch directory and running an action in it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::outputs::{prepare, relative};
use crate::plan::{ChildPlan, ExecPlan};
use crate::rootfs::{self, RootSpec};
use crate::{launch, overlay, remove};
use crate::{
    Layout, Outcome, RunSpec, SandboxError, SandboxMode, Write, FIXED_HOME, FIXED_TMP, FIXED_WS,
    HOST_UNPRIVILEGED_ID, SANDBOX_GID, SANDBOX_UID,
};
use std::sync::Mutex;

/// A per-action scratch directory on the host:
/// `<parent>/<unique>/{ws,home,tmp,out,root,upper,work}`. `ws` mirrors the
/// workspace layout and holds only the staged inputs; `root` is the (empty)
/// mountpoint of the namespace sandbox's root; `upper` and `work` are the
/// overlay's (see overlay.rs). Removed on drop.
#[derive(Debug)]
pub struct Scratch {
    root: PathBuf,
    ws: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    out: PathBuf,
    mnt: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    /// What the last `run` wrote in the staged workspace.
    writes: Mutex<Vec<Write>>,
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
            upper: root.join("upper"),
            work: root.join("work"),
            writes: Mutex::new(Vec::new()),
            root,
        };
        for d in [&s.ws, &s.home, &s.tmp, &s.out, &s.mnt, &s.upper, &s.work] {
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
    ///
    /// Afterwards [`Scratch::writes`] lists what the action wrote in the
    /// staged workspace; on success, what it wrote at its declared output
    /// locations is in [`Scratch::host_ws`] (moved down from the overlay's
    /// upper layer in namespaces mode), ready to be captured.
    pub fn run(&self, mode: SandboxMode, spec: &RunSpec) -> Result<Outcome, SandboxError> {
        let plan = self.plan(mode, spec)?;
        let direct = mode == SandboxMode::Scratch || spec.direct_ws;
        let before = direct.then(|| overlay::snapshot(&self.ws));
        let outcome = launch::run(plan, spec)?;
        let writes = match &before {
            Some(before) => overlay::diff(&self.ws, before),
            None => {
                let writes = overlay::changes(&self.upper, &self.ws)?;
                if outcome.success() {
                    overlay::settle(&self.upper, &self.ws, &spec.writable)?;
                }
                writes
            }
        };
        *self.writes.lock().unwrap_or_else(|p| p.into_inner()) = writes;
        Ok(outcome)
    }

    /// What the last [`Scratch::run`] wrote in the staged workspace:
    /// created, modified and removed paths, workspace-relative, sorted.
    /// The orchestrator names those outside the declared outputs (which
    /// are discarded) in a warning.
    pub fn writes(&self) -> Vec<Write> {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds the namespace sandbox for `spec` without running anything.
    pub(crate) fn probe(&self, spec: &RunSpec) -> Result<Outcome, SandboxError> {
        let mut plan = self.plan(SandboxMode::Namespaces, spec)?;
        plan.probe_only = true;
        launch::run(plan, spec)
    }

    fn plan(&self, mode: SandboxMode, spec: &RunSpec) -> Result<ChildPlan, SandboxError> {
        prepare(&self.ws, spec)?;
        let cwd = self.layout(mode).ws.join(relative(&spec.cwd)?);
        let mut exec = ExecPlan::new(spec, &cwd)?;
        match mode {
            SandboxMode::Scratch => Ok(ChildPlan::supervised(exec, spec.timeout)),
            SandboxMode::Namespaces => {
                exec.no_new_privs = true;
                if rootfs::root_caller() {
                    // See `rootfs::id_maps`: the action is the host's
                    // unprivileged id, so what it may write must be its.
                    exec.become_ids = Some((SANDBOX_UID, SANDBOX_GID));
                    self.hand_over(spec)?;
                }
                let parent = self.root.parent().unwrap_or(&self.root);
                let etc = crate::etc::prepared(parent, spec.network)?;
                let ns = rootfs::build(&RootSpec {
                    new_root: &self.mnt,
                    ws: &self.ws,
                    upper: &self.upper,
                    work: &self.work,
                    direct_ws: spec.direct_ws,
                    home: &self.home,
                    tmp: &self.tmp,
                    etc: &etc,
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

impl Scratch {
    /// Gives [`HOST_UNPRIVILEGED_ID`] the directories a root caller's
    /// action writes: HOME, TMPDIR, the overlay's upper root and every
    /// directory of the staged workspace (writes land in the upper layer,
    /// but the permission check is on these), and the read-write binds with
    /// their entries (the IPC socket). Never a file of the staged workspace:
    /// those are hard links to store blobs.
    fn hand_over(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let id = Some(HOST_UNPRIVILEGED_ID);
        let give = |p: &Path| {
            std::os::unix::fs::lchown(p, id, id).map_err(|e| SandboxError::Setup {
                step: format!("handing {} to the sandbox user", p.display()),
                source: e,
            })
        };
        give(&self.home)?;
        give(&self.tmp)?;
        // A merged directory shows the upper layer's owner: its root first.
        give(&self.upper)?;
        let mut dirs = vec![self.ws.clone()];
        while let Some(dir) = dirs.pop() {
            give(&dir)?;
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        for (host, _) in &spec.extra_rw_binds {
            give(host)?;
            if fs::symlink_metadata(host)?.is_dir() {
                for entry in fs::read_dir(host)? {
                    give(&entry?.path())?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover scratch dir wastes space but is harmless.
        let _ = remove::remove_tree(&self.root);
    }
}
