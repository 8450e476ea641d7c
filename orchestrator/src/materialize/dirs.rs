//! Directories of the workspace, each checked once per restore and then
//! used through an open descriptor: every file is created relative to its
//! directory's fd (`*at` calls), so no path is re-resolved, and no parent is
//! `lstat`ed again, per file.
//!
//! A directory is reached from the workspace root without following any
//! symlink: in one `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)` where
//! the kernel offers it, else (or when that meets a symlink, a file or a
//! missing component) component by component with `O_NOFOLLOW`. Above what
//! the target owns a symlink or a file is an error naming it; inside, it is
//! replaced by a directory when asked to make one.
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether `openat2` was refused here (an old kernel, a seccomp filter):
/// then the component walk is the only way.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

struct Dir {
    fd: OwnedFd,
    /// Made by this restore: it held nothing when made, so a file in it
    /// needs no check before it is created (another run writing into it at
    /// the same moment is met by the exclusive create, not assumed away).
    made: bool,
}

pub(super) struct Dirs {
    root: Arc<OwnedFd>,
    open: HashMap<String, Dir>,
    /// Ancestors of a directory opened in one `openat2`, which checked
    /// them on the way: real directories, not held open.
    checked: HashSet<String>,
    /// Directories found missing, or (inside what the target owns) not
    /// directories, while nothing could be made (the checking passes):
    /// asked about again, they are not looked up again.
    absent: HashMap<String, Found>,
}

/// What a directory lookup found.
#[derive(Clone, Copy)]
pub(super) enum Found {
    /// `fd` is None for a directory checked but not held open (only
    /// without `make`).
    Dir { fd: Option<RawFd>, made: bool },
    /// Missing (or below something missing).
    Absent,
    /// Inside what the target owns, a file or symlink where a directory
    /// goes (replaced once asked to make it).
    NotDir,
}

impl Dirs {
    pub(super) fn new(root: &Path) -> Result<Dirs> {
        Ok(Dirs {
            root: root_fd(root)?,
            open: HashMap::new(),
            checked: HashSet::new(),
            absent: Default::default(),
        })
    }

    /// The directory `rel` (workspace-relative, "" for the root). With
    /// `make`, missing directories are created (and, where `owns` says the
    /// target owns the path, a file or symlink in a directory's place is
    /// replaced); without, nothing is touched. `label` names the target in
    /// errors.
    pub(super) fn get(
        &mut self,
        rel: &str,
        make: bool,
        owns: &dyn Fn(&str) -> bool,
        label: &dyn std::fmt::Display,
    ) -> Result<Found> {
        if rel.is_empty() {
            return Ok(Found::Dir {
                fd: Some(self.root.as_raw_fd()),
                made: false,
            });
        }
        if let Some(d) = self.open.get(rel) {
            return Ok(Found::Dir {
                fd: Some(d.fd.as_raw_fd()),
                made: d.made,
            });
        }
        if !make && self.checked.contains(rel) {
            return Ok(Found::Dir {
                fd: None,
                made: false,
            });
        }
        let known = self.absent.get(rel).copied();
        match known {
            Some(f) if !make => return Ok(f),
            _ => {}
        }
        // Known missing: straight to mkdir.
        let mut missing = matches!(known, Some(Found::Absent));
        if known.is_none() && !NO_OPENAT2.load(Ordering::Relaxed) {
            match openat2_beneath(self.root.as_raw_fd(), rel) {
                Ok(fd) => {
                    let mut up = rel;
                    while let Some((parent, _)) = up.rsplit_once('/') {
                        if !self.checked.insert(parent.to_string()) {
                            break;
                        }
                        up = parent;
                    }
                    return Ok(self.keep(rel, fd, false));
                }
                // Some component is missing: once the parent is found,
                // that is the last one.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => missing = true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed)
                }
                // A missing component, a symlink, a file: the walk below
                // finds which, and says so.
                Err(_) => {}
            }
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let pfd = match self.get_open(parent, make, owns, label)? {
            Found::Dir { fd, .. } => fd.expect("get_open holds it open"),
            Found::Absent | Found::NotDir => return Ok(self.missing(rel, Found::Absent)),
        };
        let cname = cstr(name.as_bytes())?;
        let opened = if missing {
            Err(std::io::Error::from_raw_os_error(libc::ENOENT))
        } else {
            open_dir_at(pfd, &cname)
        };
        match opened {
            Ok(fd) => return Ok(self.keep(rel, fd, false)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if !make {
                    return Ok(self.missing(rel, Found::Absent));
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let owned = owns(rel);
                match kind_at(pfd, &cname) {
                    // Removed under us (another run): make it below.
                    None if make => {}
                    None => return Ok(self.missing(rel, Found::Absent)),
                    Some(_) if owned && !make => {
                        // Replaced when the entries are written; nothing
                        // below it is read or deleted before that.
                        return Ok(self.missing(rel, Found::NotDir));
                    }
                    Some(_) if owned => {
                        if unsafe { libc::unlinkat(pfd, cname.as_ptr(), 0) } != 0 {
                            let e = std::io::Error::last_os_error();
                            if e.raw_os_error() != Some(libc::ENOENT) {
                                return Err(e).with_context(|| format!("removing '{rel}'"));
                            }
                        }
                    }
                    Some(libc::S_IFLNK) => {
                        let to = read_link_at(pfd, &cname);
                        bail!(
                            "'{rel}' is a symlink (to {to}): vbuild never writes outputs of {label} \
                             through a symlinked directory; remove the symlink (`rm {rel}`) and run again"
                        );
                    }
                    Some(_) => bail!(
                        "'{rel}' is a file where outputs of {label} need a directory; remove or \
                         rename it and run again"
                    ),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("checking '{rel}'")),
        }
        // Make it: the one mkdir of this directory in this restore.
        let made = if unsafe { libc::mkdirat(pfd, cname.as_ptr(), 0o777) } == 0 {
            true
        } else {
            let e = std::io::Error::last_os_error();
            // Another run made it first: it is checked like any other.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).with_context(|| format!("creating '{rel}'"));
            }
            false
        };
        let fd = open_dir_at(pfd, &cname).with_context(|| {
            format!("opening '{rel}' (replaced by something else while vbuild made it?)")
        })?;
        self.absent.remove(rel);
        Ok(self.keep(rel, fd, made))
    }

    /// `get`, with the directory held open if it exists.
    pub(super) fn get_open(
        &mut self,
        rel: &str,
        make: bool,
        owns: &dyn Fn(&str) -> bool,
        label: &dyn std::fmt::Display,
    ) -> Result<Found> {
        let found = self.get(rel, make, owns, label)?;
        if let Found::Dir { fd: None, .. } = found {
            self.checked.remove(rel);
            return self.get(rel, make, owns, label);
        }
        Ok(found)
    }

    fn keep(&mut self, rel: &str, fd: OwnedFd, made: bool) -> Found {
        let raw = fd.as_raw_fd();
        self.open.insert(rel.to_string(), Dir { fd, made });
        Found::Dir {
            fd: Some(raw),
            made,
        }
    }

    fn missing(&mut self, rel: &str, found: Found) -> Found {
        self.absent.insert(rel.to_string(), found);
        found
    }
}

pub(super) fn cstr(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).context("a path with a NUL byte")
}

