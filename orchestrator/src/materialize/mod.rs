//! Outputs: `capture` what an action wrote (into the store, as a `Tree`)
//! and `materialize` a `Tree` into the workspace.
//!
//! `materialize` is the only code that writes outputs into the workspace:
//! fresh builds, local hits and remote hits all go through it, and it trusts
//! no tree (docs/architecture.md, "Materialization rules"). It works in
//! three passes, and nothing is deleted before the first two succeed:
//! 1. the tree is confined (`confine`): every path a declared output of the
//!    target, outside its sub-packages, not an input; every symlink leads
//!    inside the workspace;
//! 2. the workspace is checked: no directory above what the target owns is
//!    a symlink or a file (a restore never writes or deletes through one);
//! 3. stale files under declared outputs are removed and missing or
//!    different entries written, each through a temp file renamed into
//!    place (`vbuild_store::temp`: never a named file a crash could leave).
mod capture;
mod confine;

pub use capture::capture;
pub use confine::Confinement;

use crate::globs::OutSpec;
use crate::workspace::{join_package, Target, Workspace};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::ErrorKind;
use std::path::Path;
use vbuild_store::temp::{is_temp_name, sweep_dead, temp_in_use};
use vbuild_store::{EntryKind, FileStat, StatCache, Store, Tree, TreeEntry};

/// Makes the workspace's declared outputs of `target` equal to `tree`,
/// refusing (before touching anything) a tree or a workspace that would
/// make it write outside them. `inputs` are the action's inputs, which no
/// tree may overwrite. Returns how many paths were written or removed.
pub fn materialize(
    store: &Store,
    stat_cache: &StatCache,
    ws: &Workspace,
    target: &Target,
    inputs: &BTreeMap<String, EntryKind>,
    tree: &Tree,
) -> Result<usize> {
    let conf = Confinement::new(ws, target).map_err(|e| anyhow!("{}: {e}", target.label))?;
    conf.check_tree(&ws.root, tree, &|p| inputs.contains_key(p))
        .map_err(|e| anyhow!("refusing to restore {}: {e}", target.label))?;
    let mut w = Writer {
        root: &ws.root,
        conf: &conf,
        store,
        stat_cache,
        dirs: HashSet::new(),
        swept: HashSet::new(),
    };
    let package = &target.label.package;
    for spec in &target.outs {
        if let OutSpec::Dir(p) | OutSpec::File(p) = spec {
            w.parents(&join_package(package, p), false)?;
        }
    }
    for entry in tree.entries() {
        w.parents(&entry.path, false)?;
    }
    let wanted: BTreeSet<&str> = tree.entries().iter().map(|e| e.path.as_str()).collect();
    let mut changed = w.remove_stale(&wanted)?;
    for entry in tree.entries() {
        if w.place(entry)
            .with_context(|| format!("restoring {}", entry.path))?
        {
            changed += 1;
        }
    }
    Ok(changed)
}

struct Writer<'a> {
    root: &'a Path,
    conf: &'a Confinement<'a>,
    store: &'a Store,
    stat_cache: &'a StatCache,
    /// Workspace-relative directories known to be real directories.
    dirs: HashSet<String>,
    /// Directories already swept of dead runs' temp files.
    swept: HashSet<String>,
}

