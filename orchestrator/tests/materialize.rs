//! End-to-end: the materializer writes only a target's declared outputs,
//! whatever the tree it is given (forged in the store here, as a corrupt or
//! malicious writer could leave it), and never through a symlink.
mod common;
use common::*;
use std::path::Path;

/// Two packages, each with a source and a `out/` directory output.
fn two_packages() -> Ws {
    let build = |name: &str| {
        format!(
            "[target.build]\ncommand = \"mkdir -p out && cp src/f.txt out/{name}.txt\"\nsrcs = [\"src/**\"]\nouts = [\"out/\"]\n"
        )
    };
    Ws::new(&[
        ("a/src/f.txt", "a source\n"),
        ("a/BUILD.toml", &build("a")),
        ("b/src/f.txt", "b source\n"),
        ("b/BUILD.toml", &build("b")),
    ])
}

/// The forged entry was refused and dropped: the target ran again.
fn assert_refused(out: &Out, label: &str, why: &str) {
    out.assert_ok();
    out.assert_states(&[&format!("miss {label}")]);
    assert!(
        out.stderr.contains("cached entry unusable") && out.stderr.contains(why),
        "wanted {why:?}:\n{}",
        out.stderr
    );
}

#[test]
fn a_local_entry_cannot_write_a_source_or_another_targets_outputs() {
    let ws = two_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    // Its tree also lists a source of its own package.
    forge_tree(&ws, "//a:build", |store, entries| {
        entries.push(file_entry(store, "a/src/f.txt", b"EVIL"));
    });
    let out = ws.run(&["run", "//a:build"]);
    assert_refused(
        &out,
        "//a:build",
        "\"a/src/f.txt\" is not a declared output of //a:build",
    );
    assert_eq!(ws.read("a/src/f.txt"), "a source\n");
    // Its tree lists another target's output (and would delete nothing of
    // it either: b's directory is not a's to sweep).
    forge_tree(&ws, "//a:build", |store, entries| {
        entries.push(file_entry(store, "b/out/b.txt", b"EVIL"));
    });
    let out = ws.run(&["run", "//a:build"]);
    assert_refused(
        &out,
        "//a:build",
        "\"b/out/b.txt\" is not a declared output",
    );
    assert_eq!(ws.read("b/out/b.txt"), "b source\n");
    assert_eq!(ws.read("a/out/a.txt"), "a source\n");
    ws.run(&["run", "//...", "-j1"]).assert_all("hit");
}

#[test]
fn a_glob_output_never_reaches_into_a_sub_package() {
    let ws = Ws::new(&[
        (
            "a/BUILD.toml",
            // The command also writes into the sub-package's directory.
            "[target.build]\ncommand = \"echo gen > gen.js && echo x > b/sneaky.js\"\nouts = [\"**/*.js\"]\n",
        ),
        ("a/b/src.js", "sub-package source\n"),
        (
            "a/b/BUILD.toml",
            "[target.build]\ncommand = \"cp src.js out.js\"\nsrcs = [\"src.js\"]\nouts = [\"out.js\"]\n",
        ),
    ]);
    // The scratch copy needs a/b to exist for the command's write.
    ws.write(
        "a/BUILD.toml",
        &ws.read("a/BUILD.toml")
            .replace("echo x", "mkdir -p b && echo x"),
    );
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    assert!(!ws.path("a/b/sneaky.js").exists(), "not captured into //a");
    forge_tree(&ws, "//a:build", |store, entries| {
        entries.push(file_entry(store, "a/b/src.js", b"EVIL"));
    });
    let out = ws.run(&["run", "//a:build"]);
    assert_refused(&out, "//a:build", "\"a/b/src.js\" is inside package //a/b");
    assert_eq!(ws.read("a/b/src.js"), "sub-package source\n");
    assert_eq!(ws.read("a/gen.js"), "gen\n");
}

