//! Code that runs in the cloned processes, before `execve`.
//!
//! Two processes per action:
//! - the *supervisor* (cloned by the parent). In namespaces mode it is PID 1
//!   of the new PID namespace: it builds the root, forks the action, reaps
//!   orphans, and on exit the kernel kills whatever is left in the namespace.
//!   In scratch/direct mode it is a child subreaper: every orphaned
//!   descendant of the action is reparented to it and killed at the end.
//! - the *action*, started by the supervisor like `posix_spawn` does
//!   (`CLONE_VM | CLONE_VFORK`, see `spawn_action`), which execs the command.
//!
//! Rules here: no allocation, no panics, no locks (see `plan.rs`), no
//! `errno` and no libc wrapper (every syscall through `sys.rs`: the
//! supervisor may share vbuild's memory, thread-local storage included, see
//! `launch.rs`), and the supervisor reports to the parent through
//! fixed-size records on a pipe.

use std::ffi::CStr;
use std::os::fd::RawFd;

use libc::{c_int, pid_t};
use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::plan::{ChildPlan, ExecPlan, Op};
use crate::reap;
use crate::sys::{self, sys, SigMask};

/// Record tags written by the children (`[tag, a, b, 0]` as i32s).
pub(crate) const REC_SETUP: i32 = 1; // a = op index, b = errno
pub(crate) const REC_EXEC: i32 = 2; // a = EXEC_* stage, b = errno
pub(crate) const REC_STATUS: i32 = 3; // a = raw wait status of the action
pub(crate) const REC_TIMEOUT: i32 = 4;
pub(crate) const REC_CANCEL: i32 = 5;
pub(crate) const REC_PROBE_OK: i32 = 6;
pub(crate) const RECORD_LEN: usize = 16;

pub(crate) const EXEC_CHDIR: i32 = 0;
pub(crate) const EXEC_EXECVE: i32 = 1;
pub(crate) const EXEC_FORK: i32 = 2;
pub(crate) const EXEC_IDS: i32 = 3;

/// The status pipe's fixed descriptor in the children.
const STATUS_FD: RawFd = 3;

/// Descriptors the parent opened for the children.
pub(crate) struct ChildFds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub status: RawFd,
    /// Read end of a pipe on which the parent says "id maps written"
    /// (one byte; EOF means it failed), or -1.
    pub maps_written: RawFd,
}

fn record(tag: i32, a: i32, b: i32) {
    let mut buf = [0u8; RECORD_LEN];
    for (i, v) in [tag, a, b, 0].into_iter().enumerate() {
        let bytes = v.to_ne_bytes();
        for (j, byte) in bytes.into_iter().enumerate() {
            if let Some(slot) = buf.get_mut(i * 4 + j) {
                *slot = byte;
            }
        }
    }
    // One write of <= PIPE_BUF bytes is atomic; nothing useful to do on error.
    let _ = unsafe { sys!(libc::SYS_write, STATUS_FD, buf.as_ptr(), buf.len()) };
}

fn exit(code: c_int) -> ! {
    sys::exit(code)
}

/// stdin/stdout/stderr to 0/1/2, the status pipe to 3, everything else the
/// parent had open closed (so a long-lived supervisor does not keep other
/// actions' pipes open).
fn setup_fds(fds: &ChildFds) -> Result<(), Errno> {
    let mut high = [0; 4];
    for (slot, fd) in high
        .iter_mut()
        .zip([fds.stdin, fds.stdout, fds.stderr, fds.status])
    {
        // Duplicate above 10 first so the dup2s below cannot clobber a
        // source that happens to be 0..3.
        *slot = unsafe { sys!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, 10)? } as RawFd;
    }
    for (target, fd) in (0..).zip(high) {
        // dup3, not dup2 (absent on some architectures): fd >= 10 > target.
        unsafe { sys!(libc::SYS_dup3, fd, target, 0)? };
    }
    unsafe { sys!(libc::SYS_fcntl, STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC)? };
    if unsafe { sys!(libc::SYS_close_range, 4u32, u32::MAX, 0u32) }.is_err() {
        // Kernels before 5.9: close what a process normally has.
        for fd in 4..4096 {
            let _ = unsafe { sys!(libc::SYS_close, fd) };
        }
    }
    Ok(())
}

fn supervisor_signals() -> SigMask {
    sys::mask_of(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
}

/// What `supervisor_entry` gets through `clone`'s argument: all of it owned
/// by the parent's `launch::run`, which outlives the supervisor.
pub(crate) struct SupervisorArgs<'a> {
    pub plan: &'a ChildPlan,
    pub fds: &'a ChildFds,
    pub parent: pid_t,
    /// The supervisor shares vbuild's memory (`CLONE_VM`).
    pub shared_vm: bool,
}

