//! Ctrl-C during a build, from its first moment (hashing, restoring hits)
//! to its last: the first SIGINT stops starting actions and kills the
//! running ones' process trees (reported as `cancelled`); a second quits at
//! once, after printing the summary. Exit code 130 either way.
//!
//! The signal handler only writes a byte to a pipe (async-signal-safe); a
//! watcher thread blocked on the pipe does the rest in ordinary code.
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

static PIPE_WR: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigint(_: libc::c_int) {
    let fd = PIPE_WR.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Installs the handler and its watcher (once per process).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return; // keep the default: Ctrl-C ends vbuild
        }
        let (rd, wr) = (fds[0], fds[1]);
        let watcher = std::thread::Builder::new()
            .name("vbuild-sigint".into())
            .spawn(move || watch(rd));
        if watcher.is_err() {
            return;
        }
        PIPE_WR.store(wr, Ordering::Relaxed);
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        }
    });
}

fn watch(rd: libc::c_int) {
    let mut seen = 0;
    loop {
        let mut byte = 0u8;
        let n = unsafe { libc::read(rd, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return;
        }
        seen += 1;
        if seen == 1 {
            crate::scheduler::CANCELLED.store(true, Ordering::SeqCst);
            vbuild_sandbox::cancel_all();
            crate::report::notice("vbuild: interrupted; stopping (Ctrl-C again to quit now)");
        } else {
            crate::report::interrupted_exit_summary();
            std::process::exit(crate::EXIT_INTERRUPTED.into());
        }
    }
}
