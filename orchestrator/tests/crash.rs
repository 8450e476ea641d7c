//! Crash test: `kill -9` at random moments of cold builds and restores.
//! After every kill the store must verify (`vbuild store verify`: no entry
//! pointing at a missing or wrong blob), the workspace must hold no stray
//! file (no temp file, nothing outside sources and declared outputs), and
//! the next run must succeed with exactly the right outputs.
//!
//! CI runs 10 kills. The full run (issue 11: at least 200) is ignored by
//! default; `bench/crash.sh` runs it:
//!   VBUILD_CRASH_ROUNDS=200 cargo test -p vbuild --test crash -- --ignored --nocapture
//! `VBUILD_CRASH_SEED` replays a run, `VBUILD_CRASH_SANDBOX` picks the
//! sandbox (default scratch), `VBUILD_CRASH_BIN` the vbuild binary that is
//! killed (e.g. an older build, to see what the checks catch; the store is
//! then verified on a copy, which this build may migrate).
mod common;
use common::*;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 60;

/// A small deterministic generator (no dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn workspace(sandbox: &str) -> Ws {
    let ws = Ws::new(&[
        ("lib/src/seed.txt", "seed-0"),
        (
            "lib/BUILD.toml",
            &format!(
                "[target.build]\ncommand = \"mkdir -p out && for i in $(seq 1 {FILES}); do yes \\\"$(cat src/seed.txt)-$i\\\" | head -c 40000 > out/f$i; done\"\nsrcs = [\"src/**\"]\nouts = [\"out/\"]\n"
            ),
        ),
        (
            "app/BUILD.toml",
            "[target.build]\ncommand = \"cat ../lib/out/f1 ../lib/out/f2 > bundle.txt && ln -s bundle.txt link\"\ndeps = [\"//lib:build\"]\nouts = [\"bundle.txt\", \"link\"]\n",
        ),
    ]);
    ws.write(
        "vbuild.toml",
        &format!("[workspace]\nname = \"test\"\nsandbox = \"{sandbox}\"\n"),
    );
    ws
}

/// What lib writes to out/f{i} for `seed`.
fn expected_file(seed: &str, i: usize) -> Vec<u8> {
    let line = format!("{seed}-{i}\n");
    line.bytes().cycle().take(40000).collect()
}

/// Problems with the outputs after a complete run.
fn wrong_outputs(ws: &Ws, seed: &str) -> Vec<String> {
    let mut wrong = vec![];
    for i in 1..=FILES {
        let p = format!("lib/out/f{i}");
        if std::fs::read(ws.path(&p)).ok() != Some(expected_file(seed, i)) {
            wrong.push(p);
        }
    }
    let names: BTreeSet<String> = std::fs::read_dir(ws.path("lib/out"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if names.len() != FILES {
        wrong.push(format!("lib/out holds {} files", names.len()));
    }
    let bundle: Vec<u8> = [expected_file(seed, 1), expected_file(seed, 2)].concat();
    if std::fs::read(ws.path("app/bundle.txt")).ok() != Some(bundle) {
        wrong.push("app/bundle.txt".into());
    }
    if std::fs::read_link(ws.path("app/link")).ok().as_deref() != Some(Path::new("bundle.txt")) {
        wrong.push("app/link".into());
    }
    wrong
}

/// Files of the workspace that are neither sources nor declared outputs.
fn stray_files(ws: &Ws) -> Vec<String> {
    let sources = [
        "vbuild.toml",
        "lib/BUILD.toml",
        "lib/src/seed.txt",
        "app/BUILD.toml",
    ];
    walkdir::WalkDir::new(ws.root())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(ws.root()).ok()?.to_str()?.to_string();
            let declared = sources.contains(&rel.as_str())
                || rel == "app/bundle.txt"
                || rel == "app/link"
                || rel
                    .strip_prefix("lib/out/f")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| (1..=FILES).contains(&n));
            (!declared).then_some(rel)
        })
        .collect()
}

/// The vbuild that is built and killed.
fn bin_under_test() -> String {
    std::env::var("VBUILD_CRASH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vbuild").into())
}

