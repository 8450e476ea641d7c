//! Creating an output file that does not exist yet, in a directory held
//! open (`dirs.rs`), in as few system calls as stay crash-safe:
//!
//! `openat(dir, ".", O_TMPFILE, mode)` → the verified copy of the blob →
//! `linkat` of the unnamed file to its name.
//!
//! The file has no name until it is complete, so a kill -9 mid-copy leaves
//! nothing in the workspace (the kernel frees the inode), exactly as the
//! temp-file-and-rename path it replaces. `linkat` never replaces what is
//! there: if another run made the path meanwhile it fails, and the caller
//! takes the general path (compare, then temp file renamed over). The mode
//! is given at creation; `fchmod` only if the umask would strip bits of it.
use super::dirs::cstr;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;
use vbuild_store::{Digest, Store};

/// What `create` did.
pub(super) enum Created {
    /// Written and named.
    Done,
    /// Not possible here (the path exists now, no `O_TMPFILE` on this
    /// filesystem, no /proc): nothing was written; use the general path.
    Fallback,
}

pub(super) fn create(
    store: &Store,
    dirfd: RawFd,
    name: &str,
    abs: &Path,
    digest: &Digest,
    size: u64,
    executable: bool,
) -> anyhow::Result<Created> {
    let mode: libc::mode_t = if executable { 0o755 } else { 0o644 };
    let fd = unsafe {
        libc::openat(
            dirfd,
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        // EOPNOTSUPP / EISDIR / EINVAL: the filesystem or kernel has no
        // O_TMPFILE. The general path knows what to do.
        return Ok(Created::Fallback);
    }
    let mut file = unsafe { File::from_raw_fd(fd) };
    store.cas.copy_into(digest, size, &mut file, abs)?;
    if vbuild_store::temp::umask() & mode != 0 {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    let cname: CString = cstr(name.as_bytes())?;
    let proc_path = format!("/proc/self/fd/{}\0", file.as_raw_fd());
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr().cast(),
            dirfd,
            cname.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    // Any failure (EEXIST: another run placed it first; ENOENT: no /proc;
    // EPERM, EXDEV: a filesystem or policy that refuses the link) leaves
    // nothing behind: the general path writes it, or says what is wrong.
    if rc != 0 {
        return Ok(Created::Fallback);
    }
    Ok(Created::Done)
}
