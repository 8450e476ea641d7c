//! What a remote entry may write: declared outputs of the target only,
//! never its inputs, and symlinks that stay inside the workspace.
use crate::globs::{out_glob, OutSpec};
use crate::workspace::Target;
use std::collections::BTreeMap;
use vbuild_store::remote as wire;
use vbuild_store::EntryKind;

/// The target's declared outputs, to confine what a remote entry may write.
pub(super) struct DeclaredOuts<'a> {
    target: &'a Target,
    globs: Vec<Option<globset::GlobMatcher>>,
}

impl<'a> DeclaredOuts<'a> {
    pub(super) fn new(target: &'a Target) -> Result<DeclaredOuts<'a>, String> {
        let globs = target
            .outs
            .iter()
            .map(|o| match o {
                OutSpec::Glob(g) => out_glob(g).map(Some).map_err(|e| e.to_string()),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(DeclaredOuts { target, globs })
    }

    /// A workspace-relative path a remote entry names: normalized, inside
    /// a declared output of the target, and not one of its inputs.
    pub(super) fn check(
        &self,
        path: &str,
        inputs: &BTreeMap<String, EntryKind>,
    ) -> Result<(), String> {
        let label = &self.target.label;
        let shown = wire_text(path);
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
        let package = &label.package;
        let rel = if package.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(package.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let covered = rel.is_some_and(|rel| {
            self.target
                .outs
                .iter()
                .zip(&self.globs)
                .any(|(o, g)| o.covers(rel, g.as_ref()))
        });
        if !covered {
            return Err(format!(
                "output path {shown} is not a declared output of {label}"
            ));
        }
        if inputs.contains_key(path) {
            return Err(format!("output path {shown} is an input of {label}"));
        }
        Ok(())
    }
}

fn wire_text(s: &str) -> String {
    format!("{:?}", wire::truncate_text(s))
}

/// A symlink from a remote must point inside the workspace: relative, and
/// never climbing above the workspace root.
pub(super) fn check_symlink_target(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() || target.starts_with('/') {
        return Err(format!(
            "symlink {} points to {}, outside the workspace",
            wire_text(path),
            wire_text(target)
        ));
    }
    let mut depth = path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink {} points to {}, outside the workspace",
                        wire_text(path),
                        wire_text(target)
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_stay_inside() {
        assert!(check_symlink_target("a/b/link", "../c").is_ok());
        assert!(check_symlink_target("a/b/link", "../../c").is_ok());
        assert!(check_symlink_target("a/b/link", "../../../c").is_err());
        assert!(check_symlink_target("link", "/etc/passwd").is_err());
        assert!(check_symlink_target("link", "x/../..").is_err());
        assert!(check_symlink_target("link", "").is_err());
    }
}
