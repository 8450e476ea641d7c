//! Behaviour both sandboxed modes share (scratch and namespaces), plus the
//! unsandboxed `run_direct`.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{fixture, modes, pid_alive};
use vbuild_sandbox::{run_direct, ExitKind, SandboxError, SandboxMode};

#[test]
fn exit_codes_signals_and_output_streams() {
    for mode in modes("exit_codes_signals_and_output_streams") {
        let f = fixture();
        let r = f.run_sh(mode, "echo out; echo err >&2; exit 3");
        assert_eq!(r.outcome.status, ExitKind::Exited(3), "{mode:?}");
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        let r = f.run_sh(mode, "kill -9 $$");
        assert_eq!(r.outcome.status, ExitKind::Signaled(9), "{mode:?}");
    }
}

#[test]
fn merged_stdout_and_stderr() {
    for mode in modes("merged_stdout_and_stderr") {
        let f = fixture();
        let mut spec = f.sh(mode, "echo a; echo b >&2; echo c");
        spec.stderr = spec.stdout.clone();
        let r = f.run(mode, &spec).expect("run");
        assert_eq!(r.stdout, "a\nb\nc\n", "{mode:?}");
    }
}

#[test]
fn command_not_found_is_a_spawn_error() {
    for mode in modes("command_not_found_is_a_spawn_error") {
        let f = fixture();
        let spec = f.spec(mode, &["no-such-tool-vbuild"]);
        match f.run(mode, &spec) {
            Err(SandboxError::Spawn(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{mode:?}: {e}");
                assert!(e.to_string().contains("no-such-tool-vbuild"), "{e}");
            }
            other => panic!("{mode:?}: expected a spawn error, got {other:?}"),
        }
    }
}

/// Stages `rel` with `mode` bits (an executable script or a plain file).
fn stage_mode(f: &common::Fixture, rel: &str, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    f.stage(rel, contents);
    let p = f.scratch.host_ws().join(rel);
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn exec_failures_are_spawn_errors_with_their_kind() {
    // The action is started like posix_spawn (it shares the supervisor's
    // memory until execve): a failed execve must still be reported through
    // the status pipe, and the supervisor must go on normally after it.
    for mode in modes("exec_failures_are_spawn_errors_with_their_kind") {
        let f = fixture();
        stage_mode(&f, "plain/tool", "#!/bin/sh\necho plain\n", 0o644);
        stage_mode(&f, "exec/tool", "#!/bin/sh\necho exec\n", 0o755);
        let ws = f.scratch.layout(mode).ws;
        let path_of = |dirs: &[&str]| {
            let dirs: Vec<String> = dirs
                .iter()
                .map(|d| format!("{}/{d}", ws.display()))
                .collect();
            dirs.join(":")
        };
        let expect_spawn =
            |spec: &vbuild_sandbox::RunSpec, kind, what: &str| match f.run(mode, spec) {
                Err(SandboxError::Spawn(e)) => {
                    assert_eq!(e.kind(), kind, "{mode:?} {what}: {e}");
                    assert!(e.to_string().contains("cannot run"), "{what}: {e}");
                }
                other => panic!("{mode:?} {what}: expected a spawn error, got {other:?}"),
            };
        // A path to a file without execute permission.
        let plain = format!("{}/plain/tool", ws.display());
        let spec = f.spec(mode, &[&plain]);
        expect_spawn(&spec, std::io::ErrorKind::PermissionDenied, "path");
        // PATH search: only a non-executable candidate is EACCES (execvpe's
        // rule), even when a later directory does not exist.
        let mut spec = f.spec(mode, &["tool"]);
        spec.env[0].1 = path_of(&["plain", "missing"]).into();
        expect_spawn(&spec, std::io::ErrorKind::PermissionDenied, "PATH");
        // Nowhere on PATH: not found.
        spec.env[0].1 = path_of(&["missing"]).into();
        expect_spawn(&spec, std::io::ErrorKind::NotFound, "nowhere");
        // A non-executable candidate before an executable one: the search
        // goes on and runs the later one.
        spec.env[0].1 = path_of(&["plain", "exec"]).into();
        let r = f.run(mode, &spec).expect("run");
        assert_eq!(r.outcome.status, ExitKind::Exited(0), "{mode:?}: {r:?}");
        assert_eq!(r.stdout, "exec\n", "{mode:?}");
    }
}

#[test]
fn action_is_its_own_session_with_the_fixed_umask() {
    for mode in modes("action_is_its_own_session_with_the_fixed_umask") {
        let f = fixture();
        // Fields 6 (session) of /proc/self/stat after the comm; $$ is the
        // shell, which is the action itself (exec'd by the supervisor).
        let r = f.run_sh(
            mode,
            "umask; s=$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f4); [ \"$s\" = $$ ] && echo leader",
        );
        assert_eq!(r.stdout, "0022\nleader\n", "{mode:?}: {r:?}");
    }
}

static USR1_HANDLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1_HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn the_callers_signal_handlers_never_run_in_the_supervisor() {
    // The supervisor shares the caller's memory (CLONE_VM): a handler of the
    // caller running in it would run the caller's code on the caller's data.
    // It resets them all, so the signal takes its default action there.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr1 as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut());
    }
    let f = fixture();
    // In scratch mode the action's parent is the supervisor.
    let t = Instant::now();
    let r = f.run_sh(SandboxMode::Scratch, "kill -USR1 $PPID; sleep 5");
    assert_eq!(
        USR1_HANDLED.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the caller's handler ran"
    );
    assert_eq!(r.outcome.status, ExitKind::Signaled(libc::SIGUSR1), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn environment_is_exactly_the_given_one() {
    for mode in modes("environment_is_exactly_the_given_one") {
        let f = fixture();
        let mut spec = f.spec(mode, &["env"]);
        spec.env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("ONLY".into(), "this".into()),
        ];
        let r = f.run(mode, &spec).expect("run");
        assert_eq!(r.stdout, "PATH=/usr/bin:/bin\nONLY=this\n", "{mode:?}");
    }
}

#[test]
fn signals_start_with_default_dispositions() {
    // Rust ignores SIGPIPE in the parent; an ignored disposition would leak
    // through execve into every action.
    for mode in modes("signals_start_with_default_dispositions") {
        let f = fixture();
        let r = f.run_sh(mode, "grep -E '^Sig(Ign|Blk)' /proc/self/status");
        assert_eq!(
            r.stdout, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "{mode:?}"
        );
    }
}

#[test]
fn cwd_is_relative_to_the_workspace() {
    for mode in modes("cwd_is_relative_to_the_workspace") {
        let f = fixture();
        f.stage("packages/ui/build.js", "x");
        let mut spec = f.sh(mode, "ls; pwd");
        spec.cwd = "packages/ui".into();
        let r = f.run(mode, &spec).expect("run");
        let ws = f.scratch.layout(mode).ws;
        assert_eq!(
            r.stdout,
            format!("build.js\n{}\n", ws.join("packages/ui").display())
        );
    }
}

#[test]
fn undeclared_workspace_file_is_not_found() {
    for mode in modes("undeclared_workspace_file_is_not_found") {
        // A fake "real workspace" with two files; only one is staged.
        let real = tempfile::tempdir().expect("tempdir");
        fs::write(real.path().join("declared.txt"), "declared").expect("write");
        fs::write(real.path().join("secret.txt"), "secret").expect("write");
        let f = fixture();
        fs::copy(
            real.path().join("declared.txt"),
            f.scratch.host_ws().join("declared.txt"),
        )
        .expect("stage");
        let r = f.run_sh(mode, "cat declared.txt; cat secret.txt");
        assert_eq!(r.outcome.status, ExitKind::Exited(1), "{mode:?}");
        assert_eq!(r.stdout, "declared");
        assert!(r.stderr.contains("No such file"), "{mode:?}: {}", r.stderr);
    }
}

#[test]
fn output_locations_are_created_and_writable() {
    for mode in modes("output_locations_are_created_and_writable") {
        let f = fixture();
        let mut spec = f.sh(
            mode,
            "echo d > dist/sub.txt && echo f > lib/out.txt && echo h > $HOME/h && echo t > $TMPDIR/t",
        );
        spec.writable = vec!["dist/".into(), "lib/out.txt".into()];
        let r = f.run(mode, &spec).expect("run");
        assert!(r.ok(), "{mode:?}: {r:?}");
        assert_eq!(f.ws_file("dist/sub.txt").as_deref(), Some("d\n"));
        assert_eq!(f.ws_file("lib/out.txt").as_deref(), Some("f\n"));
        assert!(f.scratch.host_home().join("h").exists());
        assert!(f.scratch.host_tmp().join("t").exists());
    }
}

#[test]
fn output_paths_must_stay_inside_the_workspace() {
    let f = fixture();
    for bad in ["../escape/", "/abs/out"] {
        let mut spec = f.sh(SandboxMode::Scratch, "true");
        spec.writable = vec![bad.into()];
        match f.run(SandboxMode::Scratch, &spec) {
            Err(SandboxError::InvalidSpec(_)) => {}
            other => panic!("{bad}: expected InvalidSpec, got {other:?}"),
        }
    }
    // An output behind a staged symlink could expose a host directory.
    std::os::unix::fs::symlink("/etc", f.scratch.host_ws().join("link")).expect("symlink");
    let mut spec = f.sh(SandboxMode::Scratch, "true");
    spec.writable = vec!["link/out/".into()];
    assert!(matches!(
        f.run(SandboxMode::Scratch, &spec),
        Err(SandboxError::InvalidSpec(_))
    ));
}

#[test]
fn background_process_is_killed_and_result_unaffected() {
    for mode in modes("background_process_is_killed_and_result_unaffected") {
        let f = fixture();
        let t = Instant::now();
        let r = f.run_sh(
            mode,
            "(sleep 0.4; echo leaked > dist/leak) & sleep 30 & echo $! > dist/pid; echo started",
        );
        assert!(r.ok(), "{mode:?}: {r:?}");
        assert_eq!(r.stdout, "started\n");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{mode:?}: waited for the background job"
        );
        if mode == SandboxMode::Scratch {
            // Host pids are visible in scratch mode: the sleep must be gone.
            let pid: i32 = f
                .ws_file("dist/pid")
                .expect("pid")
                .trim()
                .parse()
                .expect("pid");
            assert!(!pid_alive(pid), "scratch: background sleep {pid} survived");
        }
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(
            f.ws_file("dist/leak"),
            None,
            "{mode:?}: a leftover process wrote after the end"
        );
    }
}

#[test]
fn daemon_that_calls_setsid_is_killed_too() {
    for mode in modes("daemon_that_calls_setsid_is_killed_too") {
        let f = fixture();
        let r = f.run_sh(
            mode,
            "setsid sh -c 'echo $$ > dist/pid; sleep 0.4; echo leaked > dist/leak' & \
             while [ ! -s dist/pid ]; do sleep 0.01; done; echo started",
        );
        assert!(r.ok(), "{mode:?}: {r:?}");
        if mode == SandboxMode::Scratch {
            let pid: i32 = f
                .ws_file("dist/pid")
                .expect("pid")
                .trim()
                .parse()
                .expect("pid");
            assert!(!pid_alive(pid), "scratch: setsid daemon {pid} survived");
        }
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(f.ws_file("dist/leak"), None, "{mode:?}: daemon survived");
    }
}

#[test]
fn timeout_kills_the_whole_tree() {
    for mode in modes("timeout_kills_the_whole_tree") {
        let f = fixture();
        let mut spec = f.sh(
            mode,
            "sh -c 'echo $$ > dist/child; sleep 30' & (sleep 0.8; echo leaked > dist/leak) & sleep 30",
        );
        spec.timeout = Some(Duration::from_millis(300));
        let t = Instant::now();
        let r = f.run(mode, &spec).expect("run");
        assert_eq!(r.outcome.status, ExitKind::TimedOut, "{mode:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{mode:?}: {:?}",
            t.elapsed()
        );
        if mode == SandboxMode::Scratch {
            if let Some(pid) = f.ws_file("dist/child").and_then(|s| s.trim().parse().ok()) {
                assert!(!pid_alive(pid), "scratch: child {pid} survived the timeout");
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(f.ws_file("dist/leak"), None, "{mode:?}");
    }
}

#[test]
fn scratch_is_removed_even_when_made_read_only() {
    for mode in modes("scratch_is_removed_even_when_made_read_only") {
        let f = fixture();
        let root = f.scratch.host_root().to_path_buf();
        let r = f.run_sh(
            mode,
            "mkdir -p dist/a/b && echo x > dist/a/b/f && ln -s / dist/a/root && chmod 500 dist/a/b dist/a dist",
        );
        assert!(r.ok(), "{mode:?}: {r:?}");
        drop(f.scratch);
        assert!(!root.exists(), "{mode:?}: scratch dir left behind");
    }
    // The symlink to / was not followed.
    assert!(std::path::Path::new("/usr/bin").exists());
}

#[test]
fn direct_mode_runs_in_the_given_root() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("pkg")).expect("mkdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let spec = vbuild_sandbox::RunSpec {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "pwd; echo built > dist/out; sleep 30 &".into(),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "pkg".into(),
        writable: vec!["pkg/dist/".into()],
        stdout: logs.path().join("out"),
        stderr: logs.path().join("err"),
        ..Default::default()
    };
    let t = Instant::now();
    let o = run_direct(root.path(), &spec).expect("run");
    assert!(o.success());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fs::read_to_string(logs.path().join("out")).expect("out"),
        format!("{}\n", root.path().join("pkg").display())
    );
    assert_eq!(
        fs::read_to_string(root.path().join("pkg/dist/out")).expect("out"),
        "built\n"
    );
}

