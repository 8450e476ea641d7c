//! Guarantees only the namespace sandbox gives. Each test skips (with a
//! printed reason) when `probe_namespaces` fails; as root on a normal Linux
//! host they all run.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use common::{fixture, namespaces_or_skip};
use vbuild_sandbox::{ExitKind, SandboxMode, Scratch, FIXED_WS};

const NS: SandboxMode = SandboxMode::Namespaces;

macro_rules! require_namespaces {
    () => {
        if !namespaces_or_skip(module_path!()) {
            return;
        }
    };
}

#[test]
fn workspace_is_at_the_fixed_path_as_a_fixed_user() {
    require_namespaces!();
    let f = fixture();
    let r = f.run_sh(
        NS,
        "pwd; echo $HOME $TMPDIR; id -u; id -g; id -un; hostname; readlink /tmp",
    );
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.stdout,
        format!("{FIXED_WS}\n/vbuild/home /vbuild/tmp\n1000\n1000\nvbuild\nvbuild\nvbuild/tmp\n")
    );
}

#[test]
fn same_workspace_at_two_paths_gives_identical_bytes() {
    require_namespaces!();
    let script =
        "mkdir -p dist && { pwd; echo $PWD; realpath build.js; ls -l; hostname; } > dist/pwd.txt";
    let mut outputs = Vec::new();
    for prefix in ["a", "deeper/and/longer/b"] {
        let parent = tempfile::tempdir().expect("tempdir");
        let scratch = Scratch::create(&parent.path().join(prefix)).expect("scratch");
        fs::write(scratch.host_ws().join("build.js"), "x").expect("stage");
        let f = common::Fixture { scratch, parent };
        let r = f.run_sh(NS, script);
        assert!(r.ok(), "{r:?}");
        outputs.push(fs::read(f.scratch.host_ws().join("dist/pwd.txt")).expect("out"));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert!(String::from_utf8_lossy(&outputs[0])
        .starts_with("/vbuild/ws\n/vbuild/ws\n/vbuild/ws/build.js\n"));
}

/// Sets a staged file's mode, as the orchestrator stages inputs (0444).
fn read_only(f: &common::Fixture, rel: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = f.scratch.host_ws().join(rel);
    fs::set_permissions(p, fs::Permissions::from_mode(0o444)).expect("chmod");
}

#[test]
fn staged_directories_accept_writes_that_never_reach_the_staged_tree() {
    require_namespaces!();
    let f = fixture();
    for name in ["a", "b", "c", "d"] {
        f.stage(&format!("src/{name}.ts"), "original");
        read_only(&f, &format!("src/{name}.ts"));
    }
    let r = f.run_sh(
        NS,
        "for cmd in 'echo changed > src/a.ts' 'chmod u+w src/b.ts && echo changed > src/b.ts' \
           'rm -f src/c.ts' 'mv src/d.ts src/e.ts' 'touch new.txt' 'mkdir -p newdir/sub'; \
         do sh -c \"$cmd\" 2>/dev/null && echo allowed || echo denied; done; cat src/b.ts",
    );
    // Input files are read-only by mode; their owner may chmod its own
    // view, and directories take new entries, all in the overlay only.
    // Under a root caller the sandbox user is not the owner (it is not
    // root on the host), so the chmod is refused.
    let expected = match nix::unistd::geteuid().is_root() {
        false => format!("denied\n{}changed\n", "allowed\n".repeat(5)),
        true => format!("denied\ndenied\n{}original", "allowed\n".repeat(4)),
    };
    assert_eq!(r.stdout, expected, "{r:?}");
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            f.ws_file(&format!("src/{name}.ts")).as_deref(),
            Some("original")
        );
    }
    assert!(f.ws_file("new.txt").is_none() && f.ws_file("src/e.ts").is_none());
    let writes: Vec<String> = f
        .scratch
        .writes()
        .iter()
        .map(|w| {
            format!(
                "{:?} {}{}",
                w.kind,
                w.path.display(),
                if w.dir { "/" } else { "" }
            )
        })
        .collect();
    let mut expected = vec![
        "Created new.txt",
        "Created newdir/",
        "Modified src/b.ts",
        "Removed src/c.ts",
        "Removed src/d.ts",
        "Created src/e.ts",
    ];
    if nix::unistd::geteuid().is_root() {
        expected.retain(|w| !w.contains("src/b.ts"));
    }
    assert_eq!(writes, expected);
}

