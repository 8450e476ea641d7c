//! End-to-end: what an action can and cannot do in each sandbox mode.
mod common;
use common::*;

const MODES: [&str; 2] = ["namespaces", "scratch"];

fn namespaces_available() -> bool {
    vbuild_sandbox::probe_namespaces().is_ok()
}

/// Runs `//p:build` with `--sandbox MODE`.
fn run_mode(ws: &Ws, mode: &str) -> Out {
    ws.run(&["run", "//p:build", "--sandbox", mode])
}

fn target(command: &str, extra: &str) -> Ws {
    let build =
        format!("[target.build]\ncommand = '''\n{command}\n'''\nsrcs = [\"data.txt\"]\n{extra}");
    Ws::new(&[
        ("p/BUILD.toml", &build),
        ("p/data.txt", "data"),
        ("p/undeclared.txt", "secret"),
    ])
}

#[test]
fn undeclared_file_is_not_found_in_both_modes() {
    for mode in MODES {
        let ws = target("cat data.txt undeclared.txt", "");
        let out = run_mode(&ws, mode);
        assert_eq!(out.code, 1, "{mode}: {}", out.snapshot());
        assert!(
            out.stderr
                .contains("undeclared.txt: No such file or directory"),
            "{mode}: {}",
            out.stderr
        );
    }
}

#[test]
fn writes_outside_declared_outputs_never_reach_the_workspace() {
    for mode in MODES {
        let ws = target(
            "echo evil > stray.txt; echo evil > ../stray.txt; echo ok > out.txt",
            "outs = [\"out.txt\"]",
        );
        run_mode(&ws, mode).assert_ok();
        assert!(
            !ws.path("p/stray.txt").exists() && !ws.path("stray.txt").exists(),
            "{mode}"
        );
        assert_eq!(ws.read("p/out.txt"), "ok\n");
    }
}

#[test]
fn the_real_workspace_and_store_are_invisible_in_namespaces() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let ws = target(
        "ls \"$WS\" \"$STORE\" > out.txt 2>&1; echo evil > \"$WS/p/data.txt\" 2>/dev/null; true",
        "outs = [\"out.txt\"]\nenv = { WS = \"@WS@\", STORE = \"@STORE@\" }",
    );
    let build = ws
        .read("p/BUILD.toml")
        .replace("@WS@", ws.root().to_str().unwrap())
        .replace("@STORE@", ws.cache.to_str().unwrap());
    ws.write("p/BUILD.toml", &build);
    run_mode(&ws, "namespaces").assert_ok();
    assert!(
        ws.read("p/out.txt").contains("No such file or directory"),
        "{}",
        ws.read("p/out.txt")
    );
    assert_eq!(ws.read("p/data.txt"), "data");
}

#[test]
fn inputs_cannot_be_modified() {
    for mode in MODES {
        let ws = target(
            // Under a root caller the sandbox user does not own the staged
            // files (docs/sandbox.md): no chmod, but replacing is the same edit.
            "echo evil > data.txt 2>/dev/null || echo read-only > out.txt; \
             { chmod u+w data.txt 2>/dev/null || { cat data.txt > $TMPDIR/c && rm -f data.txt && cat $TMPDIR/c > data.txt; }; } \
             && echo evil > data.txt; cat data.txt >> out.txt",
            "outs = [\"out.txt\"]",
        );
        let out = run_mode(&ws, mode);
        out.assert_ok();
        // A changed input is the action's own view, discarded and named.
        assert!(
            out.stderr.contains(
                "warning: //p:build: discarded 1 write outside the declared outputs: p/data.txt (modified)"
            ),
            "{mode}: {}",
            out.stderr
        );
        assert_eq!(
            ws.read("p/data.txt"),
            "data",
            "{mode}: workspace copy unchanged"
        );
        // Sources are hashed, not stored: staged from the workspace, so no
        // blob exists that the action could have written through.
        assert!(
            !ws.blob_path(b"data").exists(),
            "{mode}: the source was never stored"
        );
        if mode == "namespaces" {
            assert_eq!(
                ws.read("p/out.txt"),
                "read-only\nevil\n",
                "inputs are read-only by mode; their owner may chmod its own view"
            );
        }
    }
}

#[test]
fn no_network_in_namespaces() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)\""
    );
    let ws = target(&connect, "");
    let out = run_mode(&ws, "namespaces");
    assert_eq!(out.code, 1, "connecting out must fail: {}", out.snapshot());
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
    assert!(
        listener.accept().is_err(),
        "the host listener saw a connection"
    );
    // `network = true` opens it (and is part of the key).
    let ws = target(&connect, "network = true");
    run_mode(&ws, "namespaces").assert_ok();
}

#[test]
fn background_processes_are_killed() {
    for (i, mode) in MODES.iter().enumerate() {
        let marker = format!("3{i}.1415926");
        let ws = target(&format!("sleep {marker} &\necho started"), "");
        let out = run_mode(&ws, mode);
        out.assert_ok();
        assert_eq!(out.stdout, "started\n");
        let alive = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        assert!(
            alive.stdout.is_empty(),
            "{mode}: leftover process {}",
            String::from_utf8_lossy(&alive.stdout)
        );
    }
}

