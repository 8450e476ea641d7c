//! End-to-end: building, hitting, restoring, invalidating.
mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn first_run_then_all_hits() {
    let ws = three_packages();
    let first = ws.run(&["run", "//...", "-j1"]);
    insta::assert_snapshot!("first_run", first.snapshot());
    assert_eq!(ws.read("app/result.txt"), "HELLO\n");
    let second = ws.run(&["run", "//...", "-j1"]);
    insta::assert_snapshot!("all_hits", second.snapshot());
    // Logs are replayed byte-exact.
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn deleted_outputs_are_restored_byte_exact() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    let before = std::fs::read(ws.path("lib/out/msg.txt")).unwrap();
    std::fs::remove_dir_all(ws.path("lib/out")).unwrap();
    for f in ["app/result.txt", "app/run.sh", "app/link.txt"] {
        std::fs::remove_file(ws.path(f)).unwrap();
    }
    // A stale file inside a declared output directory is removed on restore.
    ws.write("lib/out/stale.txt", "stale");
    let out = ws.run(&["run", "//...", "-j1"]);
    out.assert_ok();
    out.assert_all("hit");
    assert_eq!(std::fs::read(ws.path("lib/out/msg.txt")).unwrap(), before);
    assert!(!ws.path("lib/out/stale.txt").exists());
    let mode = std::fs::metadata(ws.path("app/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit restored");
    assert_eq!(
        std::fs::read_link(ws.path("app/link.txt"))
            .unwrap()
            .to_str(),
        Some("result.txt")
    );
}

#[test]
fn edited_output_is_repaired_and_store_untouched() {
    let ws = three_packages();
    ws.run(&["run", "//lib:build"]).assert_ok();
    ws.write("lib/out/msg.txt", "edited by hand\n");
    ws.run(&["run", "//lib:build"]).assert_ok();
    assert_eq!(ws.read("lib/out/msg.txt"), "HELLO\n");
}

#[test]
fn change_one_file_then_revert() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    ws.write("lib/src/msg.txt", "changed\n");
    let changed = ws.run(&["run", "//...", "-j1"]);
    insta::assert_snapshot!("one_file_changed", changed.snapshot());
    assert_eq!(ws.read("app/result.txt"), "CHANGED\n");
    ws.write("lib/src/msg.txt", "hello\n");
    let reverted = ws.run(&["run", "//...", "-j1"]);
    reverted.assert_all("hit");
    assert_eq!(ws.read("app/result.txt"), "HELLO\n");
}