#[test]
fn a_symlinked_parent_is_refused_before_anything_is_deleted() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p build/dist && echo out > build/dist/out.txt\"\nouts = [\"build/dist/\"]\n",
    )]);
    ws.run(&["run", "//a:build"]).assert_ok();
    // The user replaces build/ with a symlink to a directory of their own.
    let victim = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(victim.path().join("dist")).unwrap();
    std::fs::write(victim.path().join("dist/keep.txt"), "keep").unwrap();
    std::fs::remove_dir_all(ws.path("a/build")).unwrap();
    std::os::unix::fs::symlink(victim.path(), ws.path("a/build")).unwrap();
    let out = ws.run(&["run", "//a:build"]);
    assert_ne!(out.code, 0, "{}", out.snapshot());
    assert!(
        out.stderr.contains("'a/build' is a symlink") && out.stderr.contains("rm a/build"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(victim.path().join("dist/keep.txt")).unwrap(),
        "keep"
    );
    assert!(!victim.path().join("dist/out.txt").exists());
    // With the symlink gone, the next run restores.
    std::fs::remove_file(ws.path("a/build")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    assert_eq!(ws.read("a/build/dist/out.txt"), "out\n");
}

#[test]
fn symlinks_leading_out_of_the_workspace_are_refused() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out/d && echo x > out/d/x\"\nouts = [\"out/\"]\n",
    )]);
    ws.run(&["run", "//a:build"]).assert_ok();
    // Each link alone stays inside; `a` goes through `b` to /etc/passwd.
    forge_tree(&ws, "//a:build", |_, entries| {
        entries.push(link_entry("a/out/d/b", "../../.."));
        entries.push(link_entry("a/out/d/a", "b/../../../etc/passwd"));
    });
    let out = ws.run(&["run", "//a:build"]);
    assert_refused(&out, "//a:build", "outside the workspace");
    assert!(std::fs::symlink_metadata(ws.path("a/out/d/a")).is_err());

    // A build whose outputs link out of the workspace fails, naming the
    // link, and caches nothing.
    for target in ["/etc/passwd", "../../../x"] {
        ws.write(
            "a/BUILD.toml",
            &format!("[target.build]\ncommand = \"mkdir -p out && ln -s {target} out/l\"\nouts = [\"out/\"]\n"),
        );
        let out = ws.run(&["run", "//a:build"]);
        out.assert_states(&["failed //a:build"]);
        assert!(
            out.stderr.contains("symlink \"a/out/l\" points to")
                && out.stderr.contains("outside the workspace"),
            "{}",
            out.stderr
        );
        let again = ws.run(&["run", "//a:build"]);
        assert_eq!(again.states(), ["failed //a:build"], "nothing cached");
        assert!(std::fs::symlink_metadata(ws.path("a/out/l")).is_err());
    }
    // Inside the workspace is fine.
    ws.write(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out && ln -s ../BUILD.toml out/l\"\nouts = [\"out/\"]\n",
    );
    ws.run(&["run", "//a:build"]).assert_ok();
    std::fs::remove_file(ws.path("a/out/l")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    assert_eq!(
        std::fs::read_link(ws.path("a/out/l")).unwrap(),
        Path::new("../BUILD.toml")
    );
}

