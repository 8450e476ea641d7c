//! Removing a scratch tree whatever the action did to it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Gives the owner rwx on every directory under `dir` (not following
/// symlinks), so entries an action made read-only can be unlinked.
fn unlock_dirs(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // DirEntry::file_type does not follow symlinks.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            unlock_dirs(&entry.path());
        }
    }
}

/// `rm -rf` that never follows symlinks out of the tree (std's
/// remove_dir_all works relative to directory fds with O_NOFOLLOW) and
/// copes with read-only directories.
pub fn remove_tree(root: &Path) -> io::Result<()> {
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            unlock_dirs(root);
            fs::remove_dir_all(root)
        }
    }
}
