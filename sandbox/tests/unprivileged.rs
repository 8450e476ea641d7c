//! The namespace sandbox as an unprivileged user (user namespaces).
//!
//! Run as root, the test copies its own binary somewhere world-readable and
//! re-runs itself as `nobody` through `setpriv`; the inner run does the
//! checks. Run as a normal user it does the checks directly. CI running as
//! root therefore covers both cases.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::fixture;
use vbuild_sandbox::{ExitKind, SandboxMode};

const INNER: &str = "VBUILD_SANDBOX_UNPRIVILEGED_INNER";

fn checks() {
    // As vbuild runs: non-dumpable (so actions cannot ptrace it), which
    // makes /proc/self root's; the supervisor must still write its id maps.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let ns = SandboxMode::Namespaces;
    if let Err(e) = vbuild_sandbox::probe_namespaces() {
        // Unprivileged user namespaces can be disabled by the host; the
        // error must say which setting to change.
        let msg = e.to_string();
        assert!(msg.contains("hint:"), "{msg}");
        eprintln!("SKIP unprivileged namespaces: {msg}");
        return;
    }
    let f = fixture();
    f.stage("src/in.txt", "input");
    let r = f.run_sh(
        ns,
        "id -u; pwd; cat src/in.txt; echo; echo x > src/in.txt && cat src/in.txt; \
         echo out > dist/o; ls /root 2>/dev/null || echo no-root; \
         timeout 3 bash -c 'echo > /dev/tcp/127.0.0.1/22' 2>/dev/null || echo no-net",
    );
    assert_eq!(r.outcome.status, ExitKind::Exited(0), "{r:?}");
    assert_eq!(
        // The write lands in the overlay's upper layer only (checked below).
        r.stdout,
        "1000\n/vbuild/ws\ninput\nx\nno-root\nno-net\n",
        "{r:?}"
    );
    assert_eq!(f.ws_file("dist/o").as_deref(), Some("out\n"));
    assert_eq!(f.ws_file("src/in.txt").as_deref(), Some("input"));
}

#[test]
fn namespaces_work_unprivileged() {
    if std::env::var_os(INNER).is_some() || !nix::unistd::geteuid().is_root() {
        assert!(!nix::unistd::geteuid().is_root());
        checks();
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP namespaces_work_unprivileged: setpriv (util-linux) not installed");
        return;
    }
    // A copy nobody can execute, whatever the target dir's permissions.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = dir.path().join("unprivileged-test");
    fs::copy(std::env::current_exe().expect("exe"), &exe).expect("copy");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "namespaces_work_unprivileged",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .env("TMPDIR", "/tmp")
        .env("HOME", "/tmp")
        .current_dir("/")
        .output()
        .expect("setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- inner run as nobody ---\n{stdout}{stderr}");
    assert!(out.status.success(), "inner run failed");
    // Unprivileged namespaces may be disabled on a host, but never by
    // vbuild's own non-dumpable setting (its /proc/self is then root's).
    assert!(
        !stderr.contains("/proc/self"),
        "the sandbox cannot write its id maps"
    );
    assert!(stdout.contains("1 passed"), "inner test did not run");
}