/// The supervisor's first frame on its own stack (see `launch.rs`).
pub(crate) unsafe extern "C" fn supervisor_entry(arg: *mut libc::c_void) -> ! {
    let args = &*arg.cast::<SupervisorArgs>();
    supervisor_main(args.plan, args.fds, args.parent, args.shared_vm)
}

/// Entry point of the supervisor. Starts with every signal blocked (the
/// parent blocks them across the clone). Never returns.
fn supervisor_main(plan: &ChildPlan, fds: &ChildFds, parent: pid_t, shared_vm: bool) -> ! {
    // vbuild's handlers must never run here (with a shared memory they
    // would run vbuild's code on vbuild's data, from another process).
    // SIGPIPE stays ignored, as in vbuild: a status record written after
    // the parent is gone must not matter. (`action_main` relies on these
    // being the only dispositions.)
    sys::default_handlers();
    sys::set_handler(libc::SIGPIPE, libc::SIG_IGN);
    let set = supervisor_signals();
    sys::set_mask(set);
    if fds.maps_written >= 0 {
        // Nothing below may run before the parent has mapped our ids.
        let mut byte = 0u8;
        let n = loop {
            match unsafe { sys!(libc::SYS_read, fds.maps_written, &mut byte as *mut u8, 1) } {
                Err(Errno::EINTR) => continue,
                r => break r,
            }
        };
        if n != Ok(1) {
            exit(1);
        }
    }
    if setup_fds(fds).is_err() {
        exit(126);
    }
    // Die with the orchestrator. In namespaces mode SIGKILL of PID 1 takes
    // the whole namespace down; in scratch mode SIGTERM lets the supervisor
    // kill the action's tree first.
    let deathsig = if plan.ns.is_some() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    unsafe {
        let _ = sys!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, deathsig);
        // The parent may have died before the prctl. (In a new PID
        // namespace getppid() is 0: the parent is outside; skip the check.)
        if plan.ns.is_none() && sys!(libc::SYS_getppid) != Ok(parent as usize) {
            exit(1);
        }
    }
    if let Some(ns) = &plan.ns {
        // vbuild may be non-dumpable (so actions cannot ptrace it); then
        // /proc/self belongs to the host's root and an unprivileged
        // supervisor could not write its own uid_map. Dumpable only while
        // the namespaces are built: nothing of the action runs yet. Never
        // with a memory shared with vbuild (the flag belongs to the memory,
        // so it would be vbuild's): `launch.rs` shares it only where the
        // parent writes the maps, which needs no toggle.
        let toggle = !shared_vm && ns.parent_maps.is_none();
        if toggle {
            let _ = unsafe { sys!(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 1) };
        }
        for (i, op) in ns.ops.iter().enumerate() {
            if let Err(e) = run_op(op) {
                record(REC_SETUP, i as i32, e as i32);
                exit(1);
            }
        }
        if toggle {
            let _ = unsafe { sys!(libc::SYS_prctl, libc::PR_SET_DUMPABLE, 0) };
        }
    } else if let Err(e) = unsafe { sys!(libc::SYS_prctl, libc::PR_SET_CHILD_SUBREAPER, 1) } {
        record(REC_SETUP, -1, e as i32);
        exit(1);
    }
    if plan.probe_only {
        record(REC_PROBE_OK, 0, 0);
        exit(0);
    }
    let action = match spawn_action(&plan.exec, plan.ns.is_none()) {
        Ok(pid) => pid,
        Err(e) => {
            record(REC_EXEC, EXEC_FORK, e as i32);
            exit(1);
        }
    };
    let end = supervise(action, plan.timeout, set);
    if plan.ns.is_none() {
        reap::kill_leftovers(action);
    }
    // In namespaces mode, returning from PID 1 makes the kernel kill every
    // process left in the namespace before the parent's wait returns.
    match end {
        End::Exited(status) => record(REC_STATUS, status, 0),
        End::TimedOut => record(REC_TIMEOUT, 0, 0),
        End::Cancelled => record(REC_CANCEL, 0, 0),
    }
    exit(0)
}

enum End {
    Exited(c_int),
    TimedOut,
    Cancelled,
}

fn now() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = unsafe {
        sys!(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC,
            &mut ts as *mut _
        )
    };
    ts
}

