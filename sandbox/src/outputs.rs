//! Declared output locations: validating them, creating their directories in
//! the staged workspace, and computing which paths must be mounted writable
//! (and which inputs next to file outputs must be re-protected read-only).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::{RunSpec, SandboxError};

/// A workspace-relative path reduced to its normal components. Rejects
/// absolute paths and `..` so no declared location can point outside the ws.
pub(crate) fn relative(p: &Path) -> Result<PathBuf, SandboxError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(SandboxError::InvalidSpec(format!(
                    "{} must be relative to the workspace and must not contain `..`",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

/// One declared output after validation.
struct Declared {
    rel: PathBuf,
    is_dir: bool,
}

fn declared(ws: &Path, spec: &RunSpec) -> Result<Vec<Declared>, SandboxError> {
    spec.writable
        .iter()
        .map(|p| {
            let rel = relative(p)?;
            // A trailing slash is how the orchestrator spells "directory"
            // (design: `outs = ["dist/"]`); an existing dir counts as well.
            let trailing = p.as_os_str().as_bytes().ends_with(b"/");
            let is_dir = trailing
                || rel.as_os_str().is_empty()
                || fs::symlink_metadata(ws.join(&rel)).is_ok_and(|m| m.is_dir());
            Ok(Declared { rel, is_dir })
        })
        .collect()
}

/// Creates `ws/rel` as a real directory chain, refusing symlinks and
/// non-directories on the way: a mount at a path that crosses a staged
/// symlink could otherwise expose (and make writable) a host directory.
fn make_dirs_nofollow(ws: &Path, rel: &Path) -> Result<(), SandboxError> {
    let mut cur = ws.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SandboxError::InvalidSpec(format!(
                "output location {} crosses {}, which is not a directory (symlinks are refused)",
                rel.display(),
                cur.display()
            )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The writable mounts of one action, in mount order.
#[derive(Debug, Default)]
pub(crate) struct WsMounts {
    /// Whether the ws root itself is writable (a file output at the root, or
    /// the whole ws declared as a directory).
    pub root_rw: bool,
    /// (relative path, writable) in the order they must be mounted: shallow
    /// first, so deeper mounts override.
    pub binds: Vec<(PathBuf, bool)>,
}

fn is_under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

/// Scratch and namespaces modes: validates outputs, creates their
/// directories in the staged ws, the cwd too, and plans the mounts.
pub(crate) fn prepare(ws: &Path, spec: &RunSpec) -> Result<WsMounts, SandboxError> {
    let decl = declared(ws, spec)?;
    make_dirs_nofollow(ws, &relative(&spec.cwd)?)?;

    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for d in &decl {
        if d.is_dir {
            make_dirs_nofollow(ws, &d.rel)?;
            dirs.insert(d.rel.clone());
        } else {
            let parent = d.rel.parent().unwrap_or(Path::new("")).to_path_buf();
            make_dirs_nofollow(ws, &parent)?;
            files.insert(d.rel.clone());
        }
    }
    // Keep only outermost directory outputs.
    let outer: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| !dirs.iter().any(|o| o != *d && is_under(d, o)))
        .cloned()
        .collect();
    let in_dir_output = |p: &Path| outer.iter().any(|d| is_under(p, d));
    // Parents of file outputs that no directory output already covers.
    let parents: BTreeSet<PathBuf> = files
        .iter()
        .filter(|f| !in_dir_output(f))
        .map(|f| f.parent().unwrap_or(Path::new("")).to_path_buf())
        .collect();

    let mut writable: BTreeSet<PathBuf> = outer.iter().cloned().collect();
    writable.extend(parents.iter().cloned());

    let mut binds: Vec<(PathBuf, bool)> = Vec::new();
    for w in &writable {
        binds.push((w.clone(), true));
    }
    // Inputs sitting next to a file output stay read-only: bind each existing
    // entry of the now-writable parent over itself, read-only. Deeper
    // writable locations are mounted after (deeper) and win.
    for p in &parents {
        for entry in fs::read_dir(ws.join(p))? {
            let entry = entry?;
            let rel = p.join(entry.file_name());
            let ft = entry.file_type()?;
            // Symlinks cannot be bind targets without following them; they
            // stay replaceable, but only in this scratch copy.
            let bindable = ft.is_dir() || ft.is_file();
            if bindable && !writable.contains(&rel) && !files.contains(&rel) {
                binds.push((rel, false));
            }
        }
    }
    let root_rw = writable.contains(Path::new(""));
    binds.retain(|(p, _)| !p.as_os_str().is_empty());
    binds.sort_by(|a, b| {
        let depth = |p: &Path| p.components().count();
        depth(&a.0).cmp(&depth(&b.0)).then_with(|| a.0.cmp(&b.0))
    });
    Ok(WsMounts { root_rw, binds })
}

/// Mode "none": the real workspace. Creates output directories the way the
/// sandboxed modes would, following symlinks like `mkdir -p` (the user's own
/// checkout may legitimately symlink `dist`).
pub(crate) fn prepare_loose(root: &Path, spec: &RunSpec) -> Result<(), SandboxError> {
    for d in declared(root, spec)? {
        let dir = if d.is_dir {
            d.rel.clone()
        } else {
            d.rel.parent().unwrap_or(Path::new("")).to_path_buf()
        };
        fs::create_dir_all(root.join(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(writable: &[&str]) -> RunSpec {
        RunSpec {
            writable: writable.iter().map(PathBuf::from).collect(),
            ..RunSpec::default()
        }
    }

    #[test]
    fn relative_rejects_escapes() {
        assert_eq!(
            relative(Path::new("./a/b/")).ok(),
            Some(PathBuf::from("a/b"))
        );
        assert!(relative(Path::new("../a")).is_err());
        assert!(relative(Path::new("/a")).is_err());
        assert!(relative(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn dir_outputs_are_mounted_whole_and_nested_ones_dropped() -> Result<(), SandboxError> {
        let ws = tempfile::tempdir()?;
        let m = prepare(ws.path(), &spec(&["dist/", "dist/sub/", "pkg/lib/"]))?;
        assert!(!m.root_rw);
        assert_eq!(
            m.binds,
            vec![
                (PathBuf::from("dist"), true),
                (PathBuf::from("pkg/lib"), true)
            ]
        );
        assert!(ws.path().join("pkg/lib").is_dir());
        Ok(())
    }

    #[test]
    fn file_outputs_reprotect_their_siblings() -> Result<(), SandboxError> {
        let ws = tempfile::tempdir()?;
        fs::create_dir_all(ws.path().join("pkg/src"))?;
        fs::write(ws.path().join("pkg/build.js"), "")?;
        fs::write(ws.path().join("pkg/out.txt"), "stale")?;
        std::os::unix::fs::symlink("build.js", ws.path().join("pkg/link"))?;
        let m = prepare(ws.path(), &spec(&["pkg/out.txt", "pkg/src/gen/"]))?;
        assert_eq!(
            m.binds,
            vec![
                (PathBuf::from("pkg"), true),
                (PathBuf::from("pkg/build.js"), false),
                (PathBuf::from("pkg/src"), false),
                (PathBuf::from("pkg/src/gen"), true),
            ]
        );
        Ok(())
    }

    #[test]
    fn file_output_at_the_root_makes_the_root_writable() -> Result<(), SandboxError> {
        let ws = tempfile::tempdir()?;
        fs::write(ws.path().join("input"), "")?;
        let m = prepare(ws.path(), &spec(&["out.txt"]))?;
        assert!(m.root_rw);
        assert_eq!(m.binds, vec![(PathBuf::from("input"), false)]);
        Ok(())
    }
}
