//! Writable staging: what an action wrote in its staged workspace, and
//! bringing its declared outputs back from the overlay's upper layer.
//!
//! In the namespace sandbox `/vbuild/ws` is an overlayfs: the lower layer
//! is the staged workspace (inputs hard-linked to store blobs, read-only
//! by mode), the upper layer a scratch directory. Every write, including
//! `chmod` and rewriting an input, is a copy-up into the upper layer, so
//! nothing can reach the lower layer, the store or the workspace; a target
//! can delete and re-create its own output directories (they are no mount
//! points), and tools may write temp files next to their configs. After the
//! run, [`changes`] lists what the upper layer holds and [`settle`] moves
//! the declared output locations down into the staged tree, where the
//! orchestrator captures them; everything else is discarded with the
//! scratch directory.
//!
//! In scratch mode the staged tree is written directly: [`snapshot`] before
//! and [`diff`] after the run give the same list.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{SandboxError, Write, WriteKind};

/// The mount options of the workspace overlay. `userxattr`: the only way
/// an overlay works inside a user namespace (whiteouts and opaque markers
/// become `user.overlay.*` xattrs instead of `trusted.*`).
pub(crate) fn options(lower: &Path, upper: &Path, work: &Path) -> Result<CString, SandboxError> {
    for p in [lower, upper, work] {
        // The option string has no escaping vbuild could rely on.
        if p.as_os_str().as_bytes().iter().any(|b| b",:\\".contains(b)) {
            return Err(SandboxError::InvalidSpec(format!(
                "the scratch path {} contains ',', ':' or '\\', which an overlay mount cannot take; set VBUILD_SCRATCH_DIR to another directory",
                p.display()
            )));
        }
    }
    let text = format!(
        "userxattr,lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    crate::plan::cstr(text.as_bytes())
}

/// An overlay whiteout: a character device 0:0 standing for a removed path.
fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether an upper directory hides the lower one's contents.
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Everything the upper layer holds, workspace-relative: a directory the
/// lower layer does not have (or hides) counts once, as created.
pub(crate) fn changes(upper: &Path, lower: &Path) -> io::Result<Vec<Write>> {
    fn walk(upper: &Path, lower: &Path, rel: &Path, out: &mut Vec<Write>) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(upper.join(rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel.join(e.file_name());
            let meta = e.metadata()?;
            let below = fs::symlink_metadata(lower.join(&rel)).ok();
            let kind = if is_whiteout(&meta) {
                WriteKind::Removed
            } else if meta.is_dir() {
                match below {
                    Some(b) if b.is_dir() && !is_opaque(&upper.join(&rel)) => {
                        // Copied up because something below it was written.
                        walk(upper, lower, &rel, out)?;
                        continue;
                    }
                    Some(_) => WriteKind::Modified,
                    None => WriteKind::Created,
                }
            } else if below.is_some() {
                WriteKind::Modified
            } else {
                WriteKind::Created
            };
            out.push(Write {
                path: rel,
                kind,
                dir: meta.is_dir(),
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(upper, lower, Path::new(""), &mut out)?;
    Ok(out)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => crate::remove::remove_tree(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the upper layer's view of `rel` onto the lower layer.
fn merge(upper: &Path, lower: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(upper)?;
    if is_whiteout(&meta) {
        return remove_any(lower);
    }
    if meta.is_dir() {
        let below = fs::symlink_metadata(lower).ok();
        if below.as_ref().is_some_and(|b| b.is_dir()) && !is_opaque(upper) {
            for e in fs::read_dir(upper)? {
                let name = e?.file_name();
                merge(&upper.join(&name), &lower.join(&name))?;
            }
            return Ok(());
        }
        // New or opaque: the upper directory is the whole truth; a new or
        // opaque directory holds no whiteouts.
        remove_any(lower)?;
        return fs::rename(upper, lower);
    }
    remove_any(lower)?;
    fs::rename(upper, lower)
}

/// Moves what the action wrote at its declared output locations (and only
/// there) from the upper layer into the staged tree.
pub(crate) fn settle(upper: &Path, lower: &Path, writable: &[PathBuf]) -> io::Result<()> {
    let mut locations: Vec<PathBuf> = writable
        .iter()
        .filter_map(|w| crate::outputs::relative(w).ok())
        .collect();
    // Outer locations first: they carry nested ones along.
    locations.sort();
    for rel in locations {
        let up = upper.join(&rel);
        if fs::symlink_metadata(&up).is_err() {
            continue;
        }
        if let Some(parent) = rel.parent() {
            if crate::outputs::make_dirs_nofollow(lower, parent).is_err() {
                continue;
            }
        }
        merge(&up, &lower.join(&rel))?;
    }
    Ok(())
}

/// Identity of a staged path before the run (scratch mode).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    mtime: (i64, i64),
    size: u64,
    mode: u32,
}

fn stamp(m: &fs::Metadata) -> Stamp {
    Stamp {
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: m.size(),
        mode: m.mode(),
    }
}

/// Every staged path and its identity (not following symlinks).
pub(crate) fn snapshot(ws: &Path) -> HashMap<PathBuf, Stamp> {
    fn walk(ws: &Path, rel: &Path, map: &mut HashMap<PathBuf, Stamp>) {
        let Ok(entries) = fs::read_dir(ws.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let rel = rel.join(e.file_name());
            let Ok(m) = e.metadata() else { continue };
            map.insert(rel.clone(), stamp(&m));
            if m.is_dir() {
                walk(ws, &rel, map);
            }
        }
    }
    let mut map = HashMap::new();
    walk(ws, Path::new(""), &mut map);
    map
}

/// What changed in the staged tree since [`snapshot`] (scratch mode).
pub(crate) fn diff(ws: &Path, before: &HashMap<PathBuf, Stamp>) -> Vec<Write> {
    fn walk(
        ws: &Path,
        rel: &Path,
        before: &HashMap<PathBuf, Stamp>,
        seen: &mut std::collections::HashSet<PathBuf>,
        out: &mut Vec<Write>,
    ) {
        let Ok(entries) = fs::read_dir(ws.join(rel)) else {
            return;
        };
        for e in entries.flatten() {
            let rel = rel.join(e.file_name());
            let Ok(m) = e.metadata() else { continue };
            seen.insert(rel.clone());
            let kind = match before.get(&rel) {
                None => WriteKind::Created,
                // A directory's own stamp changes with every entry added.
                Some(_) if m.is_dir() => {
                    walk(ws, &rel, before, seen, out);
                    continue;
                }
                Some(s) if *s != stamp(&m) => WriteKind::Modified,
                Some(_) => continue,
            };
            out.push(Write {
                path: rel,
                kind,
                dir: m.is_dir(),
            });
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    walk(ws, Path::new(""), before, &mut seen, &mut out);
    let mut removed: Vec<&PathBuf> = before.keys().filter(|p| !seen.contains(*p)).collect();
    removed.sort();
    let mut last: Option<&PathBuf> = None;
    for p in removed {
        // Name a removed directory once, not each file in it.
        if last.is_some_and(|l| p.starts_with(l)) {
            continue;
        }
        last = Some(p);
        out.push(Write {
            path: p.clone(),
            kind: WriteKind::Removed,
            dir: false,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