impl Writer<'_> {
    /// Walks the directories above `path` from the top. Above what the
    /// target owns, each must be a real directory or absent (then created
    /// if `make`); a symlink or a file there is an error, so nothing is ever
    /// written or deleted through it. Inside what it owns, a symlink or a
    /// file in a directory's place is replaced by a directory (if `make`).
    fn parents(&mut self, path: &str, make: bool) -> Result<()> {
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if self.dirs.contains(dir) {
                continue;
            }
            let owned = self.conf.owns(dir);
            let abs = self.root.join(dir);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    if !make {
                        return Ok(()); // nothing below exists either
                    }
                    create_dir(&abs)?;
                }
                Ok(_) if owned => {
                    if !make {
                        // Replaced in the write pass; nothing below it is
                        // read or deleted before that.
                        return Ok(());
                    }
                    remove_not_found_ok(&abs)?;
                    create_dir(&abs)?;
                }
                Ok(m) if m.file_type().is_symlink() => {
                    let to = std::fs::read_link(&abs).unwrap_or_default();
                    bail!(
                        "'{dir}' is a symlink (to {}): vbuild never writes outputs of {} through a \
                         symlinked directory; remove the symlink (`rm {dir}`) and run again",
                        to.display(),
                        self.conf.target().label
                    );
                }
                Ok(_) => bail!(
                    "'{dir}' is a file where outputs of {} need a directory; remove or rename it and run again",
                    self.conf.target().label
                ),
                Err(e) => return Err(e).with_context(|| format!("checking '{dir}'")),
            }
            self.dirs.insert(dir.to_string());
        }
        Ok(())
    }

    /// Removes what the workspace has under declared outputs that the tree
    /// does not list: files in a `dir/` output (never in a sub-package, never
    /// another live run's temp file), a declared file. A glob output never
    /// deletes, since a glob may also match sources.
    fn remove_stale(&mut self, wanted: &BTreeSet<&str>) -> Result<usize> {
        let target = self.conf.target();
        let package = &target.label.package;
        let mut removed = 0;
        for spec in &target.outs {
            match spec {
                OutSpec::Dir(dir) => {
                    let rel = join_package(package, dir);
                    let abs = self.root.join(&rel);
                    match std::fs::symlink_metadata(&abs) {
                        Ok(m) if m.is_dir() => {
                            removed += self.remove_stale_in(&abs, wanted)?;
                        }
                        Ok(_) => {
                            remove_not_found_ok(&abs)?;
                            removed += 1;
                        }
                        Err(_) => {}
                    }
                }
                OutSpec::File(file) => {
                    let path = join_package(package, file);
                    let abs = self.root.join(&path);
                    if !wanted.contains(path.as_str()) && std::fs::symlink_metadata(&abs).is_ok() {
                        remove_any(&abs)?;
                        removed += 1;
                    }
                }
                OutSpec::Glob(_) => {}
            }
        }
        Ok(removed)
    }

    fn remove_stale_in(&self, dir: &Path, wanted: &BTreeSet<&str>) -> Result<usize> {
        let mut removed = 0;
        let mut walk = walkdir::WalkDir::new(dir).follow_links(false).into_iter();
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(e) => e,
                // Another run removed it under us.
                Err(e)
                    if e.io_error()
                        .is_some_and(|e| e.kind() == ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            let rel = entry
                .path()
                .strip_prefix(self.root)
                .expect("inside the workspace")
                .to_str()
                .context("output file names must be UTF-8")?;
            if entry.file_type().is_dir() {
                if self.conf.subpackage_of(rel).is_some() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let name = entry.file_name().to_str().unwrap_or("");
            if wanted.contains(rel) || (is_temp_name(name) && temp_in_use(name)) {
                continue;
            }
            remove_not_found_ok(entry.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes one entry unless the workspace already has it.
    fn place(&mut self, entry: &TreeEntry) -> Result<bool> {
        let abs = self.root.join(&entry.path);
        if up_to_date(self.stat_cache, &abs, &entry.kind) {
            return Ok(false);
        }
        self.parents(&entry.path, true)?;
        if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
            remove_any(&abs)?;
        }
        match &entry.kind {
            EntryKind::File {
                digest, executable, ..
            } => {
                self.store.cas.copy_out(digest, &abs, *executable)?;
                if let Ok(meta) = std::fs::symlink_metadata(&abs) {
                    self.stat_cache
                        .record(&abs, &FileStat::from_metadata(&meta), *digest);
                }
            }
            EntryKind::Symlink { target } => self.store.cas.put_symlink(target, &abs)?,
        }
        // Leftovers of a killed older vbuild beside this output: they would
        // otherwise be listed as inputs by a glob.
        let parent = entry.path.rsplit_once('/').map_or("", |(p, _)| p);
        if self.swept.insert(parent.to_string()) {
            sweep_dead(abs.parent().expect("has a parent"));
        }
        Ok(true)
    }
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

fn create_dir(abs: &Path) -> Result<()> {
    match std::fs::create_dir(abs) {
        Ok(()) => Ok(()),
        // Another run made it first.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && abs.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", abs.display())),
    }
}

/// Removes a file or symlink; gone already (another run) is fine.
fn remove_not_found_ok(abs: &Path) -> Result<()> {
    match std::fs::remove_file(abs) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", abs.display()))
        }
        _ => Ok(()),
    }
}

/// Removes a file, symlink or directory tree, never following a symlink.
fn remove_any(abs: &Path) -> Result<()> {
    match std::fs::symlink_metadata(abs) {
        Ok(m) if m.is_dir() => match std::fs::remove_dir_all(abs) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", abs.display()))
            }
            _ => Ok(()),
        },
        Ok(_) => remove_not_found_ok(abs),
        Err(_) => Ok(()),
    }
}
