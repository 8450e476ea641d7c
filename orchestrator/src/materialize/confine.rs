//! What a tree may write into the workspace, whoever produced it (a fresh
//! build, the local cache, a remote): only the target's declared outputs,
//! outside its sub-packages, never one of its inputs, and symlinks whose
//! targets stay inside the workspace once every other symlink (the tree's
//! and the workspace's) is followed.
use crate::globs::{out_glob, OutSpec};
use crate::workspace::{Target, Workspace};
use std::collections::HashMap;
use std::path::Path;
use vbuild_store::{remote::truncate_text, EntryKind, Tree};

/// Symlinks followed while resolving one link before it counts as a loop
/// (the kernel's limit).
const MAX_LINK_HOPS: usize = 40;

/// The target's declared outputs, as workspace-relative rules.
pub struct Confinement<'a> {
    target: &'a Target,
    globs: Vec<Option<globset::GlobMatcher>>,
    /// Workspace-relative package paths strictly below the target's.
    subpackages: Vec<&'a str>,
}

impl<'a> Confinement<'a> {
    pub fn new(ws: &'a Workspace, target: &'a Target) -> Result<Confinement<'a>, String> {
        let globs = target
            .outs
            .iter()
            .map(|o| match o {
                OutSpec::Glob(g) => out_glob(g).map(Some).map_err(|e| e.to_string()),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let package = target.label.package.as_str();
        // `ws.packages` is sorted: the packages below this one are the run
        // that starts with "<package>/" (a binary search, not a scan of
        // every package for every restore).
        debug_assert!(
            ws.packages.is_sorted(),
            "Workspace::packages must be sorted"
        );
        let subpackages = if package.is_empty() {
            ws.packages
                .iter()
                .map(String::as_str)
                .filter(|p| !p.is_empty())
                .collect()
        } else {
            let prefix = format!("{package}/");
            let from = ws
                .packages
                .partition_point(|p| p.as_str() < prefix.as_str());
            ws.packages[from..]
                .iter()
                .map(String::as_str)
                .take_while(|p| p.starts_with(&prefix))
                .collect()
        };
        Ok(Confinement {
            target,
            globs,
            subpackages,
        })
    }

    pub fn target(&self) -> &Target {
        self.target
    }

    /// The sub-package holding `path` (workspace-relative), if any.
    pub fn subpackage_of(&self, path: &str) -> Option<&str> {
        self.subpackages
            .iter()
            .copied()
            .find(|s| path == *s || under(path, s))
    }

    /// Package-relative form of a workspace path inside the target's package.
    fn in_package<'p>(&self, path: &'p str) -> Option<&'p str> {
        let package = self.target.label.package.as_str();
        if package.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(package)?.strip_prefix('/')
        }
    }

    /// Whether `path` (workspace-relative) is the target's to write and
    /// delete: a declared output file, a path matching a declared glob, or
    /// a declared output directory or anything in it; never inside a
    /// sub-package.
    pub fn owns(&self, path: &str) -> bool {
        let Some(rel) = self.in_package(path) else {
            return false;
        };
        let declared =
            self.target.outs.iter().zip(&self.globs).any(|(o, g)| {
                matches!(o, OutSpec::Dir(d) if d == rel) || o.covers(rel, g.as_ref())
            });
        declared && self.subpackage_of(path).is_none()
    }

    /// One path a tree names: normalized, owned by the target, and not one
    /// of its inputs.
    pub fn check_path(&self, path: &str, is_input: &dyn Fn(&str) -> bool) -> Result<(), String> {
        let label = &self.target.label;
        let shown = shown(path);
        if path.starts_with('/') {
            return Err(format!("output path {shown} is absolute"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(format!("output path {shown} contains '..'"));
        }
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c.contains('\\') || c.contains('\0'))
        {
            return Err(format!(
                "output path {shown} is not a normalized relative path"
            ));
        }
        if let Some(sub) = self.subpackage_of(path) {
            return Err(format!(
                "output path {shown} is inside package //{sub}, not an output of {label}"
            ));
        }
        if !self.owns(path) {
            return Err(format!(
                "output path {shown} is not a declared output of {label}"
            ));
        }
        if is_input(path) {
            return Err(format!("output path {shown} is an input of {label}"));
        }
        Ok(())
    }

    /// Every path of `tree`, and where every symlink of it leads (`root`
    /// is the workspace, read for symlinks outside the target's outputs).
    pub fn check_tree(
        &self,
        root: &Path,
        tree: &Tree,
        is_input: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        let mut links = HashMap::new();
        for e in tree.entries() {
            self.check_path(&e.path, is_input)?;
            if let EntryKind::Symlink { target } = &e.kind {
                links.insert(e.path.as_str(), target.as_str());
            }
        }
        // A path the target owns holds, after the restore, exactly what the
        // tree says; anything else is whatever the workspace has now.
        let on_disk = |p: &str| -> Option<String> {
            if self.owns(p) {
                return None;
            }
            let abs = root.join(p);
            let meta = std::fs::symlink_metadata(&abs).ok()?;
            if !meta.file_type().is_symlink() {
                return None;
            }
            let t = std::fs::read_link(&abs).ok()?;
            // A non-UTF-8 target cannot be checked: treat it as leaving.
            Some(t.to_str().map_or_else(|| "/".into(), str::to_string))
        };
        for (path, target) in &links {
            resolve_inside(path, target, &|p| {
                links.get(p).map(|t| t.to_string()).or_else(|| on_disk(p))
            })?;
        }
        Ok(())
    }
}

