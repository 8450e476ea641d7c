//! Where namespace-sandbox scratch trees go by default: a private directory
//! on a tmpfs (`/dev/shm`) when there is one with room, else the store.
//!
//! Every action creates and deletes a scratch tree (directories for its
//! staged inputs, node_modules mountpoints, the overlay's upper layer,
//! logs). On ext4 each new inode scans the inode bitmap past recently
//! deleted ones (`find_inode_bit` → `recently_deleted`), a cost that grows
//! with the inodes a build has deleted: an eighth of a cold 200-package
//! build's samples, and most of vbuild's system time at 1000 packages
//! (bench/README.md). On tmpfs none of that touches a disk. Inputs are then
//! copied instead of hard-linked from the store (another filesystem): a
//! memory copy. `VBUILD_SCRATCH_DIR` overrides the choice (a directory on
//! the store's filesystem gets the links back).
use std::path::{Path, PathBuf};
use vbuild_store::Store;

/// A tmpfs with less free space than this is not used.
const MIN_FREE: u64 = 1 << 30;
const TMPFS_MAGIC: i64 = 0x0102_1994;

pub fn scratch_base(store: &Store) -> PathBuf {
    if std::env::var_os("VBUILD_SCRATCH_DIR").is_some_and(|v| !v.is_empty()) {
        return store.scratch_dir();
    }
    tmpfs_scratch(Path::new("/dev/shm")).unwrap_or_else(|| store.scratch_dir())
}

/// `base/vbuild-<uid>/scratch` if `base` is a tmpfs with room and the
/// per-user directory is ours alone (`crate::private_dir`: `/dev/shm` is
/// world-writable, so anyone could have made it first).
fn tmpfs_scratch(base: &Path) -> Option<PathBuf> {
    private_tmpfs(base).map(|d| d.join("scratch"))
}

/// `base/vbuild-<uid>` under the same conditions (also where IPC sockets go).
pub fn private_tmpfs(base: &Path) -> Option<PathBuf> {
    let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a zeroed statfs is a valid value for statfs(2) to fill; `c`
    // is a NUL-terminated path that outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let free = st.f_bavail as u64 * st.f_bsize as u64;
    if st.f_type as i64 != TMPFS_MAGIC || free < MIN_FREE {
        return None;
    }
    crate::private_dir(base).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_on_tmpfs_only() {
        // A disk directory is never chosen.
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert_eq!(tmpfs_scratch(disk.path()), None);
        if !Path::new("/dev/shm").is_dir() {
            return;
        }
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let uid = unsafe { libc::getuid() };
        let mine = shm.path().join(format!("vbuild-{uid}"));
        // A directory others may enter, or a symlink planted there, is refused.
        std::fs::create_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(tmpfs_scratch(shm.path()), None);
        std::fs::remove_dir(&mine).unwrap();
        std::os::unix::fs::symlink(disk.path(), &mine).unwrap();
        assert_eq!(tmpfs_scratch(shm.path()), None);
        std::fs::remove_file(&mine).unwrap();
        // Made by us (0700): used, when the tmpfs has room.
        if let Some(dir) = tmpfs_scratch(shm.path()) {
            assert_eq!(dir, mine.join("scratch"));
            let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
