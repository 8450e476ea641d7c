//! `lstat` of workspace files relative to the workspace root, opened once
//! per run. A no-op run stats every source (the stat cache's check); with
//! absolute paths the kernel walks every component of the root again for
//! each of them (`/home/me/src/repo/packages/a/src/x.ts`), which was the
//! largest kernel item of a no-op. Relative to the root's descriptor it
//! walks only `packages/a/src/x.ts`. Same semantics as `symlink_metadata`
//! of the absolute path: the last component is not followed, the others
//! are, and the fields are those std reports (`FileStat::from_metadata`).
use std::path::Path;
use vbuild_store::FileStat;

/// What `lstat` found: the stat fields, and whether it is a symlink.
pub struct Lstat {
    pub stat: FileStat,
    pub symlink: bool,
}

/// The workspace root's descriptor (`O_PATH`), or none where it could not
/// be opened (absolute paths are used then).
pub struct Root {
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
}

impl Root {
    pub fn open(root: &Path) -> Root {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::{FromRawFd, OwnedFd};
            use std::os::unix::ffi::OsStrExt;
            let fd = std::ffi::CString::new(root.as_os_str().as_bytes())
                .ok()
                .and_then(|c| {
                    // SAFETY: a valid C string; the result is checked.
                    let fd = unsafe {
                        libc::open(
                            c.as_ptr(),
                            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                        )
                    };
                    // SAFETY: a descriptor just opened, owned from here on.
                    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
                });
            Root { fd }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = root;
            Root {}
        }
    }

    /// `lstat` of `rel` (workspace-relative) — `abs` is the same file's
    /// absolute path, used where the root is not open.
    pub fn lstat(&self, rel: &str, abs: &Path) -> std::io::Result<Lstat> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            return statx_at(fd, rel);
        }
        let _ = rel;
        let meta = std::fs::symlink_metadata(abs)?;
        Ok(Lstat {
            stat: FileStat::from_metadata(&meta),
            symlink: meta.file_type().is_symlink(),
        })
    }
}

#[cfg(target_os = "linux")]
fn statx_at(dir: &std::os::fd::OwnedFd, rel: &str) -> std::io::Result<Lstat> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(rel)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statx fills the zeroed buffer; the return value is checked.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            &mut buf,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ns = |t: libc::statx_timestamp| {
        t.tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as i64)
    };
    let mode = u32::from(buf.stx_mode);
    Ok(Lstat {
        // As std builds `Metadata` from statx: `makedev` of the parts.
        stat: FileStat {
            dev: libc::makedev(buf.stx_dev_major, buf.stx_dev_minor),
            ino: buf.stx_ino,
            size: buf.stx_size,
            mtime_ns: ns(buf.stx_mtime),
            ctime_ns: ns(buf.stx_ctime),
            executable: mode & 0o111 != 0,
        },
        symlink: mode & libc::S_IFMT == libc::S_IFLNK,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same fields as `symlink_metadata` of the absolute path, for a
    /// file, an executable, a symlink (not followed), a directory, and a
    /// file replaced by each of them.
    #[test]
    fn same_as_symlink_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/src")).unwrap();
        std::fs::write(root.join("a/src/x.ts"), "x").unwrap();
        std::fs::write(root.join("a/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("a/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("src/x.ts", root.join("a/link")).unwrap();
        let at = Root::open(&root);
        let check = |rel: &str| {
            let abs = root.join(rel);
            let got = at.lstat(rel, &abs).unwrap();
            let meta = std::fs::symlink_metadata(&abs).unwrap();
            assert_eq!(got.stat, FileStat::from_metadata(&meta), "{rel}");
            assert_eq!(got.symlink, meta.file_type().is_symlink(), "{rel}");
            got
        };
        let file = check("a/src/x.ts");
        assert!(!file.symlink && !file.stat.executable);
        assert!(check("a/run.sh").stat.executable);
        assert!(check("a/link").symlink);
        check("a/src");
        // Replaced by a symlink, then by a directory: never the old stat.
        std::fs::remove_file(root.join("a/src/x.ts")).unwrap();
        std::os::unix::fs::symlink("../run.sh", root.join("a/src/x.ts")).unwrap();
        let link = check("a/src/x.ts");
        assert!(link.symlink && link.stat != file.stat);
        std::fs::remove_file(root.join("a/src/x.ts")).unwrap();
        std::fs::create_dir(root.join("a/src/x.ts")).unwrap();
        let d = check("a/src/x.ts");
        assert!(!d.symlink && d.stat != file.stat);
        std::fs::remove_dir(root.join("a/src/x.ts")).unwrap();
        let err = at.lstat("a/src/x.ts", &root.join("a/src/x.ts"));
        assert_eq!(
            err.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
