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
//!    different entries written: a new file unnamed in its directory and
//!    linked to its name once complete (`create.rs`), a replaced one through
//!    a temp file renamed into place (`vbuild_store::temp`); never a named
//!    file a crash could leave half-written. Directories are checked once
//!    and used through open fds (`dirs.rs`).
mod capture;
mod confine;
mod create;
mod dirs;

pub use capture::capture;
pub use confine::Confinement;

use create::{create, Created};
use dirs::{Dirs, Found};

use crate::globs::OutSpec;
use crate::workspace::{join_package, Target, Workspace};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
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
        dirs: Dirs::new(&ws.root)?,
        swept: HashSet::new(),
    };
    // Deepest first: one `openat2` that reaches an entry's directory has
    // checked every directory above it too.
    for entry in tree.entries() {
        w.parents(&entry.path, false)?;
    }
    let package = &target.label.package;
    for spec in &target.outs {
        if let OutSpec::Dir(p) | OutSpec::File(p) = spec {
            w.parents(&join_package(package, p), false)?;
        }
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
    /// Directories checked or made so far, held open.
    dirs: Dirs,
    /// Directories already swept of dead runs' temp files.
    swept: HashSet<String>,
}

impl Writer<'_> {
    /// The directory `rel`, checked (see `dirs.rs`): above what the target
    /// owns each directory must be a real directory or absent (then created
    /// if `make`); a symlink or a file there is an error, so nothing is ever
    /// written or deleted through it. Inside what it owns, a symlink or a
    /// file in a directory's place is replaced by a directory (if `make`).
    fn dir(&mut self, rel: &str, make: bool) -> Result<Found> {
        let conf = self.conf;
        self.dirs
            .get(rel, make, &|p| conf.owns(p), &conf.target().label)
    }

    /// The directory holding `path`.
    fn parents(&mut self, path: &str, make: bool) -> Result<Found> {
        self.dir(parent_of(path), make)
    }

    /// Removes what the workspace has under declared outputs that the tree
    /// does not list: files in a `dir/` output (never in a sub-package, never
    /// another live run's temp file), a declared file. A glob output never
    /// deletes, since a glob may also match sources.
    fn remove_stale(&mut self, wanted: &BTreeSet<&str>) -> Result<usize> {
        let conf = self.conf;
        let target = conf.target();
        let package = &target.label.package;
        let mut removed = 0;
        for spec in &target.outs {
            match spec {
                OutSpec::Dir(dir) => {
                    let rel = join_package(package, dir);
                    match self
                        .dirs
                        .get_open(&rel, false, &|p| conf.owns(p), &target.label)?
                    {
                        Found::Dir { fd, .. } => {
                            let fd = fd.expect("get_open holds it open");
                            removed += self.remove_stale_in(&rel, fd, wanted)?;
                        }
                        Found::NotDir => {
                            remove_not_found_ok(&self.root.join(&rel))?;
                            removed += 1;
                        }
                        Found::Absent => {}
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

    /// Removes the unwanted files below the directory `rel`, listed through
    /// its open `fd` (no path is resolved again; subdirectories are opened
    /// relative to it without following symlinks), never descending into a
    /// sub-package or removing another live run's temp file.
    fn remove_stale_in(&self, rel: &str, fd: RawFd, wanted: &BTreeSet<&str>) -> Result<usize> {
        let mut removed = 0;
        let entries = dirs::list(fd).with_context(|| format!("listing '{rel}'"))?;
        for (name, is_dir) in entries {
            let name = name
                .into_string()
                .map_err(|n| anyhow!("output file names must be UTF-8: {n:?} in '{rel}'"))?;
            let path = format!("{rel}/{name}");
            let cname = dirs::cstr(name.as_bytes())?;
            if is_dir {
                if self.conf.subpackage_of(&path).is_some() {
                    continue;
                }
                match dirs::open_dir_at(fd, &cname) {
                    Ok(sub) => removed += self.remove_stale_in(&path, sub.as_raw_fd(), wanted)?,
                    // Removed or replaced under us (another run): what
                    // stands there now is its business.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                        ) => {}
                    Err(e) => return Err(e).with_context(|| format!("opening '{path}'")),
                }
                continue;
            }
            if wanted.contains(path.as_str()) || (is_temp_name(&name) && temp_in_use(&name)) {
                continue;
            }
            if unsafe { libc::unlinkat(fd, cname.as_ptr(), 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOENT) {
                    return Err(e).with_context(|| format!("removing '{path}'"));
                }
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes one entry unless the workspace already has it.
    fn place(&mut self, entry: &TreeEntry) -> Result<bool> {
        let abs = self.root.join(&entry.path);
        let (dirfd, made) = match self.parents(&entry.path, true)? {
            Found::Dir { fd, made } => (fd.expect("made directories are held open"), made),
            // `make` replaces whatever stood there by a directory.
            Found::Absent | Found::NotDir => bail!("'{}' has no directory", entry.path),
        };
        let name = entry
            .path
            .rsplit_once('/')
            .map_or(entry.path.as_str(), |(_, n)| n);
        // In a directory this run just made there is nothing to compare.
        let absent = made || {
            match on_disk(self.stat_cache, &abs, &entry.kind) {
                OnDisk::Same => return Ok(false),
                OnDisk::Absent => true,
                OnDisk::Dir => {
                    remove_any(&abs)?;
                    true
                }
                OnDisk::Differs => false,
            }
        };
        match &entry.kind {
            EntryKind::File {
                digest,
                size,
                executable,
            } => {
                // Not recorded in the stat cache: a file written now has an
                // mtime within the racy margin of now, so its entry would
                // never be trusted (`StatCache::lookup`); the next run hashes
                // it once and records it then. Recording here only cost a
                // database row per file.
                let created = match absent {
                    true => create(self.store, dirfd, name, &abs, digest, *size, *executable)?,
                    false => Created::Fallback,
                };
                if let Created::Fallback = created {
                    self.store.cas.copy_out(digest, &abs, *executable)?;
                }
            }
            EntryKind::Symlink { target } => {
                // A symlink is made whole by one call: where nothing is,
                // no temp name is needed.
                if !(absent && symlink_at(target, dirfd, name)?) {
                    self.store.cas.put_symlink(target, &abs)?;
                }
            }
        }
        // Leftovers of a killed older vbuild beside this output: they would
        // otherwise be listed as inputs by a glob. A directory this run
        // made has none.
        let parent = parent_of(&entry.path);
        if !made && self.swept.insert(parent.to_string()) {
            sweep_dead(abs.parent().expect("has a parent"));
        }
        Ok(true)
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// `symlinkat`; false if something is at the path already (another run).
fn symlink_at(target: &str, dirfd: std::os::fd::RawFd, name: &str) -> Result<bool> {
    let (t, n) = (dirs::cstr(target.as_bytes())?, dirs::cstr(name.as_bytes())?);
    if unsafe { libc::symlinkat(t.as_ptr(), dirfd, n.as_ptr()) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(e).with_context(|| format!("creating the symlink {name}"))
}

/// What the workspace holds where an entry goes.
enum OnDisk {
    /// Exactly the entry.
    Same,
    Absent,
    /// A directory (removed before writing).
    Dir,
    /// Something else: replaced through a temp file renamed over it.
    Differs,
}

fn on_disk(stat_cache: &StatCache, abs: &Path, kind: &EntryKind) -> OnDisk {
    match std::fs::symlink_metadata(abs) {
        Err(e) if e.kind() == ErrorKind::NotFound => OnDisk::Absent,
        Ok(m) if m.is_dir() => OnDisk::Dir,
        Ok(m) if up_to_date(stat_cache, abs, &m, kind) => OnDisk::Same,
        _ => OnDisk::Differs,
    }
}

/// Whether the workspace already holds exactly `kind` at `abs`, whose
/// `lstat` is `meta`.
fn up_to_date(stat_cache: &StatCache, abs: &Path, meta: &Metadata, kind: &EntryKind) -> bool {
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
            let stat = FileStat::from_metadata(meta);
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
