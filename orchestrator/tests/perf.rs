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

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A cold build stores one file per distinct output file and nothing more
/// per action: an action's output tree and the description of its key are
/// kept in its action-cache row, not as two more blobs. Each new store file
/// is an inode created, and right after a store was deleted (a fresh CI
/// machine, the bench's cold scenario) ext4 makes every inode creation scan
/// the recently deleted ones: that was 35-45% of vbuild's own cold-build
/// time on the 200-package bench (issue 13). Before, this store held 3
/// files per action.
#[test]
fn a_cold_build_stores_one_file_per_output_file() {
    const N: usize = 12;
    let mut files: Vec<(String, String)> = vec![];
    for i in 0..N {
        let dep = if i > 0 {
            format!("deps = [\"//p{}:build\"]\n", i - 1)
        } else {
            String::new()
        };
        files.push((format!("p{i}/src.txt"), format!("package {i}\n")));
        files.push((
            format!("p{i}/BUILD.toml"),
            format!(
                "[target.build]\ncommand = \"mkdir -p dist && cp src.txt dist/out.txt\"\n\
                 srcs = [\"src.txt\"]\n{dep}outs = [\"dist/\"]\n"
            ),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let ws = Ws::new(&refs);
    ws.run(&["run", "//..."]).assert_ok().assert_all("miss");
    // N outputs, plus at most the empty blob (the empty logs, once per store).
    let blobs = files_under(&ws.cache.join("cas"));
    assert!(blobs.len() <= N + 1, "{} blobs: {blobs:#?}", blobs.len());
    // `why` still explains a miss from the key description in the row.
    ws.write("p3/src.txt", "changed\n");
    let why = ws.run(&["why", "//p3:build"]);
    assert!(
        why.stdout.contains("'p3/src.txt' modified"),
        "{}",
        why.snapshot()
    );
}
