//! End-to-end: narrowing that is never wrong, workspaces scoped by their
//! root, corrupt cache rows and databases, `vbuild store verify`.
mod common;
use common::*;

fn states(out: &Out) -> Vec<String> {
    out.states()
}

/// `//lib:build` writes lib/out/msg.txt from its source; `//app:build`
/// depends on it and runs `script` (which reads `src/a.txt`, `src/b.txt`
/// and lib's output), reporting or declaring what `script` says.
fn lib_and_app(script: &str) -> Ws {
    Ws::new(&[
        ("lib/src/msg.txt", "lib one\n"),
        (
            "lib/BUILD.toml",
            "[target.build]\ncommand = \"mkdir -p out && cp src/msg.txt out/msg.txt\"\nsrcs = [\"src/**\"]\nouts = [\"out/\"]\n",
        ),
        ("app/src/a.txt", "a one\n"),
        ("app/src/b.txt", "b one\n"),
        (
            "app/BUILD.toml",
            &format!(
                "[target.build]\ncommand = \"\"\"\n{script}\ncat src/a.txt src/b.txt ../lib/out/msg.txt > result.txt\n\"\"\"\nsrcs = [\"src/**\"]\ndeps = [\"//lib:build\"]\nouts = [\"result.txt\"]\n"
            ),
        ),
    ])
}

/// A tool that reports only `src/a.txt` although it also reads `src/b.txt`
/// and its dependency's output: the dependency output still counts by
/// content, so changing it re-runs the tool (issue 10 item 4).
#[test]
fn an_under_reporting_tool_cannot_drop_dependency_outputs() {
    let ws = lib_and_app("vbuild tool report-used-inputs src/a.txt");
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    ws.write("lib/src/msg.txt", "lib two\n");
    let out = ws.run(&["run", "//...", "-j1"]);
    out.assert_ok();
    assert_eq!(
        states(&out),
        ["miss //lib:build", "miss //app:build"],
        "{}",
        out.stderr
    );
    assert_eq!(ws.read("app/result.txt"), "a one\nb one\nlib two\n");
    // Its own unreported source still narrows: that is what a report is for.
    ws.write("app/src/b.txt", "b two\n");
    let out = ws.run(&["run", "//app:build"]);
    assert_eq!(
        states(&out),
        ["hit //lib:build", "hit //app:build"],
        "{}",
        out.stderr
    );
}

/// Reports that cannot be trusted change nothing: an empty report, one
/// whose every path was refused, one with any refused path, and an
/// `ignore-input` of the whole workspace or package.
#[test]
fn untrustworthy_declarations_narrow_nothing() {
    for script in [
        "vbuild tool report-used-inputs",
        "vbuild tool report-used-inputs /etc/hostname || true",
        "vbuild tool report-used-inputs src/a.txt /etc/hostname || true",
        "vbuild tool ignore-input ..",
        "vbuild tool ignore-input .",
    ] {
        let ws = lib_and_app(script);
        ws.run(&["run", "//...", "-j1"]).assert_ok();
        ws.write("app/src/b.txt", "b two\n");
        let out = ws.run(&["run", "//app:build"]);
        out.assert_ok();
        assert_eq!(
            states(&out),
            ["hit //lib:build", "miss //app:build"],
            "{script}:\n{}",
            out.stderr
        );
        assert_eq!(
            ws.read("app/result.txt"),
            "a one\nb two\nlib one\n",
            "{script}"
        );
    }
}

/// A shared config package (a file group) and a workspace input read by a
/// tool that reports only its own sources: they are outside the tool's
/// view and count.
#[test]
fn files_from_a_file_group_always_count() {
    let ws = Ws::new(&[
        ("tsconfig.base.json", "{\"strict\": false}\n"),
        ("config/vite.shared.js", "export const minify = false;\n"),
        (
            "config/BUILD.toml",
            "[target.config]\nsrcs = [\"vite.shared.js\"]\n",
        ),
        ("app/src/a.txt", "a\n"),
        (
            "app/BUILD.toml",
            "[target.build]\ncommand = \"vbuild tool report-used-inputs src/a.txt && cat src/a.txt ../config/vite.shared.js ../tsconfig.base.json > result.txt\"\nsrcs = [\"src/**\"]\ndeps = [\"//config:config\"]\nouts = [\"result.txt\"]\n",
        ),
    ]);
    ws.write(
        "vbuild.toml",
        "[workspace]\nname = \"test\"\nsandbox = \"scratch\"\ninputs = [\"tsconfig.base.json\"]\n",
    );
    ws.run(&["run", "//app:build"]).assert_ok();
    ws.write("config/vite.shared.js", "export const minify = true;\n");
    let out = ws.run(&["run", "//app:build"]);
    out.assert_ok();
    assert_eq!(states(&out), ["miss //app:build"], "{}", out.stderr);
    assert!(ws.read("app/result.txt").contains("minify = true"));
    ws.write("tsconfig.base.json", "{\"strict\": true}\n");
    let out = ws.run(&["run", "//app:build"]);
    assert_eq!(states(&out), ["miss //app:build"], "{}", out.stderr);
    assert!(ws.read("app/result.txt").contains("\"strict\": true"));
}