/// Whether `path` is strictly below the directory `dir` (both relative).
fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

pub(crate) fn shown(s: &str) -> String {
    format!("{:?}", truncate_text(s))
}

/// Follows the symlink at `path` to `target` the way the kernel would,
/// expanding every symlink met on the way (`link_at` says what is a
/// symlink, and to where), and fails if the walk ever climbs above the
/// workspace root or reaches an absolute path. The last component need not
/// exist (a dangling link inside the workspace is harmless).
pub fn resolve_inside(
    path: &str,
    target: &str,
    link_at: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let outside = || {
        format!(
            "symlink {} points to {}, outside the workspace",
            shown(path),
            shown(target)
        )
    };
    if target.is_empty() || target.starts_with('/') {
        return Err(outside());
    }
    // `here` is the directory reached so far; `lens` the length of `here`
    // before each component, to pop it.
    let mut here = String::new();
    let mut lens: Vec<usize> = Vec::new();
    for c in path.split('/').take(path.split('/').count() - 1) {
        lens.push(here.len());
        push_component(&mut here, c);
    }
    let mut pending: Vec<String> = target.split('/').rev().map(str::to_string).collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "" | "." => {}
            ".." => match lens.pop() {
                Some(len) => here.truncate(len),
                None => return Err(outside()),
            },
            name => {
                lens.push(here.len());
                push_component(&mut here, name);
                if let Some(next) = link_at(&here) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(format!(
                            "symlink {} leads through more than {MAX_LINK_HOPS} symlinks",
                            shown(path)
                        ));
                    }
                    if next.is_empty() || next.starts_with('/') {
                        return Err(outside());
                    }
                    here.truncate(lens.pop().expect("just pushed"));
                    pending.extend(next.split('/').rev().map(str::to_string));
                }
            }
        }
    }
    Ok(())
}

fn push_component(here: &mut String, c: &str) {
    if !here.is_empty() {
        here.push('/');
    }
    here.push_str(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, target: &str, links: &[(&str, &str)]) -> bool {
        let links: HashMap<&str, &str> = links.iter().copied().collect();
        resolve_inside(path, target, &|p| links.get(p).map(|t| t.to_string())).is_ok()
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert!(check("a/b/link", "../c", &[]));
        assert!(check("a/b/link", "../../c", &[]));
        assert!(!check("a/b/link", "../../../c", &[]));
        assert!(!check("link", "/etc/passwd", &[]));
        assert!(!check("link", "x/../..", &[]));
        assert!(!check("link", "", &[]));
    }

    #[test]
    fn chains_through_other_symlinks_are_followed() {
        // Each link alone stays inside; together they reach /etc/passwd.
        let links = [("p/out/d/b", "../../..")];
        assert!(check("p/out/d/b", "../../..", &[]));
        assert!(check("p/out/d/a", "b/../../../etc/passwd", &[]));
        assert!(!check("p/out/d/a", "b/../../../etc/passwd", &links));
        // Through a link to a directory deeper in: fine.
        assert!(check("p/out/a", "d/x", &[("p/out/d", "../../q/r")]));
        // A loop is refused rather than followed forever.
        assert!(!check("p/a", "b/x", &[("p/b", "c"), ("p/c", "b")]));
        // A link met on the way that is absolute leaves.
        assert!(!check("p/a", "b/x", &[("p/b", "/tmp")]));
    }
}
