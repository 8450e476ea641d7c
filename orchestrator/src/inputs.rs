//! Resolving a target's inputs: list its package's files once, match the
//! srcs globs, and digest each file through the stat cache (a no-op run
//! reads no file it has hashed before).
use crate::globs::OutSpec;
use crate::workspace::join_package;
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use vbuild_store::{EntryKind, FileStat, StatCache, Store, Tree};

/// Package-relative paths of the files and symlinks of one package, not
/// descending into sub-packages, node_modules or hidden directories, and
/// leaving out what the package's targets declare as outputs.
pub struct PackageFiles {
    pub paths: Vec<String>,
}

/// Lazily listed packages, shared by all actions of a run.
pub struct PackageIndex {
    lists: HashMap<String, OnceLock<Result<Arc<PackageFiles>, String>>>,
    /// `[workspace] inputs`, resolved once per run.
    workspace_inputs: OnceLock<Result<Arc<Srcs>, String>>,
    /// Targets of each package (their outputs are never sources).
    targets_of: HashMap<String, Vec<usize>>,
    /// The workspace root's descriptor: sources are stat-ed relative to it.
    root: crate::statat::Root,
}

impl PackageIndex {
    pub fn new(ws: &Workspace) -> PackageIndex {
        let lists = ws
            .packages
            .iter()
            .map(|p| (p.clone(), OnceLock::new()))
            .collect();
        let mut targets_of: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in ws.targets.iter().enumerate() {
            targets_of
                .entry(t.label.package.clone())
                .or_default()
                .push(i);
        }
        PackageIndex {
            lists,
            workspace_inputs: OnceLock::new(),
            targets_of,
            root: crate::statat::Root::open(&ws.root),
        }
    }

