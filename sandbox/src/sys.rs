//! Syscalls for the cloned children that never touch `errno`.
//!
//! Where the supervisor shares vbuild's memory (`launch.rs`: `CLONE_VM`),
//! it also shares the thread-local storage of the vbuild thread that cloned
//! it, which keeps running: a libc wrapper that sets `errno` in the child
//! would change that thread's `errno` under its feet. So the children make
//! their syscalls here: the kernel's return value (`-errno` on failure) is
//! decoded into a `Result`, and no memory but the caller's is written.
//!
//! Only x86_64 has the raw instruction here; elsewhere these go through
//! libc (which sets `errno`) and [`SHARE_VM`] is false, so the supervisor
//! is forked with its own memory and `errno`.

use libc::{c_long, c_void};
use nix::errno::Errno;

/// Whether the supervisor may share vbuild's memory (see `launch.rs`).
pub(crate) const SHARE_VM: bool = cfg!(target_arch = "x86_64");

#[cfg(target_arch = "x86_64")]
unsafe fn raw(nr: c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    std::arch::asm!(
        "syscall",
        inlateout("rax") nr as isize => ret,
        in("rdi") a[0],
        in("rsi") a[1],
        in("rdx") a[2],
        in("r10") a[3],
        in("r8") a[4],
        in("r9") a[5],
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw(nr: c_long, a: [usize; 6]) -> isize {
    let r = libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) as isize;
    if r == -1 {
        -(Errno::last() as isize)
    } else {
        r
    }
}

/// One syscall; `Err` holds the kernel's errno.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
pub(crate) unsafe fn call(nr: c_long, a: [usize; 6]) -> Result<usize, Errno> {
    let r = raw(nr, a);
    if (-4095..0).contains(&r) {
        Err(Errno::from_raw(-r as i32))
    } else {
        Ok(r as usize)
    }
}

/// `sys!(SYS_name, args...)`: [`call`] with up to six arguments, each cast
/// to `usize` (pointers and integers alike).
macro_rules! sys {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut a = [0usize; 6];
        let mut _i = 0;
        $( a[_i] = $arg as usize; _i += 1; )*
        $crate::sys::call($nr, a)
    }};
}
pub(crate) use sys;

/// `exit_group`: ends this process (not the vbuild process whose memory it
/// may share: that is another thread group).
pub(crate) fn exit(code: i32) -> ! {
    unsafe {
        let _ = call(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]);
    }
    // exit_group does not return.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The kernel's signal mask: bit `n - 1` for signal `n`.
pub(crate) type SigMask = u64;

pub(crate) fn mask_of(signals: &[i32]) -> SigMask {
    signals.iter().fold(0, |m, &s| m | 1u64 << (s - 1))
}

/// `rt_sigprocmask(SIG_SETMASK)`; returns the previous mask.
pub(crate) fn set_mask(mask: SigMask) -> SigMask {
    let mut old: SigMask = 0;
    unsafe {
        let _ = sys!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const SigMask,
            &mut old as *mut SigMask,
            8usize
        );
    }
    old
}

/// `rt_sigaction(sig, handler)` with no flags and an empty mask (the kernel
/// struct: handler, flags, restorer, mask).
pub(crate) fn set_handler(sig: i32, handler: usize) {
    let act = [handler as u64, 0, 0, 0];
    unsafe {
        let _ = sys!(
            libc::SYS_rt_sigaction,
            sig,
            act.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize
        );
    }
}

/// Every catchable signal back to its default disposition: handlers
/// inherited from vbuild must never run in a child (they would run vbuild
/// code, on memory the child may share with it). Raw: glibc's wrappers
/// refuse signals 32 and 33, which can be inherited as ignored.
pub(crate) fn default_handlers() {
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            set_handler(sig, libc::SIG_DFL);
        }
    }
}

