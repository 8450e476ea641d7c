//! Parent side: open the action's stdio, clone the supervisor, wait, and
//! turn its records into an [`Outcome`] or a [`SandboxError`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::child::{self, ChildFds, SupervisorArgs};
use crate::plan::ChildPlan;
use crate::probe;
use crate::streams::Copier;
use crate::sys::{self, SigMask};
use crate::{ExitKind, Outcome, RunSpec, SandboxError};

/// The supervisor's stack: its deepest frames are the /proc scan of
/// `reap.rs` (about 10 KiB); pages it never touches cost nothing.
const SUPERVISOR_STACK: usize = 256 * 1024;

/// Supervisors currently running, for [`cancel_all`].
static RUNNING: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// Asks every running action of this process to stop (e.g. on Ctrl-C): each
/// supervisor kills its action's whole tree and the runs return
/// `ExitKind::Signaled(SIGKILL)`.
pub fn cancel_all() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in running.iter() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Whether the supervisor can share vbuild's memory instead of getting a
/// copy of it. It can where it never needs `PR_SET_DUMPABLE` (a flag of the
/// memory, which would then be vbuild's, toggled under the feet of every
/// other running supervisor): scratch mode and a root caller, whose parent
/// writes the id maps. An unprivileged namespace sandbox writes its own
/// maps, which needs the toggle, so it gets a copy (fork semantics).
///
/// And only while the memory is not dumpable (vbuild's `main` makes it so):
/// a shared supervisor is root of the action's user namespace. The action
/// normally drops to other ids, but one that kept root's (or a bug that
/// let it) could, were the memory dumpable, ptrace its PID 1 and through
/// it write vbuild's own memory. Non-dumpable memory asks for
/// CAP_SYS_PTRACE in the namespace that created it (the host's), which no
/// action has. A copy (fork semantics) keeps such a write inside the copy.
fn share_vm(plan: &ChildPlan) -> bool {
    sys::SHARE_VM
        && plan.ns.as_ref().is_none_or(|ns| ns.parent_maps.is_some())
        && unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 0
}

fn clone_flags(plan: &ChildPlan, shared_vm: bool) -> libc::c_int {
    let mut flags = libc::SIGCHLD;
    if shared_vm {
        flags |= libc::CLONE_VM;
    }
    if let Some(ns) = &plan.ns {
        flags |= libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWCGROUP;
        if !ns.network {
            flags |= libc::CLONE_NEWNET;
        }
    }
    flags
}