fn same_name_ws(command: &str) -> Ws {
    let ws = Ws::new(&[(
        "p/BUILD.toml",
        &format!("[target.build]\ncommand = \"{command}\"\nouts = [\"out.txt\"]\n"),
    )]);
    ws.write(
        "vbuild.toml",
        "[workspace]\nname = \"my-project\"\nsandbox = \"scratch\"\n",
    );
    ws
}

/// Two unrelated repos named alike share a store: neither's miss reasons
/// nor `vbuild clean` touch the other; a copy of one elsewhere still hits
/// (issue 10 item 9).
#[test]
fn workspaces_with_the_same_name_do_not_interfere() {
    let one = same_name_ws("echo one > out.txt");
    let two = same_name_ws("echo two > out.txt");
    let run = |ws: &Ws, args: &[&str]| run_with(ws.root(), &one.cache, args, &[]);
    run(&one, &["run", "//p:build"]).assert_ok();
    let out = run(&two, &["run", "//p:build"]);
    out.assert_ok();
    out.assert_states(&["miss //p:build"]);
    assert!(out.stderr.contains("(no previous entry)"), "{}", out.stderr);
    // A copy of `one` at another path hits, and shares the entry.
    let copy = tempfile::tempdir().unwrap();
    common::checkout::copy_tree(one.root(), copy.path());
    let out = run_with(copy.path(), &one.cache, &["run", "//p:build"], &[]);
    out.assert_states(&["hit //p:build"]);
    // Cleaning `two` leaves `one` alone.
    let out = run(&two, &["clean"]);
    out.assert_ok();
    assert_eq!(
        out.stdout,
        "removed 1 cache entries of workspace 'my-project'\n"
    );
    let out = run(&one, &["run", "//p:build"]);
    out.assert_states(&["hit //p:build"]);
    let out = run(&two, &["run", "//p:build"]);
    out.assert_states(&["miss //p:build"]);
}

fn db(ws: &Ws) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.cache.join("cache.db")).unwrap()
}

/// A corrupt row (bad JSON, a non-hex digest) is reported, dropped and the
/// action runs again, like a corrupt blob (issue 11 hole 8).
#[test]
fn a_corrupt_action_cache_row_is_dropped_and_the_action_reruns() {
    for (what, sql) in [
        ("bad json", "UPDATE entries SET result = '{not json'"),
        (
            "non-hex digest",
            "UPDATE entries SET result = json_set(result, '$.stdout', 'zz')",
        ),
        ("bad record", "UPDATE records SET record = '[1,'"),
    ] {
        let ws = three_packages();
        ws.run(&["run", "//lib:build"]).assert_ok();
        db(&ws).execute(sql, []).unwrap();
        let out = ws.run(&["run", "//lib:build"]);
        out.assert_ok();
        assert_eq!(
            states(&out),
            ["miss //lib:build"],
            "{what}:\n{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("warning: //lib:build: dropped a corrupt action-cache"),
            "{what}:\n{}",
            out.stderr
        );
        assert_eq!(ws.read("lib/out/msg.txt"), "HELLO\n");
        let out = ws.run(&["run", "//lib:build"]);
        assert_eq!(states(&out), ["hit //lib:build"], "{what}:\n{}", out.stderr);
    }
}

/// A cache.db that is not a database: one message naming the file and
/// what to do.
#[test]
fn a_damaged_cache_db_names_the_file_and_the_fix() {
    let ws = three_packages();
    ws.run(&["run", "//lib:build"]).assert_ok();
    let path = ws.cache.join("cache.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(ws.cache.join(format!("cache.db{suffix}")));
    }
    std::fs::write(&path, vec![b'#'; 16384]).unwrap();
    let out = ws.run(&["run", "//lib:build"]);
    assert_eq!(out.code, 2, "{}", out.snapshot());
    let shown = out
        .stderr
        .replace(&ws.cache.display().to_string(), "[store]");
    insta::assert_snapshot!("damaged_cache_db", shown);
}