#[test]
fn nothing_outside_is_writable_or_visible() {
    require_namespaces!();
    let f = fixture();
    let host_ws = f.scratch.host_ws().display().to_string();
    let r = f.run_sh(
        NS,
        &format!(
            "for p in /usr/x /etc/x /x /vbuild/x /dev/x /proc/x; do touch $p 2>/dev/null && echo wrote $p; done; \
             for p in {host_ws} /root /home /etc/shadow /etc/gitconfig /etc/localtime /sys/kernel /var/lib /var/cache /opt /work; do \
               ls -d $p 2>/dev/null && echo visible $p; done; \
             ls /; ls /proc | grep -c '^[0-9]'"
        ),
    );
    assert!(r.ok(), "{r:?}");
    // Only the sandbox's own processes (init, sh, ls/grep) are in /proc.
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    let procs: usize = lines.pop().expect("count").parse().expect("count");
    assert!(procs <= 5, "{procs} processes visible");
    assert_eq!(
        lines,
        ["bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "var", "vbuild",]
            .into_iter()
            .filter(|d| std::path::Path::new("/").join(d).exists() || d.starts_with('v'))
            .collect::<Vec<_>>()
    );
}

#[test]
fn declared_outputs_can_be_removed_and_recreated_and_only_they_come_back() {
    require_namespaces!();
    let f = fixture();
    f.stage("pkg/build.js", "input");
    read_only(&f, "pkg/build.js");
    f.stage("pkg/dist/stale.js", "stale");
    let mut spec = f.sh(
        NS,
        "rm -rf dist && mkdir dist && echo new > dist/a.js && \
         echo tmp > out.tmp && mv out.tmp out.txt && echo side > side.txt && cat out.txt",
    );
    spec.cwd = "pkg".into();
    spec.writable = vec!["pkg/dist/".into(), "pkg/out.txt".into()];
    let r = f.run(NS, &spec).expect("run");
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stdout, "tmp\n");
    // The declared outputs are in the staged tree, ready to be captured;
    // nothing else the action wrote is.
    assert_eq!(f.ws_file("pkg/dist/a.js").as_deref(), Some("new\n"));
    assert!(f.ws_file("pkg/dist/stale.js").is_none());
    assert_eq!(f.ws_file("pkg/out.txt").as_deref(), Some("tmp\n"));
    assert!(f.ws_file("pkg/side.txt").is_none());
    assert_eq!(f.ws_file("pkg/build.js").as_deref(), Some("input"));
}