/// Runs `plan` to completion.
pub(crate) fn run(plan: ChildPlan, spec: &RunSpec) -> Result<Outcome, SandboxError> {
    let stdin = File::open("/dev/null")?;
    // With `order`, the action writes into pipes that a copier drains into
    // the files, noting the interleaving; otherwise straight into the files.
    let (stdout, stderr, copier) = match &spec.order {
        Some(order) => {
            let (out_rd, out_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            let (err_rd, err_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            let files = [File::create(&spec.stdout)?, File::create(&spec.stderr)?];
            let copier = Copier::start(out_rd, err_rd, files, File::create(order)?)?;
            (File::from(out_wr), File::from(err_wr), Some(copier))
        }
        None => {
            let stdout = File::create(&spec.stdout)?;
            let stderr = if spec.stderr == spec.stdout {
                stdout.try_clone()?
            } else {
                File::create(&spec.stderr)?
            };
            (stdout, stderr, None)
        }
    };
    let (status_rd, status_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let parent_maps = plan.ns.as_ref().and_then(|ns| ns.parent_maps.as_ref());
    let maps_pipe = match parent_maps {
        Some(_) => Some(nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?),
        None => None,
    };
    let fds = ChildFds {
        stdin: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        status: status_wr.as_raw_fd(),
        maps_written: maps_pipe.as_ref().map_or(-1, |(rd, _)| rd.as_raw_fd()),
    };
    // Decided once: the flags and the supervisor must agree.
    let shared_vm = share_vm(&plan);
    let args = SupervisorArgs {
        plan: &plan,
        fds: &fds,
        parent: unsafe { libc::getpid() },
        shared_vm,
    };
    let flags = clone_flags(&plan, shared_vm);
    let stack = sys::Stack::new(SUPERVISOR_STACK).map_err(io::Error::from)?;
    let start = Instant::now();
    // With CLONE_VM the supervisor runs on vbuild's memory, next to this
    // thread (which goes on, unlike vfork's parent: it writes the id maps
    // and registers the pid for `cancel_all`). That is sound because the
    // supervisor writes only its own stack, never allocates, takes no lock
    // and makes its syscalls without `errno` (`sys.rs`; it shares this
    // thread's thread-local storage), resets every inherited signal
    // handler before any signal is unblocked (all are blocked across the
    // clone), never changes the memory's dumpable flag (`share_vm`), and
    // `args`, `plan` and `stack` outlive it: this function returns only
    // after it has been reaped. Without CLONE_VM: fork semantics, on the
    // copy of the same stack.
    let blocked = sys::set_mask(SigMask::MAX);
    let cloned = unsafe {
        sys::clone_on(
            flags as usize,
            stack.top(),
            child::supervisor_entry,
            (&args as *const SupervisorArgs).cast_mut().cast(),
        )
    };
    sys::set_mask(blocked);
    let pid = match cloned {
        Ok(pid) => pid,
        Err(err) => {
            return Err(match &plan.ns {
                Some(_) => probe::unavailable_from_clone(err),
                None => SandboxError::Spawn(io::Error::new(
                    io::Error::from(err).kind(),
                    format!("cannot start `{}`: clone failed: {err}", plan.exec.program),
                )),
            })
        }
    };
    // From here on the supervisor may be running on `stack`, reading
    // `plan`: every way out waits for it first, even an unwinding one.
    let mut running = Running {
        pid,
        stack: Some(stack),
    };
    if let (Some(maps), Some((_, wr))) = (parent_maps, &maps_pipe) {
        if let Err(e) = write_maps(pid, maps, wr) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            running.reaped(&wait_registered(pid));
            return Err(SandboxError::Setup {
                step: "mapping the sandbox user to an unprivileged host id".into(),
                source: e,
            });
        }
    }
    drop(maps_pipe);
    // Only the child may hold the write end, so EOF means it is gone.
    drop(status_wr);
    drop((stdin, stdout, stderr));
    let waited = wait_registered(pid);
    running.reaped(&waited);
    // The supervisor has killed the whole tree: what remains is in the pipes.
    if let Some(copier) = copier {
        copier.finish()?;
    }
    let wait_status = waited?;
    let duration = start.elapsed();
    let records = read_records(File::from(status_rd))?;
    decode(&plan, &records, wait_status).map(|status| Outcome { status, duration })
}

/// The supervisor's stack while it may run on it (see `run`).
struct Running {
    pid: libc::pid_t,
    stack: Option<sys::Stack>,
}

impl Running {
    /// After `wait_registered`: gone, so its stack can go. If the wait
    /// failed it is not known to be gone (that takes another waiter reaping
    /// our child): never unmap what it may still run on.
    fn reaped(&mut self, waited: &Result<libc::c_int, SandboxError>) {
        if let Some(stack) = self.stack.take() {
            if waited.is_ok() {
                drop(stack);
            } else {
                stack.leak();
            }
        }
    }
}

impl Drop for Running {
    /// Only while unwinding past `run` (a panic between the clone and the
    /// wait): the supervisor must be gone before `plan` and the stack are.
    fn drop(&mut self) {
        if self.stack.is_some() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let waited = wait_registered(self.pid);
            self.reaped(&waited);
        }
    }
}

/// A root caller maps the sandbox ids to an unprivileged host id, which
/// only a process with CAP_SETUID in the parent namespace may write; then
/// tells the waiting child.
fn write_maps(
    pid: libc::pid_t,
    (uid_map, gid_map): &(Vec<u8>, Vec<u8>),
    done: &std::os::fd::OwnedFd,
) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
    let n = unsafe { libc::write(done.as_raw_fd(), b"k".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what the (exited) supervisor wrote. Non-blocking: a process
/// another thread forked at the wrong instant may still hold a copy of the
/// write end for a moment, but everything written is already buffered.
fn read_records(mut pipe: File) -> Result<Vec<u8>, SandboxError> {
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut records = Vec::new();
    match pipe.read_to_end(&mut records) {
        Ok(_) => Ok(records),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(records),
        Err(e) => Err(e.into()),
    }
}

/// Waits for the supervisor while it is listed for `cancel_all`. The entry
/// is removed before the zombie is reaped, so a recycled pid is never
/// signalled.
fn wait_registered(pid: libc::pid_t) -> Result<libc::c_int, SandboxError> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    let waited = loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || Errno::last() != Errno::EINTR {
            break r;
        }
    };
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
    if waited != 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        if r < 0 && Errno::last() != Errno::EINTR {
            return Err(io::Error::last_os_error().into());
        }
    }
}

