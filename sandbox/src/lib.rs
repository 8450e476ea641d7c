//! vbuild-sandbox: runs one build action so that it can only see what it
//! declared.
//!
//! Three ways to run (see `docs/sandbox.md` for the guarantees of each):
//! - [`SandboxMode::Namespaces`]: user + mount + pid + net + uts + ipc + cgroup
//!   namespaces. The staged workspace appears read-only at the fixed path
//!   [`FIXED_WS`], only declared outputs, HOME and TMPDIR are writable, the
//!   system toolchain is visible read-only, there is no network but loopback,
//!   and every process the action leaves behind dies with it.
//! - [`SandboxMode::Scratch`]: the same scratch directory without namespaces;
//!   the action runs under a subreaper that kills every leftover descendant.
//! - [`run_direct`]: mode "none", in the real workspace (never cached).
//!
//! Linux only: the process supervision uses `clone(2)`, prctl and /proc.

mod child;
mod error;
mod etc;
mod launch;
mod outputs;
mod overlay;
mod plan;
mod probe;
mod reap;
mod remove;
mod rootfs;
mod scratch;
mod streams;
mod sys;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::SandboxError;
pub use launch::cancel_all;
pub use probe::{overlay_usable, probe_namespaces, resolve_mode};
pub use remove::remove_tree;
pub use scratch::Scratch;
pub use streams::parse_order;

/// Where the staged workspace appears inside the namespace sandbox. The same
/// on every machine and for every action (like Nix's `/build`), so tools that
/// embed `$PWD` produce identical bytes wherever the checkout lives.
pub const FIXED_WS: &str = "/vbuild/ws";
/// HOME inside the namespace sandbox.
pub const FIXED_HOME: &str = "/vbuild/home";
/// TMPDIR inside the namespace sandbox (`/tmp` is a symlink to it).
pub const FIXED_TMP: &str = "/vbuild/tmp";
/// The user and group id the action has inside the namespace sandbox,
/// whatever the caller's ids are (they are mapped to it).
pub const SANDBOX_UID: u32 = 1000;
/// See [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;
/// When vbuild runs as root, the host uid and gid that [`SANDBOX_UID`] and
/// [`SANDBOX_GID`] stand for (`nobody`/`nogroup`): the action must not be
/// root on the host. Its writable directories are handed to this id.
pub const HOST_UNPRIVILEGED_ID: u32 = 65534;
/// The hostname inside the namespace sandbox.
pub const SANDBOX_HOSTNAME: &str = "vbuild";

/// How an action is isolated. Mode "none" is [`run_direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxMode {
    Namespaces,
    Scratch,
}

impl SandboxMode {
    /// The spelling used in `vbuild.toml` and `--sandbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Namespaces => "namespaces",
            SandboxMode::Scratch => "scratch",
        }
    }
}

/// One path an action wrote in its staged workspace (see
/// [`Scratch::writes`]), workspace-relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub path: PathBuf,
    pub kind: WriteKind,
    /// A directory, named once for everything in it.
    pub dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Created,
    Modified,
    Removed,
}

/// Paths as the action sees them; the orchestrator puts `home` in HOME and
/// `tmp` in TMPDIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub ws: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

/// Everything about one run of one action.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// `argv[0]` is resolved through the PATH in `env`, like `execvpe`.
    pub argv: Vec<OsString>,
    /// The complete environment; nothing is added.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory relative to the workspace root ("" for the root).
    pub cwd: PathBuf,
    /// Declared outputs relative to the workspace root. A trailing `/` (or an
    /// existing directory) means a directory output, which becomes writable
    /// as a whole; otherwise a file output, whose parent directory becomes
    /// writable while the inputs already in it stay read-only.
    pub writable: Vec<PathBuf>,
    /// `true` keeps the host network (no network namespace).
    pub network: bool,
    /// Wall-clock limit; on expiry the whole process tree is killed.
    pub timeout: Option<Duration>,
    /// Host files created (truncated) to receive the action's output. The
    /// same path for both merges the two streams.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Host file to receive the order in which stdout and stderr bytes
    /// arrived (`streams::parse_order` reads it); the streams then go
    /// through pipes copied by a thread. `None`: straight into the files.
    pub order: Option<PathBuf>,
    /// (host path, path inside) bound read-only (namespaces mode only).
    pub extra_ro_binds: Vec<(PathBuf, PathBuf)>,
    /// (host path, path inside) bound read-write (namespaces mode only).
    pub extra_rw_binds: Vec<(PathBuf, PathBuf)>,
    /// Namespaces mode without the overlay: the staged workspace is bound
    /// read-write and written directly, so its inputs must be copies, never
    /// links to store blobs. For filesystems an overlay's upper layer cannot
    /// live on (see [`overlay_usable`]).
    pub direct_ws: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitKind,
    /// Wall time from starting the sandbox to the last process being gone.
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == ExitKind::Exited(0)
    }
}

/// The action's own exit status (not the supervisor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Exited(i32),
    /// Killed by this signal number. [`cancel_all`] reports `SIGKILL`.
    Signaled(i32),
    TimedOut,
}

/// Runs without isolation (mode "none"): `spec.cwd` is relative to `root`,
/// the real workspace. Outputs' directories are created as in the other
/// modes; binds and `network` are ignored. The process tree is still cleaned
/// up and the timeout still applies.
pub fn run_direct(root: &Path, spec: &RunSpec) -> Result<Outcome, SandboxError> {
    outputs::prepare_loose(root, spec)?;
    let exec = plan::ExecPlan::new(spec, &root.join(outputs::relative(&spec.cwd)?))?;
    launch::run(plan::ChildPlan::supervised(exec, spec.timeout), spec)
}