#[test]
fn added_and_removed_sources_are_named() {
    let ws = three_packages();
    ws.run(&["run", "//lib:build"]).assert_ok();
    ws.write("lib/src/new.txt", "x");
    let out = ws.run(&["run", "//lib:build"]);
    assert!(
        out.stderr.contains("'lib/src/new.txt' added"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(ws.path("lib/src/new.txt")).unwrap();
    std::fs::remove_file(ws.path("lib/src/msg.txt")).unwrap();
    ws.write(
        "lib/BUILD.toml",
        &ws.read("lib/BUILD.toml")
            .replace("tr a-z A-Z < src/msg.txt", "echo none"),
    );
    let out = ws.run(&["run", "//lib:build"]);
    assert!(out.stderr.contains("command changed"), "{}", out.stderr);
}

#[test]
fn why_explains_without_running() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    ws.write("lib/src/msg.txt", "why\n");
    let why = ws.run(&["why", "//app:build"]);
    insta::assert_snapshot!("why", why.snapshot());
    assert_eq!(ws.read("app/result.txt"), "HELLO\n", "why must not build");
}

#[test]
fn relative_label_from_inside_a_package() {
    let ws = three_packages();
    let out = ws.run_in(&ws.path("lib/src"), &["run", ":build"]);
    out.assert_ok();
    out.assert_states(&["miss //lib:build"]);
}

#[test]
fn workspace_copied_elsewhere_hits_the_same_entries() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    let copy = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(ws.root()) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(ws.root()).unwrap();
        let dest = copy.path().join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if ft.is_symlink() {
            continue; // outputs; restored from the store
        } else if !rel.starts_with("lib/out") && !rel.starts_with("app")
            || rel.ends_with("BUILD.toml")
        {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
    let out = ws.run_in(copy.path(), &["run", "//...", "-j1"]);
    out.assert_ok();
    out.assert_all("hit");
    assert_eq!(
        std::fs::read_to_string(copy.path().join("app/result.txt")).unwrap(),
        "HELLO\n"
    );
}

#[test]
fn failing_action_fails_the_run_and_caches_nothing() {
    let ws = Ws::new(&[
        ("bad/BUILD.toml", "[target.build]\ncommand = \"echo partial > out.txt; echo boom >&2; exit 3\"\nouts = [\"out.txt\"]\n"),
        ("after/BUILD.toml", "[target.build]\ncommand = \"true\"\ndeps = [\"//bad:build\"]\n"),
        ("ok/BUILD.toml", "[target.build]\ncommand = \"echo ok\"\n"),
    ]);
    let out = ws.run(&["run", "//...", "-j1", "--keep-going"]);
    insta::assert_snapshot!("failing_action", out.snapshot());
    assert!(
        !ws.path("bad/out.txt").exists(),
        "a failed action writes nothing to the workspace"
    );
    let again = ws.run(&["run", "//bad:build"]);
    again.assert_states(&["failed //bad:build"]);
}

#[test]
fn failure_stops_scheduling_without_keep_going() {
    let ws = Ws::new(&[
        ("a/BUILD.toml", "[target.build]\ncommand = \"exit 1\"\n"),
        ("b/BUILD.toml", "[target.build]\ncommand = \"true\"\n"),
    ]);
    let out = ws.run(&["run", "//...", "-j1"]);
    assert_eq!(out.code, 1);
    out.assert_states(&["failed //a:build"]);
    assert!(out.stderr.contains("1 not run"), "{}", out.stderr);
}

#[test]
fn missing_declared_output_is_an_error_naming_it() {
    let ws = Ws::new(&[(
        "p/BUILD.toml",
        "[target.build]\ncommand = \"touch a\"\nouts = [\"a\", \"dist/\"]\n",
    )]);
    let out = ws.run(&["run", "//p:build"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("declared output 'dist/' was not created by //p:build"),
        "{}",
        out.stderr
    );
}

/// `optional_outs` (what turbo's `outputs` become): one the command does
/// not write is no error; one it writes is captured and restored like
/// `outs`; moving a path between the two lists is a miss that `why` names.
#[test]
fn optional_outputs_may_be_left_unwritten() {
    let ws = Ws::new(&[
        ("p/src.txt", "hello\n"),
        (
            "p/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p dist && cp src.txt dist/a.txt\"\nsrcs = [\"src.txt\"]\noptional_outs = [\"dist/\", \".next/\", \"types/*.d.ts\", \"meta.json\"]\n",
        ),
    ]);
    let first = ws.run(&["run", "//p:build"]);
    first.assert_ok();
    first.assert_states(&["miss //p:build"]);
    assert_eq!(ws.read("p/dist/a.txt"), "hello\n");
    assert!(!ws.path("p/.next").exists() && !ws.path("p/meta.json").exists());
    std::fs::remove_dir_all(ws.path("p/dist")).unwrap();
    ws.write("p/.next/stale.txt", "left by a native build");
    let restore = ws.run(&["run", "//p:build"]);
    restore.assert_all("hit");
    assert_eq!(ws.read("p/dist/a.txt"), "hello\n");
    // The target owns `.next/`: what its run did not write is not kept.
    assert!(!ws.path("p/.next/stale.txt").exists());
    ws.write(
        "p/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p dist && cp src.txt dist/a.txt\"\nsrcs = [\"src.txt\"]\nouts = [\"dist/\"]\noptional_outs = [\".next/\", \"types/*.d.ts\", \"meta.json\"]\n",
    );
    let why = ws.run(&["why", "//p:build"]);
    assert!(
        why.stdout.contains("target config changed (outs)"),
        "{}",
        why.stdout
    );
    assert_eq!(ws.run(&["run", "//p:build"]).states(), ["miss //p:build"]);
    // The overlap rule covers them: another target may not claim `.next/`.
    ws.write(
        "p/BUILD.toml",
        "[target.build]\ncommand = \"true\"\noptional_outs = [\".next/\"]\n[target.next]\ncommand = \"true\"\nouts = [\".next/**/*.js\"]\n",
    );
    let out = ws.run(&["run", "//p:build"]);
    assert_eq!(out.code, 2, "{}", out.snapshot());
    assert!(
        out.stderr.contains("//p:build") && out.stderr.contains("//p:next"),
        "{}",
        out.stderr
    );
}

#[test]
fn undeclared_file_cannot_be_read() {
    let ws = Ws::new(&[
        ("p/declared.txt", "yes"),
        ("p/secret.txt", "no"),
        ("p/BUILD.toml", "[target.build]\ncommand = \"cat declared.txt secret.txt > out.txt\"\nsrcs = [\"declared.txt\"]\nouts = [\"out.txt\"]\n"),
    ]);
    let out = ws.run(&["run", "//p:build"]);
    assert_eq!(out.code, 1, "{}", out.snapshot());
    assert!(
        out.stderr.contains("secret.txt: No such file or directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn environment_is_scrubbed_and_pass_env_is_tracked() {
    let ws = Ws::new(&[(
        "p/BUILD.toml",
        r#"[target.build]
command = "env | sort | grep -v -e '^HOME=' -e '^TMPDIR=' -e '^PWD=' -e '^SHLVL=' -e '^_=' > env.txt"
outs = ["env.txt"]
env = { FIXED = "1" }
pass_env = ["MODE"]
"#,
    )]);
    ws.run_env(&["run", "//p:build"], &[("MODE", "a"), ("LEAK", "x")])
        .assert_ok();
    insta::assert_snapshot!("action_env", redact(&ws.read("p/env.txt")));
    let again = ws.run_env(&["run", "//p:build"], &[("MODE", "b")]);
    assert!(
        again.stderr.contains("env 'MODE' changed"),
        "{}",
        again.stderr
    );
    let back = ws.run_env(&["run", "//p:build"], &[("MODE", "a")]);
    back.assert_states(&["hit //p:build"]);
}

#[test]
fn uncached_targets_always_run() {
    let ws = Ws::new(&[(
        "p/BUILD.toml",
        "[target.stamp]\ncommand = \"echo run\"\ncache = false\n",
    )]);
    ws.run(&["run", "//p:stamp"]).assert_ok();
    let out = ws.run(&["run", "//p:stamp"]);
    assert!(
        out.stderr
            .starts_with("uncached  //p:stamp  (cache = false)"),
        "{}",
        out.stderr
    );
    let out = ws.run(&["run", "//...", "--no-cache"]);
    assert!(out.stderr.contains("uncached"), "{}", out.stderr);
}

#[test]
fn corrupt_blob_is_detected_and_repaired() {
    let ws = three_packages();
    ws.run(&["run", "//lib:build"]).assert_ok();
    // Corrupt the blob holding lib/out/msg.txt ("HELLO\n").
    let blob = ws.blob_path(b"HELLO\n");
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, b"EVIL!\n").unwrap();
    std::fs::remove_dir_all(ws.path("lib/out")).unwrap();
    let out = ws.run(&["run", "//lib:build"]);
    out.assert_ok();
    assert!(out.stderr.contains("corrupt"), "{}", out.stderr);
    assert_eq!(ws.read("lib/out/msg.txt"), "HELLO\n");
    let fixed = ws.run(&["run", "//lib:build"]);
    fixed.assert_states(&["hit //lib:build"]);
    assert_eq!(std::fs::read(&blob).unwrap(), b"HELLO\n", "blob repaired");
}

#[test]
fn clean_and_store_stats() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    let stats = ws.run(&["store", "stats"]);
    assert!(stats.stdout.contains("entries: 3"), "{}", stats.stdout);
    let clean = ws.run(&["clean"]);
    insta::assert_snapshot!("clean", clean.snapshot());
    let after = ws.run(&["run", "//lib:build"]);
    assert!(
        after.stderr.contains("(no previous entry)"),
        "{}",
        after.stderr
    );
}

#[test]
fn parallel_build_respects_dependencies() {
    let ws = three_packages();
    let out = ws.run(&["run", "//...", "-j4"]);
    out.assert_ok();
    assert_eq!(ws.read("app/result.txt"), "HELLO\n");
    let states = out.states();
    let lib = states.iter().position(|s| s == "miss //lib:build").unwrap();
    let app = states.iter().position(|s| s == "miss //app:build").unwrap();
    assert!(lib < app);
}

#[test]
fn killed_build_leaves_no_entry_and_reruns() {
    // A TMPDIR of its own: scratch-mode dirs live there (outside the store).
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("started-marker");
    let ws = Ws::new(&[(
        "p/BUILD.toml",
        &format!("[target.build]\ncommand = \"echo started > {}; sleep 7.654; echo done > out.txt\"\nouts = [\"out.txt\"]\n", marker.display()),
    )]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .current_dir(ws.root())
        .args(["run", "//p:build"])
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .env("TMPDIR", tmp.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the action is running, then kill vbuild outright.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "action never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let uid = unsafe { libc::geteuid() };
    let run_dir = tmp.path().join(format!("vbuild-{uid}/run-{}", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!ws.path("p/out.txt").exists());
    assert!(run_dir.exists(), "the killed run left its scratch dir");
    // The action's processes die with vbuild.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = std::process::Command::new("pgrep")
        .args(["-f", "sleep 7.654"])
        .output()
        .unwrap();
    assert!(alive.stdout.is_empty(), "action outlived vbuild");
    let stats = ws.run(&["store", "stats"]);
    assert!(stats.stdout.contains("entries: 0"), "{}", stats.stdout);
    let out = ws.run(&["why", "//p:build"]);
    assert!(
        out.stdout
            .contains("would run //p:build  (no previous entry)"),
        "{}",
        out.stdout
    );
}

#[test]
fn ctrl_c_stops_the_run_with_keep_going() {
    let marks = tempfile::tempdir().unwrap();
    let marker = marks.path().join("go-a");
    let ws = Ws::new(&[
        (
            "a/BUILD.toml",
            &format!(
                "[target.build]\ncommand = \"echo go > {}; sleep 20.31\"\n",
                marker.display()
            ),
        ),
        (
            "b/BUILD.toml",
            "[target.build]\ncommand = \"sleep 20.32\"\n",
        ),
        (
            "c/BUILD.toml",
            "[target.build]\ncommand = \"sleep 20.33\"\n",
        ),
    ]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .current_dir(ws.root())
        .args(["run", "//...", "-j1", "-k"])
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "action never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "Ctrl-C must not wait for the rest"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("//b:build  (no previous") && !stderr.contains("//c:build  (no previous"),
        "{stderr}"
    );
}

#[test]
fn root_package_glob_outputs() {
    let ws = Ws::new(&[(
        "BUILD.toml",
        "[target.gen]\ncommand = \"echo 1 > a.gen.js; mkdir -p sub; echo 2 > sub/b.gen.js\"\nouts = [\"*.gen.js\", \"**/*.gen.js\"]\n",
    )]);
    for mode in ["scratch", "namespaces"] {
        let out = ws.run(&["run", "//:gen", "--sandbox", mode]);
        out.assert_ok();
        assert_eq!(ws.read("a.gen.js"), "1\n");
        assert_eq!(ws.read("sub/b.gen.js"), "2\n");
    }
    // And it hits, restoring the files (docs once said it failed).
    std::fs::remove_file(ws.path("a.gen.js")).unwrap();
    ws.run(&["run", "//:gen", "--sandbox", "namespaces"])
        .assert_all("hit");
    assert_eq!(ws.read("a.gen.js"), "1\n");
}

/// The stat cache: once its entries are past the racy window, a no-op run
/// opens none of the files it hashed before (checked with strace).
#[test]
fn noop_run_reads_no_source_file() {
    let ws = three_packages();
    ws.run(&["run", "//..."]).assert_ok();
    // Entries recorded within 2 s of a file's mtime are racy: wait, then
    // let one run re-record them as trusted.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    ws.run(&["run", "//..."]).assert_ok();
    let Some(trace) = ws.run_traced("openat,open", &["run", "//..."]) else {
        return;
    };
    let root = ws.root().to_str().unwrap();
    let opened: Vec<&str> = trace
        .lines()
        .filter(|l| {
            l.contains(root)
                && !l.contains("BUILD.toml")
                && !l.contains("vbuild.toml")
                && !l.contains("O_DIRECTORY")
        })
        .collect();
    assert!(
        opened.is_empty(),
        "a no-op run opened workspace files:\n{}",
        opened.join("\n")
    );
}

/// Sources are stat-ed relative to the workspace root's descriptor (no
/// absolute path per source on a no-op), and a trusted stat-cache entry
/// never survives the file being replaced by a symlink or a directory.
#[test]
fn sources_are_stated_from_the_root_and_replacements_miss() {
    let ws = Ws::new(&[
        ("a/src/x.txt", "same\n"),
        ("a/src/y.txt", "same\n"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"find src | sort > out.txt; cat src/x.txt src/x.txt/* >> out.txt 2>/dev/null; true\"\nsrcs = [\"src/**\"]\nouts = [\"out.txt\"]\n",
        ),
    ]);
    ws.run(&["run", "//a:build"]).assert_all("miss");
    // Past the racy window, then re-recorded as trusted.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    ws.run(&["run", "//a:build"]).assert_all("hit");
    if let Some(trace) = ws.run_traced("statx,newfstatat,lstat,stat", &["run", "//a:build"]) {
        let abs = ws.root().canonicalize().unwrap().join("a/src/x.txt");
        let quoted = format!("\"{}\"", abs.display());
        assert!(
            !trace.contains(&quoted),
            "stat-ed by absolute path:\n{trace}"
        );
        assert!(trace.contains("\"a/src/x.txt\""), "{trace}");
    }
    // A symlink to a file with the same bytes: a different input.
    std::fs::remove_file(ws.path("a/src/x.txt")).unwrap();
    std::os::unix::fs::symlink("y.txt", ws.path("a/src/x.txt")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("miss");
    // A directory of that name: its file is the source now.
    std::fs::remove_file(ws.path("a/src/x.txt")).unwrap();
    ws.write("a/src/x.txt/inner.txt", "same\n");
    ws.run(&["run", "//a:build"]).assert_all("miss");
    assert_eq!(
        ws.read("a/out.txt"),
        "src\nsrc/x.txt\nsrc/x.txt/inner.txt\nsrc/y.txt\nsame\n"
    );
    // And back to the original file: the first entry hits again.
    std::fs::remove_dir_all(ws.path("a/src/x.txt")).unwrap();
    ws.write("a/src/x.txt", "same\n");
    ws.run(&["run", "//a:build"]).assert_all("hit");
}

#[test]
fn plain_commands_behave_as_under_the_shell() {
    // `./gen` has no `#!` line: execve refuses it, the shell runs it.
    let ws = Ws::new(&[
        (
            "p/BUILD.toml",
            "[target.build]\ncommand = \"./gen out.txt\"\nsrcs = [\"gen\"]\nouts = [\"out.txt\"]\n\
             [target.missing]\ncommand = \"no-such-tool-xyz --flag\"\nsrcs = []\n",
        ),
        ("p/gen", "echo made > \"$1\"\n"),
    ]);
    std::fs::set_permissions(ws.path("p/gen"), std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.run(&["run", "//p:build"]).assert_ok();
    assert_eq!(ws.read("p/out.txt"), "made\n");
    // Not found: reported by the shell, as before.
    let out = ws.run(&["run", "//p:missing"]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("no-such-tool-xyz: not found"),
        "{}",
        out.stderr
    );
}