    /// The files `[workspace] inputs` match, with their digests: any file
    /// of the workspace except what a target declares as an output.
    pub fn workspace_inputs(
        &self,
        ws: &Workspace,
        store: &Store,
        stat_cache: &StatCache,
    ) -> Result<Arc<Srcs>> {
        self.workspace_inputs
            .get_or_init(|| {
                self.resolve_workspace_inputs(ws, store, stat_cache)
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn resolve_workspace_inputs(
        &self,
        ws: &Workspace,
        store: &Store,
        stat_cache: &StatCache,
    ) -> Result<Srcs> {
        let mut inputs = BTreeMap::new();
        if ws.inputs.patterns.is_empty() {
            return Ok(inputs);
        }
        let m = &ws.inputs.matcher;
        let files = &ws.tree.files;
        // Mostly a few root files: look literals up instead of matching
        // every file of the workspace.
        let literal = ws
            .inputs
            .patterns
            .iter()
            .all(|p| !crate::globs::is_glob(p) && !p.starts_with('!'));
        let candidates: Vec<&String> = match literal {
            true => ws
                .inputs
                .patterns
                .iter()
                .filter_map(|p| files.binary_search(p).ok().map(|i| &files[i]))
                .collect(),
            false => files.iter().filter(|p| m.matches(p)).collect(),
        };
        for path in candidates {
            if self.is_output(ws, path) {
                continue;
            }
            let entry = entry_at(store, stat_cache, &self.root, path, &ws.root.join(path))?;
            inputs.insert(path.clone(), entry);
        }
        Ok(inputs)
    }

    /// Whether a workspace file is declared as an output by a target of
    /// the package holding it.
    fn is_output(&self, ws: &Workspace, path: &str) -> bool {
        let mut dir = path;
        let package = loop {
            dir = dir.rfind('/').map_or("", |i| &dir[..i]);
            if is_package(ws, dir) {
                break dir;
            }
            if dir.is_empty() {
                return false;
            }
        };
        let rel = match package {
            "" => path,
            p => &path[p.len() + 1..],
        };
        self.targets_of
            .get(package)
            .into_iter()
            .flatten()
            .flat_map(|&i| ws.targets[i].outs.iter())
            .any(|o| match o {
                OutSpec::Glob(g) => o.covers(rel, crate::globs::out_glob(g).ok().as_ref()),
                _ => o.covers(rel, None),
            })
    }

    pub fn files(&self, ws: &Workspace, package: &str) -> Result<Arc<PackageFiles>> {
        let cell = self.lists.get(package).context("unknown package")?;
        cell.get_or_init(|| {
            self.list_package(ws, package)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
    }

    /// The package's files, from the walk made when the workspace loaded.
    fn list_package(&self, ws: &Workspace, package: &str) -> Result<PackageFiles> {
        // Outputs of this package's targets are generated, never sources.
        let outs: Vec<(&OutSpec, Option<globset::GlobMatcher>)> = self
            .targets_of
            .get(package)
            .into_iter()
            .flatten()
            .flat_map(|&i| ws.targets[i].outs.iter())
            .map(|o| match o {
                OutSpec::Glob(g) => (o, crate::globs::out_glob(g).ok()),
                _ => (o, None),
            })
            .collect();
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}/")
        };
        let within = |p: &str| p.starts_with(prefix.as_str()) && !in_sub_package(ws, package, p);
        if let Some((_, why)) = ws
            .tree
            .errors
            .iter()
            .find(|(dir, _)| dir == package || (within(dir) && !is_package(ws, dir)))
        {
            bail!("listing package //{package}: {why}");
        }
        let files = &ws.tree.files;
        let start = files.partition_point(|f| f.as_str() < prefix.as_str());
        let mut paths = Vec::new();
        for path in files[start..]
            .iter()
            .take_while(|f| f.starts_with(prefix.as_str()))
        {
            if in_sub_package(ws, package, path) {
                continue;
            }
            let rel = &path[prefix.len()..];
            if !outs.iter().any(|(o, g)| o.covers(rel, g.as_ref())) {
                paths.push(rel.to_string());
            }
        }
        // Bytewise order, so literal srcs can be found by binary search.
        paths.sort();
        Ok(PackageFiles { paths })
    }
}

/// Whether `path` (a file or directory of the workspace, inside `package`)
/// lies in a package nested in `package`.
fn in_sub_package(ws: &Workspace, package: &str, path: &str) -> bool {
    let mut dir = path;
    while let Some(slash) = dir.rfind('/') {
        dir = &dir[..slash];
        if dir.len() <= package.len() {
            return false;
        }
        if is_package(ws, dir) {
            return true;
        }
    }
    false
}

/// Whether `path` (workspace-relative) holds a BUILD.toml of this workspace.
fn is_package(ws: &Workspace, path: &str) -> bool {
    ws.packages
        .binary_search_by(|p| p.as_str().cmp(path))
        .is_ok()
}

/// Digests one workspace file (or reads a symlink). Its bytes are not
/// stored: an action stages the file from the workspace, verified against
/// this digest (`execute::stage`).
pub fn entry_for(store: &Store, stat_cache: &StatCache, abs: &Path) -> Result<EntryKind> {
    let meta =
        std::fs::symlink_metadata(abs).with_context(|| format!("reading {}", abs.display()))?;
    let found = crate::statat::Lstat {
        stat: FileStat::from_metadata(&meta),
        symlink: meta.file_type().is_symlink(),
    };
    entry_of(store, stat_cache, found, abs)
}

/// `entry_for` of the workspace file `rel` (`abs` its absolute path),
/// stat-ed relative to the root's descriptor (`statat.rs`).
fn entry_at(
    store: &Store,
    stat_cache: &StatCache,
    root: &crate::statat::Root,
    rel: &str,
    abs: &Path,
) -> Result<EntryKind> {
    let found = root
        .lstat(rel, abs)
        .with_context(|| format!("reading {}", abs.display()))?;
    entry_of(store, stat_cache, found, abs)
}

fn entry_of(
    store: &Store,
    stat_cache: &StatCache,
    found: crate::statat::Lstat,
    abs: &Path,
) -> Result<EntryKind> {
    if found.symlink {
        let target = std::fs::read_link(abs)?;
        let target = target
            .to_str()
            .context("symlink targets must be UTF-8")?
            .to_string();
        return Ok(EntryKind::Symlink { target });
    }
    let stat = found.stat;
    let digest = match stat_cache.lookup(abs, &stat) {
        Some(d) => d,
        None => {
            let (digest, _) = store.cas.hash_file(abs)?;
            stat_cache.record(abs, &stat, digest);
            digest
        }
    };
    Ok(EntryKind::File {
        digest,
        size: stat.size,
        executable: stat.executable,
    })
}

/// A target's matched srcs with their digests, workspace-relative.
pub type Srcs = BTreeMap<String, EntryKind>;

/// The srcs of every selected target, resolved at most once each: by the
/// action itself, or earlier by a worker with nothing ready to run (so
/// stat-ing and hashing sources runs in parallel, not along dependency
/// chains).
pub struct SrcsCache {
    cells: Vec<OnceLock<Result<Arc<Srcs>, String>>>,
    /// Per target: its srcs glob patterns that matched no file.
    unmatched: Vec<OnceLock<Vec<String>>>,
    /// Next position in `order` to pre-resolve.
    next: std::sync::atomic::AtomicUsize,
}

impl SrcsCache {
    pub fn new(targets: usize) -> SrcsCache {
        SrcsCache {
            cells: (0..targets).map(|_| OnceLock::new()).collect(),
            unmatched: (0..targets).map(|_| OnceLock::new()).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn get(
        &self,
        ws: &Workspace,
        index: &PackageIndex,
        store: &Store,
        stat_cache: &StatCache,
        target_idx: usize,
    ) -> Result<Arc<Srcs>> {
        self.cells[target_idx]
            .get_or_init(|| {
                let srcs = resolve_srcs(ws, index, store, stat_cache, target_idx);
                if let Ok(srcs) = &srcs {
                    let target = &ws.targets[target_idx];
                    let cut = target.label.package.len();
                    let rel = srcs.keys().map(|p| p[cut..].trim_start_matches('/'));
                    let _ = self.unmatched[target_idx].set(target.srcs.unmatched(rel));
                }
                srcs.map(Arc::new).map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// The srcs patterns of a resolved target that matched no file.
    pub fn unmatched(&self, target_idx: usize) -> &[String] {
        self.unmatched[target_idx].get().map_or(&[], Vec::as_slice)
    }

    /// Resolves the srcs of the next not yet claimed target of `order`;
    /// false when every one has been claimed. Errors are kept for the
    /// action to report.
    pub fn prefetch_one(
        &self,
        ws: &Workspace,
        index: &PackageIndex,
        store: &Store,
        stat_cache: &StatCache,
        order: &[usize],
    ) -> bool {
        let pos = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&idx) = order.get(pos) else {
            return false;
        };
        let _ = self.get(ws, index, store, stat_cache, idx);
        true
    }
}

fn resolve_srcs(
    ws: &Workspace,
    index: &PackageIndex,
    store: &Store,
    stat_cache: &StatCache,
    target_idx: usize,
) -> Result<Srcs> {
    let target = &ws.targets[target_idx];
    let package = &target.label.package;
    let files = index.files(ws, package)?;
    let mut inputs = BTreeMap::new();
    for rel in files.paths.iter().filter(|p| target.srcs.matches(p)) {
        let path = join_package(package, rel);
        if ws.exclude.is_match(&path) {
            continue;
        }
        let abs = ws.root.join(&path);
        let entry = entry_at(store, stat_cache, &index.root, &path, &abs)?;
        inputs.insert(path, entry);
    }
    Ok(inputs)
}

/// The full input set of a target: its matched srcs plus its deps' outputs,
/// workspace-relative.
pub fn resolve(srcs: &Srcs, dep_outputs: &[Arc<Tree>]) -> BTreeMap<String, EntryKind> {
    let mut inputs = srcs.clone();
    for tree in dep_outputs {
        for e in tree.entries() {
            inputs.insert(e.path.clone(), e.kind.clone());
        }
    }
    inputs
}
