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
//! Rules here: no allocation, no panics, no locks (see `plan.rs`), and the
//! supervisor reports to the parent through fixed-size records on a pipe.

use std::ffi::CStr;
use std::os::fd::RawFd;

use libc::{c_int, pid_t};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::plan::{ChildPlan, ExecPlan, Op};
use crate::reap;

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
    unsafe { libc::write(STATUS_FD, buf.as_ptr().cast(), buf.len()) };
}

fn exit(code: c_int) -> ! {
    unsafe { libc::_exit(code) }
}

/// `clone(2)` with fork semantics (no new stack): returns 0 in the child.
/// Used instead of `fork()` because glibc's fork runs atfork handlers that
/// take locks another thread of the parent may hold.
pub(crate) unsafe fn raw_clone(flags: libc::c_ulong) -> pid_t {
    libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) as pid_t
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
        *slot = Errno::result(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) })?;
    }
    for (target, fd) in (0..).zip(high) {
        Errno::result(unsafe { libc::dup2(fd, target) })?;
    }
    Errno::result(unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    let r = unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close what a process normally has.
        for fd in 4..4096 {
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

fn supervisor_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Entry point of the supervisor. Never returns.
pub(crate) fn supervisor_main(plan: &ChildPlan, fds: &ChildFds, parent: pid_t) -> ! {
    if fds.maps_written >= 0 {
        // Nothing below may run before the parent has mapped our ids.
        let mut byte = 0u8;
        let n = loop {
            let n = unsafe { libc::read(fds.maps_written, (&mut byte as *mut u8).cast(), 1) };
            if n >= 0 || Errno::last() != Errno::EINTR {
                break n;
            }
        };
        if n != 1 {
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
    let set = supervisor_signals();
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, deathsig as libc::c_ulong);
        // The parent may have died before the prctl. (In a new PID
        // namespace getppid() is 0: the parent is outside; skip the check.)
        if plan.ns.is_none() && libc::getppid() != parent {
            exit(1);
        }
    }
    if let Some(ns) = &plan.ns {
        // vbuild may be non-dumpable (so actions cannot ptrace it); then
        // /proc/self belongs to the host's root and an unprivileged
        // supervisor could not write its own uid_map. Dumpable only while
        // the namespaces are built: nothing of the action runs yet.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        for (i, op) in ns.ops.iter().enumerate() {
            if let Err(e) = run_op(op) {
                record(REC_SETUP, i as i32, e as i32);
                exit(1);
            }
        }
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    } else if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        record(REC_SETUP, -1, Errno::last() as i32);
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
    let end = supervise(action, plan.timeout, &set);
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
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts
}

fn nanos(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Waits for the action, reaping every other child (orphans adopted as PID 1
/// or as subreaper), until it exits, the deadline passes, or the parent
/// cancels (SIGTERM/SIGINT/SIGHUP).
fn supervise(action: pid_t, timeout: Option<std::time::Duration>, set: &libc::sigset_t) -> End {
    let deadline = timeout.map(|t| nanos(&now()).saturating_add(t.as_nanos() as i128));
    loop {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == action {
                return End::Exited(status);
            }
            if pid <= 0 {
                break;
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
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), ts_ptr) };
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => return End::Cancelled,
            // EAGAIN (deadline; re-checked above) or EINTR.
            _ => {}
        }
    }
}

/// Stack of the action between its clone and its `execve`: what
/// `action_main` needs (a few hundred bytes of frames) with a wide margin;
/// pages it never touches cost nothing.
const ACTION_STACK: usize = 64 * 1024;
const PAGE: usize = 4096;

/// What `action_entry` gets through `clone`'s argument.
struct ActionArgs<'a> {
    exec: &'a ExecPlan,
    scratch: bool,
}

/// Starts the action the way `posix_spawn` does: `CLONE_VM | CLONE_VFORK`,
/// so no copy of this process's memory is made (nor torn down again at the
/// action's `execve`), on a small stack of its own below a guard page. The
/// supervisor is suspended until the action has called `execve` or exited,
/// so nothing else runs on the shared memory meanwhile; the action sticks
/// to syscalls on the prepared plan (no allocation, no locks, no
/// unwinding), and writes only its own stack, `errno` and the status pipe.
/// Every signal is blocked across the clone so that no handler inherited
/// from vbuild can run in the action before it resets them.
fn spawn_action(exec: &ExecPlan, scratch: bool) -> Result<pid_t, Errno> {
    let len = ACTION_STACK + PAGE;
    // Safety: a fresh private mapping, unmapped below once the action no
    // longer uses it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // The stack grows down: its lowest page faults instead of overflowing
    // into whatever is mapped below.
    if unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) } != 0 {
        let e = Errno::last();
        unsafe { libc::munmap(base, len) };
        return Err(e);
    }
    let args = ActionArgs { exec, scratch };
    let pid = unsafe {
        // Raw: glibc's sigfillset and sigprocmask leave out its own two
        // signals (32, 33), which vbuild has handlers for.
        let all = u64::MAX;
        let mut old = 0u64;
        set_mask(&all, &mut old);
        let top = base.cast::<u8>().add(len).cast::<libc::c_void>();
        let pid = libc::clone(
            action_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ActionArgs).cast_mut().cast(),
        );
        let e = Errno::last();
        set_mask(&old, std::ptr::null_mut());
        if pid < 0 {
            libc::munmap(base, len);
            return Err(e);
        }
        pid
    };
    // The action has exec'd (its own memory now) or exited: its stack is free.
    unsafe { libc::munmap(base, len) };
    Ok(pid)
}