#[test]
fn timeout_kills_the_whole_tree() {
    for mode in MODES {
        let ws = target("sleep 29.5 & sleep 29.6", "timeout = \"300ms\"");
        let start = std::time::Instant::now();
        let out = run_mode(&ws, mode);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("timed out after 300ms"),
            "{mode}: {}",
            out.stderr
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn pwd_is_the_same_wherever_the_checkout_lives() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let a = target(
        "echo \"$PWD $HOME $TMPDIR\" > out.txt",
        "outs = [\"out.txt\"]",
    );
    let b = target(
        "echo \"$PWD $HOME $TMPDIR\" > out.txt",
        "outs = [\"out.txt\"]",
    );
    assert_ne!(a.root(), b.root());
    run_mode(&a, "namespaces").assert_ok();
    run_mode(&b, "namespaces").assert_ok();
    assert_eq!(
        a.read("p/out.txt"),
        "/vbuild/ws/p /vbuild/home /vbuild/tmp\n"
    );
    assert_eq!(
        std::fs::read(a.path("p/out.txt")).unwrap(),
        std::fs::read(b.path("p/out.txt")).unwrap()
    );
    // Same keys: b's checkout hits the entry a stored.
    let b_with_a_store = run_with(
        b.root(),
        &a.cache,
        &["run", "//p:build", "--sandbox", "namespaces"],
        &[],
    );
    b_with_a_store.assert_states(&["hit //p:build"]);
}

#[test]
fn strict_runs_when_namespaces_work() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    let ws = target("echo hi", "");
    run_mode(&ws, "strict").assert_ok();
}

#[test]
fn sandbox_none_runs_in_the_workspace_and_is_never_cached() {
    let ws = target("echo direct > direct.txt", "outs = [\"direct.txt\"]");
    run_mode(&ws, "none").assert_ok();
    assert_eq!(ws.read("p/direct.txt"), "direct\n");
    let again = run_mode(&ws, "none");
    assert!(
        again
            .stderr
            .contains("uncached  //p:build  (sandbox = \"none\" is never cached)"),
        "{}",
        again.stderr
    );
}

/// The same end-to-end run as an unprivileged user (CI runs as root).
#[test]
fn works_as_an_unprivileged_user() {
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root (to drop to nobody) and setpriv");
        return;
    }
    let ws = target(
        "cat data.txt > out.txt; id -u >> out.txt",
        "outs = [\"out.txt\"]",
    );
    // Hand the workspace and a fresh store to nobody.
    let store = tempfile::tempdir().unwrap();
    for dir in [ws.root(), store.path()] {
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .status()
            .unwrap();
    }
    let mode = if namespaces_available() {
        "namespaces"
    } else {
        "scratch"
    };
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vbuild"))
        .args(["run", "//p:build", "--sandbox", mode])
        .current_dir(ws.root())
        .env("VBUILD_CACHE_DIR", store.path())
        .env("HOME", store.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_uid = if mode == "namespaces" {
        "1000"
    } else {
        "65534"
    };
    assert_eq!(ws.read("p/out.txt"), format!("data{expected_uid}\n"));
}

/// Inputs are staged as hard links to their blobs in the namespace
/// sandbox, where every staged directory is writable through the overlay:
/// a chmod and a write must copy the file up, never change the blob.
#[test]
fn inputs_under_writable_outputs_never_alias_the_store() {
    if !namespaces_available() {
        eprintln!("skipped: namespaces unavailable");
        return;
    }
    // A glob output makes the whole package directory an output location.
    let ws = target(
        // As in inputs_cannot_be_modified: a root caller's action replaces.
        "stat -c %h data.txt > links.out; \
         { chmod u+w data.txt 2>/dev/null || { cat data.txt > $TMPDIR/c && rm -f data.txt && cat $TMPDIR/c > data.txt; }; } \
         && echo evil > data.txt; cat data.txt > x.out",
        "outs = [\"*.out\"]",
    );
    // Scratch on the store's filesystem: inputs are hard links to blobs
    // (by default scratch is on a tmpfs where there is one: copies).
    let in_store = ws.cache.join("scratch");
    ws.run_env(
        &["run", "//p:build", "--sandbox", "namespaces"],
        &[("VBUILD_SCRATCH_DIR", in_store.to_str().unwrap())],
    )
    .assert_ok();
    assert_ne!(
        ws.read("p/links.out"),
        "1\n",
        "the input was staged as a hard link to its blob"
    );
    let blob = ws.blob_path(b"data");
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        b"data",
        "the stored blob must not change"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&blob).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "nor its mode");
    assert_eq!(ws.read("p/data.txt"), "data");
    assert_eq!(
        ws.read("p/x.out"),
        "evil\n",
        "the action changed its own scratch copy only"
    );
}