/// `clone(2)` onto a new stack, running `f(arg)` there in the child (which
/// never returns from it); returns the child's pid in the parent. Unlike
/// glibc's `clone`, it sets no `errno` in the parent.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a mapping that stays
/// valid as long as the child runs on it, and `f` must not return.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn clone_on(
    flags: usize,
    stack_top: *mut c_void,
    f: unsafe extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> Result<libc::pid_t, Errno> {
    let ret: isize;
    // The child returns from the syscall on the new stack with the same
    // registers: it calls f(arg) from there and never comes back here.
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        "xor ebp, ebp",
        "mov rdi, r13",
        "call r12",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone as isize => ret,
        in("rdi") flags,
        in("rsi") stack_top,
        in("rdx") 0usize,
        in("r10") 0usize,
        in("r8") 0usize,
        in("r12") f,
        in("r13") arg,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    if (-4095..0).contains(&ret) {
        Err(Errno::from_raw(-ret as i32))
    } else {
        Ok(ret as libc::pid_t)
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn clone_on(
    flags: usize,
    stack_top: *mut c_void,
    f: unsafe extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> Result<libc::pid_t, Errno> {
    extern "C" fn tramp(arg: *mut c_void) -> libc::c_int {
        // Safety: `arg` is `pair` below, alive while the child can read it
        // (its own copy without CLONE_VM; the suspended parent's with
        // CLONE_VFORK).
        unsafe {
            let (f, arg) = *arg.cast::<(unsafe extern "C" fn(*mut c_void) -> !, *mut c_void)>();
            f(arg)
        }
    }
    let mut pair = (f, arg);
    let pid = libc::clone(
        tramp,
        stack_top,
        flags as libc::c_int,
        (&mut pair as *mut (unsafe extern "C" fn(*mut c_void) -> !, *mut c_void)).cast(),
    );
    if pid < 0 {
        Err(Errno::last())
    } else {
        Ok(pid)
    }
}

/// A stack for a cloned child: `size` bytes above a guard page (a
/// PROT_NONE page, so an overflow faults instead of writing whatever is
/// mapped below). Unmapped on drop: only drop it once no process runs on it.
pub(crate) struct Stack {
    base: *mut c_void,
    len: usize,
}

const PAGE: usize = 4096;

impl Stack {
    pub(crate) fn new(size: usize) -> Result<Stack, Errno> {
        let len = size + PAGE;
        let base = unsafe {
            sys!(
                libc::SYS_mmap,
                0usize,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1isize,
                0usize
            )?
        } as *mut c_void;
        let stack = Stack { base, len };
        unsafe { sys!(libc::SYS_mprotect, base, PAGE, libc::PROT_NONE)? };
        Ok(stack)
    }

    pub(crate) fn top(&self) -> *mut c_void {
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }

    /// Leaves the mapping in place forever (for a child that may still run).
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        unsafe {
            let _ = sys!(libc::SYS_munmap, self.base, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The children's code must not call libc wrappers (they set `errno`,
    /// which a supervisor sharing vbuild's memory shares with a running
    /// vbuild thread): everything goes through `sys!`.
    #[test]
    fn children_make_no_libc_calls() {
        for (name, src) in [
            ("child.rs", include_str!("child.rs")),
            ("reap.rs", include_str!("reap.rs")),
        ] {
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            let calls = libc_calls(code);
            assert!(calls.is_empty(), "{name} calls libc wrappers: {calls:?}");
        }
    }

    /// `libc::name(` occurrences (constants and types are fine).
    fn libc_calls(code: &str) -> Vec<String> {
        code.match_indices("libc::")
            .filter_map(|(i, _)| {
                let rest = &code[i + 6..];
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let is_call = rest[ident.len()..].starts_with('(');
                let lower = ident.chars().next().is_some_and(|c| c.is_ascii_lowercase());
                (is_call && lower).then_some(ident)
            })
            .collect()
    }

    #[test]
    fn raw_calls_return_the_kernels_errno() {
        let r = unsafe { sys!(libc::SYS_close, -1isize) };
        assert_eq!(r, Err(Errno::EBADF));
        let pid = unsafe { sys!(libc::SYS_getpid) };
        assert_eq!(pid, Ok(std::process::id() as usize));
    }
}