#[test]
fn temp_files_of_a_killed_run_are_never_inputs_and_are_swept() {
    let ws = Ws::new(&[
        ("a/src.txt", "x\n"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"cp src.txt out.bin\"\nsrcs = [\"**\"]\nouts = [\"out.bin\"]\n",
        ),
    ]);
    ws.run(&["run", "//a:build"]).assert_ok();
    // What a restore killed mid-copy left beside the output: an older
    // vbuild's name (no pid) and one of a dead process.
    let left = ["a/.vbuild-tmp-Xy12Zq", "a/.vbuild-tmp-999999999-abc"];
    for p in left {
        ws.write(p, "partial");
    }
    let out = ws.run(&["run", "//a:build"]);
    out.assert_all("hit");
    assert!(!out.stderr.contains("added"), "{}", out.stderr);
    // The next restore into that directory removes them.
    std::fs::remove_file(ws.path("a/out.bin")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    for p in left {
        assert!(!ws.path(p).exists(), "{p} was not swept");
    }
    assert_eq!(ws.read("a/out.bin"), "x\n");
    // The store's tmp/: a dead run's temp file is swept when the store opens.
    let dead = ws.cache.join("tmp/.vbuild-tmp-999999999-blob");
    std::fs::write(&dead, "partial blob").unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    assert!(!dead.exists());
}

#[test]
fn a_restore_leaves_no_named_temp_file_in_the_workspace() {
    // The store is on the same filesystem as the workspace here: temp
    // files live in the store's tmp/ and are renamed into place.
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out && for i in $(seq 1 50); do head -c 100000 /dev/zero > out/f$i; done\"\nouts = [\"out/\"]\n",
    )]);
    ws.run(&["run", "//a:build"]).assert_ok();
    std::fs::remove_dir_all(ws.path("a/out")).unwrap();
    // Watch the directory while restoring: no temp name ever appears.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .current_dir(ws.root())
        .args(["run", "//a:build"])
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while child.try_wait().unwrap().is_none() {
        seen.extend(temp_files(ws.root()));
    }
    assert!(child.wait().unwrap().success());
    assert!(
        seen.is_empty(),
        "temp files seen in the workspace: {seen:?}"
    );
    assert_eq!(std::fs::read_dir(ws.path("a/out")).unwrap().count(), 50);
}

#[test]
fn concurrent_restores_of_one_workspace_all_succeed() {
    let ws = Ws::new(&[
        ("a/src.txt", "content\n"),
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p out/sub && for i in $(seq 1 150); do cp src.txt out/f$i; cp src.txt out/sub/g$i; done && ln -s f1 out/link\"\nsrcs = [\"src.txt\"]\nouts = [\"out/\"]\n",
        ),
    ]);
    ws.run(&["run", "//a:build"]).assert_ok();
    for round in 0..5 {
        std::fs::remove_dir_all(ws.path("a/out")).unwrap();
        let spawned: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_vbuild"))
                    .current_dir(ws.root())
                    .args(["run", "//a:build"])
                    .env("VBUILD_CACHE_DIR", &ws.cache)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in spawned {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}: {stderr}");
            assert!(stderr.contains("hit "), "round {round}: {stderr}");
        }
        for i in 1..=150 {
            assert_eq!(ws.read(&format!("a/out/f{i}")), "content\n");
            assert_eq!(ws.read(&format!("a/out/sub/g{i}")), "content\n");
        }
        assert_eq!(std::fs::read_dir(ws.path("a/out")).unwrap().count(), 152);
        assert!(temp_files(ws.root()).is_empty());
    }
}