fn nanos(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Waits for the action, reaping every other child (orphans adopted as PID 1
/// or as subreaper), until it exits, the deadline passes, or the parent
/// cancels (SIGTERM/SIGINT/SIGHUP).
fn supervise(action: pid_t, timeout: Option<std::time::Duration>, set: SigMask) -> End {
    let deadline = timeout.map(|t| nanos(&now()).saturating_add(t.as_nanos() as i128));
    loop {
        loop {
            let mut status: c_int = 0;
            let pid = unsafe {
                sys!(
                    libc::SYS_wait4,
                    -1isize,
                    &mut status as *mut c_int,
                    libc::WNOHANG,
                    0usize
                )
            };
            match pid {
                Ok(p) if p as pid_t == action => return End::Exited(status),
                Ok(p) if p > 0 => {}
                _ => break,
            }
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let ts_ptr = match deadline {
            Some(d) => {
                let left = d - nanos(&now());
                if left <= 0 {
                    return End::TimedOut;
                }
                ts.tv_sec = (left / 1_000_000_000) as libc::time_t;
                ts.tv_nsec = (left % 1_000_000_000) as libc::c_long;
                &ts as *const libc::timespec
            }
            None => std::ptr::null(),
        };
        let sig = unsafe {
            sys!(
                libc::SYS_rt_sigtimedwait,
                &set as *const SigMask,
                0usize,
                ts_ptr,
                8usize
            )
        };
        // Otherwise SIGCHLD, EAGAIN (deadline; re-checked above) or EINTR.
        if let Ok(libc::SIGTERM | libc::SIGINT | libc::SIGHUP) = sig.map(|s| s as c_int) {
            return End::Cancelled;
        }
    }
}

/// Stack of the action between its clone and its `execve`: what
/// `action_main` needs (a few hundred bytes of frames) with a wide margin;
/// pages it never touches cost nothing.
const ACTION_STACK: usize = 64 * 1024;

/// What `action_entry` gets through `clone`'s argument.
struct ActionArgs<'a> {
    exec: &'a ExecPlan,
    scratch: bool,
}

/// Starts the action the way `posix_spawn` does: `CLONE_VM | CLONE_VFORK`,
/// so no copy of this process's memory is made (nor torn down again at the
/// action's `execve`), on a small stack of its own below a guard page. The
/// supervisor is suspended until the action has called `execve` or exited;
/// the action sticks to raw syscalls on the prepared plan (no allocation,
/// no locks, no unwinding, no `errno`), and writes only its own stack and
/// the status pipe. Every signal is blocked across the clone so that no
/// inherited handler can run in the action before it resets them.
fn spawn_action(exec: &ExecPlan, scratch: bool) -> Result<pid_t, Errno> {
    let stack = sys::Stack::new(ACTION_STACK)?;
    let args = ActionArgs { exec, scratch };
    let old = sys::set_mask(SigMask::MAX);
    let pid = unsafe {
        sys::clone_on(
            (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as usize,
            stack.top(),
            action_entry,
            (&args as *const ActionArgs).cast_mut().cast(),
        )
    };
    sys::set_mask(old);
    // The action has exec'd (its own memory now) or exited: `stack` is
    // unmapped here.
    pid
}

unsafe extern "C" fn action_entry(arg: *mut libc::c_void) -> ! {
    // Safety: `spawn_action` passes its `ActionArgs`, alive (and the
    // supervisor suspended) until this process execs or exits.
    let args = &*arg.cast::<ActionArgs>();
    action_main(args.exec, args.scratch)
}

/// The action process: clean signal state, own session, cwd, exec. Starts
/// with every signal blocked (see `spawn_action`).
fn action_main(exec: &ExecPlan, scratch: bool) -> ! {
    // Dispositions set to "ignore" survive execve; the action must start
    // with defaults, and unblocked. The supervisor has already set every
    // other signal back to the default (`supervisor_main`), and this
    // process got a copy of its dispositions: only its ignored SIGPIPE is
    // left.
    sys::set_handler(libc::SIGPIPE, libc::SIG_DFL);
    sys::set_mask(0);
    unsafe {
        // Own session and process group: terminal signals go to the
        // orchestrator, which decides; the supervisor can kill the group.
        let _ = sys!(libc::SYS_setsid);
        // Output file modes must not depend on the orchestrator's umask.
        let _ = sys!(libc::SYS_umask, 0o022);
        if scratch {
            let _ = sys!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        if let Err(e) = sys!(libc::SYS_chdir, exec.cwd.as_ptr()) {
            record(REC_EXEC, EXEC_CHDIR, e as i32);
            exit(127);
        }
        if let Some((uid, gid)) = exec.become_ids {
            // Groups first (root's supplementary groups would still open
            // host files), then gid, then uid, which drops every capability.
            // Raw syscalls: glibc's wrappers signal every thread of the
            // process it remembers (vbuild's), which here deadlocks.
            let dropped = sys!(libc::SYS_setgroups, 0, 0usize)
                .and_then(|_| sys!(libc::SYS_setresgid, gid, gid, gid))
                .and_then(|_| sys!(libc::SYS_setresuid, uid, uid, uid));
            if let Err(e) = dropped {
                record(REC_EXEC, EXEC_IDS, e as i32);
                exit(127);
            }
        }
        if exec.no_new_privs {
            let _ = sys!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        // execvpe's search: remember EACCES, keep going on "not here".
        let mut err = Errno::ENOENT;
        let mut saw_eacces = false;
        for cand in &exec.candidates {
            let Err(e) = sys!(
                libc::SYS_execve,
                cand.as_ptr(),
                exec.argv.as_ptr(),
                exec.envp.as_ptr()
            ) else {
                continue;
            };
            match e {
                Errno::EACCES => saw_eacces = true,
                Errno::ENOENT
                | Errno::ENOTDIR
                | Errno::ESTALE
                | Errno::ENODEV
                | Errno::ETIMEDOUT => {}
                _ => {
                    err = e;
                    break;
                }
            }
        }
        if err == Errno::ENOENT && saw_eacces {
            err = Errno::EACCES;
        }
        record(REC_EXEC, EXEC_EXECVE, err as i32);
        exit(127)
    }
}

fn ignore_exists(r: Result<usize, Errno>) -> Result<(), Errno> {
    match r {
        Ok(_) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = unsafe { sys!(libc::SYS_write, fd, data.as_ptr(), data.len())? };
        data = data.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

fn write_file(path: &CStr, flags: c_int, data: &[u8]) -> Result<(), Errno> {
    let fd = unsafe {
        sys!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            0o644
        )?
    };
    let r = write_all(fd as RawFd, data);
    let _ = unsafe { sys!(libc::SYS_close, fd) };
    r
}

/// `mount(2)`; `None` is a null pointer.
fn mount(
    src: Option<&CStr>,
    dst: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    unsafe {
        sys!(
            libc::SYS_mount,
            ptr(src),
            dst.as_ptr(),
            ptr(fstype),
            flags.bits(),
            ptr(data)
        )
        .map(drop)
    }
}

fn chdir(path: &CStr) -> Result<(), Errno> {
    unsafe { sys!(libc::SYS_chdir, path.as_ptr()).map(drop) }
}

const NONE: Option<&CStr> = None;

fn run_op(op: &Op) -> Result<(), Errno> {
    match op {
        Op::WriteProc { path, data } => write_file(path, libc::O_WRONLY, data),
        Op::Mkdir(p) => {
            ignore_exists(unsafe { sys!(libc::SYS_mkdirat, libc::AT_FDCWD, p.as_ptr(), 0o755) })
        }
        Op::Symlink { target, link } => ignore_exists(unsafe {
            sys!(
                libc::SYS_symlinkat,
                target.as_ptr(),
                libc::AT_FDCWD,
                link.as_ptr()
            )
        }),
        Op::Touch(p) => write_file(p, libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW, &[]),
        Op::Bind { src, dst, remount } => {
            mount(Some(src), dst, NONE, MsFlags::MS_BIND, NONE)?;
            match remount {
                Some(flags) => mount(NONE, dst, NONE, *flags, NONE),
                None => Ok(()),
            }
        }
        Op::Mount {
            fstype,
            dst,
            flags,
            data,
        } => mount(Some(fstype), dst, Some(fstype), *flags, Some(data)),
        Op::LoopbackUp => loopback_up(),
        Op::Hostname(name) => unsafe {
            sys!(libc::SYS_sethostname, name.as_ptr(), name.len()).map(drop)
        },
        Op::PivotRoot(root) => {
            // pivot_root(".", ".") stacks the old root on top of the new
            // one; detaching it leaves only the new root, with no host path
            // reachable.
            chdir(root)?;
            unsafe { sys!(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr())? };
            unsafe { sys!(libc::SYS_umount2, c".".as_ptr(), libc::MNT_DETACH)? };
            chdir(c"/")
        }
        Op::RemountRootRo => mount(
            NONE,
            c"/",
            NONE,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            NONE,
        ),
    }
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// A new network namespace has only `lo`, and it is down: loopback
/// connections (a test server on 127.0.0.1) would fail without this.
fn loopback_up() -> Result<(), Errno> {
    unsafe {
        let fd = sys!(
            libc::SYS_socket,
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0
        )?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut r = sys!(
            libc::SYS_ioctl,
            fd,
            SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq
        );
        if r.is_ok() {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = sys!(
                libc::SYS_ioctl,
                fd,
                SIOCSIFFLAGS,
                &req as *const libc::ifreq
            );
        }
        let _ = sys!(libc::SYS_close, fd);
        r.map(drop)
    }
}
