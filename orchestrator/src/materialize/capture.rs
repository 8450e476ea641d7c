//! Capture: what an action wrote under its declared outputs, into the store
//! as a `Tree`. Only regular files, directories and symlinks can be
//! outputs: anything else (a FIFO, a socket, a device) is an error naming
//! the path, and is never opened (opening a FIFO blocks forever).
use super::confine::Confinement;
use crate::globs::{out_glob, OutSpec};
use crate::workspace::{join_package, Workspace};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::FileType;
use std::path::{Path, PathBuf};
use vbuild_store::{EntryKind, FileStat, Store, Tree, TreeEntry};

/// What kind of file an output is, or why it cannot be one.
fn special_kind(t: &FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else if t.is_file() || t.is_dir() || t.is_symlink() {
        None
    } else {
        Some("not a regular file, directory or symlink")
    }
}

/// Reads one file or symlink of an action's output into the store.
fn capture_entry(store: &Store, abs: &Path, path: String) -> Result<TreeEntry> {
    let meta = std::fs::symlink_metadata(abs)?;
    let kind = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(abs)?;
        EntryKind::Symlink {
            target: target
                .to_str()
                .context("symlink targets must be UTF-8")?
                .to_string(),
        }
    } else if let Some(what) = special_kind(&meta.file_type()) {
        bail!(
            "output '{path}' is {what}: only regular files, directories and symlinks can be outputs; \
             remove it before the command ends, or leave it out of outs"
        );
    } else {
        let (digest, size) = store.cas.put_file(abs)?;
        EntryKind::File {
            digest,
            size,
            executable: FileStat::from_metadata(&meta).executable,
        }
    };
    Ok(TreeEntry { path, kind })
}

/// One file (not directory) found under an output: absolute path, path
/// relative to the walk's base, its type.
type Found = (PathBuf, String, FileType);

/// Files under `dir`, relative to `base`, '/'-separated, never descending
/// into a sub-package (`skip`, relative to `base`) nor listing vbuild's
/// own temp files.
fn walk_files(dir: &Path, base: &Path, skip: &dyn Fn(&str) -> bool) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let rel_of = |p: &Path| -> Result<String> {
        let rel = p.strip_prefix(base).expect("inside base");
        Ok(rel
            .to_str()
            .context("output file names must be UTF-8")?
            .to_string())
    };
    let mut walk = walkdir::WalkDir::new(dir).follow_links(false).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry?;
        if entry.file_type().is_dir() {
            if entry.depth() > 0 && skip(&rel_of(entry.path())?) {
                walk.skip_current_dir();
            }
            continue;
        }
        let name = entry.file_name().to_str().unwrap_or("");
        if vbuild_store::temp::is_temp_name(name) {
            continue;
        }
        out.push((
            entry.path().to_path_buf(),
            rel_of(entry.path())?,
            entry.file_type(),
        ));
    }
    Ok(out)
}

/// Captures the declared outputs of the target `conf` confines from
/// `ws_root` (the scratch copy of the workspace). `inputs` are skipped by
/// output globs; paths under `ignored` (workspace-relative prefixes) are not
/// captured. The tree is checked as a restore would check it (against the
/// real workspace `ws`), so an entry that could never be restored is never
/// stored.
pub fn capture(
    store: &Store,
    ws: &Workspace,
    conf: &Confinement,
    ws_root: &Path,
    inputs: &BTreeSet<&str>,
    ignored: &[String],
) -> Result<Tree> {
    let target = conf.target();
    let package = &target.label.package;
    let pkg_dir = ws_root.join(package);
    let is_ignored = |p: &str| {
        ignored
            .iter()
            .any(|i| p == i || p.starts_with(&format!("{i}/")))
    };
    let in_subpackage = |rel: &str| conf.subpackage_of(&join_package(package, rel)).is_some();
    let mut entries = Vec::new();
    for (i, spec) in target.outs.iter().enumerate() {
        // `optional_outs` may be left unwritten (turbo's outputs may match
        // nothing); what is there is captured all the same.
        let required = i < target.required_outs;
        match spec {
            OutSpec::Dir(dir) => {
                let abs = pkg_dir.join(dir);
                let files = if abs.is_dir() {
                    walk_files(&abs, &pkg_dir, &in_subpackage)?
                } else {
                    vec![]
                };
                // The sandbox creates declared directories up front, so an
                // empty one means the action wrote nothing there.
                if files.is_empty() && required {
                    bail!(
                        "declared output '{}' was not created by {} (or holds no files)",
                        spec.text(),
                        target.label
                    );
                }
                for (file, rel, _) in files {
                    let path = join_package(package, &rel);
                    if !is_ignored(&path) {
                        entries.push(capture_entry(store, &file, path)?);
                    }
                }
            }
            OutSpec::File(rel) => {
                let abs = pkg_dir.join(rel);
                if std::fs::symlink_metadata(&abs).is_err() {
                    if !required {
                        continue;
                    }
                    bail!(
                        "declared output '{rel}' was not created by {}",
                        target.label
                    );
                }
                entries.push(capture_entry(store, &abs, join_package(package, rel))?);
            }
            OutSpec::Glob(pattern) => {
                let glob = out_glob(pattern)?;
                let mut any = false;
                for (file, rel, _) in walk_files(&pkg_dir, &pkg_dir, &in_subpackage)? {
                    let path = join_package(package, &rel);
                    if glob.is_match(&rel) && !inputs.contains(path.as_str()) && !is_ignored(&path)
                    {
                        any = true;
                        entries.push(capture_entry(store, &file, path)?);
                    }
                }
                if !any && required {
                    bail!(
                        "declared output '{pattern}' matched no file written by {}",
                        target.label
                    );
                }
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    let tree = Tree::new(entries)?;
    conf.check_tree(&ws.root, &tree, &|p| inputs.contains(p))
        .map_err(|e| anyhow::anyhow!("{}: {e}", target.label))?;
    Ok(tree)
}