#[test]
fn overlapping_outputs_are_a_load_error_naming_both_targets() {
    let ws = Ws::new(&[
        (
            "ui/BUILD.toml",
            r#"[target.types]
command = "mkdir -p dist && echo t > dist/index.d.ts"
outs = ["dist/"]

[target.theme]
command = "mkdir -p dist && echo c > dist/theme.css"
outs = ["dist/"]

[target.js]
command = "echo x > a.js"
outs = ["*.js"]

[target.dts]
command = "echo x > a.d.ts"
outs = ["*.d.ts", "a.js"]
"#,
        ),
        // A literal output inside a sub-package, which declares it too.
        (
            "app/BUILD.toml",
            "[target.build]\ncommand = \"true\"\nouts = [\"lib/dist/\"]\n",
        ),
        (
            "app/lib/BUILD.toml",
            "[target.build]\ncommand = \"true\"\nouts = [\"dist/x.js\"]\n",
        ),
    ]);
    let out = ws.run(&["run", "//...", "-j1"]);
    assert_eq!(out.code, 2, "{}", out.snapshot());
    insta::assert_snapshot!(out.snapshot());
    // Disjoint directories and globs of one package are fine.
    ws.write(
        "ui/BUILD.toml",
        r#"[target.types]
command = "mkdir -p dist/types && echo t > dist/types/index.d.ts"
outs = ["dist/types/"]

[target.theme]
command = "mkdir -p dist/theme && echo c > dist/theme/theme.css"
outs = ["dist/theme/"]

[target.js]
command = "echo x > a.js"
outs = ["*.js"]

[target.dts]
command = "echo x > a.d.ts"
outs = ["*.d.ts"]
"#,
    );
    ws.write(
        "app/BUILD.toml",
        "[target.build]\ncommand = \"echo a > a.txt\"\nouts = [\"a.txt\"]\n",
    );
    ws.write("app/lib/BUILD.toml", "[target.build]\ncommand = \"mkdir -p dist && echo x > dist/x.js\"\nouts = [\"dist/x.js\"]\n");
    ws.run(&["run", "//...", "-j1"]).assert_ok();
}

