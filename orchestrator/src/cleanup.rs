//! Leftovers of runs that were killed (kill -9, power loss): each run keeps
//! its scratch directories under `scratch/run-<pid>` and its IPC sockets in
//! `vbipc-<pid hex>-…`; a later run removes those whose process is gone.
use std::path::{Path, PathBuf};

/// This run's scratch parent, after sweeping dead runs' leftovers.
pub fn run_scratch_dir(store_scratch: &Path, ipc_parent: &Path) -> PathBuf {
    sweep(store_scratch, |name| {
        name.strip_prefix("run-").and_then(|p| p.parse().ok())
    });
    sweep(ipc_parent, |name| {
        let hex = name.strip_prefix("vbipc-")?.split('-').next()?;
        u32::from_str_radix(hex, 16).ok()
    });
    store_scratch.join(format!("run-{}", std::process::id()))
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
        let mine = run_scratch_dir(dir.path(), dir.path());
        assert_eq!(mine, live);
        assert!(!dead.exists() && live.exists() && other.exists());
    }
}