#[test]
fn resolve_mode_scratch_is_scratch() {
    let (m, msg) = vbuild_sandbox::resolve_mode(SandboxMode::Scratch, true).expect("scratch");
    assert_eq!(m, SandboxMode::Scratch);
    assert!(msg.is_none());
}

#[test]
fn only_stdio_descriptors_are_inherited() {
    for mode in modes("only_stdio_descriptors_are_inherited") {
        let f = fixture();
        // Open a descriptor in the test process that must not leak.
        let _held = fs::File::open("/dev/null").expect("open");
        let r = f.run_sh(mode, "ls /proc/$$/fd");
        assert_eq!(r.stdout, "0\n1\n2\n", "{mode:?}");
    }
}

#[test]
fn concurrent_actions_from_many_threads() {
    for mode in modes("concurrent_actions_from_many_threads") {
        let fixtures: Vec<_> = (0..8).map(|_| fixture()).collect();
        std::thread::scope(|s| {
            for (i, f) in fixtures.iter().enumerate() {
                s.spawn(move || {
                    for j in 0..5 {
                        let r = f.run_sh(mode, &format!("echo {i}-{j} > dist/o; cat dist/o"));
                        assert!(r.ok(), "{mode:?}: {r:?}");
                        assert_eq!(r.stdout, format!("{i}-{j}\n"));
                    }
                });
            }
        });
    }
}

