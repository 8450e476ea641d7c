//! Where a run keeps its per-action directories, and sweeping the leftovers
//! of runs that were killed (kill -9, power loss).
//!
//! - Namespace-sandbox scratch dirs: `<store>/scratch/run-<pid>`. The
//!   action cannot see the host there, so living next to the blobs (for
//!   hard-link staging) exposes nothing.
//! - Scratch-mode (and `none`) scratch dirs: `<tmp>/vbuild-<uid>/run-<pid>`,
//!   outside the store: such an action sees the host filesystem, and a
//!   relative path out of its working tree must not land in the store.
//! - IPC sockets: `<runtime dir>/vbuild-<uid>/r<pid hex>-<random>`, mode
//!   0300 (no listing), so other actions cannot find the sockets by name.
//!
//! A later run removes those whose process is gone.
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// This run's scratch parent under `base`, after sweeping dead runs'.
pub fn run_scratch_dir(base: &Path) -> PathBuf {
    sweep(base, |name| {
        name.strip_prefix("run-").and_then(|p| p.parse().ok())
    });
    base.join(format!("run-{}", std::process::id()))
}

/// Creates this run's private IPC directory under `base` (mode 0300: the
/// owner can create and reach entries but not list them), after sweeping
/// dead runs' (and the per-socket dirs older versions left in `base`).
pub fn run_ipc_dir(base: &Path) -> std::io::Result<PathBuf> {
    sweep(base, |name| {
        let hex = name
            .strip_prefix("vbipc-")
            .or_else(|| name.strip_prefix('r'))?
            .split('-')
            .next()?;
        u32::from_str_radix(hex, 16).ok()
    });
    let mut random = [0u8; 8];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = base.join(format!("r{:x}-{hex}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o300).create(&dir)?;
    // The umask cannot add bits, but be exact about what is there.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o300))?;
    Ok(dir)
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn sweep(dir: &Path, pid_of: impl Fn(&str) -> Option<u32>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(&pid_of) else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            remove_tree(&entry.path());
        }
    }
}

/// Removes a tree whose directories an action may have made read-only,
/// never following symlinks out of it (best effort: leftovers are swept
/// again by a later run).
pub fn remove_tree(path: &Path) {
    // An IPC run dir is not listable (0300) until made so again.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    let _ = vbuild_sandbox::remove_tree(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_dead_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("run-999999999"); // beyond pid_max
        let live = dir.path().join(format!("run-{}", std::process::id()));
        let other = dir.path().join("unrelated");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("act-x/ws")).unwrap();
        }
        let mine = run_scratch_dir(dir.path());
        assert_eq!(mine, live);
        assert!(!dead.exists() && live.exists() && other.exists());
    }

    #[test]
    fn ipc_dirs_are_unlistable_and_swept_when_dead() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("r3b9aca00-00"); // 999999999, beyond pid_max
        std::fs::create_dir_all(dead.join("vbipc-x")).unwrap();
        std::fs::set_permissions(&dead, std::fs::Permissions::from_mode(0o300)).unwrap();
        let legacy = dir.path().join("vbipc-3b9aca00-0-0");
        std::fs::create_dir_all(&legacy).unwrap();
        let mine = run_ipc_dir(dir.path()).unwrap();
        assert!(!dead.exists() && !legacy.exists());
        let mode = std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o300);
        let name = mine.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("r{:x}-", std::process::id())),
            "{name}"
        );
        remove_tree(&mine);
        assert!(!mine.exists());
    }
}
