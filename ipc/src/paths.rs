//! Turning a path a tool sent into a workspace-relative path, or refusing it.
//!
//! Resolution is purely lexical: the server runs outside the sandbox and sees
//! a different filesystem than the action, so following symlinks here would
//! consult the wrong tree. `..` is folded textually, which is also what the
//! tool most likely meant when it built the path by string joining.

use std::path::{Component, Path, PathBuf};

use crate::limits::{excerpt, MAX_PATH_LEN};

/// The workspace root(s) as the action sees them. A path is accepted when,
/// after normalization, it lies under one of them.
#[derive(Clone, Debug)]
pub(crate) struct Confinement {
    roots: Vec<PathBuf>,
}

impl Confinement {
    /// `ws_root_inside` is how the action sees the workspace. When that path
    /// also exists on this host (the non-namespace "scratch" mode) its
    /// canonical form is accepted too: Node's `process.cwd()` reports the
    /// symlink-free path, so a scratch dir under a symlinked `/tmp` would
    /// otherwise refuse every relative path.
    pub(crate) fn new(ws_root_inside: &Path) -> Confinement {
        let mut roots = vec![normalize(ws_root_inside)];
        if let Ok(canonical) = std::fs::canonicalize(ws_root_inside) {
            let canonical = normalize(&canonical);
            if !roots.contains(&canonical) {
                roots.push(canonical);
            }
        }
        Confinement { roots }
    }

    /// Resolves `path` (against `cwd` when relative) and returns it relative
    /// to the workspace root, `/`-separated; the root itself is `"."`.
    /// The error text is meant for a warning and echoes the request.
    pub(crate) fn resolve(&self, path: &str, cwd: Option<&str>) -> Result<String, String> {
        if path.is_empty() {
            return Err("empty path".to_owned());
        }
        if path.len() > MAX_PATH_LEN || cwd.is_some_and(|c| c.len() > MAX_PATH_LEN) {
            return Err(format!(
                "path {} (or its cwd) is longer than {MAX_PATH_LEN} bytes",
                excerpt(path)
            ));
        }
        if path.contains('\0') || cwd.is_some_and(|c| c.contains('\0')) {
            return Err(format!("path {} contains a NUL byte", excerpt(path)));
        }
        let given = Path::new(path);
        let absolute = if given.is_absolute() {
            given.to_path_buf()
        } else {
            match cwd.map(Path::new) {
                Some(cwd) if cwd.is_absolute() => cwd.join(given),
                Some(cwd) => {
                    return Err(format!(
                        "relative path {} with a relative cwd {}",
                        excerpt(path),
                        excerpt(&cwd.to_string_lossy())
                    ))
                }
                None => {
                    return Err(format!(
                        "relative path {} sent without a cwd",
                        excerpt(path)
                    ))
                }
            }
        };
        let normalized = normalize(&absolute);
        for root in &self.roots {
            if let Ok(rel) = normalized.strip_prefix(root) {
                return Ok(to_slash(rel));
            }
        }
        // The request is echoed once, cut short: a tool sending huge paths
        // must not turn each refusal into megabytes of warnings.
        Err(format!(
            "path {} is outside the workspace root {:?}",
            excerpt(path),
            self.roots[0].display()
        ))
    }
}

/// Folds `.` and `..` without touching the filesystem. `..` at the root
/// stays at the root, as the kernel does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                // `pop` refuses to remove the root, which is the behaviour we want.
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

fn to_slash(rel: &Path) -> String {
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> Confinement {
        Confinement {
            roots: vec![PathBuf::from("/vbuild/ws")],
        }
    }

    #[test]
    fn relative_paths_resolve_against_cwd() {
        let c = ws();
        assert_eq!(
            c.resolve("dist/", Some("/vbuild/ws/pkg")).unwrap(),
            "pkg/dist"
        );
        assert_eq!(
            c.resolve("./a/../b/./c", Some("/vbuild/ws/pkg")).unwrap(),
            "pkg/b/c"
        );
        assert_eq!(c.resolve("..", Some("/vbuild/ws/pkg")).unwrap(), ".");
    }

    #[test]
    fn absolute_paths_ignore_cwd() {
        let c = ws();
        assert_eq!(
            c.resolve("/vbuild/ws/x/y", Some("/elsewhere")).unwrap(),
            "x/y"
        );
        assert_eq!(c.resolve("/vbuild/ws/x/y", None).unwrap(), "x/y");
    }

    #[test]
    fn escapes_are_refused() {
        let c = ws();
        assert!(c.resolve("../../etc", Some("/vbuild/ws/pkg")).is_err());
        assert!(c.resolve("/etc/passwd", None).is_err());
        // A sibling whose name merely starts with the root's name.
        assert!(c.resolve("/vbuild/ws2/a", None).is_err());
        assert!(c.resolve("/vbuild/ws/../ws2", None).is_err());
        assert!(c.resolve("a", None).is_err());
        assert!(c.resolve("a", Some("rel")).is_err());
        assert!(c.resolve("", Some("/vbuild/ws")).is_err());
        assert!(c.resolve("a\0b", Some("/vbuild/ws")).is_err());
        let huge = "a/".repeat(300_000);
        let err = c.resolve(&huge, Some("/vbuild/ws")).unwrap_err();
        assert!(err.len() < 400, "{} bytes", err.len());
        let outside = format!("/{}", "b".repeat(3000));
        assert!(c.resolve(&outside, None).unwrap_err().len() < 400);
    }

    #[test]
    fn dotdot_at_root_stays_at_root() {
        let c = ws();
        assert_eq!(
            c.resolve("/../../vbuild/ws/a", None).unwrap(),
            "a".to_owned()
        );
    }
}