#[test]
fn a_restore_never_deletes_a_sub_packages_files() {
    // //a's output directory holds the package //a/out/sub.
    let ws = Ws::new(&[
        (
            "a/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p out && echo a > out/a.txt\"\nouts = [\"out/\"]\n",
        ),
        (
            "a/out/sub/BUILD.toml",
            "[target.build]\ncommand = \"echo g > gen.txt\"\nouts = [\"gen.txt\"]\n",
        ),
        ("a/out/sub/src.txt", "source of //a/out/sub\n"),
    ]);
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    std::fs::remove_file(ws.path("a/out/a.txt")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    assert_eq!(ws.read("a/out/a.txt"), "a\n");
    for kept in [
        "a/out/sub/BUILD.toml",
        "a/out/sub/src.txt",
        "a/out/sub/gen.txt",
    ] {
        assert!(ws.path(kept).exists(), "{kept} was deleted");
    }
}

/// Runs vbuild, failing the test (instead of hanging it) after `secs`.
fn run_bounded(ws: &Ws, args: &[&str], secs: u64) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vbuild"))
        .current_dir(ws.root())
        .args(args)
        .env("VBUILD_CACHE_DIR", &ws.cache)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vbuild {args:?} hung for {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_output_is_an_error_naming_it_never_a_hang() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out && echo x > out/a && mkfifo out/p\"\nouts = [\"out/\"]\n",
    )]);
    let out = run_bounded(&ws, &["run", "//a:build"], 30);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("output 'a/out/p' is a FIFO (named pipe)"),
        "{stderr}"
    );
    // A FIFO the target does not declare is not its business.
    ws.write(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out && echo x > out/a && mkfifo p\"\nouts = [\"out/\"]\n",
    );
    let out = run_bounded(&ws, &["run", "//a:build"], 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A restore of deleted outputs costs what it must and no more: one mkdir
/// per missing directory (none failing), each file created unnamed in its
/// directory and linked to its name once (no temp file renamed into place,
/// no chmod after the fact), each symlink made in one call; what it writes
/// is exact (bytes, executable bit, link target). Checked with strace.
#[test]
fn a_restore_makes_each_missing_directory_once_and_names_each_file_once() {
    let build = "[target.build]\ncommand = \"mkdir -p out/sub && echo one > out/a.txt && echo two > out/sub/b.txt && printf '#!/bin/sh\\\\n' > out/run.sh && chmod +x out/run.sh && ln -s a.txt out/link\"\nouts = [\"out/\"]\n";
    let ws = Ws::new(&[
        ("p/a/BUILD.toml", build),
        ("p/b/BUILD.toml", build),
        ("p/c/BUILD.toml", build),
    ]);
    ws.run(&["run", "//..."]).assert_ok();
    for p in ["a", "b", "c"] {
        std::fs::remove_dir_all(ws.path(&format!("p/{p}/out"))).unwrap();
    }
    // Stat-cache rows of the outputs (paths are stored as bytes).
    let output_rows = || -> i64 {
        rusqlite::Connection::open(ws.cache.join("cache.db"))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM stat_cache WHERE instr(CAST(path AS TEXT), '/out/') > 0",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let Some(trace) = ws.run_traced(
        "mkdir,mkdirat,rename,renameat,renameat2,fchmod,chmod,linkat,symlink,symlinkat",
        &["run", "//..."],
    ) else {
        return;
    };
    // Paths outside the workspace (the store's directories, the scratch
    // location) are not the restore's; its own calls name paths relative
    // to a directory fd.
    let root = ws.root().to_str().unwrap();
    let calls = |names: &[&str]| -> Vec<&str> {
        trace
            .lines()
            .filter(|l| !l.contains("(\"/") || l.contains(root))
            .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}("))))
            .collect()
    };
    let mkdirs = calls(&["mkdir", "mkdirat"]);
    assert_eq!(
        mkdirs.len(),
        6,
        "out and out/sub of 3 packages:\n{}",
        mkdirs.join("\n")
    );
    assert!(
        mkdirs.iter().all(|l| l.ends_with("= 0")),
        "{}",
        mkdirs.join("\n")
    );
    let moved = calls(&["rename", "renameat", "renameat2", "fchmod", "chmod"]);
    assert!(moved.is_empty(), "{}", moved.join("\n"));
    assert_eq!(calls(&["linkat"]).len(), 9, "{trace}");
    assert_eq!(calls(&["symlink", "symlinkat"]).len(), 3, "{trace}");
    // What it wrote is not recorded in the stat cache: within the racy
    // margin of its mtime an entry is never trusted, so a row would only
    // cost a database write.
    assert_eq!(output_rows(), 0);
    for p in ["a", "b", "c"] {
        assert_eq!(ws.read(&format!("p/{p}/out/a.txt")), "one\n");
        assert_eq!(ws.read(&format!("p/{p}/out/sub/b.txt")), "two\n");
        let run = ws.path(&format!("p/{p}/out/run.sh"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let link = std::fs::read_link(ws.path(&format!("p/{p}/out/link"))).unwrap();
        assert_eq!(link, Path::new("a.txt"));
    }
    // The next run hashes what was written once, and records it.
    ws.run(&["run", "//..."]).assert_all("hit");
    assert_eq!(ws.read("p/a/out/a.txt"), "one\n");
    assert!(output_rows() > 0);
}

/// What a `dir/` output holds beyond its tree is removed at any depth
/// (files and symlinks, never what a symlink points to), and the tree's
/// own entries stay.
#[test]
fn stale_entries_at_any_depth_of_a_dir_output_are_removed() {
    let ws = Ws::new(&[(
        "a/BUILD.toml",
        "[target.build]\ncommand = \"mkdir -p out/sub && echo one > out/sub/a.txt\"\nouts = [\"out/\"]\n",
    )]);
    ws.run(&["run", "//a:build"]).assert_ok();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep.txt"), "not ours").unwrap();
    ws.write("a/out/old.txt", "stale");
    ws.write("a/out/sub/old.txt", "stale");
    ws.write("a/out/deep/er/x.txt", "stale");
    std::os::unix::fs::symlink(outside.path(), ws.path("a/out/sub/link")).unwrap();
    ws.run(&["run", "//a:build"]).assert_all("hit");
    for gone in [
        "a/out/old.txt",
        "a/out/sub/old.txt",
        "a/out/deep/er/x.txt",
        "a/out/sub/link",
    ] {
        assert!(
            std::fs::symlink_metadata(ws.path(gone)).is_err(),
            "{gone} is still there"
        );
    }
    assert_eq!(ws.read("a/out/sub/a.txt"), "one\n");
    assert!(outside.path().join("keep.txt").exists());
}
