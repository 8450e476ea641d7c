//! Resolving a target's inputs: list its package's files once, match the
//! srcs globs, and digest each file through the stat cache (a no-op run
//! reads no file it has hashed before).
use crate::globs::OutSpec;
use crate::workspace::{skipped_dir, Workspace, BUILD_FILE};
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
}

impl PackageIndex {
    pub fn new(ws: &Workspace) -> PackageIndex {
        let lists = ws
            .packages
            .iter()
            .map(|p| (p.clone(), OnceLock::new()))
            .collect();
        PackageIndex { lists }
    }

    pub fn files(&self, ws: &Workspace, package: &str) -> Result<Arc<PackageFiles>> {
        let cell = self.lists.get(package).context("unknown package")?;
        cell.get_or_init(|| {
            list_package(ws, package)
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
    }
}

fn list_package(ws: &Workspace, package: &str) -> Result<PackageFiles> {
    let dir = ws.root.join(package);
    // Outputs of this package's targets are generated, never sources.
    let outs: Vec<(&OutSpec, Option<globset::GlobMatcher>)> = ws
        .targets
        .iter()
        .filter(|t| t.label.package == package)
        .flat_map(|t| t.outs.iter())
        .map(|o| match o {
            OutSpec::Glob(g) => (o, crate::globs::out_glob(g).ok()),
            _ => (o, None),
        })
        .collect();
    let mut paths = Vec::new();
    let walker = walkdir::WalkDir::new(&dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    let walker = walker.filter_entry(|e| {
        if e.depth() == 0 || !e.file_type().is_dir() {
            return true;
        }
        let name = e.file_name().to_string_lossy();
        !skipped_dir(&name) && !e.path().join(BUILD_FILE).is_file()
    });
    for entry in walker {
        let entry = entry.with_context(|| format!("listing package //{package}"))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&dir)
            .expect("walk stays in the package");
        let Some(rel) = rel.to_str() else {
            bail!("{}: file names must be UTF-8", entry.path().display());
        };
        if !outs.iter().any(|(o, g)| o.covers(rel, g.as_ref())) {
            paths.push(rel.to_string());
        }
    }
    // Bytewise order, so literal srcs can be found by binary search.
    paths.sort();
    Ok(PackageFiles { paths })
}

pub fn join(package: &str, rel: &str) -> String {
    if package.is_empty() {
        rel.to_string()
    } else {
        format!("{package}/{rel}")
    }
}

/// Digests one workspace file (or reads a symlink), storing its bytes in the
/// CAS the first time it is seen.
pub fn entry_for(store: &Store, stat_cache: &StatCache, abs: &Path) -> Result<EntryKind> {
    let meta =
        std::fs::symlink_metadata(abs).with_context(|| format!("reading {}", abs.display()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(abs)?;
        let target = target
            .to_str()
            .context("symlink targets must be UTF-8")?
            .to_string();
        return Ok(EntryKind::Symlink { target });
    }
    let stat = FileStat::from_metadata(&meta);
    let digest = match stat_cache.lookup(abs, &stat) {
        Some(d) => d,
        None => {
            let (digest, _) = store.cas.put_file(abs)?;
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

/// The full input set of a target: its matched srcs plus its deps' outputs,
/// workspace-relative.
pub fn resolve(
    ws: &Workspace,
    index: &PackageIndex,
    store: &Store,
    stat_cache: &StatCache,
    target_idx: usize,
    dep_outputs: &[Arc<Tree>],
) -> Result<BTreeMap<String, EntryKind>> {
    let target = &ws.targets[target_idx];
    let package = &target.label.package;
    let files = index.files(ws, package)?;
    let mut inputs = BTreeMap::new();
    for rel in files.paths.iter().filter(|p| target.srcs.matches(p)) {
        let path = join(package, rel);
        let entry = entry_for(store, stat_cache, &ws.root.join(&path))?;
        inputs.insert(path, entry);
    }
    for tree in dep_outputs {
        for e in tree.entries() {
            inputs.insert(e.path.clone(), e.kind.clone());
        }
    }
    Ok(inputs)
}

/// BLAKE3 of a file's bytes, without storing it.
pub fn hash_file(path: &Path) -> std::io::Result<vbuild_store::Digest> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}
