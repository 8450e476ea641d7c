//! The store's size budget and garbage collection, through the binary.
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes the entries of `label` look last used `hours` ago.
fn age_entry(ws: &Ws, label: &str, hours: i64) {
    let db = rusqlite::Connection::open(ws.cache.join("cache.db")).unwrap();
    let n = db
        .execute(
            "UPDATE entries SET last_used = ?1 WHERE label = ?2",
            rusqlite::params![now_ms() - hours * HOUR_MS, label],
        )
        .unwrap();
    assert!(n > 0, "no entry for {label}");
}

/// Makes every blob look written `hours` ago.
fn age_blobs(ws: &Ws, hours: u64) {
    let status = Command::new("find")
        .arg(ws.cache.join("cas"))
        .args(["-type", "f", "-exec", "touch", "-m", "-d"])
        .arg(format!("{hours} hours ago"))
        .args(["{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn big_output(letter: &str) -> String {
    format!(
        "[target.build]\ncommand = \"yes {letter} | head -c 100000 > big.txt\"\nouts = [\"big.txt\"]\n"
    )
}

#[test]
fn stats_does_not_create_the_store() {
    let ws = Ws::new(&[]);
    let missing = ws.cache.join("not-yet");
    let out = run_with(ws.root(), &missing, &["store", "stats"], &[]);
    out.assert_ok();
    assert!(!missing.exists(), "store stats created {missing:?}");
    insta::assert_snapshot!("stats_without_a_store", out.snapshot());
    let gc = run_with(ws.root(), &missing, &["store", "gc"], &[]);
    gc.assert_ok();
    assert!(!missing.exists());
}

#[test]
fn collection_removes_the_least_recently_used_first() {
    let ws = Ws::new(&[
        ("a/BUILD.toml", &big_output("a")),
        ("b/BUILD.toml", &big_output("b")),
        ("c/BUILD.toml", &big_output("c")),
    ]);
    ws.run(&["run", "//...", "-j1"]).assert_all("miss");
    age_blobs(&ws, 5);
    age_entry(&ws, "//a:build", 3);
    age_entry(&ws, "//b:build", 1);
    age_entry(&ws, "//c:build", 2);
    let stats = ws.run(&["store", "stats"]);
    assert!(
        stats.stdout.contains("budget:  10.0 GiB (default)"),
        "{}",
        stats.stdout
    );
    // Room for one entry's blobs: b, the most recently used, stays.
    let gc = ws.run(&["store", "gc", "--max-size", "150K"]);
    gc.assert_ok();
    assert!(
        gc.stdout.starts_with("removed 2 entries and "),
        "{}",
        gc.stdout
    );
    let after = ws.run(&["run", "//...", "-j1"]);
    after.assert_states(&["miss //a:build", "hit //b:build", "miss //c:build"]);
    assert_eq!(ws.read("a/big.txt").len(), 100_000);
}

#[test]
fn collection_during_a_build_keeps_what_it_holds() {
    let ws = Ws::new(&[
        ("a/BUILD.toml", &big_output("a")),
        ("b/src.txt", "one\n"),
        (
            "b/BUILD.toml",
            "[target.slow]\ncommand = \"touch $MARK; sleep 2; cat src.txt ../a/big.txt > out.txt\"\nsrcs = [\"src.txt\"]\ndeps = [\"//a:build\"]\nouts = [\"out.txt\"]\npass_env = [\"MARK\"]\n",
        ),
    ]);
    let mark = ws.path("started");
    let env = [("MARK", mark.to_str().unwrap())];
    ws.run_env(&["run", "//...", "-j1"], &env).assert_ok();
    std::fs::remove_file(&mark).unwrap();
    // Everything looks hours old; then b changes, so the next build hits
    // a (an old entry it restores and stages) and runs b.
    age_blobs(&ws, 5);
    age_entry(&ws, "//a:build", 3);
    age_entry(&ws, "//b:slow", 3);
    ws.write("b/src.txt", "two\n");
    let build = Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .args(["run", "//...", "-j1"])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .env("MARK", &mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !mark.exists() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Collect everything that can go while b runs.
    let gc = ws.run(&["store", "gc", "--max-size", "0"]);
    gc.assert_ok();
    assert!(
        gc.stdout.starts_with("removed 1 entries and "),
        "{}",
        gc.stdout
    );
    let out = build.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("hit       //a:build"), "{stderr}");
    assert_eq!(ws.read("b/out.txt").len(), 4 + 100_000);
    // What the build used and made survived: all hits now.
    let again = ws.run_env(&["run", "//...", "-j1"], &env);
    again.assert_all("hit");
    std::fs::remove_file(ws.path("b/out.txt")).unwrap();
    ws.run_env(&["run", "//b:slow"], &env).assert_all("hit");
    assert!(ws.read("b/out.txt").starts_with("two\n"));
}

#[test]
fn a_run_over_budget_collects_but_keeps_what_it_used() {
    let ws = Ws::new(&[
        ("a/BUILD.toml", &big_output("a")),
        ("b/BUILD.toml", &big_output("b")),
    ]);
    ws.run(&["run", "//a:build"]).assert_ok();
    age_blobs(&ws, 5);
    age_entry(&ws, "//a:build", 3);
    let budget = [("VBUILD_STORE_MAX_SIZE", "150K")];
    let out = ws.run_env(&["run", "//b:build"], &budget);
    out.assert_ok();
    assert!(
        out.stderr
            .contains("vbuild: the store was over its budget of 150.0 KiB: removed 1 entries"),
        "{}",
        out.stderr
    );
    ws.run_env(&["run", "//b:build"], &budget).assert_all("hit");
    assert_eq!(
        ws.run_env(&["run", "//a:build"], &budget).states(),
        ["miss //a:build"]
    );
    let bad = ws.run_env(&["store", "stats"], &[("VBUILD_STORE_MAX_SIZE", "lots")]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("$VBUILD_STORE_MAX_SIZE: invalid size `lots`"),
        "{}",
        bad.stderr
    );
}