#[test]
fn no_network_but_loopback() {
    require_namespaces!();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let f = fixture();
    let connect = format!("timeout 5 bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'");
    let r = f.run_sh(NS, &format!("{connect} && echo connected || echo refused"));
    assert_eq!(r.stdout, "refused\n", "{r:?}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
    // Loopback inside the sandbox works (its own, not the host's).
    let r = f.run_sh(
        NS,
        "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); \
         c=socket.create_connection(s.getsockname(), timeout=5); a,_=s.accept(); c.send(b'ok'); \
         print(a.recv(2).decode())\"",
    );
    assert_eq!(r.stdout, "ok\n", "{r:?}");
    let r = f.run_sh(
        NS,
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
    );
    assert_eq!(r.stdout, "lo\n", "{r:?}");
}

#[test]
fn network_true_keeps_the_host_network() {
    require_namespaces!();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let f = fixture();
    let mut spec = f.sh(
        NS,
        &format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected"),
    );
    spec.argv[0] = "bash".into();
    spec.network = true;
    let r = f.run(NS, &spec).expect("run");
    assert_eq!(r.stdout, "connected\n", "{r:?}");
    let (mut conn, _) = listener.accept().expect("accept");
    let mut got = String::new();
    conn.read_to_string(&mut got).expect("read");
    assert_eq!(got, "hi\n");
}

#[test]
fn action_runs_in_its_own_pid_namespace() {
    require_namespaces!();
    let f = fixture();
    let r = f.run_sh(NS, "echo $$; cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.starts_with("2\n"), "{r:?}");
}

#[test]
fn node_and_python_work_inside() {
    require_namespaces!();
    let f = fixture();
    f.stage(
        "build.js",
        "require('fs').writeFileSync('dist/out.js', process.cwd() + ' ' + require('os').homedir())",
    );
    if std::path::Path::new("/usr/bin/node").exists() {
        let r = f.run_sh(NS, "node build.js");
        assert!(r.ok(), "{r:?}");
        assert_eq!(
            f.ws_file("dist/out.js").as_deref(),
            Some("/vbuild/ws /vbuild/home")
        );
    }
    let r = f.run_sh(
        NS,
        "python3 -c 'import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name)'",
    );
    assert_eq!(r.stdout, "vbuild\n", "{r:?}");
}

#[test]
fn extra_binds_are_visible_read_only_or_writable() {
    require_namespaces!();
    let tools = tempfile::tempdir().expect("tempdir");
    fs::write(tools.path().join("tool.sh"), "#!/bin/sh\necho from-tool\n").expect("write");
    let sock = tempfile::tempdir().expect("tempdir");
    let f = fixture();
    let mut spec = f.sh(
        NS,
        "sh /opt/vbuild/tool.sh; touch /opt/vbuild/x; echo $?; echo ipc > /run/vbuild-ipc/msg; echo $?",
    );
    spec.extra_ro_binds = vec![(tools.path().to_path_buf(), "/opt/vbuild".into())];
    spec.extra_rw_binds = vec![(sock.path().to_path_buf(), "/run/vbuild-ipc".into())];
    let r = f.run(NS, &spec).expect("run");
    assert_eq!(r.stdout, "from-tool\n1\n0\n", "{r:?}");
    assert_eq!(
        fs::read_to_string(sock.path().join("msg")).expect("msg"),
        "ipc\n"
    );
    assert!(!tools.path().join("x").exists());
}

#[test]
fn unix_socket_in_rw_bind_is_reachable() {
    // The IPC channel: a socket the orchestrator listens on, bound in.
    require_namespaces!();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipc.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let f = fixture();
    let mut spec = f.sh(
        NS,
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/ipc/ipc.sock'); s.send(b'hello')\"",
    );
    spec.extra_rw_binds = vec![(dir.path().to_path_buf(), "/run/ipc".into())];
    let h = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut s = String::new();
        c.read_to_string(&mut s).expect("read");
        s
    });
    let r = f.run(NS, &spec).expect("run");
    assert!(r.ok(), "{r:?}");
    assert_eq!(h.join().expect("join"), "hello");
}

#[test]
fn timeout_reports_timed_out_quickly() {
    require_namespaces!();
    let f = fixture();
    let mut spec = f.sh(NS, "trap '' TERM; sleep 30");
    spec.timeout = Some(Duration::from_millis(200));
    let r = f.run(NS, &spec).expect("run");
    assert_eq!(r.outcome.status, ExitKind::TimedOut);
    assert!(
        r.outcome.duration < Duration::from_secs(3),
        "{:?}",
        r.outcome.duration
    );
}

#[test]
fn probe_is_cached_and_resolve_mode_keeps_namespaces() {
    require_namespaces!();
    let (m, msg) = vbuild_sandbox::resolve_mode(NS, true).expect("resolve");
    assert_eq!(m, NS);
    assert!(msg.is_none());
    let t = std::time::Instant::now();
    vbuild_sandbox::probe_namespaces().expect("probe");
    assert!(t.elapsed() < Duration::from_millis(5));
}

