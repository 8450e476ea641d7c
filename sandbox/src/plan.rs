//! Everything the child processes will do, computed in the parent.
//!
//! The child is created with a raw `clone(2)` from a possibly multithreaded
//! process, so until `execve` it must not allocate (another thread may have
//! held the malloc lock at the moment of the clone). Every path, argv and
//! environment string is therefore turned into a `CString` here, and the
//! child only walks these structures and makes syscalls.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use libc::c_char;
use nix::mount::MsFlags;

use crate::{RunSpec, SandboxError};

pub(crate) fn cstr(bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| {
        SandboxError::InvalidSpec(format!(
            "{:?} contains a NUL byte",
            String::from_utf8_lossy(bytes)
        ))
    })
}

pub(crate) fn cpath(p: &Path) -> Result<CString, SandboxError> {
    cstr(p.as_os_str().as_bytes())
}

/// How the action process is started.
pub(crate) struct ExecPlan {
    /// Absolute working directory as the action sees it.
    pub cwd: CString,
    /// Paths tried in order with `execve` (the PATH search of `execvpe`,
    /// done inside the sandbox because the paths are the sandbox's).
    pub candidates: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    /// Set `PR_SET_NO_NEW_PRIVS` so setuid binaries and file capabilities
    /// cannot give the action more than it started with.
    pub no_new_privs: bool,
    /// Drop every group and become this (uid, gid) before `execve` (the
    /// namespace sandbox under a root caller).
    pub become_ids: Option<(u32, u32)>,
    /// For error messages.
    pub program: String,
    // Own the strings the pointer arrays point into (heap buffers, so moving
    // the struct does not move them).
    _argv: Vec<CString>,
    _envp: Vec<CString>,
}

impl ExecPlan {
    /// `cwd` is the working directory as the action will see it.
    pub fn new(spec: &RunSpec, cwd: &Path) -> Result<ExecPlan, SandboxError> {
        let argv0 = spec
            .argv
            .first()
            .ok_or_else(|| SandboxError::InvalidSpec("argv is empty".into()))?;
        if argv0.is_empty() {
            return Err(SandboxError::InvalidSpec("argv[0] is empty".into()));
        }
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = spec
            .env
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.as_bytes().contains(&b'=') {
                    return Err(SandboxError::InvalidSpec(format!(
                        "bad environment variable name {k:?}"
                    )));
                }
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(&kv)
            })
            .collect::<Result<_, _>>()?;
        let candidates = search_path(argv0, spec)?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ExecPlan {
            cwd: cpath(cwd)?,
            candidates,
            argv: argv_ptrs,
            envp: envp_ptrs,
            no_new_privs: false,
            become_ids: None,
            program: argv0.to_string_lossy().into_owned(),
            _argv: argv,
            _envp: envp,
        })
    }
}

/// The candidates `execvpe` would try: argv0 itself when it has a slash,
/// else each PATH entry (empty entry = current directory).
fn search_path(argv0: &OsStr, spec: &RunSpec) -> Result<Vec<CString>, SandboxError> {
    let name = argv0.as_bytes();
    if name.contains(&b'/') {
        return Ok(vec![cstr(name)?]);
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_bytes())
        .unwrap_or(b"/bin:/usr/bin");
    path.split(|&b| b == b':')
        .map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(name);
            cstr(&full)
        })
        .collect()
}

/// One step of building the namespace sandbox's root, run by the child.
pub(crate) enum Op {
    /// Write to a /proc file of the child itself (uid_map, gid_map, setgroups).
    WriteProc {
        path: &'static CStr,
        data: Vec<u8>,
    },
    /// `mkdir`, tolerating an existing directory.
    Mkdir(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// Create an empty file to serve as a mountpoint for a file bind.
    Touch(CString),
    /// Bind mount; `remount` re-applies flags (read-only etc.) because a bind
    /// mount ignores them on creation.
    Bind {
        src: CString,
        dst: CString,
        remount: Option<MsFlags>,
    },
    /// A fresh filesystem (tmpfs, proc).
    Mount {
        fstype: &'static CStr,
        dst: CString,
        flags: MsFlags,
        data: CString,
    },
    /// Bring `lo` up in the new network namespace (it starts down).
    LoopbackUp,
    Hostname(&'static str),
    /// Make the prepared directory the root and detach the host's.
    PivotRoot(CString),
    /// After the pivot, make the root tmpfs read-only so the action cannot
    /// create files outside its writable locations.
    RemountRootRo,
}

/// The namespace part of a run: ops in order, each with a description for
/// error messages (kept in the parent).
#[derive(Default)]
pub(crate) struct NsPlan {
    pub ops: Vec<Op>,
    pub steps: Vec<String>,
    /// Steps whose EPERM/EACCES means "the kernel or its policy forbids
    /// unprivileged namespaces" rather than "this spec is wrong".
    pub gates: Vec<bool>,
    pub network: bool,
    /// (uid_map, gid_map) the parent writes for the child (a root caller;
    /// see `rootfs::id_maps`); the action then drops to the sandbox ids.
    pub parent_maps: Option<(Vec<u8>, Vec<u8>)>,
}

impl NsPlan {
    pub fn push(&mut self, op: Op, step: impl Into<String>) {
        self.ops.push(op);
        self.steps.push(step.into());
        self.gates.push(false);
    }

    pub fn push_gate(&mut self, op: Op, step: impl Into<String>) {
        self.push(op, step);
        if let Some(g) = self.gates.last_mut() {
            *g = true;
        }
    }
}

/// Everything the supervisor child needs.
pub(crate) struct ChildPlan {
    pub exec: ExecPlan,
    pub timeout: Option<Duration>,
    /// `None`: scratch/direct mode (subreaper supervision, no namespaces).
    pub ns: Option<NsPlan>,
    /// Probe: build the sandbox, then report success without running anything.
    pub probe_only: bool,
}

impl ChildPlan {
    pub fn supervised(exec: ExecPlan, timeout: Option<Duration>) -> ChildPlan {
        ChildPlan {
            exec,
            timeout,
            ns: None,
            probe_only: false,
        }
    }
}