#[test]
fn writes_in_the_staged_workspace_are_listed_in_both_modes() {
    for mode in modes(module_path!()) {
        let f = fixture();
        f.stage("src/keep.ts", "k");
        f.stage("src/gone.ts", "g");
        f.stage("src/edit.ts", "e");
        let r = f.run_sh(
            mode,
            // Under a root caller the namespace sandbox's user is not the
            // staged files' owner (docs/sandbox.md), so it cannot chmod
            // them; replacing one is the same edit.
            "{ chmod u+w src/edit.ts 2>/dev/null || { cat src/edit.ts > $TMPDIR/e && \
               rm -f src/edit.ts && cat $TMPDIR/e > src/edit.ts; }; } && \
             echo x >> src/edit.ts && rm src/gone.ts && \
             mkdir -p .cache/a && touch .cache/a/b gen.ts && echo out > dist/o.txt",
        );
        assert!(r.ok(), "{mode:?}: {r:?}");
        let writes: Vec<String> = f
            .scratch
            .writes()
            .iter()
            .map(|w| format!("{:?} {}", w.kind, w.path.display()))
            .collect();
        let expected = [
            "Created .cache",
            "Created dist/o.txt",
            "Created gen.ts",
            "Modified src/edit.ts",
            "Removed src/gone.ts",
        ];
        assert_eq!(writes, expected, "{mode:?}");
        assert_eq!(
            f.ws_file("dist/o.txt").as_deref(),
            Some("out\n"),
            "{mode:?}"
        );
    }
}