fn run_under_test(ws: &Ws, args: &[&str]) -> Out {
    let out = Command::new(bin_under_test())
        .current_dir(ws.root())
        .args(args)
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `vbuild store verify`: the problem lines (none when it exits 0).
fn store_problems(ws: &Ws) -> Vec<String> {
    let copy = tempfile::tempdir().unwrap();
    let cache = if std::env::var_os("VBUILD_CRASH_BIN").is_some() {
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", ws.cache.display()))
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(status.success());
        copy.path().to_path_buf()
    } else {
        ws.cache.clone()
    };
    let out = run_with(ws.root(), &cache, &["store", "verify"], &[]);
    if out.code == 0 {
        return vec![];
    }
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .map(str::to_string)
        .collect();
    lines.retain(|l| !l.trim().is_empty());
    lines
}

/// Dead runs' temp files left in the store's tmp/ after a complete run.
fn store_tmp_leftovers(ws: &Ws) -> usize {
    std::fs::read_dir(ws.cache.join("tmp")).map_or(0, |d| d.count())
}

#[derive(Default, Debug)]
struct Figures {
    kills: usize,
    killed_mid_run: usize,
    cold_rounds: usize,
    restore_rounds: usize,
    store_problems: usize,
    stray_after_kill: usize,
    tmp_leftovers: usize,
    failed_next_runs: usize,
    wrong_next_runs: usize,
}

fn crash_rounds(rounds: usize) {
    let seed = std::env::var("VBUILD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let sandbox = std::env::var("VBUILD_CRASH_SANDBOX").unwrap_or_else(|_| "scratch".into());
    eprintln!("crash test: {rounds} rounds, VBUILD_CRASH_SEED={seed}, sandbox {sandbox}");
    let mut rng = Rng(seed);
    let ws = workspace(&sandbox);
    // A complete cold build gives the scale for the kill delays.
    let start = Instant::now();
    run_under_test(&ws, &["run", "//...", "-j2"]).assert_ok();
    let full = start.elapsed().max(Duration::from_millis(50));
    let mut figures = Figures::default();
    let mut seeds = vec!["seed-0".to_string()];
    for round in 0..rounds {
        // Half the rounds build something new (cold); the others restore
        // a known entry after deleting some or all outputs.
        let current = if rng.below(2) == 0 {
            seeds.push(format!("seed-{}", round + 1));
            figures.cold_rounds += 1;
            seeds.last().unwrap().clone()
        } else {
            figures.restore_rounds += 1;
            seeds[rng.below(seeds.len() as u64) as usize].clone()
        };
        ws.write("lib/src/seed.txt", &current);
        match rng.below(3) {
            0 => {
                let _ = std::fs::remove_dir_all(ws.path("lib/out"));
                let _ = std::fs::remove_file(ws.path("app/bundle.txt"));
            }
            1 => {
                let _ = std::fs::remove_file(
                    ws.path(&format!("lib/out/f{}", 1 + rng.below(FILES as u64))),
                );
            }
            _ => {}
        }
        // Restores take a fraction of a cold build: half the kills come
        // within the first fifth of it.
        let scale = if rng.below(2) == 0 { 6 } else { 1 };
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * scale / 5));
        let mut child = Command::new(bin_under_test())
            .current_dir(ws.root())
            .args(["run", "//...", "-j2"])
            .env("VBUILD_CACHE_DIR", &ws.cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            figures.killed_mid_run += 1;
        }
        // kill -9 of the whole group: vbuild and the action it runs.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        figures.kills += 1;

        let problems = store_problems(&ws);
        if !problems.is_empty() {
            eprintln!("round {round}: store verify: {problems:?}");
            figures.store_problems += problems.len();
        }
        let stray = stray_files(&ws);
        if !stray.is_empty() {
            eprintln!("round {round}: stray files after the kill: {stray:?}");
            figures.stray_after_kill += stray.len();
        }
        let next = run_under_test(&ws, &["run", "//...", "-j2"]);
        if next.code != 0 {
            eprintln!("round {round}: next run failed:\n{}", next.snapshot());
            figures.failed_next_runs += 1;
        }
        let wrong = wrong_outputs(&ws, &current);
        if !wrong.is_empty() || !stray_files(&ws).is_empty() {
            eprintln!(
                "round {round}: wrong outputs after the next run: {wrong:?} {:?}",
                stray_files(&ws)
            );
            figures.wrong_next_runs += 1;
        }
        let left = store_tmp_leftovers(&ws);
        if left > 0 {
            eprintln!("round {round}: {left} files left in the store's tmp/");
            figures.tmp_leftovers += left;
        }
    }
    eprintln!("crash test figures: {figures:?}");
    assert_eq!(figures.store_problems, 0, "{figures:?}");
    assert_eq!(figures.stray_after_kill, 0, "{figures:?}");
    assert_eq!(figures.tmp_leftovers, 0, "{figures:?}");
    assert_eq!(figures.failed_next_runs, 0, "{figures:?}");
    assert_eq!(figures.wrong_next_runs, 0, "{figures:?}");
    assert!(store_problems(&ws).is_empty());
}

#[test]
fn kill_9_during_builds_and_restores_bounded() {
    crash_rounds(10);
}

#[test]
#[ignore = "long: bench/crash.sh runs it"]
fn kill_9_during_builds_and_restores_full() {
    let rounds = std::env::var("VBUILD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    crash_rounds(rounds);
}
