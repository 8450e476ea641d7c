//! Outputs: capture what an action wrote (into the store, as a `Tree`) and
//! materialize a `Tree` into the workspace, touching only declared outputs
//! and rewriting only what is missing or different.
use crate::globs::{out_glob, OutSpec};
use crate::workspace::join_package;
use crate::workspace::Target;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vbuild_store::{EntryKind, FileStat, StatCache, Store, Tree, TreeEntry};

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

/// Files (not directories) under `dir`, relative to `base`, '/'-separated.
fn walk_files(dir: &Path, base: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(base).expect("inside base");
        let rel = rel
            .to_str()
            .context("output file names must be UTF-8")?
            .to_string();
        out.push((entry.path().to_path_buf(), rel));
    }
    Ok(out)
}

/// Captures the declared outputs of `target` from `ws_root` (the scratch
/// copy of the workspace). `inputs` are skipped by output globs; paths
/// under `ignored` (workspace-relative prefixes) are not captured.
pub fn capture(
    store: &Store,
    target: &Target,
    ws_root: &Path,
    inputs: &BTreeSet<&str>,
    ignored: &[String],
) -> Result<Tree> {
    let package = &target.label.package;
    let pkg_dir = ws_root.join(package);
    let is_ignored = |p: &str| {
        ignored
            .iter()
            .any(|i| p == i || p.starts_with(&format!("{i}/")))
    };
    let mut entries = Vec::new();
    for spec in &target.outs {
        match spec {
            OutSpec::Dir(dir) => {
                let abs = pkg_dir.join(dir);
                let files = if abs.is_dir() {
                    walk_files(&abs, &pkg_dir)?
                } else {
                    vec![]
                };
                // The sandbox creates declared directories up front, so an
                // empty one means the action wrote nothing there.
                if files.is_empty() {
                    bail!(
                        "declared output '{}' was not created by {} (or holds no files)",
                        spec.text(),
                        target.label
                    );
                }
                for (file, rel) in files {
                    let path = join_package(package, &rel);
                    if !is_ignored(&path) {
                        entries.push(capture_entry(store, &file, path)?);
                    }
                }
            }
            OutSpec::File(rel) => {
                let abs = pkg_dir.join(rel);
                if std::fs::symlink_metadata(&abs).is_err() {
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
                for (file, rel) in walk_files(&pkg_dir, &pkg_dir)? {
                    let path = join_package(package, &rel);
                    if glob.is_match(&rel) && !inputs.contains(path.as_str()) && !is_ignored(&path)
                    {
                        any = true;
                        entries.push(capture_entry(store, &file, path)?);
                    }
                }
                if !any {
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
    Ok(Tree::new(entries)?)
}

/// Refuses to write through a symlink: every existing component between the
/// workspace root and `path` must be a real directory.
fn check_no_symlink_parents(root: &Path, rel: &str) -> Result<()> {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::remove_file(&cur)?;
                std::fs::create_dir(&cur)?;
            }
            Ok(m) if !m.is_dir() => {
                std::fs::remove_file(&cur)?;
                std::fs::create_dir(&cur)?;
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(&cur)?,
        }
    }
    Ok(())
}

/// Whether the workspace already holds exactly `kind` at `abs`.
fn up_to_date(stat_cache: &StatCache, abs: &Path, kind: &EntryKind) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(abs) else {
        return false;
    };
    match kind {
        EntryKind::Symlink { target } => {
            meta.file_type().is_symlink()
                && std::fs::read_link(abs).is_ok_and(|t| t.to_str() == Some(target.as_str()))
        }
        EntryKind::File {
            digest,
            size,
            executable,
        } => {
            if !meta.is_file() || meta.len() != *size {
                return false;
            }
            let stat = FileStat::from_metadata(&meta);
            if stat.executable != *executable {
                return false;
            }
            let actual = match stat_cache.lookup(abs, &stat) {
                Some(d) => d,
                None => match vbuild_store::Digest::of_file(abs) {
                    Ok(d) => {
                        stat_cache.record(abs, &stat, d);
                        d
                    }
                    Err(_) => return false,
                },
            };
            actual == *digest
        }
    }
}

fn place(store: &Store, stat_cache: &StatCache, root: &Path, entry: &TreeEntry) -> Result<bool> {
    let abs = root.join(&entry.path);
    if up_to_date(stat_cache, &abs, &entry.kind) {
        return Ok(false);
    }
    check_no_symlink_parents(root, &entry.path)?;
    if let Ok(m) = std::fs::symlink_metadata(&abs) {
        if m.is_dir() {
            std::fs::remove_dir_all(&abs)?;
        }
    }
    match &entry.kind {
        EntryKind::File {
            digest, executable, ..
        } => {
            store.cas.copy_out(digest, &abs, *executable)?;
            if let Ok(meta) = std::fs::symlink_metadata(&abs) {
                stat_cache.record(&abs, &FileStat::from_metadata(&meta), *digest);
            }
        }
        EntryKind::Symlink { target } => {
            let _ = std::fs::remove_file(&abs);
            std::os::unix::fs::symlink(target, &abs)?;
        }
    }
    Ok(true)
}

/// Makes the workspace's declared outputs of `target` equal to `tree`.
/// Returns how many paths were written or removed.
pub fn materialize(
    store: &Store,
    stat_cache: &StatCache,
    root: &Path,
    target: &Target,
    tree: &Tree,
) -> Result<usize> {
    let package = &target.label.package;
    let mut changed = 0;
    let wanted: BTreeSet<&str> = tree.entries().iter().map(|e| e.path.as_str()).collect();
    // Remove stale files inside declared output directories and files.
    for spec in &target.outs {
        match spec {
            OutSpec::Dir(dir) => {
                let abs = root.join(join_package(package, dir));
                match std::fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {
                        for (file, rel) in walk_files(&abs, root)? {
                            if !wanted.contains(rel.as_str()) {
                                std::fs::remove_file(&file)?;
                                changed += 1;
                            }
                        }
                    }
                    Ok(_) => {
                        std::fs::remove_file(&abs)?;
                        changed += 1;
                    }
                    Err(_) => {}
                }
            }
            OutSpec::File(rel) => {
                let path = join_package(package, rel);
                let abs = root.join(&path);
                if !wanted.contains(path.as_str()) && std::fs::symlink_metadata(&abs).is_ok() {
                    std::fs::remove_file(&abs)?;
                    changed += 1;
                }
            }
            // A glob may match sources too: never delete on a glob's behalf.
            OutSpec::Glob(_) => {}
        }
    }
    for entry in tree.entries() {
        if place(store, stat_cache, root, entry)
            .with_context(|| format!("restoring {}", entry.path))?
        {
            changed += 1;
        }
    }
    Ok(changed)
}
