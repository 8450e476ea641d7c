//! Temp files that a crash (kill -9, power loss) can never turn into
//! inputs or half-written outputs.
//!
//! Every temp file vbuild names is `.vbuild-tmp-<pid>-<random>`: the pid
//! says whose it is, so a later run removes leftovers of dead runs (never
//! those of a live one: two processes may restore one workspace at once).
//! Blobs are written in the store's `tmp/`. A file restored into the
//! workspace where nothing is yet is an unnamed `O_TMPFILE` linked to its
//! name once complete (the orchestrator's `materialize/create.rs`); one
//! that replaces a file is written in `tmp/` and renamed into place when
//! the store is on the same filesystem; otherwise it is an unnamed `O_TMPFILE` in the
//! destination directory, given a name only for the `rename` that puts it
//! in place. Workspace listings skip the prefix.
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The name prefix of every temp file vbuild creates.
pub const TEMP_PREFIX: &str = ".vbuild-tmp-";

/// Whether a file name is one of vbuild's temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// The prefix for this process's temp files.
pub(crate) fn own_prefix() -> String {
    format!("{TEMP_PREFIX}{}-", std::process::id())
}

/// Whether the temp file `name` belongs to a run that may still use it:
/// its pid is alive. Names of older vbuild versions carry no pid: they
/// are leftovers of a dead run.
pub fn temp_in_use(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid == std::process::id() || alive(pid),
        None => false,
    }
}

fn alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes temp files of dead runs directly in `dir` (not below it);
/// returns how many. Best effort: what cannot be removed now is tried again
/// by a later run.
pub fn sweep_dead(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name)
            && !temp_in_use(name)
            && entry.file_type().is_ok_and(|t| !t.is_dir())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Sweeps the store's `tmp/`, which only vbuild writes: besides dead runs'
/// temp files, anything else left there (older vbuild versions named their
/// temp files without a pid) once it is older than `STALE_UNNAMED`.
pub(crate) fn sweep_store_tmp(dir: &Path) -> usize {
    let mut removed = sweep_dead(dir);
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(is_temp_name) {
            continue;
        }
        let old = entry
            .metadata()
            .ok()
            .filter(|m| !m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_UNNAMED);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How old a temp file without an owner pid must be before it is swept.
const STALE_UNNAMED: std::time::Duration = std::time::Duration::from_secs(600);

/// A file being written for `dest`; see the module docs for where it lives.
pub(crate) enum Temp {
    /// In the store's `tmp/`, on the same filesystem as `dest`.
    Store(tempfile::NamedTempFile),
    /// Unnamed, in `dest`'s directory (Linux `O_TMPFILE`).
    Unnamed { file: File, dir: PathBuf },
    /// Named, in `dest`'s directory (no `O_TMPFILE` on this filesystem).
    Named(tempfile::NamedTempFile),
}

impl Temp {
    /// A temp file for `dest` (whose parent directory exists).
    pub(crate) fn for_dest(
        store_tmp: &Path,
        store_dev: Option<u64>,
        parent: &Path,
    ) -> io::Result<Temp> {
        if store_dev.is_some() && store_dev == dev_of(parent) {
            return Ok(Temp::Store(named_in(store_tmp)?));
        }
        Self::beside(parent)
    }

    /// A temp file in `parent` itself: unnamed where the system allows.
    pub(crate) fn beside(parent: &Path) -> io::Result<Temp> {
        #[cfg(target_os = "linux")]
        if let Some(file) = unnamed_in(parent) {
            return Ok(Temp::Unnamed {
                file,
                dir: parent.to_path_buf(),
            });
        }
        Ok(Temp::Named(named_in(parent)?))
    }

    pub(crate) fn file(&mut self) -> &mut File {
        match self {
            Temp::Store(t) | Temp::Named(t) => t.as_file_mut(),
            Temp::Unnamed { file, .. } => file,
        }
    }

    /// Renames the complete file onto `dest` (replacing a file or a
    /// symlink there, never writing through it).
    pub(crate) fn persist(self, dest: &Path) -> io::Result<()> {
        match self {
            Temp::Store(t) | Temp::Named(t) => t.persist(dest).map(drop).map_err(|e| e.error),
            #[cfg(target_os = "linux")]
            Temp::Unnamed { file, dir } => link_unnamed(&file, &dir, dest),
            #[cfg(not(target_os = "linux"))]
            Temp::Unnamed { .. } => unreachable!("O_TMPFILE is Linux only"),
        }
    }
}

/// Makes a symlink to `target` under a temp name in `dir`, then renames it
/// onto `dest`.
pub(crate) fn symlink_into(target: &str, dir: &Path, dest: &Path) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{}l{}",
        own_prefix(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// A named temp file of this process in `dir`.
pub(crate) fn named_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&own_prefix())
        .tempfile_in(dir)
}