fn exit_kind(status: libc::c_int) -> ExitKind {
    if libc::WIFSIGNALED(status) {
        ExitKind::Signaled(libc::WTERMSIG(status))
    } else {
        ExitKind::Exited(libc::WEXITSTATUS(status))
    }
}

fn decode(
    plan: &ChildPlan,
    records: &[u8],
    supervisor: libc::c_int,
) -> Result<ExitKind, SandboxError> {
    let mut end = None;
    for rec in records.chunks_exact(child::RECORD_LEN) {
        let field = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&rec[i * 4..i * 4 + 4]);
            i32::from_ne_bytes(b)
        };
        let (tag, a, b) = (field(0), field(1), field(2));
        let err = io::Error::from_raw_os_error(b);
        match tag {
            child::REC_SETUP => return Err(setup_error(plan, a, b)),
            child::REC_EXEC => {
                let what = match a {
                    child::EXEC_CHDIR => format!(
                        "cannot enter working directory {}",
                        plan.exec.cwd.to_string_lossy()
                    ),
                    child::EXEC_FORK => "cannot fork the action".to_string(),
                    child::EXEC_IDS => "cannot drop to the sandbox user".to_string(),
                    _ => format!("cannot run `{}`", plan.exec.program),
                };
                return Err(SandboxError::Spawn(io::Error::new(
                    err.kind(),
                    format!("{what}: {err}"),
                )));
            }
            child::REC_STATUS => end = Some(exit_kind(a)),
            child::REC_TIMEOUT => end = Some(ExitKind::TimedOut),
            child::REC_CANCEL => end = Some(ExitKind::Signaled(libc::SIGKILL)),
            child::REC_PROBE_OK => end = Some(ExitKind::Exited(0)),
            _ => {}
        }
    }
    match end {
        Some(k) => Ok(k),
        // The supervisor died without reporting: killed from outside.
        None if libc::WIFSIGNALED(supervisor) => Ok(ExitKind::Signaled(libc::WTERMSIG(supervisor))),
        None => Err(SandboxError::Setup {
            step: "starting the sandbox supervisor".into(),
            source: io::Error::other(format!(
                "supervisor exited with status {} before reporting",
                libc::WEXITSTATUS(supervisor)
            )),
        }),
    }
}

fn setup_error(plan: &ChildPlan, step: i32, errno: i32) -> SandboxError {
    let source = io::Error::from_raw_os_error(errno);
    let Some(ns) = &plan.ns else {
        return SandboxError::Setup {
            step: "becoming a child subreaper".into(),
            source,
        };
    };
    let idx = usize::try_from(step).unwrap_or(usize::MAX);
    let name = ns
        .steps
        .get(idx)
        .cloned()
        .unwrap_or_else(|| format!("step {step}"));
    let gate = ns.gates.get(idx).copied().unwrap_or(false);
    if gate
        && matches!(
            Errno::from_raw(errno),
            Errno::EPERM | Errno::EACCES | Errno::EINVAL
        )
    {
        return probe::unavailable_from_setup(&name, Errno::from_raw(errno));
    }
    SandboxError::Setup { step: name, source }
}