/// `vbuild store verify` finds a corrupt blob, a missing blob and a
/// corrupt row; `--repair` drops what is unusable; then all is well and
/// the next build restores correct outputs (issue 11 hole 9).
#[test]
fn store_verify_finds_and_repairs() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    let verify = |repair: bool| {
        let mut args = vec!["store", "verify"];
        if repair {
            args.push("--repair");
        }
        ws.run(&args)
    };
    let clean = verify(false);
    assert_eq!(clean.code, 0, "{}", clean.snapshot());
    assert!(clean.stdout.contains(": 0 problems"), "{}", clean.stdout);

    let blob = |bytes: &[u8]| {
        let hex = blake3::hash(bytes).to_hex().to_string();
        ws.cache.join("cas").join(&hex[..1]).join(&hex[1..])
    };
    // lib's output (app's result.txt has the same bytes), corrupted in
    // place; app's run.sh, deleted.
    let msg = blob(b"HELLO\n");
    std::fs::set_permissions(&msg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&msg, b"HELLO?").unwrap();
    std::fs::remove_file(blob(b"#!/bin/sh\necho hi\n")).unwrap();
    db(&ws)
        .execute(
            "UPDATE entries SET result = 'garbage' WHERE label = '//other:build'",
            [],
        )
        .unwrap();

    let found = verify(false);
    assert_eq!(found.code, 1, "{}", found.snapshot());
    let problems: Vec<&str> = found
        .stdout
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    assert_eq!(problems.len(), 4, "{}", found.stdout);
    let digests = regex::Regex::new(r"\b[0-9a-f]{12}\b").unwrap();
    insta::assert_snapshot!(
        "store_verify_problems",
        digests.replace_all(&redact(&found.stdout), "[digest]")
    );
    for needle in [
        "its bytes do not match its name",
        "(//lib:build): output \"lib/out/msg.txt\"",
        "(//app:build): output \"app/",
        "(//other:build): corrupt record in action cache",
    ] {
        assert!(found.stdout.contains(needle), "{needle}:\n{}", found.stdout);
    }
    // Nothing was changed without --repair.
    assert!(msg.exists());

    let repaired = verify(true);
    assert_eq!(repaired.code, 1, "{}", repaired.snapshot());
    assert!(
        repaired.stdout.contains("4 repaired"),
        "{}",
        repaired.stdout
    );
    let after = verify(false);
    assert_eq!(after.code, 0, "{}", after.snapshot());

    let out = ws.run(&["run", "//...", "-j1"]);
    out.assert_ok();
    assert_eq!(
        states(&out),
        ["miss //lib:build", "miss //app:build", "miss //other:build"],
        "{}",
        out.stderr
    );
    assert_eq!(ws.read("lib/out/msg.txt"), "HELLO\n");
    assert_eq!(verify(false).code, 0);
}

/// An entry's output tree and a last run's key description are rows, not
/// blobs (schema v7), each with its digest: `vbuild store verify` checks
/// them against it as it checks a blob against its name. `--repair` drops
/// the entry with the bad tree (a hit never restores from a tree that does
/// not match its digest: the build runs the action again) and the last-run
/// pointer with the bad description (`why` has no reason to give then).
#[test]
fn store_verify_checks_the_tree_and_key_description_in_a_row() {
    let ws = three_packages();
    ws.run(&["run", "//...", "-j1"]).assert_ok();
    let conn = db(&ws);
    // lib's tree: its one entry renamed (still a valid tree, another digest).
    let n = conn
        .execute(
            "UPDATE entries SET tree = CAST(replace(CAST(tree AS TEXT), 'msg.txt', 'msh.txt') AS BLOB)
             WHERE label = '//lib:build'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    // app's key description: another one (`{}`, stored as is).
    let n = conn
        .execute(
            "UPDATE last_run SET explain_doc = x'007b7d' WHERE label = '//app:build'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    let found = ws.run(&["store", "verify"]);
    assert_eq!(found.code, 1, "{}", found.snapshot());
    let digests = regex::Regex::new(r"\b[0-9a-f]{12}\b").unwrap();
    insta::assert_snapshot!(
        "store_verify_rows",
        digests.replace_all(&redact(&found.stdout), "[digest]")
    );
    // A hit on lib would restore from the forged tree: it runs instead.
    let out = ws.run(&["run", "//lib:build"]);
    out.assert_ok();
    assert_eq!(states(&out), ["miss //lib:build"], "{}", out.stderr);
    assert!(
        out.stderr.contains("dropped a corrupt action-cache entry"),
        "{}",
        out.stderr
    );
    assert_eq!(ws.read("lib/out/msg.txt"), "HELLO\n");
    assert!(!ws.path("lib/out/msh.txt").exists());
    let repaired = ws.run(&["store", "verify", "--repair"]);
    assert!(
        repaired.stdout.contains("1 repaired"),
        "{}",
        repaired.stdout
    );
    assert_eq!(ws.run(&["store", "verify"]).code, 0);
    let out = ws.run(&["run", "//...", "-j1"]);
    out.assert_ok();
    assert_eq!(
        states(&out),
        ["hit //lib:build", "hit //app:build", "hit //other:build"],
        "{}",
        out.stderr
    );
}
