//! Declared output locations: validating them and creating their
//! directories in the staged workspace.

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
pub(crate) fn make_dirs_nofollow(ws: &Path, rel: &Path) -> Result<(), SandboxError> {
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

/// Scratch and namespaces modes: validates outputs and creates their
/// directories (for a file output, its parent) in the staged ws, the cwd
/// too. In the namespace sandbox these become part of the overlay's lower
/// layer: writable through it, never mount points, so an action may delete
/// and re-create them.
pub(crate) fn prepare(ws: &Path, spec: &RunSpec) -> Result<(), SandboxError> {
    make_dirs_nofollow(ws, &relative(&spec.cwd)?)?;
    for d in declared(ws, spec)? {
        if d.is_dir {
            make_dirs_nofollow(ws, &d.rel)?;
        } else {
            make_dirs_nofollow(ws, d.rel.parent().unwrap_or(Path::new("")))?;
        }
    }
    Ok(())
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
    fn output_dirs_are_created_and_symlinks_refused() -> Result<(), SandboxError> {
        let ws = tempfile::tempdir()?;
        prepare(
            ws.path(),
            &spec(&["dist/", "dist/sub/", "pkg/lib/", "pkg/out/a.txt"]),
        )?;
        for d in ["dist/sub", "pkg/lib", "pkg/out"] {
            assert!(ws.path().join(d).is_dir(), "{d}");
        }
        assert!(!ws.path().join("pkg/out/a.txt").exists());
        std::os::unix::fs::symlink("/tmp", ws.path().join("link"))?;
        assert!(prepare(ws.path(), &spec(&["link/x/"])).is_err());
        Ok(())
    }
}
