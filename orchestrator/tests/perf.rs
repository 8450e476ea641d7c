//! Cost bounds that must not regress: memory for large action logs.
mod common;
use common::Ws;
use std::process::{Command, Stdio};

/// Runs vbuild with its stdout and stderr discarded; returns (exit code,
/// peak RSS in KiB of vbuild and every descendant it reaped, from wait4).
fn run_measured(ws: &Ws, args: &[&str]) -> (i32, i64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(args)
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` outlive the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// An action printing 160 MiB (on stdout and stderr) costs vbuild no memory
/// for it: the logs go from the sandbox's files into the store and back to
/// the terminal in chunks, on the miss and on the hit.
#[test]
fn large_action_logs_are_streamed_not_held() {
    const MIB: u64 = 1024 * 1024;
    let ws = Ws::new(&[(
        "big/BUILD.toml",
        "[target.big]\n\
         command = \"head -c 134217728 /dev/zero; head -c 33554432 /dev/zero >&2; echo done > out.txt\"\n\
         outs = [\"out.txt\"]\n",
    )]);
    let (code, miss_rss) = run_measured(&ws, &["run", "//big"]);
    assert_eq!(code, 0);
    let (code, hit_rss) = run_measured(&ws, &["run", "//big"]);
    assert_eq!(code, 0);
    // Holding the logs would need at least 160 MiB; vbuild alone is ~20 to
    // 40 MiB (debug build).
    for (what, rss) in [("miss", miss_rss), ("hit", hit_rss)] {
        assert!(
            (rss as u64) * 1024 < 80 * MIB,
            "peak RSS on the {what} was {} MiB",
            rss / 1024
        );
    }
    // The hit replays every byte.
    let out = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(["run", "//big"])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len() as u64, 128 * MIB);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hit       //big:big"));
}
