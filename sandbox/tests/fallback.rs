//! What happens when the kernel refuses namespaces: the error names the
//! setting, `strict` refuses, the fallback to scratch is announced once.
//!
//! The refusal is produced for real: the test re-runs itself inside a user
//! namespace whose `user.max_user_namespaces` is 0 (that limit is per user
//! namespace, so the host is untouched).

mod common;

use std::process::Command;

use vbuild_sandbox::{resolve_mode, SandboxError, SandboxMode};

const INNER: &str = "VBUILD_SANDBOX_FALLBACK_INNER";

fn inner() {
    let err = vbuild_sandbox::probe_namespaces().expect_err("namespaces must be refused");
    let SandboxError::NamespacesUnavailable { reason, hint } = &err else {
        panic!("unexpected error {err:?}");
    };
    assert!(reason.contains("ENOSPC"), "{reason}");
    assert!(hint.contains("user.max_user_namespaces"), "{hint}");
    assert!(hint.contains("sandbox = \"scratch\""), "{hint}");

    // --sandbox=strict refuses.
    assert!(matches!(
        resolve_mode(SandboxMode::Namespaces, true),
        Err(SandboxError::NamespacesUnavailable { .. })
    ));
    // Otherwise: scratch, announced exactly once.
    let (mode, msg) = resolve_mode(SandboxMode::Namespaces, false).expect("fallback");
    assert_eq!(mode, SandboxMode::Scratch);
    let msg = msg.expect("the first fallback is announced");
    assert!(
        msg.contains("falling back") && msg.contains("max_user_namespaces"),
        "{msg}"
    );
    let (mode, msg) = resolve_mode(SandboxMode::Namespaces, false).expect("fallback");
    assert_eq!(mode, SandboxMode::Scratch);
    assert!(msg.is_none(), "announced twice");

    // Running in namespaces mode anyway gives the same named error.
    let f = common::fixture();
    let spec = f.sh(SandboxMode::Namespaces, "true");
    assert!(matches!(
        f.run(SandboxMode::Namespaces, &spec),
        Err(SandboxError::NamespacesUnavailable { .. })
    ));
    // And the scratch sandbox still works.
    assert!(f.run_sh(SandboxMode::Scratch, "true").ok());
}

#[test]
fn refused_namespaces_fall_back_loudly() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    if !common::namespaces_or_skip("refused_namespaces_fall_back_loudly") {
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let script = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"";
    let out = match Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", script])
        .arg(&exe)
        .args([
            "--exact",
            "refused_namespaces_fall_back_loudly",
            "--nocapture",
        ])
        .env(INNER, "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP refused_namespaces_fall_back_loudly: unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- inner run ---\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner run failed");
    assert!(stdout.contains("1 passed"), "inner test did not run");
}
