//! Listing a directory for the load walk with `getdents64` on a
//! descriptor opened relative to its parent's. `std::fs::read_dir` goes
//! through libc's `opendir`, which `fstat`s every directory it opens (for
//! a buffer size) and allocates a 32 KiB buffer each time, and the walk
//! opened every directory by its absolute path. Here: one `openat` of the
//! name in the parent (`O_NOFOLLOW`: a directory replaced by a symlink
//! since it was listed is an error, never followed), the entries read
//! into one buffer per thread, the entry types from `d_type` (an `lstat`
//! only where the filesystem does not report them, as std does).
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What an entry is (never following a symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A fifo, socket or device.
    Other,
}

/// An open directory.
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens `path` (a directory; symlinks in it are followed, as `read_dir` does).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        open_at(libc::AT_FDCWD, &c, 0)
    }

    /// Opens the subdirectory `name` of this one, not following a symlink.
    pub fn open_sub(&self, name: &OsStr) -> io::Result<Dir> {
        let c = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        open_at(self.fd.as_raw_fd(), &c, libc::O_NOFOLLOW)
    }

    /// Calls `each` with every entry's name and kind (not `.` or `..`), in
    /// the order the filesystem returns them.
    pub fn entries(&self, mut each: impl FnMut(&OsStr, Kind)) -> io::Result<()> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 32 * 1024]);
        }
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            loop {
                // SAFETY: the buffer is valid for its length; the kernel
                // writes at most that many bytes and returns how many.
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_getdents64,
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                if n == 0 {
                    return Ok(());
                }
                let mut at = 0usize;
                while at < n as usize {
                    // linux_dirent64: d_ino u64, d_off i64, d_reclen u16,
                    // d_type u8, then the NUL-terminated name.
                    let rec = &buf[at..n as usize];
                    let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
                    let d_type = rec[18];
                    let name = &rec[19..reclen];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    at += reclen;
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let name = OsStr::from_bytes(name);
                    let kind = match d_type {
                        libc::DT_DIR => Kind::Dir,
                        libc::DT_REG => Kind::File,
                        libc::DT_LNK => Kind::Symlink,
                        // Gone since it was listed: skipped, as std's
                        // `file_type` error was.
                        libc::DT_UNKNOWN => match self.lstat_kind(name) {
                            Ok(kind) => kind,
                            Err(_) => continue,
                        },
                        _ => Kind::Other,
                    };
                    each(name, kind);
                }
            }
        })
    }

    fn lstat_kind(&self, name: &OsStr) -> io::Result<Kind> {
        let c = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: fstatat fills the zeroed buffer; the result is checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        })
    }
}

fn open_at(dir: libc::c_int, name: &std::ffi::CStr, extra: libc::c_int) -> io::Result<Dir> {
    // SAFETY: a valid C string; the result is checked and owned from here.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | extra,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Dir {
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same names and kinds as `read_dir` (with `symlink_metadata`'s
    /// types), for files, directories, symlinks (to a file, to a
    /// directory, dangling), a fifo, a non-UTF-8 name, and enough entries
    /// to need several reads.
    #[test]
    fn same_as_read_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        for i in 0..2000 {
            std::fs::write(
                root.join(format!("file-with-a-longer-name-{i:04}.txt")),
                "x",
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("sub", root.join("to-dir")).unwrap();
        std::os::unix::fs::symlink("file-with-a-longer-name-0001.txt", root.join("to-file"))
            .unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"bad-\xff")), "x").unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let kind_of = |t: std::fs::FileType| {
            if t.is_dir() {
                Kind::Dir
            } else if t.is_file() {
                Kind::File
            } else if t.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Other
            }
        };
        let mut want: Vec<(std::ffi::OsString, Kind)> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), kind_of(e.file_type().unwrap()))
            })
            .collect();
        let mut got = Vec::new();
        Dir::open(root)
            .unwrap()
            .entries(|name, kind| got.push((name.to_os_string(), kind)))
            .unwrap();
        want.sort();
        got.sort();
        assert_eq!(got.len(), 2006);
        assert_eq!(got, want);
        // A subdirectory opens by name; a symlink to one does not.
        let top = Dir::open(root).unwrap();
        assert!(top.open_sub(OsStr::new("sub")).is_ok());
        assert!(top.open_sub(OsStr::new("to-dir")).is_err());
    }
}