/// Issue 14 item 3: run as root, uid 1000 inside was host root (it could
/// read any root-only file the sandbox showed, e.g. through the whole
/// /etc/ssl bind, /etc/ssl/private's keys). Now 1000 stands for an
/// unprivileged host id, with no supplementary groups, and only the TLS
/// roots of /etc/ssl are bound.
#[test]
fn a_root_caller_is_not_root_on_the_host_inside() {
    require_namespaces!();
    let f = fixture();
    f.stage("src/root-only.txt", "secret");
    let staged = f.scratch.host_ws().join("src/root-only.txt");
    fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = f.run_sh(
        NS,
        "id -u; id -G; awk '$1 == 1000 { print $2 }' /proc/self/uid_map; \
         cat src/root-only.txt 2>/dev/null || echo denied; ls /etc/ssl; \
         echo out > dist/o && echo wrote; touch $HOME/h $TMPDIR/t && echo home",
    );
    assert!(r.ok(), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{r:?}");
    let host_uid = nix::unistd::geteuid().as_raw();
    let expected_host = if host_uid == 0 {
        vbuild_sandbox::HOST_UNPRIVILEGED_ID
    } else {
        host_uid
    };
    assert_eq!(lines[2], expected_host.to_string(), "{r:?}");
    if host_uid == 0 {
        assert_eq!(lines[3], "denied", "{r:?}");
    }
    assert!(!r.stdout.contains("private"), "{r:?}");
    assert!(r.stdout.contains("wrote\nhome\n"), "{r:?}");
    assert_eq!(f.ws_file("dist/o").as_deref(), Some("out\n"));
}

#[test]
fn without_the_overlay_the_staged_tree_is_written_directly() {
    require_namespaces!();
    let f = fixture();
    assert!(vbuild_sandbox::overlay_usable(f.parent.path()));
    f.stage("src/a.ts", "a");
    let mut spec = f.sh(
        NS,
        "echo gen > src/gen.ts && rm -rf dist && mkdir dist && echo o > dist/o",
    );
    spec.direct_ws = true;
    let r = f.run(NS, &spec).expect("run");
    assert!(r.ok(), "{r:?}");
    assert_eq!(f.ws_file("src/gen.ts").as_deref(), Some("gen\n"));
    assert_eq!(f.ws_file("dist/o").as_deref(), Some("o\n"));
    let writes: Vec<String> = f
        .scratch
        .writes()
        .iter()
        .map(|w| format!("{:?} {}", w.kind, w.path.display()))
        .collect();
    assert_eq!(writes, ["Created dist/o", "Created src/gen.ts"]);
}

/// /etc is the prepared directory: the allowlisted host entries (the big
/// directories bound, the rest copied) and the synthesized files; nothing
/// else, and the same bytes as the host's.
#[test]
fn etc_holds_the_allowlist_and_the_synthesized_files() {
    require_namespaces!();
    let f = fixture();
    let r = f.run_sh(
        NS,
        "ls -A /etc; echo --; cat /etc/passwd; echo --; cat /etc/nsswitch.conf; echo --; \
         ls -A /etc/ssl; ls -A /etc/ssl/certs | wc -l",
    );
    assert!(r.ok(), "{r:?}");
    let parts: Vec<&str> = r.stdout.split("--\n").collect();
    let allow = [
        "alternatives",
        "ca-certificates",
        "host.conf",
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "mime.types",
        "mtab",
        "nsswitch.conf",
        "os-release",
        "protocols",
        "services",
        "ssl",
    ];
    let mut expected: Vec<&str> = allow
        .into_iter()
        .filter(|n| fs::symlink_metadata(std::path::Path::new("/etc").join(n)).is_ok())
        .chain(["group", "hostname", "hosts", "passwd"])
        .collect();
    expected.sort();
    let mut listed: Vec<&str> = parts[0].lines().collect();
    listed.sort();
    assert_eq!(listed, expected, "{r:?}");
    assert!(parts[1].starts_with("vbuild:x:1000:1000:"), "{r:?}");
    if let Ok(host) = fs::read_to_string("/etc/nsswitch.conf") {
        assert_eq!(parts[2], host, "copied byte for byte");
    }
    if let Ok(certs) = fs::read_dir("/etc/ssl/certs") {
        let ssl: Vec<&str> = parts[3].lines().collect();
        assert!(!ssl.contains(&"private"), "{r:?}");
        assert_eq!(
            ssl.last().copied(),
            Some(certs.count().to_string().as_str())
        );
    }
}

/// PID 1 of the action's namespace is its supervisor, which may share
/// vbuild's memory (`CLONE_VM`): the action must not read that memory or
/// vbuild's environment through it.
#[test]
fn the_action_cannot_read_its_supervisors_memory_or_environment() {
    require_namespaces!();
    let f = fixture();
    let r = f.run_sh(
        NS,
        "for p in /proc/1/environ /proc/1/mem /proc/1/maps; do \
           if head -c 1 $p >/dev/null 2>&1; then echo \"read $p\"; else echo \"denied $p\"; fi; \
         done",
    );
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.stdout,
        "denied /proc/1/environ\ndenied /proc/1/mem\ndenied /proc/1/maps\n"
    );
}