pub(super) fn open_dir_at(dirfd: RawFd, name: &CString) -> std::io::Result<OwnedFd> {
    let fd = unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `rel` below `root`, refusing any symlink on the way (the last component
/// included) and any escape from `root`.
fn openat2_beneath(root: RawFd, rel: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(rel).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The file type (`S_IFMT` bits) of `name` in `dirfd`, not following a
/// symlink; None if it is gone.
pub(super) fn kind_at(dirfd: RawFd, name: &CString) -> Option<libc::mode_t> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (rc == 0).then_some(st.st_mode & libc::S_IFMT)
}

fn read_link_at(dirfd: RawFd, name: &CString) -> String {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return String::new();
    }
    buf.truncate(n as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The workspace root, opened once per process (every restore of a run is
/// in the same workspace).
fn root_fd(root: &Path) -> Result<Arc<OwnedFd>> {
    static ROOT: Mutex<Option<(std::path::PathBuf, Arc<OwnedFd>)>> = Mutex::new(None);
    let mut held = ROOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, fd)) = held.as_ref() {
        if path == root {
            return Ok(fd.clone());
        }
    }
    let c = cstr(root.as_os_str().as_bytes())?;
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening the workspace {}", root.display()));
    }
    let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    *held = Some((root.to_path_buf(), fd.clone()));
    Ok(fd)
}

/// The entries of the directory open as `fd` (read from its current
/// position, so once per fd), without `.` and `..`: (name, whether it is a
/// directory, not following a symlink).
pub(super) fn list(fd: RawFd) -> std::io::Result<Vec<(std::ffi::OsString, bool)>> {
    use std::os::unix::ffi::OsStringExt;
    // u64 storage: linux_dirent64 records are 8-byte aligned. Not zeroed:
    // the kernel writes the records and only those `n` bytes are read
    // (zeroing 32 KiB per listed directory was 6 % of a 1000-package
    // no-op's instructions).
    let mut buf: Vec<u64> = Vec::with_capacity(4096);
    let mut out = Vec::new();
    loop {
        // SAFETY: the allocation is valid for its capacity in bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buf.as_mut_ptr(),
                buf.capacity() * std::mem::size_of::<u64>(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        // SAFETY: the kernel wrote `n` bytes of records into the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut off = 0;
        while off < bytes.len() {
            // d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-terminated.
            let reclen = u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]) as usize;
            let d_type = bytes[off + 18];
            let name_bytes = &bytes[off + 19..off + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            off += reclen;
            if name == b"." || name == b".." {
                continue;
            }
            let is_dir = match d_type {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => {
                    let c = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidData)?;
                    kind_at(fd, &c) == Some(libc::S_IFDIR)
                }
                _ => false,
            };
            out.push((std::ffi::OsString::from_vec(name.to_vec()), is_dir));
        }
    }
}
