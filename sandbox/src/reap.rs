//! Scratch/direct mode: killing everything the action left behind.
//!
//! The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every
//! orphaned descendant of the action - even one that called `setsid` to
//! daemonize - is reparented to it instead of to the host's init. At the end
//! it therefore only has to kill its own children, repeatedly, until it has
//! none. The kernel here lacks /proc/<pid>/task/<tid>/children on some
//! configurations, so children are found by scanning /proc for our PPid.
//!
//! Runs in the supervisor after a raw clone: no allocation, no panics, no
//! `errno` (see `sys.rs`).

use libc::{c_int, pid_t};

use crate::sys::sys;

/// Kills the action's process group and then every remaining descendant.
pub(crate) fn kill_leftovers(action: pid_t) {
    // The action is a session leader, so its pgid is its pid; this gets
    // the common case (a shell's background jobs) in one syscall.
    let _ = unsafe { sys!(libc::SYS_kill, -(action as isize), libc::SIGKILL) };
    let me = unsafe { sys!(libc::SYS_getpid) }.map_or(0, |p| p as pid_t);
    let wait = |flags: c_int| {
        let mut status: c_int = 0;
        unsafe {
            sys!(
                libc::SYS_wait4,
                -1isize,
                &mut status as *mut c_int,
                flags,
                0usize
            )
        }
    };
    // Bounded so a /proc we cannot read never hangs the build: ~5 s of 1 ms
    // naps at worst, then the leftovers are abandoned (documented limit).
    for _ in 0..5000 {
        match wait(libc::WNOHANG) {
            Ok(pid) if pid > 0 => continue,
            // ECHILD: nothing left.
            Err(_) => return,
            Ok(_) => {}
        }
        if kill_children_of(me) > 0 {
            // At least one SIGKILLed child will exit: block for it.
            let _ = wait(0);
        } else {
            // A child may have been reparented to us just after the scan.
            let nap = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            let _ = unsafe { sys!(libc::SYS_nanosleep, &nap as *const _, 0usize) };
        }
    }
}

/// SIGKILLs every process whose parent is `me`; returns how many.
fn kill_children_of(me: pid_t) -> usize {
    let Ok(dir) = (unsafe {
        sys!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC
        )
    }) else {
        return 0;
    };
    let dir = dir as c_int;
    let mut killed = 0;
    let mut buf = [0u8; 8192];
    loop {
        let n = match unsafe { sys!(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) } {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        let mut off = 0usize;
        while off < n {
            // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
            let reclen = match buf.get(off + 16..off + 18) {
                Some(b) => u16::from_ne_bytes([b[0], b[1]]) as usize,
                None => break,
            };
            if reclen == 0 {
                break;
            }
            let name = buf.get(off + 19..off + reclen).unwrap_or(&[]);
            if let Some(pid) = parse_pid(name) {
                if parent_of(dir, name) == Some(me) {
                    let _ = unsafe { sys!(libc::SYS_kill, pid, libc::SIGKILL) };
                    killed += 1;
                }
            }
            off += reclen;
        }
    }
    let _ = unsafe { sys!(libc::SYS_close, dir) };
    killed
}

/// The decimal pid of a NUL-terminated /proc entry name, if it is one.
fn parse_pid(name: &[u8]) -> Option<pid_t> {
    let mut pid: pid_t = 0;
    let mut digits = 0;
    for &c in name {
        match c {
            0 => break,
            b'0'..=b'9' => {
                pid = pid.checked_mul(10)?.checked_add((c - b'0') as pid_t)?;
                digits += 1;
            }
            _ => return None,
        }
    }
    (digits > 0).then_some(pid)
}

/// PPid from /proc/<name>/stat ("pid (comm) S ppid ..."; comm may contain
/// spaces and parentheses, so parse after the last ')').
fn parent_of(dir: libc::c_int, name: &[u8]) -> Option<pid_t> {
    let mut path = [0u8; 40];
    let chars = name.iter().take_while(|&&c| c != 0).chain(b"/stat\0");
    for (slot, &c) in chars.enumerate() {
        *path.get_mut(slot)? = c;
    }
    let fd = unsafe {
        sys!(
            libc::SYS_openat,
            dir,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC
        )
    }
    .ok()?;
    let mut buf = [0u8; 1024];
    let n = unsafe { sys!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    let _ = unsafe { sys!(libc::SYS_close, fd) };
    let data = buf.get(..n.ok()?)?;
    let close = data.iter().rposition(|&c| c == b')')?;
    // ") S 1234 ..."
    let rest = data.get(close + 2..)?;
    let mut fields = rest.split(|&c| c == b' ');
    fields.next()?; // state
    let ppid = fields.next()?;
    let mut v: pid_t = 0;
    for &c in ppid {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as pid_t)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_names() {
        assert_eq!(parse_pid(b"1234\0"), Some(1234));
        assert_eq!(parse_pid(b"self\0"), None);
        assert_eq!(parse_pid(b"\0"), None);
    }

    #[test]
    fn finds_own_parent() {
        let dir = unsafe { libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        let me = std::process::id().to_string();
        let ppid = parent_of(dir, me.as_bytes());
        unsafe { libc::close(dir) };
        assert_eq!(ppid, Some(unsafe { libc::getppid() }));
    }
}