/// The process's umask, read once from /proc (calling umask(2) to read it
/// would change it for a moment under the other threads). Unknown: every
/// bit, so callers always set the mode explicitly.
pub fn umask() -> libc::mode_t {
    static UMASK: std::sync::OnceLock<libc::mode_t> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("Umask:"))?;
                libc::mode_t::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o777)
    })
}

pub(crate) fn dev_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.dev())
}

#[cfg(target_os = "linux")]
fn unnamed_in(dir: &Path) -> Option<File> {
    open_unnamed(dir, libc::O_WRONLY, 0o600)
}

/// An unnamed (`O_TMPFILE`) file in `dir`, opened with `access`
/// (`O_WRONLY` or `O_RDWR`) and created with `mode` (less the umask);
/// `None` where the filesystem or kernel refuses.
#[cfg(target_os = "linux")]
pub(crate) fn open_unnamed(dir: &Path, access: libc::c_int, mode: libc::mode_t) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::FromRawFd;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string; the fd is owned by the File from here.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | access | libc::O_CLOEXEC, mode) };
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

/// Gives the unnamed `file` the name `dest` through /proc/self/fd (which
/// needs no privilege, unlike `AT_EMPTY_PATH`); fails if `dest` exists.
pub(crate) fn link_at(file: &File, dest: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}\0", file.as_raw_fd());
    let c = std::ffi::CString::new(dest.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: both are valid C strings.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr().cast(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the unnamed file a temp name (linkat through /proc/self/fd, which
/// needs no privilege) and renames that onto `dest`: the name exists only
/// between two system calls.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, dir: &Path, dest: &Path) -> io::Result<()> {
    for attempt in 0..16u32 {
        let name = dir.join(format!(
            "{}{:x}{attempt}",
            own_prefix(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        match link_at(file, &name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        return fs::rename(&name, dest).inspect_err(|_| {
            let _ = fs::remove_file(&name);
        });
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temp name",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_dead_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let mine = named_in(dir.path()).unwrap();
        let dead = dir.path().join(format!("{TEMP_PREFIX}999999999-abc")); // beyond pid_max
        let old = dir.path().join(format!("{TEMP_PREFIX}Xy12Zq")); // no pid: old format
        let other = dir.path().join("keep.txt");
        for p in [&dead, &old, &other] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep_dead(dir.path()), 2);
        assert!(mine.path().exists() && other.exists());
        assert!(!dead.exists() && !old.exists());
    }

    #[test]
    fn unnamed_temp_leaves_no_name_until_persisted() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut t = Temp::beside(dir.path()).unwrap();
        t.file().write_all(b"hello").unwrap();
        let names = || fs::read_dir(dir.path()).unwrap().count();
        if matches!(t, Temp::Unnamed { .. }) {
            assert_eq!(names(), 0, "an unnamed temp file is invisible");
        }
        t.persist(&dir.path().join("out")).unwrap();
        assert_eq!(fs::read(dir.path().join("out")).unwrap(), b"hello");
        assert_eq!(names(), 1);
    }
}
