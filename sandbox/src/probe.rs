//! Can this process build a namespace sandbox? And if not, why, and what
//! setting to change.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;

use crate::{RunSpec, SandboxError, SandboxMode, Scratch};

const FALLBACK: &str = "or set sandbox = \"scratch\" in vbuild.toml (no isolation)";

fn sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The host setting most likely responsible, as a hint line.
fn policy_hint() -> Option<String> {
    if sysctl("kernel.unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "kernel.unprivileged_userns_clone is 0: run `sysctl -w kernel.unprivileged_userns_clone=1`"
                .into(),
        );
    }
    if sysctl("user.max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user.max_user_namespaces is 0: run `sysctl -w user.max_user_namespaces=15000`".into(),
        );
    }
    if sysctl("kernel.apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some(
            "AppArmor restricts unprivileged user namespaces: run \
             `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or give vbuild an \
             AppArmor profile with the `userns,` rule"
                .into(),
        );
    }
    None
}

pub(crate) fn unavailable_from_clone(err: Errno) -> SandboxError {
    let (reason, hint) = match err {
        Errno::ENOSPC => (
            "clone(CLONE_NEWUSER) failed: ENOSPC (user namespace limit reached)".to_string(),
            policy_hint().unwrap_or_else(|| {
                "raise user.max_user_namespaces (`sysctl -w user.max_user_namespaces=15000`)".into()
            }),
        ),
        Errno::EINVAL => (
            "clone with namespace flags failed: EINVAL (kernel built without user/pid/net namespaces)"
                .to_string(),
            "use a kernel with CONFIG_USER_NS, CONFIG_PID_NS and CONFIG_NET_NS".into(),
        ),
        Errno::EUSERS => (
            "clone(CLONE_NEWUSER) failed: EUSERS (user namespace nesting limit)".to_string(),
            "run vbuild less deeply nested in user namespaces".into(),
        ),
        e => (
            format!("clone(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|...) failed: {e}"),
            policy_hint().unwrap_or_else(|| {
                "a seccomp filter or container runtime forbids user namespaces (e.g. Docker's \
                 default profile): run the container with `--security-opt seccomp=unconfined` \
                 or a profile that allows clone/unshare with CLONE_NEWUSER; in a chroot, \
                 user namespaces are refused"
                    .into()
            }),
        ),
    };
    SandboxError::NamespacesUnavailable {
        reason,
        hint: format!("{hint}; {FALLBACK}"),
    }
}

pub(crate) fn unavailable_from_setup(step: &str, err: Errno) -> SandboxError {
    let hint = policy_hint().unwrap_or_else(|| {
        if step.contains("proc") {
            "the host /proc is partly masked (containers do this): run the container with \
             `--security-opt systempaths=unconfined` (Docker) or unmask /proc"
                .into()
        } else {
            "a security module (AppArmor/SELinux) or container policy forbids mounting in \
             unprivileged user namespaces; check `dmesg` for denials"
                .into()
        }
    });
    SandboxError::NamespacesUnavailable {
        reason: format!("{step} failed: {err}"),
        hint: format!("{hint}; {FALLBACK}"),
    }
}

static PROBE: OnceLock<Result<(), (String, String)>> = OnceLock::new();

/// Can this process create the namespace sandbox? Builds a real one once
/// (user, mount, pid, net namespaces, id maps, tmpfs root, read-only binds,
/// /proc, loopback, pivot_root) without running anything; the answer is
/// cached for the life of the process. The error names the reason and the
/// setting to change.
pub fn probe_namespaces() -> Result<(), SandboxError> {
    PROBE
        .get_or_init(run_probe)
        .clone()
        .map_err(|(reason, hint)| SandboxError::NamespacesUnavailable { reason, hint })
}

fn run_probe() -> Result<(), (String, String)> {
    let generic = |e: &dyn std::fmt::Display| (format!("probe failed: {e}"), FALLBACK.to_string());
    let parent = tempfile::Builder::new()
        .prefix("vbuild-probe-")
        .tempdir()
        .map_err(|e| generic(&e))?;
    let scratch = Scratch::create(parent.path()).map_err(|e| generic(&e))?;
    // Namespaces themselves: the overlay is probed apart (`overlay_usable`),
    // since it depends on where the scratch directories live.
    let spec = RunSpec {
        argv: vec!["true".into()],
        stdout: "/dev/null".into(),
        stderr: "/dev/null".into(),
        direct_ws: true,
        ..RunSpec::default()
    };
    match scratch.probe(&spec) {
        Ok(_) => Ok(()),
        Err(SandboxError::NamespacesUnavailable { reason, hint }) => Err((reason, hint)),
        Err(e) => Err(generic(&e)),
    }
}

/// Whether the namespace sandbox can mount its workspace overlay with the
/// upper layer under `scratch_parent` (the filesystem decides: overlayfs
/// itself, for one, cannot hold an upper layer). Probed once per directory
/// and process, by building a real sandbox there; false when namespaces do
/// not work at all.
pub fn overlay_usable(scratch_parent: &Path) -> bool {
    static SEEN: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ok)) = seen.iter().find(|(p, _)| p == scratch_parent) {
        return *ok;
    }
    let ok = Scratch::create(scratch_parent).is_ok_and(|scratch| {
        let spec = RunSpec {
            argv: vec!["true".into()],
            stdout: "/dev/null".into(),
            stderr: "/dev/null".into(),
            ..RunSpec::default()
        };
        scratch.probe(&spec).is_ok()
    });
    seen.push((scratch_parent.to_path_buf(), ok));
    ok
}

static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Picks the mode to use for this run. For `Namespaces` it probes; when that
/// fails, `strict` (`--sandbox=strict`) returns the error, otherwise it
/// falls back to `Scratch` and returns, the first time in this process
/// only, the warning the orchestrator must print (never silent, once per
/// run).
pub fn resolve_mode(
    requested: SandboxMode,
    strict: bool,
) -> Result<(SandboxMode, Option<String>), SandboxError> {
    if requested == SandboxMode::Scratch {
        return Ok((SandboxMode::Scratch, None));
    }
    match probe_namespaces() {
        Ok(()) => Ok((SandboxMode::Namespaces, None)),
        Err(e) if strict => Err(e),
        Err(e) => {
            let first = !ANNOUNCED.swap(true, Ordering::SeqCst);
            Ok((
                SandboxMode::Scratch,
                first.then(|| {
                    format!(
                        "warning: falling back to sandbox = \"scratch\" (no namespaces, no \
                         network isolation, inputs writable) for this run: {e}\n\
                         (use --sandbox=strict to refuse instead)"
                    )
                }),
            ))
        }
    }
}
