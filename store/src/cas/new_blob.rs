//! A blob being written, in as few system calls and directory entries as
//! stay crash-safe. Where the system allows: an unnamed file (`O_TMPFILE`)
//! in the store's `tmp/`, created read-only, given its one name in `cas/`
//! by `linkat` once complete. Compared with a named temp file renamed into
//! place, no name is added to and removed from `tmp/` per blob, there is
//! no `fchmod` (unless the umask would strip bits of 0444) and no unlink
//! when the blob turns out to be stored already; a kill -9 leaves nothing
//! to sweep (the kernel frees an unnamed inode). Elsewhere (no
//! `O_TMPFILE`, no /proc, a link refused), a named temp file as before.
use crate::temp;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::NamedTempFile;

/// Blobs are read-only.
const MODE: u32 = 0o444;

/// Set once an unnamed file could not be made or linked here: the named
/// path from then on (one failed attempt per process, not per blob).
static NAMED_ONLY: AtomicBool = AtomicBool::new(false);

pub(super) enum NewBlob {
    Unnamed(File),
    Named(NamedTempFile),
}

impl NewBlob {
    /// A new, empty blob file on the filesystem of `tmp_dir`.
    pub(super) fn create(tmp_dir: &Path) -> io::Result<NewBlob> {
        if !NAMED_ONLY.load(Ordering::Relaxed) {
            match unnamed_in(tmp_dir) {
                Some(file) => return Ok(NewBlob::Unnamed(file)),
                None => NAMED_ONLY.store(true, Ordering::Relaxed),
            }
        }
        Ok(NewBlob::Named(temp::named_in(tmp_dir)?))
    }

    pub(super) fn file(&mut self) -> &mut File {
        match self {
            NewBlob::Unnamed(f) => f,
            NewBlob::Named(t) => t.as_file_mut(),
        }
    }

    /// What names this file in an error.
    pub(super) fn describe<'a>(&'a self, tmp_dir: &'a Path) -> &'a Path {
        match self {
            NewBlob::Unnamed(_) => tmp_dir,
            NewBlob::Named(t) => t.path(),
        }
    }

    /// Makes the complete file the blob at `dest`, never replacing one
    /// there (blobs are immutable: the first writer's stays, ours is
    /// dropped). Creates the shard directory (`cas/<1 hex>/`) on the first
    /// blob in it.
    pub(super) fn commit(self, dest: &Path, tmp_dir: &Path) -> io::Result<()> {
        let file = match self {
            NewBlob::Named(t) => return commit_named(t, dest),
            NewBlob::Unnamed(f) => f,
        };
        let mut made_shard = false;
        loop {
            match temp::link_at(&file, dest) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_shard => {
                    if let Some(shard) = dest.parent() {
                        std::fs::create_dir_all(shard)?;
                    }
                    made_shard = true;
                }
                // Not linkable here (no /proc, a policy refusing the link):
                // copy the bytes to a named temp file, and use those from
                // now on.
                Err(_) => {
                    NAMED_ONLY.store(true, Ordering::Relaxed);
                    let mut named = temp::named_in(tmp_dir)?;
                    let mut file = file;
                    file.seek(io::SeekFrom::Start(0))?;
                    io::copy(&mut file, named.as_file_mut())?;
                    named.as_file_mut().flush()?;
                    return commit_named(named, dest);
                }
            }
        }
    }
}

/// A named temp file: read-only, then renamed into place without
/// replacing an existing blob.
fn commit_named(tmp: NamedTempFile, dest: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(MODE))?;
    let tmp = match tmp.persist_noclobber(dest) {
        Ok(_) => return Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::NotFound => {
            if let Some(shard) = dest.parent() {
                std::fs::create_dir_all(shard)?;
            }
            e.file
        }
        // Another writer (thread or process) won the race with the same
        // bytes: keep theirs, drop ours.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.error),
    };
    match tmp.persist_noclobber(dest) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error),
    }
}

/// An unnamed read-only file in `dir` (readable too, for the fallback copy).
#[cfg(target_os = "linux")]
fn unnamed_in(dir: &Path) -> Option<File> {
    let file = temp::open_unnamed(dir, libc::O_RDWR, MODE)?;
    // The umask applies to the mode given at creation: set it explicitly
    // only if that stripped bits (0444 for everyone, as before).
    if temp::umask() & MODE != 0 {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(MODE))
            .ok()?;
    }
    Some(file)
}

#[cfg(not(target_os = "linux"))]
fn unnamed_in(_: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Both ways of writing a blob make it read-only at its name, create
    /// its shard, keep the first writer's bytes and leave `tmp/` empty.
    #[test]
    fn unnamed_and_named_blobs_commit_alike() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        for (i, named) in [false, true].into_iter().enumerate() {
            let dest = dir.path().join(format!("cas/0{i}/blob"));
            for bytes in [b"first", b"other"] {
                let mut blob = if named {
                    NewBlob::Named(temp::named_in(&tmp).unwrap())
                } else {
                    match NewBlob::create(&tmp).unwrap() {
                        b @ NewBlob::Unnamed(_) => b,
                        // No O_TMPFILE here: the named path is tested below.
                        NewBlob::Named(_) => continue,
                    }
                };
                blob.file().write_all(bytes).unwrap();
                blob.commit(&dest, &tmp).unwrap();
            }
            assert_eq!(std::fs::read(&dest).unwrap(), b"first", "named: {named}");
            assert_eq!(mode(&dest), 0o444, "named: {named}");
            assert_eq!(
                std::fs::read_dir(&tmp).unwrap().count(),
                0,
                "named: {named}"
            );
        }
    }

    /// A blob dropped before its commit (a kill, an error, a blob found
    /// stored meanwhile) leaves no file anywhere.
    #[test]
    fn a_dropped_blob_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut blob = NewBlob::create(dir.path()).unwrap();
        blob.file().write_all(b"bytes").unwrap();
        drop(blob);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