/// `rt_sigprocmask(SIG_SETMASK)` on the kernel's 64-bit mask.
unsafe fn set_mask(mask: *const u64, old: *mut u64) {
    libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        mask,
        old,
        8usize,
    );
}

extern "C" fn action_entry(arg: *mut libc::c_void) -> c_int {
    // Safety: `spawn_action` passes its `ActionArgs`, alive (and the
    // supervisor suspended) until this process execs or exits.
    let args = unsafe { &*arg.cast::<ActionArgs>() };
    action_main(args.exec, args.scratch)
}

/// The action process: clean signal state, own session, cwd, exec. Starts
/// with every signal blocked (see `spawn_action`).
fn action_main(exec: &ExecPlan, scratch: bool) -> ! {
    unsafe {
        // Dispositions set to "ignore" survive execve (Rust ignores
        // SIGPIPE, for one); the action must start with defaults.
        // Raw rt_sigaction: glibc's wrappers refuse signals 32 and 33
        // (reserved for its threads), which can be inherited as ignored.
        // The kernel struct (handler, flags, restorer, mask) all zero is
        // SIG_DFL.
        let dfl = [0u64; 4];
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Own session and process group: terminal signals go to the
        // orchestrator, which decides; the supervisor can kill the group.
        libc::setsid();
        // Output file modes must not depend on the orchestrator's umask.
        libc::umask(0o022);
        if scratch {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        }
        if libc::chdir(exec.cwd.as_ptr()) != 0 {
            record(REC_EXEC, EXEC_CHDIR, Errno::last() as i32);
            exit(127);
        }
        if let Some((uid, gid)) = exec.become_ids {
            // Groups first (root's supplementary groups would still open
            // host files), then gid, then uid, which drops every capability.
            // Raw syscalls: glibc's wrappers signal every thread of the
            // process it remembers (vbuild's, copied with its memory), which
            // here deadlocks.
            let (u, g) = (uid as libc::c_long, gid as libc::c_long);
            let dropped = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                == 0
                && libc::syscall(libc::SYS_setresgid, g, g, g) == 0
                && libc::syscall(libc::SYS_setresuid, u, u, u) == 0;
            if !dropped {
                record(REC_EXEC, EXEC_IDS, Errno::last() as i32);
                exit(127);
            }
        }
        if exec.no_new_privs {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        }
        // execvpe's search: remember EACCES, keep going on "not here".
        let mut err = libc::ENOENT;
        let mut saw_eacces = false;
        for cand in &exec.candidates {
            libc::execve(cand.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            let e = Errno::last() as i32;
            match e {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => {
                    err = e;
                    break;
                }
            }
        }
        if err == libc::ENOENT && saw_eacces {
            err = libc::EACCES;
        }
        record(REC_EXEC, EXEC_EXECVE, err);
        exit(127)
    }
}

fn ignore_exists(r: Result<(), Errno>) -> Result<(), Errno> {
    match r {
        Err(Errno::EEXIST) => Ok(()),
        other => other,
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = Errno::result(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })?;
        data = data.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

fn write_file(path: &CStr, flags: c_int, data: &[u8]) -> Result<(), Errno> {
    let fd = Errno::result(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) })?;
    let r = write_all(fd, data);
    unsafe { libc::close(fd) };
    r
}

const NONE: Option<&CStr> = None;

fn run_op(op: &Op) -> Result<(), Errno> {
    match op {
        Op::WriteProc { path, data } => write_file(path, libc::O_WRONLY, data),
        Op::Mkdir(p) => ignore_exists(nix::unistd::mkdir(
            p.as_c_str(),
            Mode::from_bits_truncate(0o755),
        )),
        Op::Symlink { target, link } => ignore_exists(
            Errno::result(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop),
        ),
        Op::Touch(p) => write_file(p, libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW, &[]),
        Op::Bind { src, dst, remount } => {
            mount(
                Some(src.as_c_str()),
                dst.as_c_str(),
                NONE,
                MsFlags::MS_BIND,
                NONE,
            )?;
            match remount {
                Some(flags) => mount(NONE, dst.as_c_str(), NONE, *flags, NONE),
                None => Ok(()),
            }
        }
        Op::Mount {
            fstype,
            dst,
            flags,
            data,
        } => mount(
            Some(*fstype),
            dst.as_c_str(),
            Some(*fstype),
            *flags,
            Some(data.as_c_str()),
        ),
        Op::LoopbackUp => loopback_up(),
        Op::Hostname(name) => {
            Errno::result(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
        }
        Op::PivotRoot(root) => {
            // pivot_root(".", ".") stacks the old root on top of the new
            // one; detaching it leaves only the new root, with no host path
            // reachable.
            nix::unistd::chdir(root.as_c_str())?;
            nix::unistd::pivot_root(c".", c".")?;
            umount2(c".", MntFlags::MNT_DETACH)?;
            nix::unistd::chdir(c"/")
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
        let fd = Errno::result(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut r = libc::ioctl(fd, SIOCGIFFLAGS as _, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, SIOCSIFFLAGS as _, &req);
        }
        let e = Errno::last();
        libc::close(fd);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}
